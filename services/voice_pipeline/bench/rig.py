"""The processes of a capacity run: provider emulators, the system under test, the fleet.

Each is its own OS process so its CPU and memory are measured apart: the emulators stand in for
cloud providers (their CPU is not the system's), the fleet is the load generator (its CPU is
reported to show it is not the bottleneck), and the system is what the figures are about.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from voice_pipeline.emulators.profiles import LlmProfile, TtsProfile

Mode = Literal["allinone", "distributed"]
TtsChoice = Literal["emulator", "local"]
LlmChoice = Literal["emulator", "local"]
CLI = [sys.executable, "-m", "voice_pipeline.cli"]
SYSTEM_PROCESSES = {"allinone": ("server",), "distributed": ("gateway", "vad", "asr", "llm", "tts")}
# The settings class of each system process: a process refuses VP_ keys it does not know, so each
# gets only the keys its class has.
SETTINGS_CLASSES = {
    "server": "voice_pipeline.allinone:AllInOneSettings",
    "gateway": "voice_pipeline.gateway.service:GatewayServiceSettings",
    "vad": "voice_pipeline.stagehost.settings:VadServiceSettings",
    "asr": "voice_pipeline.stagehost.settings:AsrServiceSettings",
    "llm": "voice_pipeline.stagehost.settings:LlmServiceSettings",
    "tts": "voice_pipeline.stagehost.settings:TtsServiceSettings",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    http: str
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def env_for(process: str, env: dict[str, str]) -> dict[str, str]:
    """`env` without the VP_ keys the process's settings class would refuse as unknown."""
    import importlib

    from voice_pipeline.common.settings import unknown_env_keys

    module, _, cls = SETTINGS_CLASSES[process].partition(":")
    unknown = set(unknown_env_keys(getattr(importlib.import_module(module), cls), env))
    return {k: v for k, v in env.items() if k not in unknown}


