"""The LLM router over TWO real llama.cpp servers: losing one mid-run costs no turn.

Two cases of "provider down", both with the real servers and the real router:
- stopped (connection refused): the next turn fails over at once;
- frozen with SIGSTOP (accepts connections, never answers): the router gives up after its
  first-token timeout and fails over; the breaker then skips the frozen one.
Turns run one after another (a conversation); each must produce a non-empty reply. The timings
printed (`-s`) are the failover costs quoted in the README; nothing asserts on them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator

import pytest

from voice_pipeline.common.errors import ProviderUnavailableError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import ChatMessage
from voice_pipeline.llm.llamacpp import LlamaCppServer
from voice_pipeline.llm.openai_client import OpenAICompatibleProvider
from voice_pipeline.llm.router import rank
from voice_pipeline.llm.settings import LlmSettings, ProviderSettings
from voice_pipeline.llm.stage import InProcessLlm

pytestmark = pytest.mark.integration
FIRST_TOKEN_TIMEOUT_S = 3.0
TURN = [ChatMessage("system", "Answer in a few words."), ChatMessage("user", "Say hello.")]


async def _turn(llm: InProcessLlm) -> tuple[str, float]:
    started = time.perf_counter()
    first = 0.0
    text = ""
    async for delta in llm.stream_chat(TURN):
        if not text:
            first = time.perf_counter() - started
        text += delta
    return text, first


def _count(metrics: Metrics, provider: str, outcome: str) -> float:
    labels = {"stage": "llm", "provider": provider, "outcome": outcome}
    return metrics.registry.get_sample_value("voice_provider_requests_total", labels) or 0.0


@pytest.fixture
async def two_servers() -> AsyncIterator[dict[str, LlamaCppServer]]:
    settings = LlmSettings(local_threads=1, local_ctx=512)
    servers = {
        "llama-a": LlamaCppServer.from_settings(settings),
        "llama-b": LlamaCppServer.from_settings(settings),
    }
    try:
        for server in servers.values():
            await server.start()
        yield servers
    finally:
        for server in servers.values():
            process = server._process
            if process is not None and process.returncode is None:
                os.kill(process.pid, signal.SIGCONT)  # a frozen server must be able to exit
            await server.stop()


def _settings(servers: dict[str, LlamaCppServer]) -> LlmSettings:
    return LlmSettings(
        providers=[ProviderSettings(name=name, base_url=s.base_url) for name, s in servers.items()],
        max_tokens=6,
        temperature=0,
        first_token_timeout_s=FIRST_TOKEN_TIMEOUT_S,
        breaker_failures=1,
        breaker_cooldown_s=300,
    )


async def test_stopping_a_server_mid_run_fails_over_without_a_failed_turn(
    two_servers: dict[str, LlamaCppServer],
) -> None:
    metrics = Metrics()
    async with InProcessLlm(_settings(two_servers), metrics) as llm:
        warm = [await _turn(llm) for _ in range(3)]  # both get measured (unmeasured ones go first)
        assert all(text.strip() for text, _ in warm)
        assert {s.name for s in llm.router.states if s.ewma_s is not None} == {"llama-a", "llama-b"}

        preferred = rank(llm.router.states, time.monotonic())[0].name
        other = next(name for name in two_servers if name != preferred)
        await two_servers[preferred].stop()  # connection refused from now on

        refused_costs = []
        probe = OpenAICompatibleProvider("probe", two_servers[preferred].base_url, "m")
        await probe.start()  # a started client, as the router's providers are
        for _ in range(10):  # what one refused attempt costs (connect + error)
            started = time.perf_counter()
            with pytest.raises(ProviderUnavailableError):
                [d async for d in probe.stream_chat(TURN)]
            refused_costs.append(time.perf_counter() - started)
        await probe.close()
        text, refused_ttft = await _turn(llm)  # tries the stopped one first, fails over
        assert text.strip()
        after = [await _turn(llm) for _ in range(2)]  # breaker open: straight to the live one
        assert all(t.strip() for t, _ in after)

    assert _count(metrics, preferred, "error") == 1
    assert _count(metrics, other, "ok") >= 3
    assert (
        metrics.registry.get_sample_value("voice_stage_requests_total", {"stage": "llm", "outcome": "error"})
        is None
    )
    normal = sorted(ttft for _, ttft in warm + after)[len(warm + after) // 2]
    cost = sorted(refused_costs)[len(refused_costs) // 2]
    print(f"\nconnection refused: one failed attempt costs {cost * 1000:.1f} ms (median of 10); "
          f"the failed-over turn's first token {refused_ttft * 1000:.0f} ms, "
          f"median {normal * 1000:.0f} ms without failover")  # fmt: skip


async def test_frozen_server_fails_over_after_the_first_token_timeout(
    two_servers: dict[str, LlamaCppServer],
) -> None:
    metrics = Metrics()
    async with InProcessLlm(_settings(two_servers), metrics) as llm:
        warm = [await _turn(llm) for _ in range(2)]
        preferred = rank(llm.router.states, time.monotonic())[0].name
        process = two_servers[preferred]._process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)  # the port still accepts; nothing answers
        try:
            text, frozen_ttft = await _turn(llm)
            assert text.strip()
            skipped_text, skipped_ttft = await _turn(llm)  # breaker open: no timeout paid again
            assert skipped_text.strip()
        finally:
            os.kill(process.pid, signal.SIGCONT)
    assert _count(metrics, preferred, "error") == 1
    assert frozen_ttft >= FIRST_TOKEN_TIMEOUT_S  # the timeout was what detected it (not a timing SLA)
    print(f"\nfrozen provider: first token {frozen_ttft * 1000:.0f} ms with failover "
          f"(first-token timeout {FIRST_TOKEN_TIMEOUT_S:g} s), next turn {skipped_ttft * 1000:.0f} ms, "
          f"warm {min(t for _, t in warm) * 1000:.0f} ms")  # fmt: skip
