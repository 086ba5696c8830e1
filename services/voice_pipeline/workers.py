"""All-in-one on every core: `serve` runs several copies of the all-in-one server ("workers"), each
its own process with its own event loop and models, all accepting on one port (SO_REUSEPORT: the
kernel spreads new connections over the workers that listen).

Why processes: one all-in-one process keeps about one core busy at most, because the gateway's
Python work (WebSocket frames, Opus framing, provider streams, the sessions' turns) runs under one
GIL; at the load where latency broke it used 1.03 of 2 cores (docs/benchmarks.md). Workers do not
talk to each other: a session lives in one worker from hello to close, and model work is batched
across the sessions of that worker.

What the workers share: the port; the local llama.cpp server (started once, here, before them);
the Prometheus metrics (a run directory of multiprocess files, so /metrics and the status page of
any worker show the whole server); activated device pairs (a directory, see gateway/activation.py);
Redis caches when configured (the in-process cache is per worker). What they split:
`max_sessions`, `max_pending_hello` and `max_connections_per_ip`, each worker enforcing its share
(rounded up).

A worker listens only once its models are loaded, so a connection never waits behind a loading
worker; /readyz answers 200 once every worker listens. A worker that dies after it was ready is
started again (its sessions are lost: the devices reconnect to the others); one that dies before
it was ready stops the server (a bad setting or a busy port would only fail again).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from voice_pipeline.common.cpus import usable_cpus
from voice_pipeline.common.metrics import MULTIPROC_ENV

log = logging.getLogger(__name__)

STOP_GRACE_S = 30.0  # a worker's drain before it is killed (uvicorn closes its sessions first)
RESTART_DELAY_S = 1.0


def worker_count(requested: int) -> int:
    """The workers to run: `requested`, or one per usable CPU for 0."""
    return requested if requested > 0 else usable_cpus()


def share(limit: int, workers: int) -> int:
    """One worker's share of a server-wide limit (rounded up; 0 stays 0 = no limit)."""
    return -(-limit // workers)


def split_gateway_limits(gateway: Any, workers: int) -> Any:
    """GatewaySettings with each server-wide limit replaced by one worker's share."""
    return gateway.model_copy(
        update={
            "max_sessions": share(gateway.max_sessions, workers),
            "max_pending_hello": share(gateway.max_pending_hello, workers),
            "max_connections_per_ip": share(gateway.max_connections_per_ip, workers),
        }
    )


@dataclass(frozen=True)
class RunDir:
    """The workers' shared directory: metrics files, ready marks, activated pairs."""

    path: Path

    @property
    def metrics(self) -> Path:
        return self.path / "metrics"

    @property
    def activations(self) -> Path:
        return self.path / "activated"

    def ready_mark(self, pid: int) -> Path:
        return self.path / f"ready-{pid}"

    def create(self) -> None:
        self.metrics.mkdir(parents=True, exist_ok=True)
        self.activations.mkdir(parents=True, exist_ok=True)


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) socket on host:port that other workers may bind too. asyncio
    calls listen() when uvicorn starts serving it, i.e. after the worker's models are loaded."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6 and host in ("::", ""):
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(address)
    return sock


def all_ready(run_dir: RunDir, workers: int) -> bool:
    """Every worker has loaded its models and listens (ready marks of live processes)."""
    live = 0
    for mark in run_dir.path.glob("ready-*"):
        pid = int(mark.name.removeprefix("ready-"))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        live += 1
    return live >= workers


# --- the worker process ------------------------------------------------------------------------


def _worker_main(
    settings: Any, port: int, run_dir: RunDir, workers: int, log_config: tuple[str, str]
) -> None:
    """One worker: the all-in-one server on a shared socket (runs in a spawned process)."""
    from voice_pipeline.common.logs import configure_logging

    configure_logging(*log_config)
    # Ctrl-C reaches the whole process group: the supervisor decides; uvicorn would stop at once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from voice_pipeline.allinone import serve_allinone

    sock = listening_socket(settings.gateway.host, port)
    mark = run_dir.ready_mark(os.getpid())

    @asynccontextmanager
    async def marked(stages: Any) -> AsyncIterator[Any]:
        async with stages as ready:
            mark.touch()
            try:
                yield ready
            finally:
                mark.unlink(missing_ok=True)

    serve_allinone(
        settings,
        sockets=[sock],
        wrap_stages=marked,
        readiness=lambda: {"workers": all_ready(run_dir, workers)},
        activations_dir=run_dir.activations,
    )


