"""Every backend call goes through here: a deadline, a breaker, one warning per outage.

A cache may only ever make a request faster. So each call gets a short deadline, and a failure
(error or timeout) opens a breaker (`common.breaker`, opened by one failure): for `retry_after_s`
every call is bypassed without touching the backend, then one call probes it. When the probe succeeds the breaker closes and the cache is back;
redis-py's pool has reconnected by then. Callers catch `CacheUnavailable` and go on without the
cache; its `result` is the metric label: "error" (this call failed) or "bypass" (skipped, the
backend is known to be down).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from voice_pipeline.cache.backend import CacheBackend
from voice_pipeline.common.breaker import Breaker

log = logging.getLogger(__name__)

T = TypeVar("T")


class CacheUnavailable(Exception):
    def __init__(self, result: Literal["error", "bypass"], detail: str = "") -> None:
        super().__init__(detail or result)
        self.result: Literal["error", "bypass"] = result


class GuardedBackend:
    def __init__(
        self,
        backend: CacheBackend,
        op_timeout_s: float,
        retry_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.op_timeout_s = op_timeout_s
        self.retry_after_s = retry_after_s
        self._clock = clock
        self.breaker = Breaker(failures_to_open=1, cooldown_s=retry_after_s)
        self.outages = 0  # how many times the backend went down (each warned once)

    @property
    def healthy(self) -> bool:
        return self.breaker.closed

    def check(self) -> None:
        """Raise `CacheUnavailable("bypass")` if a call now would be skipped anyway (saves work
        like computing an embedding for a lookup that cannot happen)."""
        if not self.breaker.allows(self._clock()):
            raise CacheUnavailable("bypass")

    async def call(self, op: Callable[[], Awaitable[T]], what: str = "") -> T:
        self.check()
        probe = self.breaker.attempt(self._clock())
        try:
            result = await asyncio.wait_for(op(), self.op_timeout_s)
        except asyncio.CancelledError:
            if probe:
                self.breaker.abandon()
            raise
        except Exception as exc:
            self._trip(exc, what)
            raise CacheUnavailable("error", str(exc)) from exc
        if probe:
            log.info("cache backend %s is reachable again: caching resumes", self.backend.name)
        self.breaker.success()
        return result

    def _trip(self, exc: BaseException, what: str) -> None:
        if self.breaker.closed:
            self.outages += 1
            reason = "timed out" if isinstance(exc, TimeoutError) else f"failed ({type(exc).__name__}: {exc})"
            log.warning(
                "cache backend %s %s%s: requests go on without the cache, retrying every %.0f s",
                self.backend.name,
                f"{what} " if what else "",
                reason,
                self.retry_after_s,
            )
        self.breaker.failure(self._clock())
