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
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect
from starlette.websockets import WebSocketState

from voice_pipeline.common.activity import SessionActivity
from voice_pipeline.common.audio import AudioError, OpusDecoder, resample
from voice_pipeline.common.errors import ProtocolError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import VAD_SAMPLE_RATE
from voice_pipeline.gateway import auth, ota, web
from voice_pipeline.gateway import protocol as proto
from voice_pipeline.gateway.activation import Activations, load_device_secrets
from voice_pipeline.gateway.admission import UplinkAdmission
from voice_pipeline.gateway.conversation import Conversation, Stages
from voice_pipeline.gateway.settings import GatewaySettings
from voice_pipeline.turn.history import ChatHistory

log = logging.getLogger(__name__)

StageProvider = Callable[[Metrics], AbstractAsyncContextManager[Stages]]
HistoryFactory = Callable[[], ChatHistory]


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
    activity: SessionActivity | None = None,
    clock: Callable[[], float] = time.monotonic,
    activations_dir: Path | None = None,
) -> FastAPI:
    """`readiness` reports whether each dependency is reachable (distributed mode: the stages;
    several all-in-one workers: all of them); `activity` counts open sessions for background work
    that gives way to devices (the preload); `clock` paces the uplink budgets (a test passes a
    frozen one); `activations_dir` shares activated devices between worker processes."""
    metrics = metrics or Metrics()
    activity = activity or SessionActivity()
    state: dict[str, Any] = {"stages": None}
    slots = _Slots(settings, metrics, activity)
    activations = Activations(
        auth_settings, load_device_secrets(auth_settings.device_secrets_file), activations_dir
    )

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
        return {"status": "ok", "sessions": slots.sessions}

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

    async def read_json(request: Request) -> Any:
        """The body as JSON ({} if it is not JSON), or the Response refusing it."""
        try:
            raw = await _read_body(request, ota_settings.max_body_bytes, ota_settings.body_timeout_s)
        except _BodyTooLarge:
            message = f"request body over {ota_settings.max_body_bytes} bytes"
            return JSONResponse({"success": False, "message": message}, status_code=413)
        except TimeoutError:
            message = f"request body not received within {ota_settings.body_timeout_s:g} s"
            return JSONResponse({"success": False, "message": message}, status_code=408)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it; nothing worth a log line
        try:
            return json.loads(raw) if raw else {}
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser
            return {}

    async def activate_handler(request: Request) -> Response:
        body = await read_json(request)
        if isinstance(body, Response):
            return body
        h = request.headers
        device_id = (h.get("device-id") or "").strip().lower()
        status, message = activations.verify(
            device_id, (h.get("client-id") or "").strip(), h.get("serial-number") or "", body, time.time()
        )
        if status != 200:
            log.warning("activation of device %s refused: %s", device_id or "?", message)
        return JSONResponse({"success": status == 200, "message": message}, status_code=status)

    async def ota_handler(request: Request) -> Response:
        body = await read_json(request)
        if isinstance(body, Response):
            return body
        ws_url = settings.public_url or _default_ws_url(request)
        reply = ota.build_ota_response(
            headers=dict(request.headers),
            body=body if isinstance(body, dict) else {},
            settings=ota_settings,
            auth_settings=auth_settings,
            websocket_url=ws_url,
            now=time.time(),
            activations=activations,
        )
        return JSONResponse(reply)

    app.add_api_route("/xiaozhi/ota/activate", activate_handler, methods=["POST"])
    app.add_api_route("/xiaozhi/ota/activate/", activate_handler, methods=["POST"], include_in_schema=False)
    app.add_api_route("/xiaozhi/ota/", ota_handler, methods=["GET", "POST"])
    app.add_api_route("/xiaozhi/ota", ota_handler, methods=["GET", "POST"], include_in_schema=False)

    async def websocket_handler(ws: WebSocket) -> None:
        identity = auth.extract_identity(dict(ws.headers), dict(ws.query_params))
        address = ws.client.host if ws.client is not None else "?"
        await ws.accept()
        decision = auth.authorize(identity, auth_settings, now=time.time())
        if not decision.ok:
            log.warning("device %s refused: %s", identity.device_id or "?", decision.reason)
            await ws.send_text(proto.AUTH_FAILED_TEXT)
            await ws.close(proto.CLOSE_AUTH_FAILED, decision.reason[:120])
            return
        ticket = slots.connect(address) if state["stages"] is not None else _AT_CAPACITY
        if not isinstance(ticket, _Ticket):
            code, message = ticket
            await ws.send_text(json.dumps(proto.error(code, message)))
            await ws.close(proto.CLOSE_TRY_AGAIN, message[:120])
            return
        try:
            await _serve_device(
                ws, identity, settings, state["stages"], metrics, history_factory, slots, ticket, clock
            )
        finally:
            slots.release(ticket)

    app.add_api_websocket_route("/xiaozhi/v1/", websocket_handler)
    app.add_api_websocket_route("/xiaozhi/v1", websocket_handler)
    web.mount(app, metrics, settings.pipeline)  # the talk and status pages (gateway/web.py)
    return app


_AT_CAPACITY = ("busy", "server is at capacity; retry later")


@dataclass
class _Ticket:
    address: str
    state: str = "pending"  # -> "session" after hello -> "gone"


