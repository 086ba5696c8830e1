"""`voice-pipeline serve llm`: the language model: chat messages in, the reply streamed out as text deltas.

The stage is built by `voice_pipeline.assembly` exactly as in all-in-one mode and served over the
multiplexed transport (`transport.server`) by the common stage app (`common.app`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from voice_pipeline import assembly
from voice_pipeline.cache.settings import CacheSettings
from voice_pipeline.common.app import ServiceSettings, create_stage_app
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.llm.settings import LlmSettings
from voice_pipeline.transport.server import ServedStages

STAGE = "llm"


class LlmServiceSettings(BaseSettings):
    """Every setting of the llm service process: env `VP_<SECTION>__<KEY>` or a YAML file."""

    model_config = SettingsConfigDict(env_prefix="VP_", env_nested_delimiter="__", extra="forbid")

    service: ServiceSettings = Field(default_factory=ServiceSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)


def required_models(settings: LlmServiceSettings) -> list[str]:
    return assembly.llm_models(settings.llm)


def create_app(settings: LlmServiceSettings, metrics: Metrics | None = None) -> FastAPI:
    @asynccontextmanager
    async def build(metrics: Metrics) -> AsyncIterator[ServedStages]:
        from voice_pipeline.cache.build import open_caches

        # Redis only (VP_CACHE__REDIS_URL): per-replica memory caches would split the hits.
        async with (
            open_caches(settings.cache, metrics, allow_memory=False, stages=("llm",)) as caches,
            assembly.build_llm(settings.llm, metrics, caches) as stage,
        ):
            caches.start_preload(stage, settings.llm.system_prompts, None, None)
            yield ServedStages(llm=stage)

    return create_stage_app(STAGE, settings.service, build, metrics)
