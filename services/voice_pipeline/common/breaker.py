"""The one circuit breaker: LLM providers, TTS engines and cache backends all use it.

Closed: requests flow. `failures_to_open` consecutive failures open it: the guarded thing is
skipped for `cooldown_s`. Then half-open: exactly one request probes it (`attempt`); success closes
the breaker, failure opens it for another cooldown, and a probe that ends without a verdict (its
caller went away) lets the next request probe (`abandon`). Pure: the clock is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


@dataclass
class Breaker:
    failures_to_open: int = 3
    cooldown_s: float = 15.0
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False  # the half-open probe is in flight

    @property
    def closed(self) -> bool:
        """No failure streak has opened it (or the last probe succeeded)."""
        return self.opened_at is None

    def state(self, now: float) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        return "open" if now - self.opened_at < self.cooldown_s else "half_open"

    def allows(self, now: float) -> bool:
        state = self.state(now)
        return state == "closed" or (state == "half_open" and not self.probing)

    def attempt(self, now: float) -> bool:
        """A request goes through now; True if it is the half-open probe."""
        if self.state(now) == "half_open":
            self.probing = True
            return True
        return False

    def success(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failure(self, now: float) -> None:
        self.failures += 1
        # A failed probe reopens at once; a closed breaker opens after enough failures in a row.
        if self.opened_at is not None or self.failures >= self.failures_to_open:
            self.opened_at = now
        self.probing = False

    def abandon(self) -> None:
        """The probe ended without a verdict (the caller went away): let another request probe."""
        self.probing = False
