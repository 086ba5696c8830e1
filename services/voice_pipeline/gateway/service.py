"""`voice-pipeline serve gateway`: the device-facing gateway in distributed mode.

The same gateway app as all-in-one mode (`gateway.app`), with the four stages bound to clients of
the stage services (`transport.remote`) instead of in-process engines: the conversation code is
unchanged. Each stage URL is a Service name; the gateway connects to every replica behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from voice_pipeline.common.errors import ConfigError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.secrets import read_token_file
from voice_pipeline.gateway.app import create_gateway_app
from voice_pipeline.gateway.auth import AuthSettings
from voice_pipeline.gateway.conversation import Stages
from voice_pipeline.gateway.ota import OtaSettings
from voice_pipeline.gateway.settings import GatewaySettings
from voice_pipeline.llm.settings import HistorySettings
from voice_pipeline.transport.pool import RESOLVE_INTERVAL_S, ReplicaPool
from voice_pipeline.transport.remote import RemoteAsr, RemoteLlm, RemoteTts, RemoteVad
from voice_pipeline.turn.history import ChatHistory


class StagesSettings(BaseModel):
    """Where the stage services are (section `stages`: `VP_STAGES__ASR_URL`, ...)."""

    model_config = ConfigDict(extra="forbid")

    vad_url: str = Field("", description="VAD service, e.g. http://vp-vad:9000 (a headless Service name).")
    asr_url: str = Field("", description="ASR service URL.")
    llm_url: str = Field("", description="LLM service URL.")
    tts_url: str = Field("", description="TTS service URL.")
    resolve_interval_s: float = Field(
        RESOLVE_INTERVAL_S, gt=0, description="Re-resolve stage names this often (new replicas get sessions)."
    )
    connect_timeout_s: float = Field(3.0, gt=0, description="Connect timeout to a stage replica.")
    max_message_bytes: int = Field(4 << 20, ge=65536, description="Largest transport frame.")
    auth_token_file: str = Field(
        "",
        description=(
            "File holding the shared secret the stage services check (VP_SERVICE__AUTH_TOKEN_FILE "
            "there); empty = send none (local development only)."
        ),
    )

    def urls(self) -> dict[str, str]:
        urls = {"vad": self.vad_url, "asr": self.asr_url, "llm": self.llm_url, "tts": self.tts_url}
        missing = [f"VP_STAGES__{stage.upper()}_URL" for stage, url in urls.items() if not url]
        if missing:
            raise ConfigError(f"distributed gateway needs the stage URLs {', '.join(missing)}")
        return urls


class GatewayServiceSettings(BaseSettings):
    """Every setting of the distributed gateway process: env `VP_<SECTION>__<KEY>` or YAML."""

    model_config = SettingsConfigDict(env_prefix="VP_", env_nested_delimiter="__", extra="forbid")

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    ota: OtaSettings = Field(default_factory=OtaSettings)
    llm: HistorySettings = Field(default_factory=HistorySettings)
    stages: StagesSettings = Field(default_factory=StagesSettings)


@asynccontextmanager
async def remote_stages(settings: StagesSettings, pools: dict[str, ReplicaPool]) -> AsyncIterator[Stages]:
    """Connect to every replica of every stage; unreachable ones are retried in the background."""
    token = read_token_file(settings.auth_token_file, "stage auth token")
    for stage, url in settings.urls().items():
        pools[stage] = ReplicaPool(
            stage,
            url,
            settings.resolve_interval_s,
            settings.connect_timeout_s,
            settings.max_message_bytes,
            auth_token=token,
        )
    try:
        await asyncio.gather(*(pool.start() for pool in pools.values()))
        yield Stages(
            vad=RemoteVad(pools["vad"]),
            asr=RemoteAsr(pools["asr"]),
            llm=RemoteLlm(pools["llm"]),
            tts=RemoteTts(pools["tts"]),
        )
    finally:
        await asyncio.gather(*(pool.stop() for pool in pools.values()), return_exceptions=True)
        pools.clear()


def create_app(settings: GatewayServiceSettings, metrics: Metrics | None = None) -> FastAPI:
    settings.stages.urls()  # missing URLs fail at start-up, not at the first device
    read_token_file(settings.stages.auth_token_file, "stage auth token")  # and so does a bad file
    pools: dict[str, ReplicaPool] = {}
    history = settings.llm

    def readiness() -> dict[str, bool]:
        return {stage: pool.ready for stage, pool in pools.items()}

    return create_gateway_app(
        settings.gateway,
        settings.auth,
        settings.ota,
        lambda _metrics: remote_stages(settings.stages, pools),
        lambda: ChatHistory.from_settings(history),
        metrics,
        readiness=readiness,
    )
