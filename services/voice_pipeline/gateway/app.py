"""The device-facing server: xiaozhi WebSocket, OTA, /healthz, /metrics on one port.

The app factory takes a `StageProvider`: an async context manager that yields the four stages.
All-in-one mode provides in-process engines, distributed mode provides clients of the stage
services; the gateway code is the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from starlette.websockets import WebSocketState

from voice_pipeline.common.audio import AudioError, OpusDecoder, resample
from voice_pipeline.common.errors import ProtocolError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import VAD_SAMPLE_RATE
from voice_pipeline.gateway import auth, ota, web
from voice_pipeline.gateway import protocol as proto
from voice_pipeline.gateway.conversation import Conversation, Stages
from voice_pipeline.gateway.settings import GatewaySettings
from voice_pipeline.llm.history import Conversation as History

log = logging.getLogger(__name__)

StageProvider = Callable[[Metrics], AbstractAsyncContextManager[Stages]]
HistoryFactory = Callable[[], History]


class _WebSocketOut:
    """Outbound side of one device connection (JSON text frames, framed Opus, close)."""

    def __init__(self, ws: WebSocket, binary_version: int) -> None:
        self.ws = ws
        self.binary_version = binary_version
        self.closed = False
        self._lock = asyncio.Lock()  # reply tasks and the receive loop both send

    async def send_json(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        async with self._lock:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.ws.send_text(json.dumps(message, ensure_ascii=False))

    async def send_audio(self, packet: bytes) -> None:
        if self.closed:
            return
        async with self._lock:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.ws.send_bytes(proto.encode_audio_frame(packet, self.binary_version))

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await self.ws.close(code, reason)


def create_gateway_app(
    settings: GatewaySettings,
    auth_settings: auth.AuthSettings,
    ota_settings: ota.OtaSettings,
    stage_provider: StageProvider,
    history_factory: HistoryFactory,
    metrics: Metrics | None = None,
    readiness: Callable[[], dict[str, bool]] | None = None,
) -> FastAPI:
    """`readiness` reports whether each dependency is reachable (distributed mode: the stages)."""
    metrics = metrics or Metrics()
    state: dict[str, Any] = {"stages": None, "sessions": 0}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with stage_provider(metrics) as stages:
            state["stages"] = stages
            log.info("gateway ready on %s:%d", settings.host, settings.port)
            yield
            state["stages"] = None

    app = FastAPI(title="voice-pipeline gateway", lifespan=lifespan)
    app.state.metrics = metrics

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "sessions": state["sessions"]}

    @app.get("/readyz")
    async def readyz() -> Response:
        ready = state["stages"] is not None
        body: dict[str, Any] = {"ready": ready}
        if readiness is not None and ready:
            body["dependencies"] = dependencies = readiness()
            ready = body["ready"] = all(dependencies.values())
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    async def ota_handler(request: Request) -> Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = {}
        ws_url = settings.public_url or _default_ws_url(request)
        reply = ota.build_ota_response(
            headers=dict(request.headers),
            body=body if isinstance(body, dict) else {},
            settings=ota_settings,
            auth_settings=auth_settings,
            websocket_url=ws_url,
            now=time.time(),
        )
        return JSONResponse(reply)

    app.add_api_route("/xiaozhi/ota/", ota_handler, methods=["GET", "POST"])
    app.add_api_route("/xiaozhi/ota", ota_handler, methods=["GET", "POST"], include_in_schema=False)

    async def websocket_handler(ws: WebSocket) -> None:
        identity = auth.extract_identity(dict(ws.headers), dict(ws.query_params))
        await ws.accept()
        decision = auth.authorize(identity, auth_settings, now=time.time())
        if not decision.ok:
            log.warning("device %s refused: %s", identity.device_id or "?", decision.reason)
            await ws.send_text(proto.AUTH_FAILED_TEXT)
            await ws.close(proto.CLOSE_AUTH_FAILED, decision.reason[:120])
            return
        if state["sessions"] >= settings.max_sessions or state["stages"] is None:
            await ws.send_text(json.dumps(proto.error("busy", "server is at capacity; retry later")))
            await ws.close(proto.CLOSE_TRY_AGAIN, "at capacity")
            return
        state["sessions"] += 1
        metrics.sessions.inc()
        try:
            await _serve_device(ws, identity, settings, state["stages"], metrics, history_factory)
        finally:
            state["sessions"] -= 1
            metrics.sessions.dec()

    app.add_api_websocket_route("/xiaozhi/v1/", websocket_handler)
    app.add_api_websocket_route("/xiaozhi/v1", websocket_handler)
    web.mount(app, metrics)  # the talk and status pages (gateway/web.py)
    return app


def _default_ws_url(request: Request) -> str:
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    scheme = "wss" if request.url.scheme == "https" else "ws"
    return f"{scheme}://{host}/xiaozhi/v1/"


async def _receive(ws: WebSocket, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return dict(await ws.receive())


async def _serve_device(
    ws: WebSocket,
    identity: auth.DeviceIdentity,
    settings: GatewaySettings,
    stages: Stages,
    metrics: Metrics,
    history_factory: HistoryFactory,
) -> None:
    out = _WebSocketOut(ws, identity.protocol_version)
    session_id = str(uuid.uuid4())
    tag = f"{identity.device_id or '?'}/{session_id[:8]}"
    warned: set[str] = set()

    async def complain(code: str, message: str) -> None:
        """Tell the device what was wrong; log each kind of problem once per session."""
        if code not in warned:
            warned.add(code)
            log.warning("device %s: %s: %s", tag, code, message)
        await out.send_json(proto.error(code, message, session_id))

    # --- hello ------------------------------------------------------------------------------------
    deadline = time.monotonic() + settings.hello_timeout_s
    hello: proto.Hello | None = None
    while hello is None:
        try:
            message = await _receive(ws, max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            await out.close(proto.CLOSE_HELLO_TIMEOUT, "no hello received")
            return
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await complain("hello_required", "send a hello message before audio")
            continue
        try:
            parsed = proto.parse_text(message.get("text") or "")
        except ProtocolError as exc:
            await complain("bad_message", str(exc))
            continue
        if isinstance(parsed, proto.Hello):
            if parsed.error:
                await complain("unsupported_audio", parsed.error)
                await out.close(proto.CLOSE_PROTOCOL_ERROR, "unsupported audio parameters")
                return
            hello = parsed
        else:
            await complain("hello_required", f"expected hello first, got '{getattr(parsed, 'type', '?')}'")

    uplink_rate = hello.audio_params.sample_rate
    decoder = OpusDecoder(uplink_rate, hello.audio_params.frame_duration)
    await out.send_json(proto.server_hello(session_id, settings.output_sample_rate, settings.frame_ms))

    last_activity = time.monotonic()

    def touch() -> None:
        nonlocal last_activity
        last_activity = time.monotonic()

    conversation = Conversation(session_id, out, stages, settings, metrics, history_factory(), touch)
    await conversation.open()
    log.info("device %s connected (protocol v%d)", tag, identity.protocol_version)
    try:
        while not out.closed:
            remaining = settings.idle_timeout_s - (time.monotonic() - last_activity)
            if remaining <= 0:
                await out.close(proto.CLOSE_IDLE_TIMEOUT, "idle timeout")
                break
            try:
                message = await _receive(ws, remaining)
            except TimeoutError:
                continue
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes")
            if data is not None:
                try:
                    packet = proto.decode_audio_frame(data, identity.protocol_version)
                    pcm = decoder.decode(packet)
                except (ProtocolError, AudioError) as exc:
                    await complain("bad_audio", str(exc))
                    continue
                if uplink_rate != VAD_SAMPLE_RATE:
                    pcm = resample(pcm, uplink_rate, VAD_SAMPLE_RATE)
                await conversation.audio(pcm)
                continue
            try:
                parsed = proto.parse_text(message.get("text") or "")
            except ProtocolError as exc:
                await complain("bad_message", str(exc))
                continue
            touch()
            await _dispatch(parsed, conversation, out, complain, session_id)
    except WebSocketDisconnect:
        pass
    finally:
        await conversation.close()
        if ws.client_state == WebSocketState.CONNECTED:
            await out.close(proto.CLOSE_GOING_AWAY, "session ended")
        log.info("device %s disconnected", tag)


async def _dispatch(
    message: proto.DeviceMessage,
    conversation: Conversation,
    out: _WebSocketOut,
    complain: Callable[[str, str], Any],
    session_id: str,
) -> None:
    if isinstance(message, proto.Listen):
        if message.state == "start":
            await conversation.listen_start(message.mode or conversation.mode)
        elif message.state == "stop":
            await conversation.listen_stop()
        elif message.state == "detect":
            await conversation.detect(message.text or "")
    elif isinstance(message, proto.Abort):
        await conversation.abort(message.reason or "")
    elif isinstance(message, proto.Ping):
        await out.send_json(proto.pong())
    elif isinstance(message, proto.Hello):
        await out.send_json(
            proto.server_hello(
                session_id, conversation.settings.output_sample_rate, conversation.settings.frame_ms
            )
        )
    elif isinstance(message, proto.UnknownMessage):
        await complain("unknown_type", f"unknown message type '{message.type}' ignored")
    # mcp / iot / goodbye: accepted and ignored (no device tools are called yet)
