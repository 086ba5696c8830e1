"""One place that builds each stage for a process.

The all-in-one server and every stage service load their engines through these builders, so a
stage behaves the same whether the gateway calls it directly or over the network. Each builder is
an async context manager: it loads the model (or starts the local llama.cpp server), yields an
object implementing the stage's Protocol of `common.stages`, and tears everything down after.

Caching (the `cache` package) wraps the built stage at the single marked spot in each builder.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from voice_pipeline.asr.settings import AsrSettings
from voice_pipeline.llm.settings import LlmSettings
from voice_pipeline.tts.settings import TtsSettings
from voice_pipeline.vad.settings import VadSettings

if TYPE_CHECKING:  # the stage service table imports this for the model lists: no numpy at import
    from voice_pipeline.cache.build import Caches
    from voice_pipeline.common.metrics import Metrics
    from voice_pipeline.common.stages import AsrStage, LlmStage, TtsStage, VadStage

log = logging.getLogger(__name__)


@asynccontextmanager
async def build_vad(settings: VadSettings, metrics: Metrics) -> AsyncIterator[VadStage]:
    """Silero VAD, sessions batched in lock-step (no cache: audio streams never repeat)."""
    from voice_pipeline.vad.stage import InProcessVad

    async with InProcessVad(settings, metrics) as vad:
        yield vad


@asynccontextmanager
async def build_asr(
    settings: AsrSettings, metrics: Metrics, caches: Caches | None = None
) -> AsyncIterator[AsrStage]:
    """The configured ASR back end, utterances batched across sessions."""
    from voice_pipeline.asr.stage import InProcessAsr

    async with InProcessAsr(settings, metrics) as asr:
        # Cached by audio hash -> transcript.
        yield caches.wrap_asr(asr, settings) if caches is not None else asr


@asynccontextmanager
async def build_llm(
    settings: LlmSettings, metrics: Metrics, caches: Caches | None = None
) -> AsyncIterator[LlmStage]:
    """The LLM provider router; a local llama.cpp server is started for a provider without a URL."""
    from voice_pipeline.llm.stage import InProcessLlm

    async with AsyncExitStack() as stack:
        if settings.needs_local_server():
            from voice_pipeline.llm.llamacpp import LlamaCppServer

            server = LlamaCppServer.from_settings(settings)
            await stack.enter_async_context(server)
            settings = settings.with_local_server(server.base_url)
            log.info("local LLM server ready at %s", server.base_url)
        llm = await stack.enter_async_context(InProcessLlm(settings, metrics))
        # Semantic cache of first-turn replies; the caller starts the common-questions preload
        # (in all-in-one mode it also warms the TTS cache).
        yield caches.wrap_llm(llm, settings) if caches is not None else llm


@asynccontextmanager
async def build_tts(
    settings: TtsSettings, metrics: Metrics, caches: Caches | None = None
) -> AsyncIterator[TtsStage]:
    """The TTS engine router with Opus framing at the requested rate."""
    from voice_pipeline.tts.stage import InProcessTts

    async with InProcessTts(settings, metrics) as tts:
        # Cached by (text, voice, format) -> encoded audio.
        yield caches.wrap_tts(tts, settings) if caches is not None else tts


# --- models each stage loads (installed on demand by `serve`) ------------------------------------


def vad_models(settings: VadSettings) -> list[str]:
    return ["silero-vad"]


def asr_models(settings: AsrSettings) -> list[str]:
    return [settings.whisper_model] if settings.backend == "whisper" else []


def llm_models(settings: LlmSettings) -> list[str]:
    return [settings.local_model] if settings.needs_local_server() else []


def tts_models(settings: TtsSettings) -> list[str]:
    return [settings.piper_model] if any("piper" in names for names in settings.engines.values()) else []
