"""The one admission controller of a stage: slots, a bounded wait line, and the stage's metrics.

At most `slots` requests are at work at once; up to `queue_size` more wait for a slot; beyond that
a request is refused at once with `OverloadedError` (the caller answers "overloaded" instead of
waiting without bound). Every stage (the batched VAD and ASR through `MicroBatcher`, LLM and TTS
directly) admits its requests here, so the contract metrics mean the same for each:

- `voice_stage_max_concurrency` = `slots`: requests the stage works on at once (LLM/TTS: the
  `max_concurrency` setting; batched stages: batch size x batch workers);
- `voice_stage_inflight` = requests holding a slot (so in flight / max concurrency is the share of
  the stage's capacity in use, the ratio the operator's autoscaler reads);
- `voice_stage_queue_wait_seconds` = time from arrival to a slot (batched stages observe it when the
  batch starts, so it includes the batching wait);
- `voice_stage_requests_total{outcome}` = ok | error | overload | cancelled, counted once per request.

(The gateway's own `gateway/admission.py` is a different thing: per-device token buckets.)
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

from voice_pipeline.common.errors import OverloadedError
from voice_pipeline.common.metrics import Metrics


def outcome_of(exc: BaseException | None) -> str:
    """The `outcome` label of a request that ended with `exc` (None: it completed)."""
    if exc is None:
        return "ok"
    if isinstance(exc, OverloadedError):
        return "overload"
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return "cancelled"  # the caller went away (barge-in, a closed stream)
    return "error"


class StageAdmission:
    def __init__(self, stage: str, slots: int, queue_size: int, metrics: Metrics) -> None:
        if slots < 1 or queue_size < 0:
            raise ValueError(f"{stage}: admission needs slots >= 1 and queue_size >= 0")
        self.stage = stage
        self.slots = slots
        self.queue_size = queue_size
        self._metrics = metrics
        self._free = asyncio.Semaphore(slots)
        self._waiting = 0
        metrics.max_concurrency.labels(stage).set(slots)

    def admit(self, observe_wait: bool = True) -> Admitted:
        """`async with admission.admit() as ticket:` the request's slot, released on exit.
        `observe_wait=False`: the caller observes the queue wait itself (from `ticket.arrived`)."""
        return Admitted(self, observe_wait)


class Admitted:
    """One request's stay: waits for a slot on entry, frees it and counts the outcome on exit."""

    def __init__(self, admission: StageAdmission, observe_wait: bool) -> None:
        self._admission = admission
        self._observe_wait = observe_wait
        self.arrived = 0.0

    async def __aenter__(self) -> Admitted:
        a, metrics = self._admission, self._admission._metrics
        if a._free.locked() and a._waiting >= a.queue_size:
            metrics.requests.labels(a.stage, "overload").inc()
            raise OverloadedError(a.stage, a.queue_size)
        self.arrived = time.perf_counter()
        a._waiting += 1
        try:
            await a._free.acquire()
        finally:
            a._waiting -= 1
        if self._observe_wait:
            metrics.queue_wait.labels(a.stage).observe(time.perf_counter() - self.arrived)
        metrics.inflight.labels(a.stage).inc()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        a, metrics = self._admission, self._admission._metrics
        a._free.release()
        metrics.inflight.labels(a.stage).dec()
        metrics.requests.labels(a.stage, outcome_of(exc)).inc()
