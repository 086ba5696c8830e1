"""Local servers that speak the cloud providers' real wire protocols, for the client tests.

Each checks what the real service checks (auth header or URL signature, request shape) and answers
the way the real one does (SSE event sequence, chunked raw PCM, JSON frames with base64 audio,
multipart upload -> JSON). `mode` switches a server into the failure cases the tests need.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import itertools
import json
import logging
import socket
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

SECRET = "sk-test-5ecret-never-logged"
IFLYTEK_KEY = "iflytek-api-key-never-logged"
IFLYTEK_SECRET = "iflytek-api-secret-never-logged"
IFLYTEK_APP = "app-1234"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tone(seconds: float, rate: int, freq: float = 220.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return bytes((np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes())


@dataclass
class Control:
    """What a test server does next and what it saw."""

    mode: str = "ok"
    requests: list[dict[str, Any]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Run `app` with uvicorn on a free loopback port in this event loop; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


# --- Anthropic Messages (SSE) -----------------------------------------------------------------


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def anthropic_app(control: Control) -> Starlette:
    async def messages(request: Request) -> Response:
        if request.headers.get("x-api-key") != SECRET:
            return JSONResponse(
                {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
                status_code=401,
            )
        if not request.headers.get("anthropic-version"):
            return JSONResponse(
                {"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version"}},
                status_code=400,
            )
        body = await request.json()
        control.requests.append(body)
        turns = body.get("messages", [])
        roles = [t["role"] for t in turns]
        valid = (
            body.get("stream") is True
            and isinstance(body.get("max_tokens"), int)
            and roles
            and roles[0] == "user"
            and all(a != b for a, b in itertools.pairwise(roles))
            and all(r in ("user", "assistant") for r in roles)
        )
        if not valid:
            return JSONResponse(
                {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": f"bad turns {roles}"},
                },
                status_code=400,
            )
        if control.mode == "overloaded":
            return JSONResponse(
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                status_code=529,
            )
        if control.mode == "hang":
            await asyncio.sleep(30)

        async def events() -> AsyncIterator[bytes]:
            msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                   "content": [], "stop_reason": None, "usage": {"input_tokens": 5, "output_tokens": 1}}  # fmt: skip
            yield _sse("message_start", {"type": "message_start", "message": msg})
            yield _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}})  # fmt: skip
            yield _sse("ping", {"type": "ping"})
            for i, piece in enumerate(["Hello", " from", " Claude."]):
                if control.mode == "error_mid" and i == 1:
                    yield _sse("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                    "message": "Overloaded"}})  # fmt: skip
                    return
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": piece}})  # fmt: skip
                await asyncio.sleep(0)
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
            yield _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                         "usage": {"output_tokens": 3}})  # fmt: skip
            yield _sse("message_stop", {"type": "message_stop"})

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


# --- Azure TTS REST -----------------------------------------------------------------------------

SSML_NS = "{http://www.w3.org/2001/10/synthesis}"


def azure_app(control: Control) -> Starlette:
    async def synthesize(request: Request) -> Response:
        if request.headers.get("ocp-apim-subscription-key") != SECRET:
            return Response(status_code=401)  # Azure answers 401 with an empty body
        if request.headers.get("x-microsoft-outputformat") != "raw-24khz-16bit-mono-pcm":
            return Response("unsupported output format", status_code=400)
        if not request.headers.get("content-type", "").startswith("application/ssml+xml"):
            return Response("expected SSML", status_code=415)
        try:
            root = ElementTree.fromstring(await request.body())
        except ElementTree.ParseError:
            return Response("invalid SSML", status_code=400)
        voice = root.find(f"{SSML_NS}voice")
        if root.tag != f"{SSML_NS}speak" or voice is None or not voice.get("name"):
            return Response("SSML needs <speak><voice name=...>", status_code=400)
        text = "".join(voice.itertext())
        control.requests.append({"voice": voice.get("name"), "text": text, "lang": root.get(
            "{http://www.w3.org/XML/1998/namespace}lang")})  # fmt: skip
        if control.mode == "throttled":
            return Response("Too many requests", status_code=429)
        audio = tone(0.05 * max(1, len(text)), 24000)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(audio), 4097):  # odd sizes: samples split across chunks
                yield audio[i : i + 4097]
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="audio/x-wav-raw")

    return Starlette(routes=[Route("/cognitiveservices/v1", synthesize, methods=["POST"])])


# --- OpenAI /v1/audio/speech and /v1/audio/transcriptions -------------------------------------


def openai_audio_app(control: Control) -> Starlette:
    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {SECRET}"

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status)

    async def speech(request: Request) -> Response:
        if not authorized(request):
            return error(401, "Incorrect API key provided")
        body = await request.json()
        control.requests.append(body)
        if not {"model", "input", "voice"} <= body.keys() or body.get("response_format") != "pcm":
            return error(400, f"bad request {sorted(body)}")
        if control.mode == "unavailable":
            return error(503, "The server is overloaded")
        audio = tone(0.04 * max(1, len(body["input"])), 24000)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(audio), 1001):
                yield audio[i : i + 1001]
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="audio/pcm")

    async def transcriptions(request: Request) -> Response:
        if not authorized(request):
            return error(401, "Incorrect API key provided")
        if control.mode == "unavailable":
            return error(503, "The server is overloaded")
        kind = request.headers.get("content-type", "")
        if not kind.startswith("multipart/form-data"):
            return error(400, "expected multipart/form-data")
        raw = await request.body()
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {kind}\r\n\r\n".encode() + raw)
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True))
        if "file" not in fields or "model" not in fields:
            return error(400, f"missing fields: {sorted(fields)}")
        filename, data = fields["file"]
        try:
            with wave.open(io.BytesIO(data), "rb") as w:
                rate, channels, width, frames = (
                    w.getframerate(),
                    w.getnchannels(),
                    w.getsampwidth(),
                    w.getnframes(),
                )
        except (wave.Error, EOFError):
            return error(400, "file is not a WAV")
        language = fields.get("language", (None, b""))[1].decode()
        control.requests.append({"filename": filename, "model": fields["model"][1].decode(), "rate": rate,
                                 "channels": channels, "width": width, "language": language})  # fmt: skip
        seconds = frames / rate
        text = "你好，世界" if language == "zh" else f"heard {seconds:.1f} seconds"
        return JSONResponse({"text": f"  {text}  "})

    return Starlette(
        routes=[
            Route("/v1/audio/speech", speech, methods=["POST"]),
            Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        ]
    )


# --- iFlytek TTS WebSocket ----------------------------------------------------------------------


def verify_iflytek(path_qs: str, host_header: str, max_skew_s: float = 300) -> str | None:
    """None when the signed URL is valid, else the reason (as iFlytek checks it)."""
    import datetime

    parts = urlsplit(path_qs)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if not {"authorization", "date", "host"} <= query.keys():
        return "missing authorization/date/host"
    if query["host"] != host_header:
        return "host mismatch"
    try:
        sent = parsedate_to_datetime(query["date"])
    except (TypeError, ValueError):
        return "bad date"
    if abs((datetime.datetime.now(datetime.UTC) - sent).total_seconds()) > max_skew_s:
        return "date skew"
    try:
        auth = base64.b64decode(query["authorization"]).decode()
    except ValueError:
        return "authorization not base64"
    fields = dict(item.strip().split("=", 1) for item in auth.split(","))
    fields = {k: v.strip('"') for k, v in fields.items()}
    if fields.get("api_key") != IFLYTEK_KEY or fields.get("algorithm") != "hmac-sha256":
        return "unknown api_key"
    if fields.get("headers") != "host date request-line":
        return "bad headers"
    origin = f"host: {query['host']}\ndate: {query['date']}\nGET {parts.path} HTTP/1.1"
    expected = base64.b64encode(hmac.new(IFLYTEK_SECRET.encode(), origin.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected.decode(), fields.get("signature", "")):
        return "signature mismatch"
    return None


@contextlib.asynccontextmanager
async def iflytek_server(control: Control) -> AsyncIterator[str]:
    """wss://…/v2/tts as ws:// on loopback; yields the URL (without the signed query)."""
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.http11 import Request as WsRequest
    from websockets.http11 import Response as WsResponse

    def check(connection: ServerConnection, request: WsRequest) -> WsResponse | None:
        problem = verify_iflytek(request.path, request.headers.get("Host", ""))
        if problem:
            control.requests.append({"rejected": problem})
            return connection.respond(401, f"HMAC signature cannot be verified: {problem}\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        frame = json.loads(await ws.recv())
        text = base64.b64decode(frame["data"]["text"]).decode()
        control.requests.append(
            {"app_id": frame["common"]["app_id"], "business": frame["business"], "text": text}
        )
        if frame["common"]["app_id"] != IFLYTEK_APP:
            await ws.send(json.dumps({"code": 10313, "message": "invalid appid", "sid": "tts1"}))
            return
        if control.mode == "licence":
            await ws.send(json.dumps({"code": 11200, "message": "licc fail", "sid": "tts1"}))
            return
        audio = tone(0.05 * max(1, len(text)), 16000)
        step = 3200
        pieces = [audio[i : i + step] for i in range(0, len(audio), step)]
        for i, piece in enumerate(pieces):
            if control.mode == "drop" and i == 1:
                await ws.close()
                return
            last = i == len(pieces) - 1
            await ws.send(json.dumps({"code": 0, "message": "success", "sid": "tts1", "data": {
                "audio": base64.b64encode(piece).decode(), "status": 2 if last else 1, "ced": str(i)}}))  # fmt: skip

    port = free_port()
    # The server's own DEBUG log shows the request line; the tests check the CLIENT's logs, so
    # keep this stand-in provider's logger quiet.
    quiet = logging.getLogger("tests.iflytek_server")
    quiet.setLevel(logging.WARNING)
    async with serve(handler, "127.0.0.1", port, process_request=check, logger=quiet):
        yield f"ws://127.0.0.1:{port}/v2/tts"


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """Accepts connections and never answers: the first-token-timeout / hung-provider case."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def refused_url() -> str:
    """A loopback URL nothing listens on: connection refused."""
    return f"http://127.0.0.1:{free_port()}"
