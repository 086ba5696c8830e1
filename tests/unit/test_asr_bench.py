"""Pure parts of `make bench-asr`: endpointing outcome, speech end, pause plan, the WER rule, the docs."""

from __future__ import annotations

import numpy as np

from voice_pipeline.bench.asr_bench import (
    endpoint_outcome,
    percentile,
    resumed_after_ms,
    segment_events,
    turn_ends,
)
from voice_pipeline.bench.asr_docs import asr_lines, wer_verdict
from voice_pipeline.bench.asr_set import pause_plan, voiced_span
from voice_pipeline.vad.segmenter import WINDOW


def test_a_turn_ended_before_the_speech_did_is_cut_short() -> None:
    assert endpoint_outcome([8000, 40000], speech_end=32000) == (True, None)
    assert endpoint_outcome([40000], speech_end=32000) == (False, 500.0)
    assert endpoint_outcome([], speech_end=32000) == (False, None)


def test_turn_ends_fire_after_the_silence_setting() -> None:
    probs = [0.9] * 20 + [0.0] * 20
    (end,) = turn_ends(probs, 300)
    # 300 ms = 10 windows of 32 ms after the last voiced window, counted when the 10th is pushed.
    assert end == (20 + 10) * WINDOW
    assert turn_ends(probs, 200)[0] < end


def test_a_cut_turn_resumes_at_the_next_speech_start() -> None:
    # Speech, a 320 ms pause (10 windows), speech again: 200 ms ends the turn inside the pause.
    probs = [0.9] * 20 + [0.0] * 10 + [0.9] * 20 + [0.0] * 20
    events = segment_events(probs, 200)
    assert [kind for kind, _ in events] == ["speech_start", "speech_end", "speech_start", "speech_end"]
    # The end fires at the 7th silent window (224 ms); speech starts again at the third voiced window
    # of the vote (3 of 5) after the pause: 3 + 3 windows later.
    assert resumed_after_ms(events) == 6 * WINDOW * 1000 / 16000
    assert resumed_after_ms(segment_events(probs, 400)) is None  # not cut: one turn, no resume
    assert resumed_after_ms([]) is None


def test_voiced_span_trims_the_voice_s_padding() -> None:
    pcm = np.zeros(16000, np.int16)
    pcm[3200:8000] = 3000
    assert voiced_span(pcm) == (3200, 8000)
    assert voiced_span(np.zeros(10, np.int16)) == (0, 0)


def test_pause_plan_is_seeded_and_in_range() -> None:
    plan = pause_plan(190)
    assert plan == pause_plan(190)
    assert len(plan) == 40 and all(b == a + 1 and 150 <= ms <= 600 for a, b, ms in plan)


def test_nearest_rank_percentile() -> None:
    assert percentile([3, 1, 2, 4], 50) == 2
    assert percentile([3, 1, 2, 4], 95) == 4
    assert percentile([7], 99) == 7


def test_the_default_may_be_at_most_one_point_worse_than_the_reference() -> None:
    assert wer_verdict(0.024, 0.022)
    assert wer_verdict(0.032, 0.022)
    assert not wer_verdict(0.041, 0.022)


def test_the_docs_section_says_when_the_default_misses_the_budget() -> None:
    summary = {
        "wer_en": 0.041, "cer_zh": 0.3, "exact_en": 150, "en_utterances": 190, "wrong_language": 0,
        "cpu_s_mean": 0.3, "cpu_s_p95": 0.4, "cpu_per_audio_second": 0.13, "wall_s_p50": 0.3, "wall_s_p95": 0.5,
    }  # fmt: skip
    record = {
        "date": "2026-11-29T13:00:00Z", "commit": "abc", "machine": {"cpu": "CPU"}, "threads": 2,
        "load_average": {"before": [1.0], "after": [2.0]},
        "test_set": {"english": 190, "chinese": 2, "english_seconds": [1.0, 6.4]},
        "decodings": {
            "default": {"describe": "d", "summary": summary},
            "reference": {"describe": "r", "summary": {**summary, "wer_en": 0.022}},
        },
    }  # fmt: skip
    text = "\n".join(asr_lines(record))
    assert "| default | 4.1% |" in text and "| reference | 2.2% |" in text
    assert "+1.9 points: NOT within the 1-point budget" in text
    assert "No `make bench-asr` run" in "\n".join(asr_lines(None))