class _Slots:
    """Who may hold what. A connection is *pending* until its hello and counts against
    `max_pending_hello` (and the short hello timeout) only; it takes one of `max_sessions` once it
    has said hello, so silent sockets cannot hold the session cap. Every connection, pending or
    not, counts against its address's `max_connections_per_ip`."""

    def __init__(self, settings: GatewaySettings, metrics: Metrics, activity: SessionActivity) -> None:
        self.settings = settings
        self.metrics = metrics
        self.activity = activity
        self.pending = 0
        self.sessions = 0
        self.per_address: dict[str, int] = {}

    def connect(self, address: str) -> _Ticket | tuple[str, str]:
        """A pending ticket for a new connection, or the (error code, message) refusing it."""
        limit = self.settings.max_connections_per_ip
        if limit and self.per_address.get(address, 0) >= limit:
            return "too_many_connections", f"over {limit} connections from one address; retry later"
        if self.pending >= self.settings.max_pending_hello:
            return _AT_CAPACITY
        self.per_address[address] = self.per_address.get(address, 0) + 1
        self.pending += 1
        return _Ticket(address)

    def start_session(self, ticket: _Ticket) -> bool:
        """The pending connection said hello: take a session slot if one is free."""
        if self.sessions >= self.settings.max_sessions:
            return False
        self.pending -= 1
        self.sessions += 1
        ticket.state = "session"
        self.metrics.sessions.inc()
        self.activity.started()
        return True

    def release(self, ticket: _Ticket) -> None:
        if ticket.state == "pending":
            self.pending -= 1
        elif ticket.state == "session":
            self.sessions -= 1
            self.metrics.sessions.dec()
            self.activity.ended()
        else:
            return
        ticket.state = "gone"
        left = self.per_address.get(ticket.address, 1) - 1
        if left > 0:
            self.per_address[ticket.address] = left
        else:
            self.per_address.pop(ticket.address, None)


def run_gateway_app(app: FastAPI, settings: GatewaySettings, sockets: list[Any] | None = None) -> None:
    """Serve a device-facing app (distributed gateway or all-in-one) until SIGTERM/SIGINT: on
    settings.host and port, or on `sockets` already bound (all-in-one workers). A server that
    never started (port taken, lifespan failed) exits with uvicorn's status 3, as `uvicorn.run`."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=False,  # Opus does not compress; deflate only costs CPU
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    server.run(sockets=sockets)
    if not server.started:
        sys.exit(STARTUP_FAILURE)


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refused past `limit` bytes (before reading it when Content-Length says
    so) and past `timeout_s` seconds: a body may not hold memory or a connection for free."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    parts: list[bytes] = []
    size = 0
    async with asyncio.timeout(timeout_s):
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge
            parts.append(chunk)
    return b"".join(parts)


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
    slots: _Slots,
    ticket: _Ticket,
    clock: Callable[[], float],
) -> None:
    out = _WebSocketOut(ws, identity.protocol_version)
    session_id = str(uuid.uuid4())
    tag = f"{identity.device_id or '?'}/{session_id[:8]}"
    warned: set[str] = set()
    admission = UplinkAdmission(
        settings.uplink_realtime_factor,
        settings.uplink_burst_s,
        settings.max_messages_per_s,
        settings.message_burst,
    )

    async def complain(code: str, message: str) -> None:
        """Tell the device what was wrong; log each kind of problem once per session."""
        if code not in warned:
            warned.add(code)
            log.warning("device %s: %s: %s", tag, code, message)
        await out.send_json(proto.error(code, message, session_id))

    async def admitted() -> bool:
        """The per-connection message rate: over it, drop (told once per burst); far over, close."""
        if admission.message(clock()):
            return True
        if admission.rate_limited.problem():
            await complain("rate_limited", f"over {settings.max_messages_per_s:g} messages/s; dropped")
        if admission.should_close():
            await out.close(proto.CLOSE_POLICY, "message rate far over the limit")
        return False

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
        if not await admitted():
            if out.closed:
                return
            continue
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

    if not slots.start_session(ticket):
        await out.send_json(proto.error(*_AT_CAPACITY))
        await out.close(proto.CLOSE_TRY_AGAIN, "at capacity")
        return
    uplink_rate = hello.audio_params.sample_rate
    frame_s = hello.audio_params.frame_duration / 1000
    decoder = OpusDecoder(uplink_rate, hello.audio_params.frame_duration)
    await out.send_json(proto.server_hello(session_id, settings.output_sample_rate, settings.frame_ms))

    last_activity = time.monotonic()

    def touch() -> None:
        nonlocal last_activity
        last_activity = time.monotonic()

    conversation = Conversation(
        session_id, out, stages, settings, metrics, history_factory(), touch, identity.language
    )
    await conversation.open()
    log.info(
        "device %s connected (protocol v%d, language %s)",
        tag,
        identity.protocol_version,
        identity.language or "not given",
    )
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
            if not await admitted():
                continue
            data = message.get("bytes")
            if data is not None:
                # Charged before decoding: audio faster than real time costs no decoding or VAD.
                if not admission.audio_frame(frame_s, clock()):
                    if admission.too_fast.problem():
                        await complain(
                            "audio_too_fast",
                            f"audio arrives faster than {settings.uplink_realtime_factor:g}x real time; "
                            "dropped",
                        )
                    continue
                try:
                    packet = proto.decode_audio_frame(data, identity.protocol_version)
                    pcm = decoder.decode(packet)
                except (ProtocolError, AudioError) as exc:
                    if admission.bad_audio.problem():
                        await complain("bad_audio", str(exc))
                    continue
                admission.bad_audio.ok()
                extra = len(pcm) / uplink_rate - frame_s
                if extra > 0:  # a packet longer than the announced frame pays the difference
                    admission.audio.charge(extra, clock())
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
