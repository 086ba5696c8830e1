"""PlaybackClock: a burst of `lead_ms` up front, then real time, and a new burst after a gap."""

from __future__ import annotations

from voice_pipeline.gateway.pacing import PlaybackClock


def _send_times(frames: int, clock: PlaybackClock, start: float = 100.0) -> list[float]:
    now, times = start, []
    for _ in range(frames):
        now += clock.delay_before_next(now)
        times.append(round(now - start, 3))
        clock.sent(now)
    return times


def test_first_frames_burst_then_one_per_frame_interval() -> None:
    times = _send_times(10, PlaybackClock(frame_ms=60, lead_ms=300))
    assert times[:6] == [0.0] * 6  # 5 frames of lead, plus the one playing now
    assert times[6:] == [0.06, 0.12, 0.18, 0.24]


def test_never_more_than_lead_ahead_of_playback() -> None:
    clock = PlaybackClock(frame_ms=60, lead_ms=300)
    now = 0.0
    for _ in range(50):
        now += clock.delay_before_next(now)
        clock.sent(now)
        assert clock.remaining(now) <= 0.3 + 0.06 + 1e-9


def test_a_gap_longer_than_the_buffer_allows_a_new_burst() -> None:
    clock = PlaybackClock(frame_ms=60, lead_ms=300)
    _send_times(3, clock, start=0.0)
    later = 10.0  # the device drained its buffer long ago
    assert clock.remaining(later) == 0.0
    assert clock.delay_before_next(later) == 0.0
