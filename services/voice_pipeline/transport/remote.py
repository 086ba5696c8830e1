"""Clients of the stage services implementing the Protocols of `common.stages`.

The gateway's conversation code cannot tell these from the in-process stages. Each new session
(a VAD stream at `open`, an utterance, a reply, a sentence) goes to the least-loaded replica of
its pool. A VAD stream stays on its replica, except at a listen-turn boundary (`reset`) when that
replica is draining or gone: then it re-opens on another one. Requests that never reached an
answer because a connection dropped are retried once on another replica; an `overloaded` answer
is not retried (the caller is told at once, which is the point of bounded queues).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

from voice_pipeline.common.audio import Int16Array
from voice_pipeline.common.errors import VoicePipelineError
from voice_pipeline.common.stages import (
    ChatMessage,
    Language,
    SpeechAudio,
    SpeechRequest,
    Transcript,
    VadEvent,
)
from voice_pipeline.transport import wire
from voice_pipeline.transport.client import ConnectionLost, StageConnection
from voice_pipeline.transport.pool import ReplicaPool
from voice_pipeline.transport.wire import Frame, Kind

log = logging.getLogger(__name__)


@dataclass
class _VadSession:
    connection: StageConnection
    fed: int = 0  # samples fed since the gateway opened the session
    offset: int = 0  # samples fed before the session (re-)opened on `connection`


class RemoteVad:
    def __init__(self, pool: ReplicaPool) -> None:
        self.pool = pool
        self._sessions: dict[str, _VadSession] = {}

    async def open(self, session_id: str) -> None:
        connection = await self._open_on(session_id, await self.pool.pick_ready())
        self._sessions[session_id] = _VadSession(connection)

    async def _open_on(self, session_id: str, connection: StageConnection) -> StageConnection:
        try:
            await connection.request(Kind.VAD_OPEN, session_id)
        except ConnectionLost:
            connection = await self.pool.pick_ready(exclude=connection)
            await connection.request(Kind.VAD_OPEN, session_id)
        connection.sessions += 1
        return connection

    async def feed(self, session_id: str, pcm: Int16Array) -> list[VadEvent]:
        session = self._session(session_id)
        if not session.connection.connected:
            await self._move(session_id, session)
        try:
            answer = await session.connection.request(Kind.VAD_FEED, session_id, wire.encode_pcm(pcm))
        except ConnectionLost:
            await self._move(session_id, session)  # speech state restarts on the new replica
            answer = await session.connection.request(Kind.VAD_FEED, session_id, wire.encode_pcm(pcm))
        session.fed += len(pcm)
        events = wire.decode_events(answer.payload)
        return [VadEvent(e.kind, e.sample + session.offset) for e in events]

    async def reset(self, session_id: str) -> None:
        session = self._session(session_id)
        if self.pool.should_move(session.connection):
            await self._move(session_id, session)  # a new listen turn: the moment to leave a draining replica
            return
        try:
            await session.connection.request(Kind.VAD_RESET, session_id)
        except ConnectionLost:
            await self._move(session_id, session)

    async def close(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        session.connection.sessions -= 1
        if session.connection.connected:
            with contextlib.suppress(VoicePipelineError):
                await session.connection.request(Kind.VAD_CLOSE, session_id)

    async def _move(self, session_id: str, session: _VadSession) -> None:
        old = session.connection
        old.sessions -= 1
        if old.connected:
            with contextlib.suppress(VoicePipelineError):
                await old.request(Kind.VAD_CLOSE, session_id)
        session.connection = await self._open_on(session_id, await self.pool.pick_ready(exclude=old))
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

    async def transcribe(self, pcm: Int16Array, language: Language) -> Transcript:
        payload = wire.encode_asr_request(language, pcm)
        connection = await self.pool.pick_ready()
        try:
            answer = await connection.request(Kind.ASR_TRANSCRIBE, payload=payload)
        except ConnectionLost:
            answer = await (await self.pool.pick_ready(exclude=connection)).request(
                Kind.ASR_TRANSCRIBE, payload=payload
            )
        body = wire.decode_json(answer.payload)
        return Transcript(str(body["text"]), str(body["language"]), float(body["audio_seconds"]))


class RemoteLlm:
    def __init__(self, pool: ReplicaPool) -> None:
        self.pool = pool

    async def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        payload = wire.encode_json({"messages": [asdict(m) for m in messages]})
        async for frame in _stream_with_retry(self.pool, Kind.LLM_CHAT, payload):
            yield wire.decode_text(frame.payload)


class RemoteTts:
    def __init__(self, pool: ReplicaPool) -> None:
        self.pool = pool

    async def synthesize(self, request: SpeechRequest) -> AsyncIterator[SpeechAudio]:
        payload = wire.encode_json(asdict(request))
        async for frame in _stream_with_retry(self.pool, Kind.TTS_SYNTHESIZE, payload):
            yield wire.decode_audio(frame.payload)


async def _stream_with_retry(pool: ReplicaPool, kind: Kind, payload: bytes) -> AsyncIterator[Frame]:
    """A stream from one replica; if that replica vanishes before the first frame, the same request
    goes to another. After the first frame the loss is raised: half a reply was already spoken."""
    connection = await pool.pick_ready()
    started = False
    try:
        async with contextlib.aclosing(connection.stream(kind, payload=payload)) as frames:
            async for frame in frames:
                started = True
                yield frame
        return
    except ConnectionLost:
        if started:
            raise
    retry = await pool.pick_ready(exclude=connection)
    async with contextlib.aclosing(retry.stream(kind, payload=payload)) as frames:
        async for frame in frames:
            yield frame
