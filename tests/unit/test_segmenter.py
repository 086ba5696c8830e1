"""VAD segmentation from window probabilities: start vote, hysteresis, hangover."""

from __future__ import annotations

from voice_pipeline.common.stages import VadEvent
from voice_pipeline.vad.segmenter import WINDOW, Segmenter
from voice_pipeline.vad.settings import VadSettings


def run(probabilities: list[float], **overrides: float) -> list[VadEvent]:
    """The events of a probability sequence; no pause events unless `pause_ms` is given."""
    seg = Segmenter(VadSettings(**{"pause_ms": 0, **overrides}))  # type: ignore[arg-type]
    return [e for p in probabilities if (e := seg.push(p)) is not None]


def test_silence_gives_nothing() -> None:
    assert run([0.0] * 50) == []


def test_speech_starts_at_the_first_voiced_window_of_the_vote_and_ends_after_the_hangover() -> None:
    probs = [0.0] * 10 + [0.9] * 20 + [0.0] * 20
    events = run(probs, min_silence_ms=200)
    assert events[0] == VadEvent("speech_start", 10 * WINDOW)
    # 200 ms = 7 windows of 32 ms; the end is where silence began.
    assert events[1] == VadEvent("speech_end", 30 * WINDOW)
    assert len(events) == 2


def test_two_isolated_voiced_windows_do_not_start_speech() -> None:
    assert run([0.0, 0.9, 0.0, 0.0, 0.9, 0.0, 0.0] * 3) == []


def test_probabilities_between_thresholds_keep_speech_going() -> None:
    probs = [0.9] * 5 + [0.4] * 30 + [0.1] * 20
    events = run(probs, min_silence_ms=200)
    assert [e.kind for e in events] == ["speech_start", "speech_end"]
    assert events[1].sample == 35 * WINDOW


def test_a_pause_shorter_than_the_hangover_does_not_split() -> None:
    probs = [0.9] * 10 + [0.0] * 8 + [0.9] * 10 + [0.0] * 20  # 256 ms pause < 400 ms
    assert [e.kind for e in run(probs, min_silence_ms=400)] == ["speech_start", "speech_end"]
    assert [e.kind for e in run(probs, min_silence_ms=200)] == ["speech_start", "speech_end"] * 2


def test_a_pause_is_reported_once_per_silence_with_the_sample_its_end_will_name() -> None:
    # speech, a 192 ms pause (6 windows), speech again, then silence to the end of the turn
    probs = [0.9] * 10 + [0.0] * 6 + [0.9] * 10 + [0.0] * 20
    events = run(probs, min_silence_ms=350, pause_ms=128)
    assert events == [
        VadEvent("speech_start", 0),
        VadEvent("speech_pause", 10 * WINDOW),  # at 4 windows (128 ms) of the first silence
        VadEvent("speech_pause", 26 * WINDOW),  # the second silence
        VadEvent("speech_end", 26 * WINDOW),  # ends the second: its early transcript is good
    ]
    assert [e.kind for e in run(probs, min_silence_ms=350, pause_ms=0)] == ["speech_start", "speech_end"]
    # A pause setting at or past the end's: the end comes first, no pause is reported.
    assert [e.kind for e in run(probs, min_silence_ms=128, pause_ms=128)] == [
        "speech_start",
        "speech_end",
    ] * 2


def test_reset_forgets_speech_but_keeps_counting_samples() -> None:
    seg = Segmenter(VadSettings())
    for _ in range(5):
        seg.push(0.9)
    seg.reset()
    assert not seg.in_speech and seg.position == 5 * WINDOW
