"""`voice-pipeline serve vad`: Silero VAD: device audio streams in, speech boundaries out, sessions batched in lock-step.

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
from voice_pipeline.common.app import ServiceSettings, create_stage_app
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.transport.server import ServedStages
from voice_pipeline.vad.settings import VadSettings

STAGE = "vad"


class VadServiceSettings(BaseSettings):
    """Every setting of the vad service process: env `VP_<SECTION>__<KEY>` or a YAML file."""

    model_config = SettingsConfigDict(env_prefix="VP_", env_nested_delimiter="__", extra="forbid")

    service: ServiceSettings = Field(default_factory=ServiceSettings)
    vad: VadSettings = Field(default_factory=VadSettings)


def required_models(settings: VadServiceSettings) -> list[str]:
    return assembly.vad_models(settings.vad)


def create_app(settings: VadServiceSettings, metrics: Metrics | None = None) -> FastAPI:
    @asynccontextmanager
    async def build(metrics: Metrics) -> AsyncIterator[ServedStages]:
        async with assembly.build_vad(settings.vad, metrics) as stage:
            yield ServedStages(vad=stage)

    return create_stage_app(STAGE, settings.service, build, metrics)
