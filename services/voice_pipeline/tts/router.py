"""Engine failover with a circuit breaker per engine (`common.breaker`).

An engine that fails before producing audio is skipped in favour of the next one for the
language. After `failures` consecutive failures its breaker opens and the engine is not even tried
for `cooldown_s`; then one request probes it again (half-open; the others skip it meanwhile). An
offline Edge TTS therefore costs one fast failure, then nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

from voice_pipeline.common.breaker import Breaker
from voice_pipeline.common.errors import ProviderUnavailableError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.tts.engine import PcmChunk, TtsEngine

log = logging.getLogger(__name__)


class TtsRouter:
    def __init__(
        self,
        engines: dict[str, TtsEngine],
        order: dict[str, list[str]],
        metrics: Metrics,
        failures_to_open: int = 2,
        cooldown_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engines = engines
        self.order = order
        self.metrics = metrics
        self.clock = clock
        self.breakers = {name: Breaker(failures_to_open, cooldown_s) for name in engines}

    def candidates(self, language: str) -> list[TtsEngine]:
        names = self.order.get(language) or self.order.get("en") or list(self.engines)
        return [
            self.engines[n]
            for n in names
            if n in self.engines and (not self.engines[n].languages or language in self.engines[n].languages)
        ]

    async def synthesize(self, text: str, language: str) -> AsyncIterator[PcmChunk]:
        errors = []
        for engine in self.candidates(language):
            breaker = self.breakers[engine.name]
            now = self.clock()
            if not breaker.allows(now):
                continue
            probe = breaker.attempt(now)
            produced = False
            try:
                async for chunk in engine.synthesize(text, language):
                    produced = True
                    yield chunk
            except BaseException as exc:
                if not isinstance(exc, ProviderUnavailableError):
                    if probe:
                        breaker.abandon()  # no verdict on the engine (cancelled, or not its fault)
                    raise
                breaker.failure(self.clock())
                self.metrics.provider.labels("tts", engine.name, "error").inc()
                if produced:
                    raise  # audio already went out: a switch of voice mid-sentence is worse
                log.info("tts engine %s unavailable, trying the next: %s", engine.name, exc)
                errors.append(str(exc))
                continue
            breaker.success()
            self.metrics.provider.labels("tts", engine.name, "ok").inc()
            return
        raise ProviderUnavailableError("tts", "; ".join(errors) or f"no engine available for '{language}'")
