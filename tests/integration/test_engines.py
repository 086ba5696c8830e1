"""Each engine on its real model: batching changes nothing but speed, caps hold, failover is fast."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voice_pipeline.asr.engine import AsrItem
from voice_pipeline.asr.settings import AsrSettings
from voice_pipeline.asr.stage import InProcessAsr
from voice_pipeline.common.audio import OpusDecoder, int16_to_float
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import SpeechRequest
from voice_pipeline.models.install import verify_model
from voice_pipeline.models.registry import DEFAULT_SET
from voice_pipeline.tts.settings import TtsSettings
from voice_pipeline.tts.stage import InProcessTts
from voice_pipeline.vad.settings import VadSettings
from voice_pipeline.vad.stage import InProcessVad

from .helpers import _whisper, clip, transcribe, words

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", DEFAULT_SET)
def test_installed_models_match_their_pinned_hashes(name: str) -> None:
    assert verify_model(name) == []


async def test_vad_batched_across_sessions_equals_each_session_alone() -> None:
    clips = [clip("en_weather"), clip("zh_hello"), clip("en_hello")]
    padded = [np.concatenate([c, np.zeros(16000, np.int16)]) for c in clips]

    async def events_for(vad: InProcessVad, sid: str, pcm: np.ndarray) -> list[tuple[str, int]]:
        await vad.open(sid)
        out = []
        for i in range(0, len(pcm), 960):
            out += [(e.kind, e.sample) for e in await vad.feed(sid, pcm[i : i + 960])]
        return out

    metrics = Metrics()
    async with InProcessVad(VadSettings(), metrics) as vad:
        alone = [await events_for(vad, f"a{i}", p) for i, p in enumerate(padded)]
        together = await asyncio.gather(*(events_for(vad, f"b{i}", p) for i, p in enumerate(padded)))
    assert together == alone
    for events in alone:
        boundaries = [(k, sample) for k, sample in events if k != "speech_pause"]  # early-ASR hints
        # A clip with a comma pause (en_hello, zh_hello) is two segments at the 200 ms end of turn:
        # the gateway joins them (it holds a turn until its reply plays); the VAD just alternates.
        kinds = [k for k, _ in boundaries]
        assert kinds == ["speech_start", "speech_end"] * (len(kinds) // 2) and kinds, kinds
        start, end = boundaries[0][1], boundaries[-1][1]
        assert 0.1 < start / 16000 < 0.6 and end > start + 16000  # speech begins after the 0.3 s pad
    batch_sum = metrics.registry.get_sample_value("voice_stage_batch_size_sum", {"stage": "vad"})
    batch_count = metrics.registry.get_sample_value("voice_stage_batch_size_count", {"stage": "vad"})
    assert batch_sum is not None and batch_count and batch_sum / batch_count > 1.0


async def test_asr_batch_equals_one_by_one_and_batches_form() -> None:
    names = ["en_weather", "en_hello", "zh_story", "zh_hello"]
    metrics = Metrics()
    async with InProcessAsr(AsrSettings(batch_max_wait_ms=50), metrics) as asr:
        alone = [await asr.transcribe(clip(n), "auto") for n in names]
        together = await asyncio.gather(*(asr.transcribe(clip(n), "auto") for n in names))
    assert [t.text for t in together] == [t.text for t in alone]
    assert [t.language for t in alone] == ["en", "en", "zh", "zh"]
    assert {"weather", "today"} & words(alone[0].text)
    assert {"hello", "joke"} <= words(alone[1].text)
    assert {"故", "事"} & words(alone[2].text)
    largest = metrics.registry.get_sample_value(
        "voice_stage_batch_size_bucket", {"stage": "asr", "le": "1.0"}
    )
    count = metrics.registry.get_sample_value("voice_stage_batch_size_count", {"stage": "asr"})
    assert count is not None and largest is not None and largest < count  # some batch held more than one


def test_asr_decode_length_is_capped_on_a_long_loop() -> None:
    engine = _whisper()
    looped = np.tile(int16_to_float(clip("zh_hello")), 5)  # ~25 s of repetition
    engine.max_decode_tokens, saved = 24, engine.max_decode_tokens
    try:
        text = engine.transcribe_batch([AsrItem(looped, "zh")])[0].text
    finally:
        engine.max_decode_tokens = saved
    assert 0 < len(text) <= 24 * 3  # a token is at most a few characters


def test_the_loop_stop_cuts_a_repeated_sentence_at_its_end_with_the_real_tokenizer() -> None:
    from voice_pipeline.asr.decoding import loop_start
    from voice_pipeline.asr.whisper import sentence_end_ids

    tokenizer = _whisper()._tokenizers["en"]
    ends = sentence_end_ids(tokenizer)
    for mark in (".", "?", "!", "\u3002"):
        assert tokenizer.encode(mark)[-1] in ends
    assert not {tokenizer.encode(" Turn")[-1], tokenizer.encode(",")[-1]} & ends
    first = tokenizer.encode(" turn off all the lights downstairs.")
    again = tokenizer.encode(" Turn off all the lights downstairs.")
    looped = first + again * 2 + again[:3]  # as decoded to the cap on an AVX2-only EPYC
    kept = looped[: loop_start(looped, sentence_ends=ends)]
    assert tokenizer.decode(kept) == " turn off all the lights downstairs."


async def _speak(tts: InProcessTts, text: str, language: str) -> np.ndarray:
    chunks = [c async for c in tts.synthesize(SpeechRequest(text, language, 24000))]
    decoder = OpusDecoder(24000)
    return np.concatenate([decoder.decode(p) for c in chunks for p in c.packets])


async def test_tts_speaks_english_intelligibly_and_chinese_at_a_speech_rate() -> None:
    async with InProcessTts(TtsSettings(), Metrics()) as tts:
        english = await _speak(tts, "The weather is lovely today.", "en")
        assert np.abs(english).mean() > 300
        assert {"weather", "lovely", "today"} & words(transcribe(english, 24000, "en"))
        chinese = await _speak(tts, "今天天气很好，我们去公园散步吧。", "zh")
        # espeak-ng's Mandarin is not intelligible to whisper-base (it hears pinyin-like syllables),
        # so the Chinese check is a speech-like duration for 14 characters, not a transcript.
        assert 14 * 0.12 < len(chinese) / 24000 < 14 * 0.6
        assert np.abs(chinese).mean() > 300


async def test_offline_edge_fails_over_and_its_breaker_opens() -> None:
    metrics = Metrics()
    async with InProcessTts(TtsSettings(), metrics) as tts:
        for _ in range(3):
            assert len(await _speak(tts, "Hello there, friend.", "en")) > 0
        edge = tts.router.breakers["edge"]
    # No internet here: Edge failed, the breaker opened, and the third sentence did not try it.
    errors = metrics.registry.get_sample_value(
        "voice_provider_requests_total", {"stage": "tts", "provider": "edge", "outcome": "error"}
    )
    assert edge.opened_at is not None and errors == 2
