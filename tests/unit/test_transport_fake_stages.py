"""The transport end to end with fake stages, in this process: the stage host's /v1/stream under
uvicorn on a free loopback port, the gateway's pools and remote stage clients. No models: a test
takes milliseconds, and the real-model runs stay in tests/integration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import numpy as np
import pytest
import uvicorn

from voice_pipeline.common.errors import OverloadedError, ProviderUnavailableError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import ChatMessage, Language, ServedStage, SpeechRequest, Transcript
from voice_pipeline.stagehost.app import create_stage_app
from voice_pipeline.stagehost.settings import ServiceSettings
from voice_pipeline.transport import remote, wire
from voice_pipeline.transport.client import ConnectionLost, RequestRefused, StageConnection
from voice_pipeline.transport.pool import ReplicaPool
from voice_pipeline.transport.remote import RemoteAsr, RemoteLlm, RemoteTts, RemoteVad
from voice_pipeline.transport.wire import Kind

from .test_conversation import FakeAsr, FakeLlm, FakeTts, FakeVad


class Replica:
    """One stage service (the real stage host app) serving `served` on 127.0.0.1:<free port>."""

    def __init__(self, stage: str, served: ServedStage) -> None:
        @asynccontextmanager
        async def build(_: Metrics) -> AsyncIterator[ServedStage]:
            yield served

        app = create_stage_app(stage, ServiceSettings(), build, Metrics(serves_devices=False))
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", ws_per_message_deflate=False
        )
        self.server = uvicorn.Server(config)
        self.address = ""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.server.serve())
        for _ in range(500):  # bounded: a server that never starts fails the test, not hangs it
            if self.server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        assert self.server.started, "stage server did not start"
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task


@asynccontextmanager
async def replicas(stage: str, *served: ServedStage) -> AsyncIterator[tuple[ReplicaPool, list[Replica]]]:
    """Replicas of one stage and the gateway's pool over them (resolved to their addresses)."""
    started = [Replica(stage, s) for s in served]
    async with AsyncExitStack() as stack:
        for replica in started:
            await replica.start()
            stack.push_async_callback(replica.stop)

        async def resolver(host: str, port: int) -> list[str]:
            return [r.address for r in started if not r.server.should_exit]

        pool = ReplicaPool(stage, "http://stage.test:9000", resolve_interval_s=60, resolver=resolver)
        await pool.start()
        stack.push_async_callback(pool.stop)
        yield pool, started


def _voice(samples: int = 1600) -> np.ndarray:
    return np.full(samples, 1000, np.int16)


async def test_each_stage_answers_through_its_service() -> None:
    async with AsyncExitStack() as stack:
        asr_pool, _ = await stack.enter_async_context(replicas("asr", FakeAsr("turn the lights on")))
        llm_pool, _ = await stack.enter_async_context(replicas("llm", FakeLlm(["Sure", ", done."])))
        tts_pool, _ = await stack.enter_async_context(replicas("tts", FakeTts(packets_per_sentence=4)))
        transcript = await RemoteAsr(asr_pool).transcribe(_voice(), "en")
        assert (transcript.text, transcript.language) == ("turn the lights on", "en")
        deltas = [d async for d in RemoteLlm(llm_pool).stream_chat([ChatMessage("user", "lights")])]
        assert deltas == ["Sure", ", done."]
        chunks = [c async for c in RemoteTts(tts_pool).synthesize(SpeechRequest("Done.", "en", 24000, 120))]
        assert [(len(c.packets), c.sample_rate, c.frame_ms) for c in chunks] == [(4, 24000, 120)]


async def test_a_vad_stream_keeps_its_sample_count_and_its_replica_load() -> None:
    vad = FakeVad()
    async with replicas("vad", vad) as (pool, _):
        stage = RemoteVad(pool)
        await stage.open("s1")
        (connection,) = pool.connections.values()
        assert connection.sessions == 1 and connection.load == 1
        assert [(e.kind, e.sample) for e in await stage.feed("s1", _voice())] == [("speech_start", 0)]
        ended = await stage.feed("s1", np.zeros(1600, np.int16))
        assert [(e.kind, e.sample) for e in ended] == [("speech_end", 3200)]
        await stage.reset("s1")
        await stage.close("s1")
        assert connection.sessions == 0 and connection.load == 0


async def test_a_replica_refuses_requests_for_another_stage() -> None:
    async with replicas("vad", FakeVad()) as (pool, _):
        (connection,) = pool.connections.values()
        payload = wire.encode_asr_request("en", _voice())
        with pytest.raises(ProviderUnavailableError, match="serves vad, not asr"):
            await connection.request(Kind.ASR_TRANSCRIBE, payload=payload)
        with pytest.raises(ProviderUnavailableError, match="expected a asr service, found vad"):
            wrong = StageConnection("asr", connection.address)
            await wrong.start()