def test_turn_cuts_follow_the_gateway_pause_and_end() -> None:
    from voice_pipeline.bench.asr_bench import turn_cuts

    # speech, a 128 ms pause (shorter than the 160 ms end), speech, then silence; pre-roll 2 windows
    probs = [0.0] * 10 + [0.9] * 20 + [0.0] * 4 + [0.9] * 5 + [0.0] * 20
    cuts = turn_cuts(probs, preroll=2 * WINDOW)
    assert cuts is not None
    assert cuts.start == 8 * WINDOW  # speech start (window 10) less the pre-roll
    assert cuts.early == 41 * WINDOW  # the second silence began at 39; 64 ms = 2 windows in
    assert cuts.end == 44 * WINDOW  # 160 ms = 5 windows of it
    assert cuts.dropped == 1 and cuts.resumed == 0  # the early run at the first pause, thrown away
    assert turn_cuts([0.0] * 30, preroll=0) is None  # no speech, no turn


def test_speech_resumed_within_the_hold_joins_the_turn() -> None:
    from voice_pipeline.bench.asr_bench import turn_cuts

    # A 320 ms pause ends the turn (at 160 ms); speech resumes 256 ms after that end, within the hold.
    probs = [0.0] * 10 + [0.9] * 20 + [0.0] * 10 + [0.9] * 10 + [0.0] * 30
    cuts = turn_cuts(probs, preroll=2 * WINDOW)
    assert cuts is not None and cuts.resumed == 1
    assert cuts.end == 55 * WINDOW and cuts.early == 52 * WINDOW  # the second silence's
    assert cuts.dropped == 1  # the transcript of the first part, begun at its pause
    # With no hold the first end stands: the turn is the first part only.
    alone = turn_cuts(probs, preroll=2 * WINDOW, hold_s=0.0)
    assert alone is not None and alone.end == 35 * WINDOW and alone.resumed == 0


def test_turn_cuts_start_early_at_the_quiet_after_the_voice() -> None:
    from voice_pipeline.bench.asr_bench import turn_cuts, voice_ends

    # 0.3 s quiet, 1 s voiced, quiet: Silero scores 4 windows (128 ms) of the quiet tail as voice.
    pcm = np.concatenate([np.zeros(4800), np.full(16000, 0.1), np.zeros(24000)]).astype(np.float32)
    levels = voice_ends(pcm)
    assert levels[0] == 0 and levels[-1] == 20800  # where the voiced second ends
    probs = [0.0] * 9 + [0.9] * 32 + [0.4] * 4 + [0.0] * 40
    quiet = turn_cuts(probs, preroll=0, voiced_until=levels, quiet_ms=60)
    assert quiet is not None
    assert quiet.early == 43 * WINDOW  # the first window end >= 60 ms past the voice (20800 + 960)
    assert quiet.dropped == 0  # one early run, the turn's
    by_pause = turn_cuts(probs, preroll=0, voiced_until=levels)
    assert by_pause is not None and by_pause.early == 47 * WINDOW  # the VAD's pause, 4 windows later
    assert quiet.end == by_pause.end


def test_the_uplink_is_the_devices_opus_round_trip() -> None:
    from voice_pipeline.bench.asr_bench import opus_uplink

    t = np.arange(16000) / 16000
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    coded = opus_uplink(tone)
    assert coded.dtype == np.int16
    assert len(tone) <= len(coded) < len(tone) + 960  # whole 60 ms frames, the last one padded
    assert not np.array_equal(coded[: len(tone)], tone)  # lossy: it really went through Opus
    level = float(np.sqrt(np.mean(coded.astype(np.float64) ** 2)))
    assert 0.5 * 8000 / np.sqrt(2) < level < 1.5 * 8000 / np.sqrt(2)  # the tone survives


def test_the_uplink_section_reports_both_rates_or_says_it_was_not_measured() -> None:
    from voice_pipeline.bench.asr_docs import uplink_lines

    record = {
        "uplink": {
            "clips": 3, "wer_en_bare": 0.028, "wer_en_opus": 0.044, "cer_zh_bare": 0.294,
            "cer_zh_opus": 0.353, "changed": 1,
            "changed_examples": [
                {"name": "en_1", "reference": "Skip this track.", "bare": "Let's get this track.", "opus": "Skip this track."}
            ],
        }
    }  # fmt: skip
    text = "\n".join(uplink_lines(record))
    assert "| through the Opus uplink | 4.4% | 35.3% |" in text and "| bare clip | 2.8% | 29.4% |" in text
    assert "| Skip this track. | Let's get this track. | Skip this track. |" in text
    assert "Not measured in this record" in "\n".join(uplink_lines({}))
