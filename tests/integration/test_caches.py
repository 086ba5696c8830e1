"""The caches on a real redis-server around the real stages (whisper ASR, llama.cpp LLM, espeak TTS).

Built exactly as a process builds them (cache.build.open_caches + assembly.build_*). Inner work is
counted by the stages' own `voice_stage_requests_total{outcome="ok"}`, cache look-ups by
`voice_cache_requests_total{stage,result}`. Redis is then killed, frozen and restarted under the
running stages: answers stay the same, only the cache counters change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import redis

from voice_pipeline import assembly
from voice_pipeline.asr.settings import AsrSettings
from voice_pipeline.cache.build import Caches, open_caches
from voice_pipeline.cache.llm_cache import CachedLlm
from voice_pipeline.cache.preload import preload
from voice_pipeline.cache.settings import CacheSettings
from voice_pipeline.common.audio import OpusDecoder
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import AsrStage, ChatMessage, LlmStage, SpeechRequest, TtsStage
from voice_pipeline.llm.settings import LlmSettings
from voice_pipeline.tts.settings import TtsSettings
from voice_pipeline.turn.history import ChatHistory

from .helpers import clip, words
from .redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

RETRY_AFTER_S = 0.5
LLM = LlmSettings(
    max_tokens=24, temperature=0, local_ctx=1024, first_token_timeout_s=120
)  # a shared 2-core box
TTS = TtsSettings(engines={"en": ["espeak"], "zh": ["espeak"]}, edge_enabled=False)


@dataclass
class Pipeline:
    redis: RedisServer
    settings: CacheSettings
    metrics: Metrics
    caches: Caches
    asr: AsrStage
    llm: LlmStage
    tts: TtsStage

    def cache(self, stage: str, result: str) -> float:
        labels = {"stage": stage, "result": result}
        return self.metrics.registry.get_sample_value("voice_cache_requests_total", labels) or 0.0

    def work(self, stage: str) -> float:
        labels = {"stage": stage, "outcome": "ok"}
        return self.metrics.registry.get_sample_value("voice_stage_requests_total", labels) or 0.0

    def counters(self) -> dict[str, float]:
        return {
            f"{stage}:{result}": self.cache(stage, result)
            for stage in ("asr", "llm", "tts")
            for result in ("hit", "miss", "error", "bypass")
        }


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipeline(redis_server: RedisServer) -> AsyncIterator[Pipeline]:
    # A deadline far above a loaded CI box's worst Redis round trip, so only a dead or frozen Redis
    # trips the breaker here (production default: 80 ms).
    settings = CacheSettings(
        redis_url=redis_server.url, op_timeout_ms=1000, retry_after_s=RETRY_AFTER_S, preload_enabled=False
    )
    metrics = Metrics()
    async with AsyncExitStack() as stack:
        caches = await stack.enter_async_context(open_caches(settings, metrics, allow_memory=False))
        llm = await stack.enter_async_context(assembly.build_llm(LLM, metrics, caches))
        asr = await stack.enter_async_context(assembly.build_asr(AsrSettings(), metrics, caches))
        tts = await stack.enter_async_context(assembly.build_tts(TTS, metrics, caches))
        yield Pipeline(redis_server, settings, metrics, caches, asr, llm, tts)


def first_turn(question: str, language: str = "en") -> list[ChatMessage]:
    """The messages the gateway sends for a session's first question."""
    return ChatHistory(LLM.system_prompts).messages(question, language)


async def ask(llm: LlmStage, messages: list[ChatMessage]) -> tuple[str, int]:
    deltas = [d async for d in llm.stream_chat(messages)]
    return "".join(deltas), len(deltas)


async def speak(tts: TtsStage, text: str) -> tuple[list[bytes], set[str]]:
    packets, engines = [], set()
    async for chunk in tts.synthesize(SpeechRequest(text, "en", 24000, 60)):
        packets += chunk.packets
        engines.add(chunk.engine)
    return packets, engines


def redis_keys(url: str, pattern: str) -> list[bytes]:
    with redis.Redis.from_url(url) as client:
        return list(client.scan_iter(pattern))