# --- the supervisor -----------------------------------------------------------------------------


class Supervisor:
    """Starts the workers, starts again one that dies after it was ready, stops them all."""

    def __init__(self, settings: Any, workers: int, port: int, run_dir: RunDir, log_config: tuple[str, str]):
        self.settings = settings
        self.workers = workers
        self.port = port
        self.run_dir = run_dir
        self.log_config = log_config
        self._context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.processes: list[BaseProcess] = []
        self._stop = asyncio.Event()

    def _start(self) -> BaseProcess:
        process = self._context.Process(
            target=_worker_main,
            args=(self.settings, self.port, self.run_dir, self.workers, self.log_config),
            name="voice-pipeline-worker",
            daemon=False,
        )
        process.start()
        return process

    def _was_ready(self, process: BaseProcess) -> bool:
        # The mark is removed at a clean stop only; a crashed worker leaves it behind.
        return process.pid is not None and self.run_dir.ready_mark(process.pid).exists()

    def _forget(self, process: BaseProcess) -> None:
        from prometheus_client import multiprocess

        if process.pid is not None:
            multiprocess.mark_process_dead(process.pid, str(self.run_dir.metrics))  # type: ignore[no-untyped-call]
            self.run_dir.ready_mark(process.pid).unlink(missing_ok=True)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        self.processes = [self._start() for _ in range(self.workers)]
        announced = False
        try:
            while not self._stop.is_set():
                for i, process in enumerate(self.processes):
                    if process.is_alive():
                        continue
                    ready = self._was_ready(process)
                    self._forget(process)
                    if not ready:
                        log.error("a worker exited with %s before it was ready; stopping", process.exitcode)
                        return 1
                    log.warning("worker %s exited with %s; starting another", process.pid, process.exitcode)
                    await asyncio.sleep(RESTART_DELAY_S)
                    self.processes[i] = self._start()
                if not announced and all_ready(self.run_dir, self.workers):
                    announced = True
                    print(
                        f"voice-pipeline ready: {self.workers} workers on port {self.port}", file=sys.stderr
                    )
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.5)
            return 0
        finally:
            await self._stop_all()

    async def _stop_all(self) -> None:
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)  # uvicorn: stop accepting, close sessions
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes:
            await asyncio.to_thread(process.join, max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker %s did not stop in %.0f s; killing it", process.pid, STOP_GRACE_S)
                process.kill()
                await asyncio.to_thread(process.join, 5)


@asynccontextmanager
async def _local_llm(settings: Any) -> AsyncIterator[Any]:
    """`settings` with the one local llama.cpp server the workers share, when one is needed."""
    async with AsyncExitStack() as stack:
        if settings.llm.needs_local_server():
            from voice_pipeline.llm.llamacpp import LlamaCppServer

            server = await stack.enter_async_context(LlamaCppServer.from_settings(settings.llm))
            log.info("local LLM server ready at %s (shared by the workers)", server.base_url)
            settings = settings.model_copy(update={"llm": settings.llm.with_local_server(server.base_url)})
        yield settings


def run_workers(
    settings: Any, workers: int, log_config: tuple[str, str], announce: Callable[[int], None]
) -> int:
    """The all-in-one server as `workers` processes on settings.gateway's host and port."""
    with tempfile.TemporaryDirectory(prefix="voice-pipeline-") as tmp:
        run_dir = RunDir(Path(tmp))
        run_dir.create()
        # Before any worker exists: prometheus_client reads it when the worker imports it.
        os.environ[MULTIPROC_ENV] = str(run_dir.metrics)
        gateway = settings.gateway
        # Held for the server's life (bound, never listening): port 0 becomes one port for all.
        with listening_socket(gateway.host, gateway.port) as reserved:
            port = int(reserved.getsockname()[1])
            announce(port)
            worker_settings = settings.model_copy(update={"gateway": split_gateway_limits(gateway, workers)})

            async def supervise() -> int:
                async with _local_llm(worker_settings) as shared:
                    return await Supervisor(shared, workers, port, run_dir, log_config).run()

            return asyncio.run(supervise())
