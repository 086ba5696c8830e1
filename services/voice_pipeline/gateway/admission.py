"""What one device connection may cost the server: pure bookkeeping, clock passed in.

A real device cannot speak faster than real time and sends ~17 messages a second (60 ms frames),
so the gateway should never work faster than that for it. Two token buckets per connection:

- **audio budget** (seconds of audio): refilled at `realtime_factor` x wall time, holding at most
  `burst_s`. A frame is charged before it is decoded, so a flood of tiny valid packets costs no
  decoding and no VAD work beyond the budget; it is dropped and the device is told once per burst.
- **message rate** (messages of any kind): refilled at `rate` per second up to `burst`. Messages
  over it are dropped; a connection that keeps going far beyond it is closed.

`BurstNotice` is the "tell once per burst" rule shared by both and by `bad_audio`: the first
problem of a burst is reported, the rest are silent until the burst ends (a good frame for
`bad_audio`; the bucket back at half its burst allowance for the budgets).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float  # tokens added per second
    capacity: float  # most tokens held (the burst allowance)
    tokens: float = field(default=-1.0)
    updated: float | None = None

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity

    def _refill(self, now: float) -> None:
        if self.updated is not None and now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now if self.updated is None else max(self.updated, now)

    def take(self, amount: float, now: float) -> bool:
        """Spend `amount` if the bucket holds it; otherwise spend nothing and say no."""
        self._refill(now)
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True

    def charge(self, amount: float, now: float) -> None:
        """Spend `amount` even if that takes the bucket below zero (cost learned after the fact)."""
        self._refill(now)
        self.tokens -= amount


@dataclass
class BurstNotice:
    """True for the first problem of a burst, False for the rest until `ok()` ends the burst."""

    in_burst: bool = False
    count: int = 0  # problems in the current burst

    def problem(self) -> bool:
        self.count += 1
        first = not self.in_burst
        self.in_burst = True
        return first

    def ok(self) -> None:
        self.in_burst = False
        self.count = 0


@dataclass
class UplinkAdmission:
    """Per-connection admission of messages and audio (see the module docstring)."""

    realtime_factor: float
    burst_s: float
    message_rate: float
    message_burst: int
    audio: TokenBucket = field(init=False)
    messages: TokenBucket = field(init=False)
    too_fast: BurstNotice = field(default_factory=BurstNotice)
    rate_limited: BurstNotice = field(default_factory=BurstNotice)
    bad_audio: BurstNotice = field(default_factory=BurstNotice)

    def __post_init__(self) -> None:
        self.audio = TokenBucket(self.realtime_factor, self.burst_s)
        self.messages = TokenBucket(self.message_rate, float(self.message_burst))

    def message(self, now: float) -> bool:
        """Admit one message (text or binary) of any kind."""
        if self.messages.take(1.0, now):
            if self.messages.tokens >= self.message_burst / 2:
                self.rate_limited.ok()  # the sender slowed down for real, not one refill
            return True
        return False

    def should_close(self) -> bool:
        """Dropped messages in this burst reach the burst size again: a flood, not a hiccup."""
        return self.rate_limited.count > self.message_burst

    def audio_frame(self, seconds: float, now: float) -> bool:
        """Admit one audio frame of (announced) duration `seconds` before decoding it."""
        if self.audio.take(seconds, now):
            if self.audio.tokens >= self.burst_s / 2:
                # A burst ends when the sender has slowed down for real: a frame let through by
                # the refill in the middle of a flood does not earn the flood a second notice.
                self.too_fast.ok()
            return True
        return False
