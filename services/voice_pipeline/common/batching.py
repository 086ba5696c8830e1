"""Dynamic micro-batching behind the stage's admission controller.

Callers from many sessions `submit` one item each and await its result. A worker takes
up to `max_size` items, waiting at most `max_wait` after the first for more to arrive, and runs
the model once for the whole batch in a worker thread (never on the event loop). With `workers` > 1,
that many batches run at once (the model must accept concurrent calls).

Admission (`common.admission`): `max_size * workers` slots (the items the model works on at once)
and `queue_size` callers waiting for one; beyond that `submit` raises `OverloadedError` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from voice_pipeline.common.admission import StageAdmission
from voice_pipeline.common.metrics import Metrics

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchConfig:
    max_size: int = 8
    max_wait_s: float = 0.01
    queue_size: int = 256
    # Batches in flight at once. One is right when a batch keeps every core busy; a model that
    # leaves cores idle while it decodes (whisper's sequential decoder) gains from a second.
    workers: int = 1

    def __post_init__(self) -> None:
        if self.max_size < 1 or self.queue_size < 1 or self.max_wait_s < 0 or self.workers < 1:
            raise ValueError(f"invalid batch config {self}")


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    enqueued: float


class MicroBatcher(Generic[T, R]):
    """Batches `submit` calls into `process(items) -> results` (same order, same length)."""

    def __init__(
        self,
        stage: str,
        process: Callable[[Sequence[T]], Sequence[R]],
        config: BatchConfig,
        metrics: Metrics,
    ) -> None:
        self.stage = stage
        self._process = process
        self.config = config
        self._metrics = metrics
        # Unbounded: the admission below bounds it to the slots (items the workers can take).
        self._queue: asyncio.Queue[_Pending[T, R]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self.admission = StageAdmission(stage, config.max_size * config.workers, config.queue_size, metrics)

    def start(self) -> None:
        if not self._workers:
            loop = asyncio.get_running_loop()
            self._workers = [
                loop.create_task(self._run(), name=f"batcher-{self.stage}-{i}")
                for i in range(self.config.workers)
            ]

    async def stop(self) -> None:
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.cancel()

    async def submit(self, item: T) -> R:
        self.start()
        # The queue wait is observed when the batch starts: it includes the batching wait.
        async with self.admission.admit(observe_wait=False) as ticket:
            future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
            self._queue.put_nowait(_Pending(item, future, ticket.arrived))
            return await future

    async def _collect(self) -> list[_Pending[T, R]]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.config.max_wait_s
        while len(batch) < self.config.max_size:
            # Take whatever is already queued without waiting, then wait out the remainder.
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            live = [p for p in batch if not p.future.done()]  # drop callers that gave up
            if not live:
                continue
            started = time.perf_counter()
            for p in live:
                self._metrics.queue_wait.labels(self.stage).observe(started - p.enqueued)
            self._metrics.batch_size.labels(self.stage).observe(len(live))
            try:
                results = await asyncio.to_thread(self._timed_process, [p.item for p in live])
            except Exception as exc:  # one bad batch fails its callers, never the worker
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            finished = time.perf_counter()
            for p, result in zip(live, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)
                self._metrics.latency.labels(self.stage).observe(finished - p.enqueued)

    def _timed_process(self, items: Sequence[T]) -> Sequence[R]:
        with self._metrics.busy_time(self.stage):
            results = self._process(items)
        if len(results) != len(items):
            raise RuntimeError(f"{self.stage}: batch of {len(items)} gave {len(results)} results")
        return results
