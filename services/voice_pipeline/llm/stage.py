"""In-process LLM stage: one provider behind a concurrency limit, with stage metrics.

`LlmProvider` is the seam for the router (several providers, failover before the first token).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Protocol

from voice_pipeline.common.errors import OverloadedError, ProviderUnavailableError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import ChatMessage
from voice_pipeline.llm.openai_client import OpenAICompatibleProvider, read_api_key
from voice_pipeline.llm.settings import LlmSettings

STAGE = "llm"


class LlmProvider(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]: ...


def provider_from_settings(settings: LlmSettings) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        name=settings.provider_name,
        base_url=settings.base_url,
        model=settings.model,
        api_key=read_api_key(settings.api_key_file, settings.api_key_env),
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        connect_timeout_s=settings.connect_timeout_s,
        first_token_timeout_s=settings.first_token_timeout_s,
    )


class InProcessLlm:
    """Implements common.stages.LlmStage; use as an async context manager."""

    def __init__(self, settings: LlmSettings, metrics: Metrics, provider: LlmProvider | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.provider: LlmProvider = provider or provider_from_settings(settings)
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._waiting = 0
        metrics.max_concurrency.labels(STAGE).set(settings.max_concurrency)

    async def __aenter__(self) -> InProcessLlm:
        await self.provider.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.provider.close()

    async def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        if self._slots.locked() and self._waiting >= self.settings.queue_size:
            self.metrics.requests.labels(STAGE, "overload").inc()
            raise OverloadedError(STAGE, self.settings.queue_size)
        enqueued = time.perf_counter()
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self.metrics.queue_wait.labels(STAGE).observe(time.perf_counter() - enqueued)
        self.metrics.inflight.labels(STAGE).inc()
        outcome, first = "error", True
        try:
            async for delta in self.provider.stream_chat(messages):
                if first:
                    self.metrics.latency.labels(STAGE).observe(time.perf_counter() - enqueued)
                    first = False
                yield delta
            outcome = "ok"
        except ProviderUnavailableError:
            outcome = "error"
            raise
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        finally:
            self._slots.release()
            self.metrics.inflight.labels(STAGE).dec()
            self.metrics.requests.labels(STAGE, outcome).inc()
            self.metrics.provider.labels(STAGE, self.provider.name, outcome).inc()
