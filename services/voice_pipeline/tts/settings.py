"""TTS settings: engine order per language, voices, failover behaviour."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TtsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engines: dict[str, list[str]] = Field(
        default_factory=lambda: {"zh": ["edge", "espeak"], "en": ["edge", "piper", "espeak"]},
        description="Engines tried in order per language (first that answers wins).",
    )
    edge_voices: dict[str, str] = Field(
        default_factory=lambda: {"zh": "zh-CN-XiaoxiaoNeural", "en": "en-US-AriaNeural"},
        description="Edge TTS voice per language.",
    )
    edge_connect_timeout_s: float = Field(2.0, gt=0, description="Edge TTS connect timeout.")
    edge_enabled: bool = Field(True, description="Use Edge TTS when it is reachable (needs internet).")
    espeak_voices: dict[str, str] = Field(
        default_factory=lambda: {"zh": "cmn-latn-pinyin", "en": "en-us"},
        description="espeak-ng voice per language (cmn-latn-pinyin reads Chinese characters).",
    )
    espeak_rate: int = Field(165, ge=80, le=450, description="espeak-ng words per minute.")
    piper_model: str = Field("piper-en-us-joe", description="Installed Piper voice (see `models list`).")
    max_concurrency: int = Field(8, ge=1, description="Sentences synthesized at once.")
    queue_size: int = Field(64, ge=0, description="Sentences waiting beyond this are refused (overload).")
    breaker_failures: int = Field(2, ge=1, description="Consecutive failures that open an engine's breaker.")
    breaker_cooldown_s: float = Field(60.0, gt=0, description="How long an open breaker skips the engine.")
    timeout_s: float = Field(10.0, gt=0, description="Upper bound for one sentence.")