async def test_repeated_utterance_is_an_asr_hit(pipeline: Pipeline) -> None:
    audio = clip("en_weather")
    work, hits = pipeline.work("asr"), pipeline.cache("asr", "hit")
    first = await pipeline.asr.transcribe(audio, "auto")
    again = await pipeline.asr.transcribe(audio.copy(), "auto")
    assert again == first and {"weather", "today"} & words(first.text)
    assert pipeline.work("asr") == work + 1  # the model ran once
    assert pipeline.cache("asr", "hit") == hits + 1
    assert redis_keys(pipeline.redis.url, "vp:v1:asr:*")
    await pipeline.asr.transcribe(audio, "en")  # another language setting: another entry
    assert pipeline.work("asr") == work + 2


async def test_paraphrase_is_an_llm_hit_in_this_and_another_replica(pipeline: Pipeline) -> None:
    work, hits = pipeline.work("llm"), pipeline.cache("llm", "hit")
    reply, deltas = await ask(pipeline.llm, first_turn("What is the weather like today?"))
    cached, cached_deltas = await ask(pipeline.llm, first_turn("How is the weather today?"))
    assert reply.strip() and cached == reply and cached_deltas == deltas > 1  # replayed as streamed
    assert pipeline.work("llm") == work + 1 and pipeline.cache("llm", "hit") == hits + 1
    # A different question is not served the weather reply.
    await ask(pipeline.llm, first_turn("Tell me a joke about cats."))
    assert pipeline.work("llm") == work + 2
    # A request with earlier turns is neither looked up nor stored.
    looked_up = pipeline.cache("llm", "hit") + pipeline.cache("llm", "miss")
    history = ChatHistory(LLM.system_prompts)
    history.commit("Hi there.", "Hello!")
    await ask(pipeline.llm, history.messages("How is the weather today?", "en"))
    assert pipeline.work("llm") == work + 3
    assert pipeline.cache("llm", "hit") + pipeline.cache("llm", "miss") == looked_up
    # Another replica (its own process-local vector mirror) finds what this one stored, in Chinese too.
    await ask(pipeline.llm, first_turn("今天天气怎么样？", "zh"))
    assert isinstance(pipeline.llm, CachedLlm)
    async with open_caches(pipeline.settings, pipeline.metrics, allow_memory=False) as other:
        replica = other.wrap_llm(pipeline.llm.inner, LLM)
        before = pipeline.work("llm")
        zh, _ = await ask(replica, first_turn("今天的天气如何？", "zh"))
        assert zh.strip() and pipeline.work("llm") == before


async def test_repeated_sentence_is_a_tts_hit(pipeline: Pipeline) -> None:
    work, hits = pipeline.work("tts"), pipeline.cache("tts", "hit")
    sentence = "The cache keeps this sentence for an hour."
    first, engines = await speak(pipeline.tts, sentence)
    again, again_engines = await speak(pipeline.tts, sentence)
    assert first and again == first and engines == {"tts"} and again_engines == {"cache"}
    assert pipeline.work("tts") == work + 1 and pipeline.cache("tts", "hit") == hits + 1
    decoder = OpusDecoder(24000, 60)
    pcm = np.concatenate([decoder.decode(p) for p in again])
    assert len(pcm) == len(again) * 1440 and np.abs(pcm).max() > 1000  # real audio, 60 ms frames


async def test_a_user_during_the_preload_gets_the_llm_first(pipeline: Pipeline) -> None:
    """The real llama.cpp server generates one reply at a time: the preload's answer in flight is
    abandoned when a user asks (outcome "cancelled"), the user is answered, then the preload
    finishes every question. (No timing asserted: the mechanism is.)"""
    assert isinstance(pipeline.llm, CachedLlm)
    questions = {"en": ["Name three colours of a rainbow.", "What is the largest ocean on Earth?"]}
    metrics = pipeline.metrics

    def llm(name: str, outcome: str = "") -> float:
        labels = {"stage": "llm", "outcome": outcome} if outcome else {"stage": "llm"}
        return metrics.registry.get_sample_value(name, labels) or 0.0

    cancelled = llm("voice_stage_requests_total", "cancelled")
    task = asyncio.create_task(preload(questions, LLM.system_prompts, pipeline.llm))
    for _ in range(600):  # until the preload's first answer is being generated
        if llm("voice_stage_inflight") >= 1:
            break
        await asyncio.sleep(0.02)
    assert llm("voice_stage_inflight") >= 1 and not task.done()
    reply, _ = await ask(pipeline.llm, first_turn("What colour is the sky on a clear day?"))
    assert reply.strip()
    assert llm("voice_stage_requests_total", "cancelled") >= cancelled + 1  # the preload gave way
    report = await asyncio.wait_for(task, 300)
    assert report.answered == 2 and report.failed == []
    work = pipeline.work("llm")
    for question in questions["en"]:  # both were stored: asking them costs no generation
        assert (await ask(pipeline.llm, first_turn(question)))[0].strip()
    assert pipeline.work("llm") == work


