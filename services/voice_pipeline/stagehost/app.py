"""The FastAPI app and server of one stage service (`voice-pipeline serve vad|asr|llm|tts`).

`create_stage_app` builds the app from a stage name and its builder (an async context manager
yielding the stage, see `stagehost.services`): the lifespan loads the model, nothing happens at
import time. Routes:
`/healthz` (alive), `/readyz` (model loaded and not draining), `/metrics` (the contract metrics)
and `/v1/stream` (the multiplexed transport the gateway uses).

`run_service` runs it under uvicorn with a drain phase: on SIGTERM the replica answers 503 on
/readyz, tells every connected gateway it is draining (they place new sessions elsewhere and move
VAD streams at their next listen turn), and exits once idle or after `drain_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse, Response

from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.secrets import read_token_file, token_matches
from voice_pipeline.common.stages import ServedStage
from voice_pipeline.stagehost.settings import ServiceSettings
from voice_pipeline.transport.server import Drain, StreamConnection

log = logging.getLogger(__name__)

# Loads the stage (model, caches) for the app's lifespan and tears it down after.
StageBuilder = Callable[[Metrics], AbstractAsyncContextManager[ServedStage]]


def _bearer(header: str) -> str:
    return header[7:].strip() if header[:7].lower() == "bearer " else header.strip()


def create_stage_app(
    stage: str, settings: ServiceSettings, build: StageBuilder, metrics: Metrics | None = None
) -> FastAPI:
    metrics = metrics or Metrics(serves_devices=False)
    token = read_token_file(settings.auth_token_file, "stage auth token")  # bad file: fail at start
    drain = Drain()
    state: dict[str, Any] = {"served": None}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        async with build(metrics) as served:
            state["served"] = served
            log.info(
                "%s service ready on %s:%d (%.1f s)",
                stage,
                settings.host,
                settings.port,
                time.perf_counter() - started,
            )
            yield
            state["served"] = None

    app = FastAPI(title=f"voice-pipeline {stage}", lifespan=lifespan)
    app.state.metrics = metrics
    app.state.drain = drain

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "stage": stage}

    @app.get("/readyz")
    async def readyz() -> Response:
        loaded = state["served"] is not None
        ready = loaded and not drain.draining
        body = {"ready": ready, "stage": stage, "loaded": loaded, "draining": drain.draining}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        if token and not token_matches(token, _bearer(ws.headers.get("authorization", ""))):
            # Closing before accept answers the upgrade with HTTP 403. Logged without what was sent.
            peer = f"{ws.client.host}:{ws.client.port}" if ws.client is not None else "?"
            log.warning("%s: refused a /v1/stream client from %s: missing or wrong auth token", stage, peer)
            await ws.close(1008)
            return
        served = state["served"]
        await ws.accept()
        if served is None:
            await ws.close(1013, "stage is not loaded yet")
            return
        connection = StreamConnection(ws, stage, served, settings.max_inflight_per_connection)
        drain.connections.add(connection)
        try:
            await connection.run(drain.draining)
        finally:
            drain.connections.discard(connection)

    return app


class DrainingServer:
    """uvicorn with a drain phase before its usual graceful shutdown (second signal: at once)."""

    def __init__(self, app: FastAPI, host: str, port: int, drain_timeout_s: float, ws_max_size: int) -> None:
        import uvicorn

        drain: Drain = app.state.drain
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            ws_max_size=ws_max_size,
            ws_per_message_deflate=False,  # audio frames do not compress; deflate only costs CPU
            log_level="warning",
            lifespan="on",
        )

        class _Server(uvicorn.Server):
            """Only uvicorn's public surface: `serve` (to learn the loop), `handle_exit` (the signal
            handler it installs) and `should_exit`. The first SIGTERM starts the drain; when the
            drain ends it is handed to uvicorn's own `handle_exit`, so uvicorn shuts down and
            re-raises the signal exactly as if it had just arrived."""

            loop: asyncio.AbstractEventLoop | None = None
            drain_started = False

            async def serve(self, sockets: list[socket.socket] | None = None) -> None:
                self.loop = asyncio.get_running_loop()
                await super().serve(sockets)

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                if sig != signal.SIGTERM or self.drain_started or self.should_exit or self.loop is None:
                    super().handle_exit(sig, frame)  # SIGINT, a second SIGTERM: uvicorn's way, at once
                    return
                self.drain_started = True
                self.loop.call_soon_threadsafe(self._start_drain)  # from the signal handler's thread

            def _start_drain(self) -> None:
                task = asyncio.get_running_loop().create_task(self._drain())
                self._drain_task = task  # keep a reference until it ends

            async def _drain(self) -> None:
                log.info("SIGTERM: draining (up to %.0f s)", drain_timeout_s)
                await drain.begin()
                deadline = time.monotonic() + drain_timeout_s
                # Idleness spans every connection's tasks and sessions: poll it, 5 times a second.
                while not drain.idle() and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
                log.info("drained (%s); shutting down", "idle" if drain.idle() else "timeout")
                if not self.should_exit:
                    super().handle_exit(signal.SIGTERM, None)

        self.server = _Server(config)

    def run(self) -> None:
        self.server.run()


def run_service(app: FastAPI, settings: ServiceSettings) -> int:
    DrainingServer(
        app, settings.host, settings.port, settings.drain_timeout_s, settings.max_message_bytes
    ).run()
    return 0
