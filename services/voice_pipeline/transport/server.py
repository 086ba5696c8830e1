"""The stage side of the transport: `/v1/stream` serving this process's stage to gateways.

Each gateway keeps one WebSocket per replica and multiplexes all its sessions over it. Every
request runs as its own task, so one slow sentence never holds up another session's audio, and
all of them reach the stage's batcher together (that is where batching across sessions happens).
A bad frame is answered with an ERROR frame naming the problem; it never ends the connection, let
alone the process. When the connection ends, its requests are cancelled and its VAD streams closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from fastapi import WebSocket, WebSocketDisconnect

from voice_pipeline.common.errors import OverloadedError, VoicePipelineError
from voice_pipeline.common.opus import FRAME_DURATIONS, OPUS_RATES
from voice_pipeline.common.stages import (
    AsrStage,
    ChatMessage,
    LlmStage,
    ServedStage,
    SpeechRequest,
    TtsStage,
    VadStage,
    parse_asr_language_tag,
)
from voice_pipeline.transport import wire
from voice_pipeline.transport.wire import Frame, Kind

log = logging.getLogger(__name__)

_ROLES = ("system", "user", "assistant")
T = TypeVar("T")
_ids = itertools.count(1)


@dataclass
class Drain:
    """Shutdown state shared by /readyz and every connection."""

    draining: bool = False
    connections: set[StreamConnection] = field(default_factory=set)

    async def begin(self) -> None:
        self.draining = True
        for connection in list(self.connections):
            await connection.send(Frame(Kind.DRAIN))

    def idle(self) -> bool:
        return all(c.idle() for c in self.connections)


class BadRequest(VoicePipelineError):
    """A well-formed frame asking for something this replica cannot do."""


class StreamConnection:
    def __init__(self, ws: WebSocket, stage: str, served: ServedStage, max_inflight: int) -> None:
        self.ws = ws
        self.stage = stage
        self.served = served
        self.max_inflight = max_inflight
        self.id = next(_ids)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._vad_sessions: dict[str, asyncio.Lock] = {}
        self._send_lock = asyncio.Lock()
        self.closed = False

    def idle(self) -> bool:
        return not self._tasks and not self._vad_sessions

    async def send(self, frame: Frame) -> None:
        if self.closed:
            return
        async with self._send_lock:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.ws.send_bytes(wire.encode(frame))

    async def send_error(self, request: int, code: str, message: str, queue_size: int = 0) -> None:
        await self.send(
            Frame(Kind.ERROR, request, payload=wire.error_payload(code, message, self.stage, queue_size))
        )

    async def run(self, draining: bool) -> None:
        await self.send(
            Frame(Kind.HELLO, payload=wire.encode_json({"stage": self.stage, "draining": draining}))
        )
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is None:
                    await self.send_error(
                        0, wire.ERROR_BAD_REQUEST, "text message on the stage stream (frames are binary)"
                    )
                    continue
                await self._accept(data)
        except WebSocketDisconnect:
            pass
        finally:
            self.closed = True
            await self._cleanup()

    async def _accept(self, data: bytes) -> None:
        try:
            frame = wire.decode(data)
        except wire.WireError as exc:
            await self.send_error(wire.peek_request(data), wire.ERROR_BAD_REQUEST, str(exc))
            return
        if frame.kind == Kind.CANCEL:
            task = self._tasks.get(frame.request)
            if task is not None:
                task.cancel()
            return
        if frame.kind not in wire.REQUEST_KINDS:
            await self.send_error(
                frame.request, wire.ERROR_BAD_REQUEST, f"{frame.kind.name} is not a request"
            )
            return
        if frame.request in self._tasks:
            await self.send_error(
                frame.request, wire.ERROR_BAD_REQUEST, f"request id {frame.request} is in use"
            )
            return
        if len(self._tasks) >= self.max_inflight:
            await self.send_error(
                frame.request,
                wire.ERROR_OVERLOADED,
                f"{self.max_inflight} requests in flight on this connection",
                self.max_inflight,
            )
            return
        task = asyncio.get_running_loop().create_task(self._serve(frame))
        self._tasks[frame.request] = task
        task.add_done_callback(lambda _: self._tasks.pop(frame.request, None))

    async def _serve(self, frame: Frame) -> None:
        try:
            await self._dispatch(frame)
        except asyncio.CancelledError:
            return  # the gateway gave up on it: nobody to answer
        except OverloadedError as exc:
            await self.send_error(frame.request, wire.ERROR_OVERLOADED, str(exc), exc.queue_size)
        except (wire.WireError, BadRequest) as exc:
            await self.send_error(frame.request, wire.ERROR_BAD_REQUEST, str(exc))
        except VoicePipelineError as exc:
            await self.send_error(frame.request, wire.ERROR_FAILED, str(exc))
        except Exception as exc:  # a bug in one request must not take the connection down
            log.exception("%s: request %s failed", self.stage, frame.kind.name)
            await self.send_error(frame.request, wire.ERROR_FAILED, f"internal error: {type(exc).__name__}")

    async def _dispatch(self, frame: Frame) -> None:
        kind = frame.kind
        wanted = wire.REQUEST_STAGE[kind]
        if wanted != self.stage:
            raise BadRequest(f"this replica serves {self.stage}, not {wanted}")
        if wanted == "vad":
            await self._vad(frame, cast(VadStage, self.served))
        elif kind == Kind.ASR_TRANSCRIBE:
            asr = cast(AsrStage, self.served)
            tag, pcm = wire.decode_asr_request(frame.payload)
            try:
                language, fallback = parse_asr_language_tag(tag)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            transcript = await asr.transcribe(pcm, language, fallback)
            body = {
                "text": transcript.text,
                "language": transcript.language,
                "audio_seconds": transcript.audio_seconds,
            }
            await self.send(Frame(Kind.TRANSCRIPT, frame.request, payload=wire.encode_json(body)))
        elif kind == Kind.LLM_CHAT:
            llm = cast(LlmStage, self.served)
            messages = _chat_messages(wire.decode_json(frame.payload))
            async with _closing(llm.stream_chat(messages)) as deltas:
                async for delta in deltas:
                    await self.send(Frame(Kind.TEXT, frame.request, payload=delta.encode("utf-8")))
            await self.send(Frame(Kind.END, frame.request))
        elif kind == Kind.TTS_SYNTHESIZE:
            tts = cast(TtsStage, self.served)
            request = _speech_request(wire.decode_json(frame.payload))
            async with _closing(tts.synthesize(request)) as chunks:
                async for chunk in chunks:
                    await self.send(Frame(Kind.AUDIO, frame.request, payload=wire.encode_audio(chunk)))
            await self.send(Frame(Kind.END, frame.request))

    async def _vad(self, frame: Frame, vad: VadStage) -> None:
        if not frame.session:
            raise BadRequest(f"{frame.kind.name} needs a session id")
        key = f"{self.id}/{frame.session}"  # gateways never share sessions
        if frame.kind == Kind.VAD_OPEN:
            if frame.session not in self._vad_sessions and len(self._vad_sessions) >= self.max_inflight:
                raise OverloadedError(self.stage, self.max_inflight)  # sessions are bounded too
            await vad.open(key)
            self._vad_sessions.setdefault(frame.session, asyncio.Lock())
            await self.send(Frame(Kind.OK, frame.request))
            return
        lock = self._vad_sessions.get(frame.session)
        if lock is None:
            raise BadRequest(f"VAD session {frame.session} is not open on this connection")
        async with lock:  # one session's audio is processed in order
            if frame.kind == Kind.VAD_FEED:
                events = await vad.feed(key, wire.decode_pcm(frame.payload))
                await self.send(Frame(Kind.VAD_EVENTS, frame.request, payload=wire.encode_events(events)))
            elif frame.kind == Kind.VAD_RESET:
                await vad.reset(key)
                await self.send(Frame(Kind.OK, frame.request))
            else:
                await vad.close(key)
                self._vad_sessions.pop(frame.session, None)
                await self.send(Frame(Kind.OK, frame.request))

    async def _cleanup(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.stage == "vad":
            vad = cast(VadStage, self.served)
            for session in list(self._vad_sessions):
                with contextlib.suppress(Exception):
                    await vad.close(f"{self.id}/{session}")
        self._vad_sessions.clear()


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close the stage's stream (an async generator) when the request ends or is cancelled: its
    `finally` blocks release the stage's slot at once, not whenever the generator is collected."""
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _chat_messages(body: dict[str, Any]) -> list[ChatMessage]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("LLM request needs a non-empty `messages` list")
    messages = []
    for item in raw:
        if (
            not isinstance(item, dict)
            or item.get("role") not in _ROLES
            or not isinstance(item.get("content"), str)
        ):
            raise BadRequest("each message needs a role (system, user, assistant) and string content")
        messages.append(ChatMessage(item["role"], item["content"]))
    return messages


def _speech_request(body: dict[str, Any]) -> SpeechRequest:
    try:
        request = SpeechRequest(
            text=str(body["text"]),
            language=str(body.get("language", "")),
            sample_rate=int(body["sample_rate"]),
            frame_ms=int(body.get("frame_ms", 60)),
            voice=str(body.get("voice", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"TTS request needs text and sample_rate: {exc}") from None
    if request.sample_rate not in OPUS_RATES or request.frame_ms not in FRAME_DURATIONS:
        raise BadRequest(f"unsupported Opus output {request.sample_rate} Hz / {request.frame_ms} ms")
    return request
