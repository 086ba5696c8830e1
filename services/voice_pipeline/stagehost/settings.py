"""The settings of a stage service process: the `service` section (how it listens and drains) and
one class per stage adding the stage's own section (and `cache` where the stage caches).

Pydantic only (no model runtime, no web server): `voice-pipeline --help` and the operator image
import this module.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from voice_pipeline.asr.settings import AsrSettings
from voice_pipeline.cache.settings import CacheSettings
from voice_pipeline.llm.settings import LlmSettings
from voice_pipeline.tts.settings import TtsSettings
from voice_pipeline.vad.settings import VadSettings


class ServiceSettings(BaseModel):
    """How a stage service listens and shuts down (section `service`: `VP_SERVICE__PORT`, ...)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        "127.0.0.1",
        description="Address the stage service binds to (0.0.0.0 in a Pod, with the auth token set).",
    )
    port: int = Field(9000, ge=0, le=65535, description="Port of /v1/stream, /healthz, /readyz and /metrics.")
    drain_timeout_s: float = Field(
        20.0, ge=0, description="After SIGTERM: longest wait for gateways to move their sessions away."
    )
    max_message_bytes: int = Field(
        4 << 20, ge=65536, description="Largest transport frame (an utterance of 20 s is 640 kB)."
    )
    auth_token_file: str = Field(
        "",
        description=(
            "File holding the shared secret gateways must present on /v1/stream (a mounted Secret); "
            "empty = no check (local development only)."
        ),
    )
    max_inflight_per_connection: int = Field(
        4096,
        ge=1,
        description="Requests in flight, and VAD sessions open, per gateway connection (beyond: overload).",
    )


class StageServiceSettings(BaseSettings):
    """Every setting of one stage service process: env `VP_<SECTION>__<KEY>` or a YAML file."""

    model_config = SettingsConfigDict(env_prefix="VP_", env_nested_delimiter="__", extra="forbid")

    service: ServiceSettings = Field(default_factory=ServiceSettings)


class VadServiceSettings(StageServiceSettings):
    """Every setting of the vad service process: env `VP_<SECTION>__<KEY>` or a YAML file."""

    vad: VadSettings = Field(default_factory=VadSettings)


class AsrServiceSettings(StageServiceSettings):
    """Every setting of the asr service process: env `VP_<SECTION>__<KEY>` or a YAML file."""

    asr: AsrSettings = Field(default_factory=AsrSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)


class LlmServiceSettings(StageServiceSettings):
    """Every setting of the llm service process: env `VP_<SECTION>__<KEY>` or a YAML file."""

    llm: LlmSettings = Field(default_factory=LlmSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)


class TtsServiceSettings(StageServiceSettings):
    """Every setting of the tts service process: env `VP_<SECTION>__<KEY>` or a YAML file."""

    tts: TtsSettings = Field(default_factory=TtsSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
