"""The ASR test set's builder and the decode bounds, with the real Piper voice and whisper model.

Bounded: three synthesized sentences and the fixture clips; `make bench-asr` runs the full set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voice_pipeline.asr.decoding import token_cap
from voice_pipeline.asr.engine import AsrItem
from voice_pipeline.bench import asr_set
from voice_pipeline.bench.asr_text import error_rate, tokens
from voice_pipeline.common.audio import int16_to_float

from .helpers import _whisper, clip

SENTENCES = [
    "Set a timer for 10 minutes.",
    "Call Sarah on her mobile phone.",
    "What is the capital of France?",
]


def test_the_builder_caches_clips_a_real_model_transcribes(tmp_path: Path) -> None:
    root = asr_set.build(tmp_path, texts=SENTENCES, pause_pairs=1)
    assert asr_set.build(tmp_path, texts=SENTENCES, pause_pairs=1) == root  # built once, then reused
    clips, pauses = asr_set.load(root)
    english = [c for c in clips if c.language == "en"]
    assert [c.text for c in english] == SENTENCES
    assert {c.name for c in clips if c.language == "zh"} == set(asr_set.ZH_CLIPS)
    assert len(pauses) == 1 and 150 <= pauses[0].pause_ms <= 600
    assert all(1.0 <= c.seconds <= 8.0 for c in english)
    engine = _whisper()
    pairs = []
    for c in english:
        text = engine.transcribe_batch([AsrItem(int16_to_float(asr_set.audio(c)), "en")])[0].text
        pairs.append((tokens(c.text, "en"), tokens(text, "en")))
    assert error_rate(pairs) <= 0.2, pairs


def test_a_repetition_loop_is_cut_and_stays_within_the_duration_cap() -> None:
    """English decoded as Chinese without a repetition penalty loops on one character (measured:
    48 copies of 請 under the old fixed cap); the bounds stop it and keep one copy."""
    engine = _whisper()
    audio = int16_to_float(clip("en_hello"))
    saved = (
        engine.repetition_penalty,
        engine.no_repeat_ngram_size,
        engine.tokens_per_second,
        engine.stop_loops,
    )
    try:
        engine.repetition_penalty, engine.no_repeat_ngram_size = 1.0, 0
        engine.tokens_per_second, engine.stop_loops = 10.0, True
        text = engine.transcribe_batch([AsrItem(audio, "zh")])[0].text
        bounded = engine.last_token_counts[0]
        engine.tokens_per_second, engine.stop_loops = 0.0, False
        engine.transcribe_batch([AsrItem(audio, "zh")])
        unbounded = engine.last_token_counts[0]
    finally:
        (
            engine.repetition_penalty,
            engine.no_repeat_ngram_size,
            engine.tokens_per_second,
            engine.stop_loops,
        ) = saved
    assert bounded <= token_cap(len(audio) / 16000, 10.0, engine.cap_floor_tokens, engine.max_decode_tokens)
    assert bounded < unbounded
    assert 0 < len(text) < bounded  # the loop's repeats were cut from the transcript


def test_unplaceable_audio_under_auto_falls_back_and_decodes_with_the_loop_guards() -> None:
    engine = _whisper()
    noise = (np.random.default_rng(0).standard_normal(48000) * 0.1).astype(np.float32)
    saved = (engine.language_min_probability, engine.fallback_language)
    try:
        engine.language_min_probability, engine.fallback_language = 0.5, "zh"
        result = engine.transcribe_batch([AsrItem(noise, "auto")])[0]
        assert max(engine.last_detections[0].values()) < 0.5  # no allowed language is likely
        assert result.language == "zh"
        engine.fallback_language = "en"
        assert engine.transcribe_batch([AsrItem(noise, "auto")])[0].language == "en"
        # The device's own language comes first, per utterance, in one batch.
        by_device = engine.transcribe_batch([AsrItem(noise, "auto", "zh"), AsrItem(noise, "auto", "")])
        assert [t.language for t in by_device] == ["zh", "en"]
        english = engine.transcribe_batch([AsrItem(int16_to_float(clip("en_weather")), "auto")])[0]
        assert english.language == "en"  # a confident detection is kept
        # Reversed Mandarin falls back too and is decoded with the loop guards: without them it
        # loops to its duration cap (measured: 51 tokens), with them it ends on its own.
        engine.fallback_language = "zh"
        reversed_zh = int16_to_float(clip("zh_hello"))[::-1].copy()
        assert engine.transcribe_batch([AsrItem(reversed_zh, "auto")])[0].language == "zh"
        assert max(engine.last_detections[0].values()) < 0.5
        cap = token_cap(len(reversed_zh) / 16000, engine.tokens_per_second, engine.cap_floor_tokens, 96)
        assert engine.last_token_counts[0] < cap
    finally:
        engine.language_min_probability, engine.fallback_language = saved
