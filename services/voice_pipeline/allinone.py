"""All-in-one mode: the gateway with every stage in process, plus the local LLM server.

This is the embedded default behind `make run`. Stages are the same classes the stage services
wrap; here the gateway calls them directly (no network), and model work is still batched across
all connected devices.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from voice_pipeline.asr.settings import AsrSettings
from voice_pipeline.cache.settings import CacheSettings
from voice_pipeline.common.activity import SessionActivity
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.settings import build_settings
from voice_pipeline.gateway.auth import AuthSettings
from voice_pipeline.gateway.conversation import Stages
from voice_pipeline.gateway.ota import OtaSettings
from voice_pipeline.gateway.settings import GatewaySettings
from voice_pipeline.llm.settings import LlmSettings
from voice_pipeline.tts.settings import TtsSettings
from voice_pipeline.vad.settings import VadSettings

log = logging.getLogger(__name__)


class AllInOneSettings(BaseSettings):
    """Every setting of the all-in-one process: env `VP_<SECTION>__<KEY>` or a YAML file."""

    model_config = SettingsConfigDict(env_prefix="VP_", env_nested_delimiter="__", extra="forbid")

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    ota: OtaSettings = Field(default_factory=OtaSettings)
    vad: VadSettings = Field(default_factory=VadSettings)
    asr: AsrSettings = Field(default_factory=AsrSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    tts: TtsSettings = Field(default_factory=TtsSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)


def required_models(settings: AllInOneSettings) -> list[str]:
    """Installable models the configured engines load."""
    from voice_pipeline import assembly

    return [
        *assembly.vad_models(settings.vad),
        *assembly.asr_models(settings.asr),
        *assembly.llm_models(settings.llm),
        *assembly.tts_models(settings.tts),
    ]


def load_settings(overrides: dict[str, Any] | None = None) -> AllInOneSettings:
    return build_settings(AllInOneSettings, overrides)


@asynccontextmanager
async def in_process_stages(
    settings: AllInOneSettings, metrics: Metrics, activity: SessionActivity | None = None
) -> AsyncIterator[Stages]:
    """Load every engine, start the local LLM server if no provider URL is set, tear down after."""
    from voice_pipeline import assembly
    from voice_pipeline.cache.build import open_caches
    from voice_pipeline.cache.preload import SpeechFormat

    async with AsyncExitStack() as stack:
        # Redis if VP_CACHE__REDIS_URL is set, else an in-process cache (this process is alone).
        caches = await stack.enter_async_context(open_caches(settings.cache, metrics, allow_memory=True))
        # The LLM first: the local llama.cpp server loads while nothing else competes for the CPU.
        llm = await stack.enter_async_context(assembly.build_llm(settings.llm, metrics, caches))
        vad = await stack.enter_async_context(assembly.build_vad(settings.vad, metrics))
        asr = await stack.enter_async_context(assembly.build_asr(settings.asr, metrics, caches))
        tts = await stack.enter_async_context(assembly.build_tts(settings.tts, metrics, caches))
        speech = SpeechFormat(settings.gateway.output_sample_rate, settings.gateway.frame_ms)
        # `activity` (the gateway's open sessions): the preload runs only while no device is there.
        caches.start_preload(llm, settings.llm.system_prompts, tts, speech, activity)
        yield Stages(vad=vad, asr=asr, llm=llm, tts=tts)


def lan_address() -> str:
    """The address this host's name resolves to: what devices on the LAN usually reach."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def serve_allinone(
    settings: Any,
    sockets: list[Any] | None = None,
    wrap_stages: Callable[[Any], Any] | None = None,
    readiness: Callable[[], dict[str, bool]] | None = None,
    activations_dir: Path | None = None,
) -> None:
    """One all-in-one server process: on settings.gateway's host and port, or as one worker on
    `sockets` (voice_pipeline.workers passes its stage wrapper, readiness and shared directory)."""
    from voice_pipeline.gateway.app import create_gateway_app, run_gateway_app
    from voice_pipeline.turn.history import ChatHistory

    gw = settings.gateway
    activity = SessionActivity()  # the gateway's sessions; the cache preload waits for none
    wrap = wrap_stages or (lambda stages: stages)
    app = create_gateway_app(
        gw,
        settings.auth,
        settings.ota,
        lambda metrics: wrap(in_process_stages(settings, metrics, activity)),
        lambda: ChatHistory.from_settings(settings.llm),
        readiness=readiness,
        activity=activity,
        activations_dir=activations_dir,
    )
    run_gateway_app(app, gw, sockets)
