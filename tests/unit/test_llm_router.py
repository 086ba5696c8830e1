"""The LLM router's decisions with fake providers and a fake clock: choice, limits, breaker, failover."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from voice_pipeline.common.breaker import Breaker
from voice_pipeline.common.errors import OverloadedError, ProviderUnavailableError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import ChatMessage
from voice_pipeline.llm.openai_client import LlmStreamError
from voice_pipeline.llm.router import LlmRouter, ProviderState, rank
from voice_pipeline.llm.settings import LlmSettings, ProviderSettings
from voice_pipeline.llm.stage import InProcessLlm, router_from_settings

MESSAGES = [ChatMessage("user", "hi")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeProvider:
    """Answers `reply` token by token; `fail_before`/`fail_after` make it fail; `ttft` advances the clock."""

    def __init__(self, name: str, clock: Clock, ttft: float = 0.1, reply: str = "a b c") -> None:
        self.name = name
        self.clock = clock
        self.ttft = ttft
        self.reply = reply.split()
        self.fail_before = False
        self.fail_after = False
        self.hang = False
        self.calls = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail_before:
            raise ProviderUnavailableError(self.name, "connection refused")
        self.clock.now += self.ttft
        for i, token in enumerate(self.reply):
            if i == 1 and self.fail_after:
                raise LlmStreamError(f"provider '{self.name}' failed mid-reply")
            yield token


def _states(*providers: FakeProvider, **kwargs: float) -> list[ProviderState]:
    return [ProviderState(p, breaker=Breaker(2, 10.0), **kwargs) for p in providers]  # type: ignore[arg-type]


def _router(states: list[ProviderState], clock: Clock, timeout: float = 5.0) -> tuple[LlmRouter, Metrics]:
    metrics = Metrics()
    return LlmRouter(states, metrics, first_token_timeout_s=timeout, ewma_alpha=0.5, clock=clock), metrics


async def _reply(router: LlmRouter) -> list[str]:
    return [t async for t in router.stream_chat(MESSAGES)]


def _count(metrics: Metrics, provider: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "voice_provider_requests_total", {"stage": "llm", "provider": provider, "outcome": outcome}
    )
    return value or 0.0


# --- pure choice ------------------------------------------------------------------------------


def test_rank_prefers_lower_ewma_then_load_then_weight() -> None:
    clock = Clock()
    fast, slow = FakeProvider("fast", clock), FakeProvider("slow", clock)
    a, b = _states(fast, slow)
    a.ewma_s, b.ewma_s = 0.2, 0.5
    assert [s.name for s in rank([a, b], clock())] == ["fast", "slow"]
    a.inflight = 2  # 0.2 * 3 = 0.6 > 0.5: the loaded fast one now ranks second
    assert [s.name for s in rank([a, b], clock())] == ["slow", "fast"]
    b.weight = 0.5  # 0.5 * 1 / 0.5 = 1.0 > 0.6: weight makes "slow" less preferred again
    assert [s.name for s in rank([a, b], clock())] == ["fast", "slow"]


def test_unmeasured_provider_borrows_the_best_ewma_and_wins_ties() -> None:
    clock = Clock()
    a, b = _states(FakeProvider("a", clock), FakeProvider("b", clock))
    assert [s.name for s in rank([a, b], clock())] == ["a", "b"]
    b.ewma_s = 0.3  # "a" never measured: scored 0.3 too, and the unmeasured one wins the tie
    assert [s.name for s in rank([b, a], clock())] == ["a", "b"]
    a.weight = 0.9
    assert [s.name for s in rank([a, b], clock())] == ["b", "a"]


def test_full_or_open_providers_are_not_ranked() -> None:
    clock = Clock()
    a, b = _states(FakeProvider("a", clock), FakeProvider("b", clock))
    a.max_concurrency, a.inflight = 1, 1
    assert [s.name for s in rank([a, b], clock())] == ["b"]
    b.breaker.failure(clock())
    b.breaker.failure(clock())
    assert rank([a, b], clock()) == []


# --- breaker ------------------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_and_half_opens_for_one_probe() -> None:
    breaker = Breaker(failures_to_open=2, cooldown_s=10)
    breaker.failure(0)
    assert breaker.state(0) == "closed"
    breaker.success()  # a success resets the count: failures must be consecutive
    breaker.failure(1)
    assert breaker.state(1) == "closed"
    breaker.failure(2)
    assert breaker.state(5) == "open" and not breaker.allows(5)
    assert breaker.state(12) == "half_open" and breaker.allows(12)
    breaker.attempt(12)
    assert not breaker.allows(12)  # only one probe at a time
    breaker.failure(13)  # failed probe: open again for a full cooldown
    assert breaker.state(20) == "open" and breaker.allows(23.5)
    breaker.attempt(23.5)
    breaker.success()
    assert breaker.state(23.5) == "closed" and breaker.failures == 0


def test_abandoned_probe_lets_the_next_request_probe() -> None:
    breaker = Breaker(1, 5)
    breaker.failure(0)
    breaker.attempt(6)
    breaker.abandon()
    assert breaker.allows(6)


# --- routing ----------------------------------------------------------------------------------


async def test_ewma_learns_time_to_first_token_and_routes_to_the_faster() -> None:
    clock = Clock()
    quick, sluggish = FakeProvider("quick", clock, ttft=0.2), FakeProvider("sluggish", clock, ttft=1.0)
    states = _states(sluggish, quick)
    router, metrics = _router(states, clock)
    assert await _reply(router) == ["a", "b", "c"]
    assert sluggish.calls == 1  # both unmeasured: config order
    assert states[0].ewma_s == pytest.approx(1.0)
    await _reply(router)
    assert quick.calls == 1  # unmeasured, it borrows the best EWMA and wins the tie: it gets measured
    for _ in range(3):
        await _reply(router)
    assert (quick.calls, sluggish.calls) == (4, 1)
    assert _count(metrics, "quick", "ok") == 4 and _count(metrics, "sluggish", "ok") == 1


async def test_ewma_update_uses_alpha() -> None:
    clock = Clock()
    p = FakeProvider("p", clock, ttft=1.0)
    states = _states(p)
    router, _ = _router(states, clock)
    await _reply(router)
    p.ttft = 0.2
    await _reply(router)
    assert states[0].ewma_s == pytest.approx(0.5 * 0.2 + 0.5 * 1.0)


async def test_concurrent_requests_spread_by_in_flight_load() -> None:
    clock = Clock()
    a, b = FakeProvider("a", clock), FakeProvider("b", clock)
    states = _states(a, b)
    states[0].ewma_s = states[1].ewma_s = 0.3
    router, _ = _router(states, clock)
    first = router.stream_chat(MESSAGES)
    assert await anext(first) == "a"  # holds a slot on provider a
    assert states[0].inflight == 1
    assert await _reply(router) == ["a", "b", "c"]
    assert b.calls == 1  # the second request went to the idle provider
    await first.aclose()
    assert states[0].inflight == 0


async def test_per_provider_limit_and_overload_when_all_are_full() -> None:
    clock = Clock()
    a = FakeProvider("a", clock)
    states = _states(a)
    states[0].max_concurrency = 1
    router, _ = _router(states, clock)
    held = router.stream_chat(MESSAGES)
    await anext(held)
    with pytest.raises(OverloadedError):
        await _reply(router)
    await held.aclose()
    assert await _reply(router) == ["a", "b", "c"]


async def test_failover_before_first_token_is_invisible_to_the_caller() -> None:
    clock = Clock()
    down, up = FakeProvider("down", clock), FakeProvider("up", clock)
    down.fail_before = True
    router, metrics = _router(_states(down, up), clock)
    assert await _reply(router) == ["a", "b", "c"]
    assert (_count(metrics, "down", "error"), _count(metrics, "up", "ok")) == (1, 1)


async def test_first_token_timeout_fails_over() -> None:
    clock = Clock()
    silent, up = FakeProvider("silent", clock), FakeProvider("up", clock)
    silent.hang = True
    router, metrics = _router(_states(silent, up), clock, timeout=0.05)
    assert await _reply(router) == ["a", "b", "c"]
    assert _count(metrics, "silent", "error") == 1


async def test_no_failover_after_first_token() -> None:
    clock = Clock()
    flaky, other = FakeProvider("flaky", clock), FakeProvider("other", clock)
    flaky.fail_after = True
    router, metrics = _router(_states(flaky, other), clock)
    received = []
    with pytest.raises(LlmStreamError):
        async for token in router.stream_chat(MESSAGES):
            received.append(token)
    assert received == ["a"] and other.calls == 0
    assert _count(metrics, "flaky", "error") == 1


async def test_breaker_skips_a_dead_provider_then_probes_it_after_cooldown() -> None:
    clock = Clock()
    dead, up = FakeProvider("dead", clock), FakeProvider("up", clock)
    dead.fail_before = True
    states = _states(dead, up)
    router, _ = _router(states, clock)
    await _reply(router)
    await _reply(router)  # second consecutive failure opens the breaker (failures_to_open=2)
    assert dead.calls == 2 and states[0].breaker.state(clock()) == "open"
    await _reply(router)
    assert dead.calls == 2  # skipped while open
    clock.now += 11  # cooldown over: half-open, one probe
    dead.fail_before = False
    states[1].ewma_s = 5.0  # make sure the probe is ranked first
    await _reply(router)
    assert dead.calls == 3 and states[0].breaker.state(clock()) == "closed"


async def test_all_breakers_open_still_tries_the_provider_due_soonest() -> None:
    clock = Clock()
    a, b = FakeProvider("a", clock), FakeProvider("b", clock)
    a.fail_before = b.fail_before = True
    states = _states(a, b)
    router, _ = _router(states, clock)
    for _ in range(2):
        with pytest.raises(ProviderUnavailableError, match="every provider failed"):
            await _reply(router)
    assert states[0].breaker.state(clock()) == states[1].breaker.state(clock()) == "open"
    clock.now += 1
    states[1].breaker.opened_at = clock.now - 5  # b's cooldown ends first
    b.fail_before = False  # b recovered: the last-resort attempt succeeds
    assert await _reply(router) == ["a", "b", "c"]
    assert (a.calls, b.calls) == (2, 3)
    assert states[1].breaker.state(clock()) == "closed"
    with pytest.raises(ProviderUnavailableError, match="every provider failed"):
        b.fail_before = True
        states[1].breaker.failure(clock())
        states[1].breaker.failure(clock())
        await _reply(router)  # a's cooldown is older: one last-resort attempt, b is not tried too
    assert (a.calls, b.calls) == (3, 3)


async def test_cancelled_caller_counts_cancelled_and_frees_the_slot() -> None:
    clock = Clock()
    p = FakeProvider("p", clock)
    states = _states(p)
    router, metrics = _router(states, clock)
    stream = router.stream_chat(MESSAGES)
    await anext(stream)
    await stream.aclose()
    assert states[0].inflight == 0 and _count(metrics, "p", "cancelled") == 1
    assert states[0].breaker.failures == 0


# --- settings -> router -------------------------------------------------------------------------


def test_flat_settings_make_one_provider_and_providers_list_replaces_it(tmp_path: object) -> None:
    settings = LlmSettings(base_url="http://127.0.0.1:1/v1", provider_name="solo")
    router = router_from_settings(settings, Metrics())
    assert [s.name for s in router.states] == ["solo"]
    settings = LlmSettings(
        providers=[
            ProviderSettings(name="qwen", base_url="http://q/v1", weight=2, max_concurrency=4),
            ProviderSettings(name="claude", type="anthropic", model="claude-x"),
        ]
    )
    router = router_from_settings(settings, Metrics())
    assert [(s.name, s.weight, s.max_concurrency) for s in router.states] == [
        ("qwen", 2, 4),
        ("claude", 1, 16),
    ]
    assert "AnthropicProvider" in repr(router.states[1].provider)


def test_local_server_fills_only_providers_without_url() -> None:
    settings = LlmSettings(
        providers=[ProviderSettings(name="local"), ProviderSettings(name="cloud", base_url="http://c/v1")]
    )
    assert settings.needs_local_server()
    filled = settings.with_local_server("http://127.0.0.1:9/v1")
    assert [p.base_url for p in filled.providers] == ["http://127.0.0.1:9/v1", "http://c/v1"]
    assert not filled.needs_local_server()
    assert not LlmSettings(base_url="http://x/v1").needs_local_server()


def test_the_local_server_holds_one_answering_and_local_waiting_waiting() -> None:
    # The flat fields (make run's default) become one provider with the local server's limit.
    filled = LlmSettings(local_waiting=1).with_local_server("http://127.0.0.1:9/v1")
    assert [(p.name, p.base_url, p.max_concurrency) for p in filled.providers] == [
        ("local", "http://127.0.0.1:9/v1", 2)
    ]
    # Only local providers are cut; a cloud provider keeps its own limit.
    listed = LlmSettings(
        local_waiting=0,
        providers=[ProviderSettings(name="local"), ProviderSettings(name="cloud", base_url="http://c/v1")],
    ).with_local_server("http://127.0.0.1:9/v1")
    assert [p.max_concurrency for p in listed.providers] == [1, 16]


async def test_a_turn_beyond_the_local_servers_limit_is_refused_at_once() -> None:
    settings = LlmSettings(local_waiting=0).with_local_server("http://127.0.0.1:9/v1")
    gate = asyncio.Event()

    class Slow(FakeProvider):
        async def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
            await gate.wait()
            yield "ok"

    router = router_from_settings(settings, Metrics(), [Slow("local", Clock())])
    first = router.stream_chat([ChatMessage("user", "hi")])
    answering = asyncio.ensure_future(first.__anext__())
    await asyncio.sleep(0)
    with pytest.raises(OverloadedError):
        await router.stream_chat([ChatMessage("user", "and me?")]).__anext__()
    gate.set()
    assert await answering == "ok"
    await first.aclose()


def test_duplicate_provider_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        LlmSettings(providers=[ProviderSettings(name="a"), ProviderSettings(name="a")])


def test_providers_from_env_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from voice_pipeline.allinone import load_settings

    monkeypatch.setenv(
        "VP_LLM__PROVIDERS",
        '[{"name": "deepseek", "base_url": "https://api.deepseek.com/v1", "model": "deepseek-chat",'
        ' "api_key_env": "DEEPSEEK_KEY", "weight": 0.5}]',
    )
    settings = load_settings()
    assert settings.llm.providers[0].name == "deepseek" and settings.llm.providers[0].weight == 0.5


async def test_stage_counts_router_outcomes_once() -> None:
    clock = Clock()
    down, up = FakeProvider("down", clock), FakeProvider("up", clock)
    down.fail_before = True
    metrics = Metrics()
    router = LlmRouter(_states(down, up), metrics, clock=clock)
    async with InProcessLlm(LlmSettings(base_url="http://unused/v1"), metrics, router) as llm:
        assert [t async for t in llm.stream_chat(MESSAGES)] == ["a", "b", "c"]
    assert (
        metrics.registry.get_sample_value("voice_stage_requests_total", {"stage": "llm", "outcome": "ok"})
        == 1
    )
    assert _count(metrics, "down", "error") == 1 and _count(metrics, "up", "ok") == 1