async def test_redis_killed_frozen_and_restarted_changes_nothing_but_the_counters(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="voice_pipeline.cache")
    audio = clip("en_hello")
    sentence = "Nothing here depends on the cache."
    question = first_turn("Who wrote the novel Don Quixote?")
    transcript = await pipeline.asr.transcribe(audio, "auto")
    reply, _ = await ask(pipeline.llm, question)
    assert reply.strip()
    packets, _ = await speak(pipeline.tts, sentence)
    warm = pipeline.counters()

    # Killed: every request is still answered, by the stages themselves.
    pipeline.redis.kill()
    work = {stage: pipeline.work(stage) for stage in ("asr", "llm", "tts")}
    for _ in range(2):
        assert (await pipeline.asr.transcribe(audio, "auto")) == transcript
        assert (await ask(pipeline.llm, question))[0].strip()
        assert (await speak(pipeline.tts, sentence))[0] == packets
    down = pipeline.counters()
    for stage in ("asr", "llm", "tts"):
        assert pipeline.work(stage) == work[stage] + 2
        assert down[f"{stage}:hit"] == warm[f"{stage}:hit"] and down[f"{stage}:miss"] == warm[f"{stage}:miss"]
        failed = (
            down[f"{stage}:error"]
            + down[f"{stage}:bypass"]
            - warm[f"{stage}:error"]
            - warm[f"{stage}:bypass"]
        )
        assert failed == 2
    # The first call found Redis gone (error); the rest skipped it (bypass) but for a probe per
    # retry window (error again); all of it said in one warning.
    assert down["asr:error"] >= warm["asr:error"] + 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]

    # Back (empty: no persistence): after the retry window the caches fill and hit again.
    pipeline.redis.start()
    await asyncio.sleep(RETRY_AFTER_S + 0.1)
    assert (await pipeline.asr.transcribe(audio, "auto")) == transcript  # miss, stored
    assert (await pipeline.asr.transcribe(audio, "auto")) == transcript  # hit
    assert pipeline.cache("asr", "hit") == down["asr:hit"] + 1
    assert any("reachable again" in r.getMessage() for r in caplog.records)

    # Frozen (accepts connections, never answers): each look-up gives up at the deadline.
    pipeline.redis.pause()
    try:
        before = pipeline.counters()
        assert (await pipeline.asr.transcribe(audio, "auto")) == transcript
        assert (await speak(pipeline.tts, sentence))[0] == packets
        frozen = pipeline.counters()
        assert frozen["asr:error"] == before["asr:error"] + 1
        assert frozen["tts:bypass"] + frozen["tts:error"] == before["tts:bypass"] + before["tts:error"] + 1
        assert frozen["asr:hit"] == before["asr:hit"]
    finally:
        pipeline.redis.resume()
    await asyncio.sleep(RETRY_AFTER_S + 0.1)
    assert (await pipeline.asr.transcribe(audio, "auto")) == transcript
    assert pipeline.cache("asr", "hit") == frozen["asr:hit"] + 1  # the entry survived the freeze


async def test_unreachable_redis_at_start_up_does_not_stop_the_process(tmp_path: Path) -> None:
    absent = RedisServer(tmp_path)  # a free port nobody listens on
    settings = CacheSettings(redis_url=absent.url, llm_enabled=False, preload_enabled=False)
    async with open_caches(settings, Metrics(), allow_memory=False) as caches:
        assert caches.guard is not None and not caches.guard.healthy and caches.guard.outages == 1
