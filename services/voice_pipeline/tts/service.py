"""`voice-pipeline serve tts`: speech synthesis: one sentence in, Opus packets streamed out at the requested rate.

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
from voice_pipeline.transport.server import ServedStages
from voice_pipeline.tts.settings import TtsSettings

STAGE = "tts"


class TtsServiceSettings(BaseSettings):
    """Every setting of the tts service process: env `VP_<SECTION>__<KEY>` or a YAML file."""

    model_config = SettingsConfigDict(env_prefix="VP_", env_nested_delimiter="__", extra="forbid")

    service: ServiceSettings = Field(default_factory=ServiceSettings)
    tts: TtsSettings = Field(default_factory=TtsSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)


def required_models(settings: TtsServiceSettings) -> list[str]:
    return assembly.tts_models(settings.tts)


def create_app(settings: TtsServiceSettings, metrics: Metrics | None = None) -> FastAPI:
    @asynccontextmanager
    async def build(metrics: Metrics) -> AsyncIterator[ServedStages]:
        from voice_pipeline.cache.build import open_caches

        # Redis only (VP_CACHE__REDIS_URL): per-replica memory caches would split the hits.
        async with (
            open_caches(settings.cache, metrics, allow_memory=False, stages=("tts",)) as caches,
            assembly.build_tts(settings.tts, metrics, caches) as stage,
        ):
            yield ServedStages(tts=stage)

    return create_stage_app(STAGE, settings.service, build, metrics)
