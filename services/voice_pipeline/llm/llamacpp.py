"""Start and stop the local llama.cpp OpenAI-compatible server (llama-cpp-python[server]).

It runs as a child process, so a crash in the native code cannot take the gateway down, and the
OS accounts its CPU and memory separately.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

from voice_pipeline.common.errors import VoicePipelineError
from voice_pipeline.llm.settings import LlmSettings
from voice_pipeline.models.registry import require_model

log = logging.getLogger(__name__)


class LlamaServerError(VoicePipelineError):
    pass


# What the child inherits: nothing else. llama-cpp-python's server reads its settings (host, port,
# api_key, model, n_ctx, ...) from environment variables of the same names *ahead of* its flags,
# so a PORT or HOST meant for something else hijacked it (HOST=0.0.0.0 exposed an
# unauthenticated LLM on every interface). Only what a Python process and libc need passes.
CHILD_ENV_ALLOWED = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
)


def child_environment(parent: Mapping[str, str]) -> dict[str, str]:
    """The environment of the llama.cpp server: the allow-list above, taken from `parent`."""
    return {key: parent[key] for key in CHILD_ENV_ALLOWED if key in parent}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaCppServer:
    def __init__(
        self,
        model_path: Path,
        threads: int = 2,
        n_ctx: int = 2048,
        port: int = 0,
        ready_timeout_s: float = 120,
    ) -> None:
        self.model_path = model_path
        self.threads = threads
        self.n_ctx = n_ctx
        self.port = port or free_port()
        self.ready_timeout_s = ready_timeout_s
        self._process: asyncio.subprocess.Process | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115

    @classmethod
    def from_settings(cls, settings: LlmSettings) -> LlamaCppServer:
        model = require_model(settings.local_model) / "model.gguf"
        return cls(model, settings.local_threads, settings.local_ctx, settings.local_port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        try:
            import llama_cpp  # noqa: F401
        except ImportError as exc:
            raise LlamaServerError(
                f"llama-cpp-python is not installed ({exc}); run `make install` (it compiles it once)"
            ) from exc
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
            # By default a waiting request makes the server end the running stream early with a
            # normal [DONE]: concurrent devices would get silently truncated (or empty) replies.
            "--interrupt_requests", "False",
        ]  # fmt: skip
        started = time.monotonic()
        self._process = await asyncio.create_subprocess_exec(
            *cmd, stdout=self._log, stderr=self._log, env=child_environment(os.environ)
        )
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() - started < self.ready_timeout_s:
                if self._process.returncode is not None:
                    raise LlamaServerError(
                        f"llama.cpp server exited ({self._process.returncode}):\n{self.log_tail()}"
                    )
                try:
                    if (await client.get(f"{self.base_url}/models")).status_code == 200:
                        log.info(
                            "llama.cpp server up in %.1f s on port %d", time.monotonic() - started, self.port
                        )
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.25)
        await self.stop()
        raise LlamaServerError(
            f"llama.cpp server not ready after {self.ready_timeout_s:.0f} s:\n{self.log_tail()}"
        )

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def __aenter__(self) -> LlamaCppServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
