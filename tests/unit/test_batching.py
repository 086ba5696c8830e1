"""MicroBatcher: batches across callers, keeps order, bounds its queue, survives bad batches."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from voice_pipeline.common.batching import BatchConfig, MicroBatcher
from voice_pipeline.common.errors import OverloadedError
from voice_pipeline.common.metrics import Metrics


def _sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_concurrent_submits_share_a_batch_and_keep_their_results() -> None:
    batches: list[list[int]] = []

    def double(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return [2 * i for i in items]

    metrics = Metrics()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        "asr", double, BatchConfig(max_size=8, max_wait_s=0.05), metrics
    )
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    await batcher.stop()
    assert results == [0, 2, 4, 6, 8]
    assert max(len(b) for b in batches) > 1
    assert _sample(metrics, "voice_stage_batch_size_count", {"stage": "asr"}) == len(batches)
    assert _sample(metrics, "voice_stage_requests_total", {"stage": "asr", "outcome": "ok"}) == 5


async def test_batch_size_is_capped() -> None:
    sizes: list[int] = []

    def echo(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(
        "vad", echo, BatchConfig(max_size=3, max_wait_s=0.05), Metrics()
    )
    assert await asyncio.gather(*(batcher.submit(i) for i in range(10))) == list(range(10))
    await batcher.stop()
    assert max(sizes) == 3


async def test_full_queue_answers_overload_at_once() -> None:
    release = threading.Event()

    def slow(items: Sequence[int]) -> list[int]:
        release.wait(5)
        return list(items)

    metrics = Metrics()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        "asr", slow, BatchConfig(max_size=1, max_wait_s=0, queue_size=2), metrics
    )
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.05)  # the worker holds item 0; the queue has room for 2 more
    queued = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0)
    with pytest.raises(OverloadedError, match="overloaded"):
        await batcher.submit(3)
    release.set()
    assert await first == 0
    assert [await t for t in queued] == [1, 2]
    await batcher.stop()
    assert _sample(metrics, "voice_stage_requests_total", {"stage": "asr", "outcome": "overload"}) == 1


async def test_a_failing_batch_fails_its_callers_only() -> None:
    def picky(items: Sequence[int]) -> list[int]:
        if 13 in items:
            raise ValueError("unlucky")
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(
        "asr", picky, BatchConfig(max_size=1, max_wait_s=0), Metrics()
    )
    with pytest.raises(ValueError, match="unlucky"):
        await batcher.submit(13)
    assert await batcher.submit(7) == 7
    await batcher.stop()


def test_invalid_config_is_refused() -> None:
    with pytest.raises(ValueError):
        BatchConfig(max_size=0)


async def test_two_workers_run_two_batches_at_once() -> None:
    both_running = threading.Barrier(2, timeout=5)

    def meet(items: Sequence[int]) -> list[int]:
        both_running.wait()  # only returns once a second batch runs beside this one
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(
        "asr", meet, BatchConfig(max_size=1, max_wait_s=0, workers=2), Metrics()
    )
    assert await asyncio.wait_for(asyncio.gather(batcher.submit(1), batcher.submit(2)), 10) == [1, 2]
    await batcher.stop()


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BatchConfig(workers=0)