def start(
    name: str,
    argv: list[str],
    port: int,
    log_dir: Path,
    ready_path: str,
    env: dict[str, str] | None = None,
    timeout: float = 300.0,
) -> Proc:
    """Start a process and wait until http://127.0.0.1:port{ready_path} answers 200."""
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    if name in SETTINGS_CLASSES:
        full_env = env_for(name, full_env)
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    proc = Proc(name, process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{proc.log_tail()}")
        try:
            if httpx.get(proc.http + ready_path, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop(proc)
    raise RuntimeError(f"{name} not ready after {timeout:.0f} s:\n{proc.log_tail()}")


def stop(proc: Proc) -> None:
    if proc.process.poll() is None:
        proc.process.terminate()
        try:
            proc.process.wait(20)
        except subprocess.TimeoutExpired:
            proc.process.kill()
            proc.process.wait(5)


def start_llm_emulator(log_dir: Path, profile: LlmProfile) -> Proc:
    port = free_port()
    argv = [*CLI, "emulate", "llm", "--port", str(port)]
    argv += ["--ttft-ms", str(profile.ttft_ms), "--tokens-per-s", str(profile.tokens_per_s)]
    if profile.reply_repeat != 1:
        argv += ["--reply-repeat", str(profile.reply_repeat)]
    return start("llm-emulator", argv, port, log_dir, "/healthz", timeout=60)


def start_tts_emulator(log_dir: Path, profile: TtsProfile) -> Proc:
    port = free_port()
    argv = [*CLI, "emulate", "tts", "--port", str(port), "--first-audio-ms", str(profile.first_audio_ms)]
    argv += ["--speed-factor", str(profile.speed_factor), "--chunk-ms", str(profile.chunk_ms)]
    return start("tts-emulator", argv, port, log_dir, "/healthz", timeout=60)


def provider_env(llm_url: str | None, tts_url: str | None) -> dict[str, str]:
    """Settings that point the pipeline at the emulators (None: the local engines, the embedded
    mode: llama.cpp started by the system, Piper / espeak-ng in its process)."""
    env = {
        "VP_TTS__EDGE_ENABLED": "false",
        # The fleet replays four clips: with caches on, every repeat would be a cache hit and the
        # run would measure the caches, not the work. Capacity is measured with them off.
        "VP_CACHE__ENABLED": "false",
        # Every simulated device connects from 127.0.0.1: the per-address limit would cap the fleet.
        "VP_GATEWAY__MAX_CONNECTIONS_PER_IP": "0",
    }
    if llm_url:
        env.update(
            {
                "VP_LLM__BASE_URL": f"{llm_url}/v1",
                "VP_LLM__MODEL": "emulator",
                "VP_LLM__PROVIDER_NAME": "emulator",
            }
        )
    if tts_url:
        env["VP_TTS__ENGINES"] = json.dumps({"zh": ["openai"], "en": ["openai"]})
        env["VP_TTS__OPENAI_BASE_URL"] = f"{tts_url}/v1"
    return env


@dataclass
class Rig:
    """Emulators + the system under test, started in `__enter__`, stopped in `__exit__`."""

    mode: Mode
    log_dir: Path
    llm_profile: LlmProfile = field(default_factory=LlmProfile)
    tts_profile: TtsProfile = field(default_factory=TtsProfile)
    tts: TtsChoice = "emulator"
    llm: LlmChoice = "emulator"
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    url: str = ""
    _stack: ExitStack = field(default_factory=ExitStack)

    def __enter__(self) -> Rig:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.llm == "emulator":
                self._add(start_llm_emulator(self.log_dir, self.llm_profile))
            if self.tts == "emulator":
                self._add(start_tts_emulator(self.log_dir, self.tts_profile))
            env = provider_env(
                self.procs["llm-emulator"].http if self.llm == "emulator" else None,
                self.procs["tts-emulator"].http if self.tts == "emulator" else None,
            )
            env.update(self.extra_env)
            if self.mode == "allinone":
                self._start_allinone(env)
            else:
                self._start_distributed(env)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def _add(self, proc: Proc) -> None:
        self.procs[proc.name] = proc
        self._stack.callback(stop, proc)

    def _start_allinone(self, env: dict[str, str]) -> None:
        port = free_port()
        env = {**env, "VP_GATEWAY__PORT": str(port), "VP_GATEWAY__HOST": "127.0.0.1"}
        self._add(start("server", [*CLI, "serve", "--no-install"], port, self.log_dir, "/readyz", env))
        self.url = f"ws://127.0.0.1:{port}/xiaozhi/v1/"

    def _start_distributed(self, env: dict[str, str]) -> None:
        """One process per stage (`voice-pipeline serve STAGE`), the gateway pointed at them."""
        urls: dict[str, str] = {}
        for stage in ("vad", "asr", "llm", "tts"):
            port = free_port()
            stage_env = {**env, "VP_SERVICE__PORT": str(port), "VP_SERVICE__HOST": "127.0.0.1"}
            argv = [*CLI, "serve", stage, "--no-install"]
            self._add(start(stage, argv, port, self.log_dir, "/readyz", stage_env))
            urls[stage] = f"http://127.0.0.1:{port}"
        port = free_port()
        gw_env = {**env, "VP_GATEWAY__PORT": str(port), "VP_GATEWAY__HOST": "127.0.0.1"}
        gw_env.update({f"VP_STAGES__{stage.upper()}_URL": url for stage, url in urls.items()})
        self._add(
            start(
                "gateway", [*CLI, "serve", "gateway", "--no-install"], port, self.log_dir, "/readyz", gw_env
            )
        )
        self.url = f"ws://127.0.0.1:{port}/xiaozhi/v1/"

    def roots(self) -> dict[str, int]:
        return {name: p.process.pid for name, p in self.procs.items()}

    def system_names(self) -> tuple[str, ...]:
        return SYSTEM_PROCESSES[self.mode]

    def metrics_urls(self) -> dict[str, str]:
        return {name: f"{self.procs[name].http}/metrics" for name in self.system_names()}

    def profile_json(self) -> dict[str, Any]:
        return {
            "llm": (
                {"emulator": self.llm_profile.as_json(), "describe": self.llm_profile.describe()}
                if self.llm == "emulator"
                else {
                    "describe": "local llama.cpp server started by the system (its CPU counts as the system's)"
                }
            ),
            "tts": (
                {"emulator": self.tts_profile.as_json(), "describe": self.tts_profile.describe()}
                if self.tts == "emulator"
                else {"describe": "local TTS engines (piper EN, espeak-ng ZH), in the system's CPU"}
            ),
        }
