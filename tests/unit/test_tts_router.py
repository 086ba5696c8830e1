"""TTS failover: next engine before any audio, breaker skips a dead engine, stage framing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from voice_pipeline.common.audio import OpusDecoder
from voice_pipeline.common.errors import ProviderUnavailableError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import SpeechRequest
from voice_pipeline.tts.engine import PcmChunk
from voice_pipeline.tts.router import TtsRouter
from voice_pipeline.tts.settings import TtsSettings
from voice_pipeline.tts.stage import InProcessTts


class FakeEngine:
    def __init__(
        self,
        name: str,
        fail: bool = False,
        samples: int = 22050,
        rate: int = 22050,
        languages: frozenset[str] = frozenset(),
    ) -> None:
        self.name = name
        self.fail = fail
        self.samples = samples
        self.rate = rate
        self.languages = languages
        self.calls = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def synthesize(self, text: str, language: str) -> AsyncIterator[PcmChunk]:
        self.calls += 1
        if self.fail:
            raise ProviderUnavailableError(self.name, "down")
        t = np.arange(self.samples) / self.rate
        yield PcmChunk((np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16), self.rate)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def _collect(router: TtsRouter, language: str = "en") -> list[PcmChunk]:
    return [c async for c in router.synthesize("hello", language)]


async def test_fails_over_to_the_next_engine_and_counts_it() -> None:
    dead, good = FakeEngine("edge", fail=True), FakeEngine("piper")
    metrics = Metrics()
    router = TtsRouter({"edge": dead, "piper": good}, {"en": ["edge", "piper"]}, metrics)
    assert len(await _collect(router)) == 1
    assert (
        metrics.registry.get_sample_value(
            "voice_provider_requests_total", {"stage": "tts", "provider": "edge", "outcome": "error"}
        )
        == 1
    )
    assert (
        metrics.registry.get_sample_value(
            "voice_provider_requests_total", {"stage": "tts", "provider": "piper", "outcome": "ok"}
        )
        == 1
    )


async def test_breaker_skips_a_dead_engine_until_the_cooldown_passes() -> None:
    clock = Clock()
    dead, good = FakeEngine("edge", fail=True), FakeEngine("piper")
    router = TtsRouter({"edge": dead, "piper": good}, {"en": ["edge", "piper"]}, Metrics(), 2, 60.0, clock)
    for _ in range(5):
        await _collect(router)
    assert dead.calls == 2  # opened after two failures
    clock.now = 61.0
    await _collect(router)
    assert dead.calls == 3  # half-open probe


async def test_language_filter_and_total_failure() -> None:
    english_only = FakeEngine("piper", languages=frozenset({"en"}))
    router = TtsRouter({"piper": english_only}, {"zh": ["piper"]}, Metrics())
    with pytest.raises(ProviderUnavailableError, match="no engine"):
        await _collect(router, "zh")


async def test_stage_frames_resampled_audio_into_decodable_opus_packets() -> None:
    engine = FakeEngine("piper", samples=22050, rate=22050)  # 1.0 s
    settings = TtsSettings(engines={"en": ["piper"]})
    async with InProcessTts(settings, Metrics(), engines={"piper": engine}) as tts:
        chunks = [c async for c in tts.synthesize(SpeechRequest("Hello there.", "en", 24000))]
    packets = [p for c in chunks for p in c.packets]
    assert len(packets) == 17  # ceil(24000 / 1440)
    decoder = OpusDecoder(24000)
    audio = np.concatenate([decoder.decode(p) for p in packets])
    assert np.abs(audio[4000:20000]).mean() > 1000


async def test_stage_skips_unspeakable_text() -> None:
    engine = FakeEngine("piper")
    async with InProcessTts(
        TtsSettings(engines={"en": ["piper"]}), Metrics(), engines={"piper": engine}
    ) as tts:
        assert [c async for c in tts.synthesize(SpeechRequest("🙂 **", "en", 24000))] == []
    assert engine.calls == 0