class _FirstHangs:
    """An ASR replica: the first request any of them gets hangs (until its replica goes away)."""

    def __init__(self, name: str, first: asyncio.Future[str]) -> None:
        self.name, self.first = name, first

    async def transcribe(self, pcm: np.ndarray, language: Language, fallback: str = "") -> Transcript:
        if not self.first.done():
            self.first.set_result(self.name)
            await asyncio.Event().wait()
        return Transcript(f"from {self.name}", "en", len(pcm) / 16000)


async def test_a_request_whose_replica_goes_away_is_answered_by_another() -> None:
    first: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    async with replicas("asr", _FirstHangs("a", first), _FirstHangs("b", first)) as (pool, started):
        assert len(pool.connections) == 2
        request = asyncio.create_task(RemoteAsr(pool).transcribe(_voice(), "en"))
        hung = await first
        await started[0 if hung == "a" else 1].stop()  # the replica holding the request exits
        other = "b" if hung == "a" else "a"
        assert (await request).text == f"from {other}"


class _Pool:
    """Stands in for ReplicaPool in `_retry_elsewhere`: hands out named replicas in order."""

    def __init__(self) -> None:
        self.picked: list[tuple[str, str | None]] = []

    async def pick_ready(self, exclude: Any = None) -> Any:
        name = "second" if exclude is not None else "first"
        self.picked.append((name, exclude))
        return name


async def _run(attempt: Callable[[Any], Awaitable[str]]) -> tuple[str | BaseException, list[Any]]:
    pool = _Pool()
    try:
        result: str | BaseException = await remote._retry_elsewhere(pool, attempt)  # type: ignore[arg-type]
    except Exception as exc:
        result = exc
    return result, pool.picked


async def test_retry_elsewhere_tries_once_more_only_after_a_lost_connection() -> None:
    async def lost_then_ok(replica: str) -> str:
        if replica == "first":
            raise ConnectionLost("asr@first", "connection closed")
        return f"answered by {replica}"

    result, picked = await _run(lost_then_ok)
    assert result == "answered by second" and picked == [("first", None), ("second", "first")]

    async def overloaded(replica: str) -> str:
        raise OverloadedError("asr", 8)

    result, picked = await _run(overloaded)
    assert isinstance(result, OverloadedError) and picked == [("first", None)]  # told at once

    async def always_lost(replica: str) -> str:
        raise ConnectionLost(f"asr@{replica}", "connection closed")

    result, picked = await _run(always_lost)
    assert isinstance(result, ConnectionLost) and len(picked) == 2  # once more, not forever


class _HeardLanguage(FakeAsr):
    """Answers with the language and fallback it was asked for."""

    async def transcribe(self, pcm: np.ndarray, language: Language, fallback: str = "") -> Transcript:
        return Transcript(f"{language}/{fallback}", language, len(pcm) / 16000)


async def test_the_devices_language_travels_with_an_asr_request_and_a_bad_one_is_refused() -> None:
    async with replicas("asr", _HeardLanguage()) as (pool, _):
        assert (await RemoteAsr(pool).transcribe(_voice(), "auto", "zh")).text == "auto/zh"
        assert (await RemoteAsr(pool).transcribe(_voice(), "en")).text == "en/"
        (connection,) = pool.connections.values()
        for tag in ("auto/xx", "en/zh", "fr"):
            with pytest.raises(ProviderUnavailableError, match="language must be"):
                await connection.request(Kind.ASR_TRANSCRIBE, payload=wire.encode_asr_request(tag, _voice()))


class _OlderReplica(FakeAsr):
    """An ASR replica from before the device-language tag: refuses `auto/zh` as its parser did."""

    def __init__(self) -> None:
        super().__init__("older")
        self.asked: list[tuple[str, str]] = []

    async def transcribe(self, pcm: np.ndarray, language: Language, fallback: str = "") -> Transcript:
        from voice_pipeline.transport.server import BadRequest

        self.asked.append((language, fallback))
        if fallback:
            raise BadRequest(f"language must be zh, en or auto, not '{language}/{fallback}'")
        return await super().transcribe(pcm, language)


async def test_an_older_asr_replica_is_asked_again_without_the_devices_language() -> None:
    older = _OlderReplica()
    async with replicas("asr", older) as (pool, _):
        assert (await RemoteAsr(pool).transcribe(_voice(), "auto", "zh")).text == "older"
        assert older.asked == [("auto", "zh"), ("auto", "")]
        (connection,) = pool.connections.values()
        with pytest.raises(RequestRefused, match="bad_request"):  # what the retry above recognises
            await connection.request(Kind.ASR_TRANSCRIBE, payload=wire.encode_asr_request("fr", _voice()))
