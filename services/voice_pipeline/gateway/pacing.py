"""Downlink pacing: keep the device's playback buffer fed, never overfilled.

The firmware's decode queue holds 40 packets (2.4 s) and silently drops the overflow, so audio is
sent ahead of playback by at most `lead_ms`. The device plays in real time from the first packet it
gets; `PlaybackClock` tracks when its buffer will run dry. That gives the reference server's
behaviour (a burst of `lead_ms` up front, then one frame per frame interval) without a special case,
and it re-bursts by itself after a gap (when the LLM or TTS was slower than playback).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PlaybackClock:
    frame_ms: int = 60
    lead_ms: int = 300  # 5 frames up front, like the reference server
    drained_at: float = 0.0  # monotonic seconds when the device will have played all it got

    def delay_before_next(self, now: float) -> float:
        """Seconds to wait before the next frame may be sent (0 = send now)."""
        ahead = max(0.0, self.drained_at - now)
        return max(0.0, ahead - self.lead_ms / 1000.0)

    def sent(self, now: float, frames: int = 1) -> None:
        self.drained_at = max(self.drained_at, now) + frames * self.frame_ms / 1000.0

    def remaining(self, now: float) -> float:
        """Seconds of audio still buffered on the device."""
        return max(0.0, self.drained_at - now)
