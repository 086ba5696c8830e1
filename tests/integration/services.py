"""Start and stop `voice-pipeline serve <stage>` processes and a real Prometheus on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .conftest import ROOT, free_port


@dataclass
class Process:
    name: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://{self.host}:{self.port}/xiaozhi/v1/"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def metrics(self) -> str:
        return httpx.get(f"{self.http}/metrics", timeout=10).text


def launch(
    tmp: Path, stage: str, env_extra: dict[str, str], host: str = "127.0.0.1", port: int = 0
) -> Process:
    """Start `voice-pipeline serve <stage>` (not yet ready: see `wait_ready`)."""
    port = port or free_port()
    prefix = "VP_GATEWAY" if stage == "gateway" else "VP_SERVICE"
    env = {**os.environ, f"{prefix}__HOST": host, f"{prefix}__PORT": str(port), **env_extra}
    if stage != "gateway":
        env.setdefault("VP_SERVICE__DRAIN_TIMEOUT_S", "5")
    log_path = tmp / f"{stage}-{host}-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "voice_pipeline.cli", "serve", stage, "--no-install"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    return Process(stage, host, port, process, log_path)


def wait_ready(processes: list[Process], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(processes)
    while waiting and time.monotonic() < deadline:
        for p in list(waiting):
            if p.process.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.process.returncode}:\n{p.log_tail()}")
            try:
                if httpx.get(f"{p.http}/readyz", timeout=2).status_code == 200:
                    waiting.remove(p)
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    if waiting:
        for p in processes:
            stop(p)
        raise RuntimeError(f"not ready after {timeout:.0f} s:\n" + "\n\n".join(p.log_tail() for p in waiting))


def stop(p: Process, timeout: float = 30.0) -> int:
    if p.process.poll() is None:
        p.process.send_signal(signal.SIGTERM)
    try:
        return p.process.wait(timeout)
    except subprocess.TimeoutExpired:
        p.process.kill()
        return p.process.wait(5)


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])


def start_prometheus(tmp: Path, targets: dict[str, str]) -> Prometheus:
    """Debian's prometheus with its own config: one job per service, scraped every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("the prometheus binary is missing: `make deps-debian` installs it")
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
        for job, target in targets.items()
    )
    config = tmp / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}")
    port = free_port()
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited:\n{log_path.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200:
                return prometheus
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("prometheus not ready after 30 s")
