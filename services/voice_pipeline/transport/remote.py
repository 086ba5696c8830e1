"""Clients of the stage services implementing the Protocols of `common.stages`.

The gateway's conversation code cannot tell these from the in-process stages. Each new session
(a VAD stream at `open`, an utterance, a reply, a sentence) goes to the least-loaded replica of
its pool. A VAD stream stays on its replica, except at a listen-turn boundary (`reset`) when that
replica is draining or gone: then it re-opens on another one. Requests that never reached an
answer because a connection dropped are retried once on another replica (`_retry_elsewhere`, the
one place that decides it); an `overloaded` answer is not retried (the caller is told at once,
which is the point of bounded queues). The replicas' load is kept by `StageConnection` alone.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

from voice_pipeline.common.audio import Int16Array
from voice_pipeline.common.errors import VoicePipelineError
from voice_pipeline.common.stages import (
    ChatMessage,
    Language,
    SpeechAudio,
    SpeechRequest,
    Transcript,
    VadEvent,
    asr_language_tag,
)
from voice_pipeline.transport import wire
from voice_pipeline.transport.client import ConnectionLost, RequestRefused, StageConnection
from voice_pipeline.transport.pool import ReplicaPool
from voice_pipeline.transport.wire import Frame, Kind

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _VadSession:
    connection: StageConnection
    fed: int = 0  # samples fed since the gateway opened the session
    offset: int = 0  # samples fed before the session (re-)opened on `connection`


async def _retry_elsewhere(
    pool: ReplicaPool,
    attempt: Callable[[StageConnection], Awaitable[T]],
    first: StageConnection | None = None,
) -> T:
    """`attempt` on `first` (default: the least-loaded ready replica); if that connection is lost
    before the answer, once more on another replica. Any other error, `overloaded` included, goes
    to the caller at once."""
    connection = first if first is not None else await pool.pick_ready()
    try:
        return await attempt(connection)
    except ConnectionLost:
        return await attempt(await pool.pick_ready(exclude=connection))


class RemoteVad:
    def __init__(self, pool: ReplicaPool) -> None:
        self.pool = pool
        self._sessions: dict[str, _VadSession] = {}

    async def open(self, session_id: str) -> None:
        connection = await self._open_on(session_id, await self.pool.pick_ready())
        self._sessions[session_id] = _VadSession(connection)

    async def _open_on(self, session_id: str, connection: StageConnection) -> StageConnection:
        async def attempt(target: StageConnection) -> StageConnection:
            await target.open_session(session_id)
            return target

        return await _retry_elsewhere(self.pool, attempt, connection)

    async def feed(self, session_id: str, pcm: Int16Array) -> list[VadEvent]:
        session = self._session(session_id)
        if not session.connection.connected:
            await self._move(session_id, session)

        async def attempt(target: StageConnection) -> Frame:
            if target is not session.connection:
                await self._move(session_id, session, target)  # speech state restarts there
            return await session.connection.request(Kind.VAD_FEED, session_id, wire.encode_pcm(pcm))

        answer = await _retry_elsewhere(self.pool, attempt, session.connection)
        session.fed += len(pcm)
        events = wire.decode_events(answer.payload)
        return [VadEvent(e.kind, e.sample + session.offset) for e in events]

    async def reset(self, session_id: str) -> None:
        session = self._session(session_id)
        if self.pool.should_move(session.connection):
            await self._move(session_id, session)  # a new listen turn: the moment to leave a draining replica
            return

        async def attempt(target: StageConnection) -> None:
            if target is session.connection:
                await target.request(Kind.VAD_RESET, session_id)
            else:
                await self._move(session_id, session, target)  # opened afresh: nothing to reset

        await _retry_elsewhere(self.pool, attempt, session.connection)

    async def close(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            await session.connection.close_session(session_id)

    async def _move(
        self, session_id: str, session: _VadSession, target: StageConnection | None = None
    ) -> None:
        old = session.connection
        await old.close_session(session_id)
        target = target if target is not None else await self.pool.pick_ready(exclude=old)
        session.connection = await self._open_on(session_id, target)
        session.offset = session.fed
        if session.connection is not old:
            log.info("VAD session %s moved %s -> %s", session_id[:8], old.address, session.connection.address)

    def _session(self, session_id: str) -> _VadSession:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise VoicePipelineError(f"VAD session {session_id} is not open") from None


class RemoteAsr:
    def __init__(self, pool: ReplicaPool) -> None:
        self.pool = pool

    async def transcribe(self, pcm: Int16Array, language: Language, fallback: str = "") -> Transcript:
        try:
            return await self._transcribe(asr_language_tag(language, fallback), pcm)
        except RequestRefused:
            if not fallback:
                raise
            # An ASR replica from before the device-language tag (mid rolling upgrade) refuses
            # `auto/zh`: ask as it understands, without the device's language.
            return await self._transcribe(language, pcm)

    async def _transcribe(self, tag: str, pcm: Int16Array) -> Transcript:
        payload = wire.encode_asr_request(tag, pcm)

        async def attempt(target: StageConnection) -> Frame:
            return await target.request(Kind.ASR_TRANSCRIBE, payload=payload)

        body = wire.decode_json((await _retry_elsewhere(self.pool, attempt)).payload)
        return Transcript(str(body["text"]), str(body["language"]), float(body["audio_seconds"]))


class RemoteLlm:
    def __init__(self, pool: ReplicaPool) -> None:
        self.pool = pool

    async def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        payload = wire.encode_json({"messages": [asdict(m) for m in messages]})
        async for frame in _stream(self.pool, Kind.LLM_CHAT, payload):
            yield wire.decode_text(frame.payload)


class RemoteTts:
    def __init__(self, pool: ReplicaPool) -> None:
        self.pool = pool

    async def synthesize(self, request: SpeechRequest) -> AsyncIterator[SpeechAudio]:
        payload = wire.encode_json(asdict(request))
        async for frame in _stream(self.pool, Kind.TTS_SYNTHESIZE, payload):
            yield wire.decode_audio(frame.payload)


async def _stream(pool: ReplicaPool, kind: Kind, payload: bytes) -> AsyncIterator[Frame]:
    """A stream from one replica; if that replica vanishes before the first frame, the same request
    goes to another. After the first frame the loss is raised: half a reply was already spoken."""

    async def first_frame(target: StageConnection) -> tuple[Frame | None, AsyncGenerator[Frame, None]]:
        frames = target.stream(kind, payload=payload)
        try:
            return await anext(frames), frames
        except StopAsyncIteration:
            return None, frames
        except BaseException:
            await frames.aclose()
            raise

    first, frames = await _retry_elsewhere(pool, first_frame)
    async with contextlib.aclosing(frames):
        if first is None:
            return
        yield first
        async for frame in frames:
            yield frame
