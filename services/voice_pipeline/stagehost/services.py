"""The one table of stage services: which stages run as their own process, and how each is built.

Each `StageService` names its stage, its settings class (`stagehost.settings`), the models to
install before it starts, and the builder of the served stage. The builders call
`voice_pipeline.assembly`, so a stage behaves the same in its own process as in all-in-one mode;
`create_app` hands the builder to the one stage host (`stagehost.app`). `voice-pipeline serve
<stage>` looks stages up here; a unit test checks the table against the operator's contract
(`contract.MODEL_STAGES`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from voice_pipeline import assembly
from voice_pipeline.stagehost.settings import (
    AsrServiceSettings,
    LlmServiceSettings,
    StageServiceSettings,
    TtsServiceSettings,
    VadServiceSettings,
)

if TYPE_CHECKING:  # the table is read by `voice-pipeline --help`: no model runtime at import
    from fastapi import FastAPI

    from voice_pipeline.common.metrics import Metrics
    from voice_pipeline.common.stages import AsrStage, LlmStage, ServedStage, TtsStage, VadStage


S = TypeVar("S", bound=StageServiceSettings)


@dataclass(frozen=True)
class StageService(Generic[S]):
    name: str
    summary: str  # `voice-pipeline serve <name> --help`
    settings_class: type[S]
    models: Callable[[S], list[str]]
    build: Callable[[S, Metrics], AbstractAsyncContextManager[ServedStage]]

    def create_app(self, settings: S, metrics: Metrics | None = None) -> FastAPI:
        from voice_pipeline.stagehost.app import create_stage_app

        return create_stage_app(self.name, settings.service, lambda m: self.build(settings, m), metrics)


@asynccontextmanager
async def _vad(settings: VadServiceSettings, metrics: Metrics) -> AsyncIterator[VadStage]:
    async with assembly.build_vad(settings.vad, metrics) as stage:
        yield stage


# The caches of a stage service are Redis only (VP_CACHE__REDIS_URL): per-replica memory caches
# would split the hits.


@asynccontextmanager
async def _asr(settings: AsrServiceSettings, metrics: Metrics) -> AsyncIterator[AsrStage]:
    from voice_pipeline.cache.build import open_caches

    async with (
        open_caches(settings.cache, metrics, allow_memory=False, stages=("asr",)) as caches,
        assembly.build_asr(settings.asr, metrics, caches) as stage,
    ):
        yield stage


@asynccontextmanager
async def _llm(settings: LlmServiceSettings, metrics: Metrics) -> AsyncIterator[LlmStage]:
    from voice_pipeline.cache.build import open_caches

    async with (
        open_caches(settings.cache, metrics, allow_memory=False, stages=("llm",)) as caches,
        assembly.build_llm(settings.llm, metrics, caches) as stage,
    ):
        caches.start_preload(stage, settings.llm.system_prompts, None, None)
        yield stage


@asynccontextmanager
async def _tts(settings: TtsServiceSettings, metrics: Metrics) -> AsyncIterator[TtsStage]:
    from voice_pipeline.cache.build import open_caches

    async with (
        open_caches(settings.cache, metrics, allow_memory=False, stages=("tts",)) as caches,
        assembly.build_tts(settings.tts, metrics, caches) as stage,
    ):
        yield stage


STAGE_SERVICES: dict[str, StageService[Any]] = {
    "vad": StageService(
        "vad",
        "the VAD stage service (Silero, sessions batched)",
        VadServiceSettings,
        lambda s: assembly.vad_models(s.vad),
        _vad,
    ),
    "asr": StageService(
        "asr",
        "the ASR stage service (utterances batched)",
        AsrServiceSettings,
        lambda s: assembly.asr_models(s.asr),
        _asr,
    ),
    "llm": StageService(
        "llm",
        "the LLM stage service (a provider, or a local llama.cpp server)",
        LlmServiceSettings,
        lambda s: assembly.llm_models(s.llm),
        _llm,
    ),
    "tts": StageService(
        "tts",
        "the TTS stage service (engine router, Opus out)",
        TtsServiceSettings,
        lambda s: assembly.tts_models(s.tts),
        _tts,
    ),
}
