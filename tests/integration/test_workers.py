"""`serve` with several worker processes (VP_GATEWAY__WORKERS): one port, one local LLM server, the
metrics of all workers on any scrape, a dead worker replaced, a clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from voice_pipeline.bench.procstat import tree
from voice_pipeline.contract import METRIC_SESSIONS
from voice_pipeline.simulator.device import SimulatedDevice

from .conftest import Server, start_server, stop_server
from .helpers import clip

pytestmark = pytest.mark.integration

WORKERS = 2


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _workers(server: Server) -> list[int]:
    """The worker processes (spawned by multiprocessing; its resource tracker is not one)."""
    return [pid for pid in tree(server.process.pid) if "spawn_main" in _cmdline(pid)]


def _llama_servers(server: Server) -> list[int]:
    return [pid for pid in tree(server.process.pid) if "llama_cpp.server" in _cmdline(pid)]


def _established(port: int, pid: int) -> int:
    """Established connections to `port` held by `pid` (its socket inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def _sessions(server: Server) -> float:
    for line in httpx.get(f"{server.http}/metrics", timeout=5).text.splitlines():
        if line.startswith(METRIC_SESSIONS + " "):
            return float(line.split()[1])
    raise AssertionError(f"{METRIC_SESSIONS} missing from /metrics")


def _ready(server: Server) -> bool:
    try:
        return httpx.get(f"{server.http}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


@pytest.fixture(scope="module")
def workers_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("workers"), {"VP_GATEWAY__WORKERS": str(WORKERS)})
    yield server
    stop_server(server)


async def test_workers_share_the_port_the_llm_server_and_the_metrics(workers_server: Server) -> None:
    server = workers_server
    workers = _workers(server)
    assert len(workers) == WORKERS, workers
    assert len(_llama_servers(server)) == 1  # started once by the supervisor, not per worker
    port = int(server.http.rsplit(":", 1)[1])
    devices: list[SimulatedDevice] = []
    try:
        # The kernel spreads connections by address hash: open devices until both workers hold some.
        while len(devices) < 24 and not all(_established(port, pid) for pid in workers):
            device = SimulatedDevice(server.url)
            await device.connect()
            devices.append(device)
            await asyncio.sleep(0.05)
        assert all(_established(port, pid) for pid in workers), "one worker got every connection"
        # Any scrape, whichever worker answers it, counts the sessions of both.
        for _ in range(6):
            assert await asyncio.to_thread(_sessions, server) == len(devices)
        result = await devices[-1].turn(clip("en_hello"), timeout=90)
        assert not result.error, result.error
        assert result.reply.strip() and result.audio_seconds > 0.5
    finally:
        for device in devices:
            await device.close()
    _wait_for(lambda: _sessions(server) == 0, 10, "sessions back to 0 after the devices left")


async def test_a_dead_worker_is_replaced(workers_server: Server) -> None:
    server = workers_server
    victim = _workers(server)[0]
    os.kill(victim, signal.SIGKILL)
    _wait_for(
        lambda: len(_workers(server)) == WORKERS and victim not in _workers(server),
        30,
        "a new worker started",
    )
    _wait_for(lambda: _ready(server), 120, "ready again")
    device = SimulatedDevice(server.url)
    await device.connect()
    try:
        result = await device.turn(clip("en_hello"), timeout=90)
        assert not result.error, result.error
    finally:
        await device.close()
    assert f"worker {victim} exited" in server.log_path.read_text()


def test_sigterm_stops_every_process(workers_server: Server) -> None:
    server = workers_server
    everyone = tree(server.process.pid)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0
    _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in everyone[1:]), 15, "children gone")
    assert "Traceback" not in server.log_path.read_text()


def test_serve_on_a_taken_port_exits_with_a_startup_failure(tmp_path: Path) -> None:
    """`serve` that cannot bind (here: one process) stops with uvicorn's status 3, not 0."""
    import socket
    import subprocess
    import sys

    from .conftest import ROOT

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "VP_GATEWAY__HOST": "127.0.0.1", "VP_GATEWAY__PORT": str(port)}
        done = subprocess.run(
            [sys.executable, "-m", "voice_pipeline.cli", "serve", "--no-install"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=240,
        )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    assert "address already in use" in done.stderr
