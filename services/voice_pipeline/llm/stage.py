"""In-process LLM stage: the provider router behind a concurrency limit, with stage metrics.

The router (llm/router.py) picks a provider per request and fails over before the first token;
with the flat single-provider settings it routes to that one provider (breaker included).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import TracebackType

from voice_pipeline.common.admission import StageAdmission
from voice_pipeline.common.breaker import Breaker
from voice_pipeline.common.errors import ConfigError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.secrets import read_api_key
from voice_pipeline.common.stages import ChatMessage
from voice_pipeline.llm.anthropic_client import AnthropicProvider
from voice_pipeline.llm.openai_client import OpenAICompatibleProvider
from voice_pipeline.llm.router import LlmProvider, LlmRouter, ProviderState
from voice_pipeline.llm.settings import DEFAULT_ANTHROPIC_URL, LlmSettings, ProviderSettings

STAGE = "llm"

__all__ = ["InProcessLlm", "LlmProvider", "provider_from_settings", "router_from_settings"]


def provider_from_settings(settings: LlmSettings, spec: ProviderSettings | None = None) -> LlmProvider:
    """The client of one provider (`spec`, default: the single provider of the flat fields)."""
    spec = spec or settings.effective_providers()[0]
    if spec.is_local:
        raise ConfigError(
            f"llm provider '{spec.name}' has no base_url and no local llama.cpp server was started for it"
        )
    api_key = read_api_key(spec.api_key_file, spec.api_key_env)
    model = spec.model or settings.model
    limits = (
        settings.max_tokens,
        settings.temperature,
        settings.connect_timeout_s,
        settings.first_token_timeout_s,
    )
    if spec.type == "anthropic":
        return AnthropicProvider(spec.name, spec.base_url or DEFAULT_ANTHROPIC_URL, model, api_key, *limits)
    return OpenAICompatibleProvider(spec.name, spec.base_url, model, api_key, *limits)


def router_from_settings(
    settings: LlmSettings, metrics: Metrics, providers: list[LlmProvider] | None = None
) -> LlmRouter:
    """The router over the configured providers (`providers` replaces the clients, for tests)."""
    specs = settings.effective_providers()
    clients = providers or [provider_from_settings(settings, spec) for spec in specs]
    weights = {spec.name: spec for spec in specs}
    states = []
    for client in clients:
        spec = weights.get(client.name)
        states.append(
            ProviderState(
                client,
                weight=spec.weight if spec else 1.0,
                max_concurrency=spec.max_concurrency if spec else settings.max_concurrency,
                breaker=Breaker(settings.breaker_failures, settings.breaker_cooldown_s),
            )
        )
    return LlmRouter(states, metrics, settings.first_token_timeout_s, settings.ewma_alpha)


class InProcessLlm:
    """Implements common.stages.LlmStage; use as an async context manager."""

    def __init__(self, settings: LlmSettings, metrics: Metrics, provider: LlmProvider | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        if isinstance(provider, LlmRouter):
            self.router = provider
        else:
            self.router = router_from_settings(settings, metrics, [provider] if provider else None)
        self.provider: LlmProvider = self.router
        self.admission = StageAdmission(STAGE, settings.max_concurrency, settings.queue_size, metrics)

    async def __aenter__(self) -> InProcessLlm:
        await self.provider.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.provider.close()

    async def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        async with self.admission.admit() as ticket:
            first = True
            async for delta in self.provider.stream_chat(messages):
                if first:
                    self.metrics.latency.labels(STAGE).observe(time.perf_counter() - ticket.arrived)
                    first = False
                yield delta
