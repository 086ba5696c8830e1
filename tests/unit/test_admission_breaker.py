"""The one admission controller and the one breaker, as every stage and router uses them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from voice_pipeline.common.admission import StageAdmission, outcome_of
from voice_pipeline.common.batching import BatchConfig, MicroBatcher
from voice_pipeline.common.errors import OverloadedError, ProviderUnavailableError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.llm.settings import LlmSettings
from voice_pipeline.llm.stage import InProcessLlm
from voice_pipeline.tts.engine import PcmChunk
from voice_pipeline.tts.router import TtsRouter
from voice_pipeline.tts.settings import TtsSettings
from voice_pipeline.tts.stage import InProcessTts


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_slots_then_a_bounded_wait_then_overload_at_once() -> None:
    metrics = Metrics()
    admission = StageAdmission("llm", slots=1, queue_size=1, metrics=metrics)
    release = asyncio.Event()

    async def request() -> None:
        async with admission.admit():
            await release.wait()

    holder = asyncio.create_task(request())
    waiter = asyncio.create_task(request())
    await asyncio.sleep(0)
    assert _sample(metrics, "voice_stage_inflight", stage="llm") == 1  # the waiter holds no slot
    with pytest.raises(OverloadedError, match="overloaded"):
        await request()
    release.set()
    await asyncio.gather(holder, waiter)
    assert _sample(metrics, "voice_stage_inflight", stage="llm") == 0
    assert _sample(metrics, "voice_stage_max_concurrency", stage="llm") == 1
    assert _sample(metrics, "voice_stage_requests_total", stage="llm", outcome="ok") == 2
    assert _sample(metrics, "voice_stage_requests_total", stage="llm", outcome="overload") == 1
    assert _sample(metrics, "voice_stage_queue_wait_seconds_count", stage="llm") == 2


async def test_each_request_is_counted_once_with_its_outcome() -> None:
    metrics = Metrics()
    admission = StageAdmission("tts", slots=2, queue_size=0, metrics=metrics)
    with pytest.raises(ValueError):
        async with admission.admit():
            raise ValueError("engine bug")
    blocked = asyncio.Event()

    async def stuck() -> None:
        async with admission.admit():
            await blocked.wait()

    task = asyncio.create_task(stuck())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    counts = {
        o: _sample(metrics, "voice_stage_requests_total", stage="tts", outcome=o)
        for o in ("ok", "error", "cancelled", "overload")
    }
    assert counts == {"ok": 0, "error": 1, "cancelled": 1, "overload": 0}
    assert outcome_of(None) == "ok" and outcome_of(GeneratorExit()) == "cancelled"


@pytest.mark.parametrize(("max_size", "workers"), [(8, 1), (4, 2)])
def test_a_batched_stage_reports_its_slots_as_max_concurrency(max_size: int, workers: int) -> None:
    metrics = Metrics()
    MicroBatcher("asr", list, BatchConfig(max_size=max_size, queue_size=64, workers=workers), metrics)
    assert _sample(metrics, "voice_stage_max_concurrency", stage="asr") == max_size * workers


def test_llm_and_tts_report_their_slots_as_max_concurrency() -> None:
    metrics = Metrics()
    InProcessLlm(LlmSettings(base_url="http://127.0.0.1:1/v1", max_concurrency=5), metrics)
    InProcessTts(TtsSettings(max_concurrency=3), metrics, engines={})
    assert _sample(metrics, "voice_stage_max_concurrency", stage="llm") == 5
    assert _sample(metrics, "voice_stage_max_concurrency", stage="tts") == 3


class _DeadEngine:
    name = "edge"
    languages: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.calls = 0
        self.hold = asyncio.Event()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def synthesize(self, text: str, language: str) -> AsyncIterator[PcmChunk]:
        self.calls += 1
        await self.hold.wait()
        raise ProviderUnavailableError(self.name, "down")
        yield  # pragma: no cover (makes this an async generator)


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_tts_half_open_breaker_lets_one_probe_through() -> None:
    dead, clock = _DeadEngine(), _Clock()
    dead.hold.set()
    router = TtsRouter({"edge": dead}, {"en": ["edge"]}, Metrics(), 1, 60.0, clock)  # type: ignore[dict-item]
    with pytest.raises(ProviderUnavailableError):
        _ = [c async for c in router.synthesize("hi", "en")]
    clock.now = 61.0
    dead.hold.clear()  # the probe hangs until released
    probe = asyncio.create_task(anext(router.synthesize("hi", "en")))
    await asyncio.sleep(0)
    with pytest.raises(ProviderUnavailableError, match="no engine available"):
        await anext(router.synthesize("hi", "en"))  # skipped while the probe is out
    assert dead.calls == 2
    probe.cancel()  # the probe's caller goes away: no verdict, the next request may probe
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert router.breakers["edge"].allows(clock.now)
