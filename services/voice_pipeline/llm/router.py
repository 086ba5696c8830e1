"""The LLM router: several providers, the quickest-to-answer chosen per request, failover before
the first token.

Choice. Each provider keeps an EWMA of its time to first token (TTFT), the number of requests it
has in flight and a configured weight. Its score is `ewma * (1 + inflight) / weight`: the expected
wait for a first token grows with the load already sent to it, and a weight of 2 means "worth
twice the latency". The lowest score wins; a provider never measured borrows the best measured
EWMA and wins the tie, so a new provider gets traffic (and a measurement) instead of starving.

Limits. A provider with `max_concurrency` requests in flight is not chosen; when every usable
provider is full the caller gets OverloadedError at once (never an unbounded wait).

Circuit breaker (per provider, `common.breaker`). Closed: requests flow. `failures_to_open`
consecutive failures open it: the provider is skipped for `cooldown_s`. Then half-open: exactly one
request probes it; success closes the breaker, failure opens it for another cooldown. When every breaker is open, a
request still goes to the provider due to be probed soonest: with no alternative, refusing at once
would only turn a slow provider into certain failure.

Failover. A provider that fails before its first token (connection refused, HTTP error, no token
within `first_token_timeout_s`) costs nothing but time: the next provider by score is tried with
the same messages. After the first token the reply is already being spoken, so an error ends the
reply (LlmStreamError) instead of splicing in another model's words.

`rank` is pure (the clock is passed in); the unit tests drive them with fakes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from voice_pipeline.common.breaker import Breaker
from voice_pipeline.common.errors import OverloadedError, ProviderUnavailableError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import ChatMessage
from voice_pipeline.llm.openai_client import LlmStreamError

log = logging.getLogger(__name__)
STAGE = "llm"
# Score of unmeasured providers when no provider has a measurement yet.
DEFAULT_LATENCY_S = 1.0


class LlmProvider(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        """Raise ProviderUnavailableError before the first delta when the provider cannot serve."""
        ...


@dataclass
class ProviderState:
    provider: LlmProvider
    weight: float = 1.0
    max_concurrency: int = 16
    breaker: Breaker = field(default_factory=Breaker)
    ewma_s: float | None = None  # time to first token
    inflight: int = 0

    @property
    def name(self) -> str:
        return self.provider.name

    def observe_ttft(self, seconds: float, alpha: float) -> None:
        self.ewma_s = seconds if self.ewma_s is None else alpha * seconds + (1 - alpha) * self.ewma_s


def score(state: ProviderState, prior_s: float) -> float:
    latency = state.ewma_s if state.ewma_s is not None else prior_s
    return latency * (1 + state.inflight) / state.weight


def rank(states: Sequence[ProviderState], now: float) -> list[ProviderState]:
    """Usable providers (breaker allows, below their limit), best score first."""
    measured = [s.ewma_s for s in states if s.ewma_s is not None]
    prior = min(measured) if measured else DEFAULT_LATENCY_S
    usable = [s for s in states if s.inflight < s.max_concurrency and s.breaker.allows(now)]
    # On equal scores an unmeasured provider goes first (so it gets measured), then config order.
    return sorted(usable, key=lambda s: (score(s, prior), s.ewma_s is not None))  # sorted() is stable


class LlmRouter:
    """Implements the LlmProvider protocol itself, so the stage sees one provider."""

    name = "router"

    def __init__(
        self,
        states: Sequence[ProviderState],
        metrics: Metrics,
        first_token_timeout_s: float = 15.0,
        ewma_alpha: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not states:
            raise ValueError("the LLM router needs at least one provider")
        self.states = list(states)
        self.metrics = metrics
        self.first_token_timeout_s = first_token_timeout_s
        self.ewma_alpha = ewma_alpha
        self.clock = clock

    def __repr__(self) -> str:
        return f"LlmRouter({[s.name for s in self.states]})"

    async def start(self) -> None:
        for state in self.states:
            await state.provider.start()

    async def close(self) -> None:
        for state in self.states:
            await state.provider.close()

    def _count(self, state: ProviderState, outcome: str) -> None:
        self.metrics.provider.labels(STAGE, state.name, outcome).inc()

    def _next(self, tried: set[str], errors: list[str]) -> ProviderState:
        now = self.clock()
        ranked = [s for s in rank(self.states, now) if s.name not in tried]
        if ranked:
            return ranked[0]
        if errors:
            raise ProviderUnavailableError(STAGE, "every provider failed: " + "; ".join(errors))
        untried = [s for s in self.states if s.name not in tried]
        full = [s for s in untried if s.breaker.allows(now) and s.inflight >= s.max_concurrency]
        if full:
            raise OverloadedError(STAGE, sum(s.max_concurrency for s in full))
        # Every breaker is open and nothing was tried yet. Failing fast helps nobody when there is
        # no alternative (the single local server busy with a long queue trips its breaker just
        # like a dead one), so the provider due to be probed soonest gets this request.
        spare = [s for s in untried if s.inflight < s.max_concurrency]
        if not spare:
            raise OverloadedError(STAGE, sum(s.max_concurrency for s in untried))
        last = min(spare, key=lambda s: s.breaker.opened_at or 0.0)
        log.info("every llm provider's breaker is open; trying %s as the last resort", last.name)
        return last

    async def stream_chat(self, messages: list[ChatMessage]) -> AsyncGenerator[str, None]:
        tried: set[str] = set()
        errors: list[str] = []
        while True:
            state = self._next(tried, errors)
            tried.add(state.name)
            started = self.clock()
            state.breaker.attempt(started)
            state.inflight += 1
            stream = state.provider.stream_chat(messages)
            outcome, verdict = "cancelled", False
            try:
                try:
                    async with asyncio.timeout(self.first_token_timeout_s):
                        first = await anext(stream)
                except StopAsyncIteration:
                    first = ""  # an empty reply is still an answer
                except TimeoutError:
                    raise ProviderUnavailableError(
                        state.name, f"no first token within {self.first_token_timeout_s:g} s"
                    ) from None
            except ProviderUnavailableError as exc:
                state.breaker.failure(self.clock())
                outcome, verdict = "error", True
                errors.append(str(exc))
                log.warning(
                    "llm provider %s failed before its first token (after %.0f ms), failing over: %s",
                    state.name,
                    (self.clock() - started) * 1000,
                    exc,
                )
                await self._finish(state, stream, outcome, verdict)
                continue
            except BaseException as exc:
                if not isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
                    outcome = "error"
                await self._finish(state, stream, outcome, verdict)
                raise
            state.observe_ttft(self.clock() - started, self.ewma_alpha)
            state.breaker.success()
            verdict = True
            try:
                if first:
                    yield first
                async for delta in stream:
                    yield delta
                outcome = "ok"
            except (ProviderUnavailableError, LlmStreamError) as exc:
                state.breaker.failure(self.clock())
                outcome = "error"
                if isinstance(exc, LlmStreamError):
                    raise
                raise LlmStreamError(f"provider '{state.name}' failed mid-reply: {exc}") from exc
            except Exception:
                outcome = "error"
                raise
            finally:
                await self._finish(state, stream, outcome, verdict)
            return

    async def _finish(
        self, state: ProviderState, stream: AsyncIterator[str], outcome: str, verdict: bool
    ) -> None:
        state.inflight -= 1
        if not verdict:
            state.breaker.abandon()
        self._count(state, outcome)
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # closing a broken stream must not mask the real outcome
                log.debug("closing the stream of %s failed", state.name, exc_info=True)
