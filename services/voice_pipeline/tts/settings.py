"""TTS settings: engine order per language, voices, failover behaviour."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from voice_pipeline.contract import TTS_ENGINES


class TtsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engines: dict[str, list[str]] = Field(
        default_factory=lambda: {"zh": ["edge", "espeak"], "en": ["edge", "piper", "espeak"]},
        description="Engines tried in order per language (first that answers wins): "
        "edge, azure, iflytek, openai, piper, espeak.",
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
    azure_region: str = Field("", description="Azure Speech region (e.g. eastasia) of engine `azure`.")
    azure_endpoint: str = Field("", description="Full Azure TTS URL; overrides the region's endpoint.")
    azure_key_file: str = Field("", description="File holding the Azure Speech key. Never logged.")
    azure_key_env: str = Field("", description="Environment variable holding the Azure Speech key.")
    azure_voices: dict[str, str] = Field(
        default_factory=lambda: {"zh": "zh-CN-XiaoxiaoNeural", "en": "en-US-AriaNeural"},
        description="Azure neural voice per language.",
    )
    iflytek_url: str = Field("wss://tts-api.xfyun.cn/v2/tts", description="iFlytek TTS WebSocket URL.")
    iflytek_app_id: str = Field("", description="iFlytek APPID of engine `iflytek`.")
    iflytek_api_key_file: str = Field("", description="File holding the iFlytek APIKey. Never logged.")
    iflytek_api_key_env: str = Field("", description="Environment variable holding the iFlytek APIKey.")
    iflytek_api_secret_file: str = Field("", description="File holding the iFlytek APISecret.")
    iflytek_api_secret_env: str = Field("", description="Environment variable holding the APISecret.")
    iflytek_voices: dict[str, str] = Field(
        default_factory=lambda: {"zh": "xiaoyan"}, description="iFlytek voice (vcn) per language."
    )
    openai_base_url: str = Field(
        "https://api.openai.com/v1",
        description="Base of an OpenAI-compatible /audio/speech (engine `openai`).",
    )
    openai_model: str = Field("tts-1", description="Model of engine `openai`.")
    openai_sample_rate: int = Field(
        24000, ge=8000, le=48000, description="Rate of the raw PCM engine `openai` returns (OpenAI: 24000)."
    )
    openai_voices: dict[str, str] = Field(
        default_factory=lambda: {"zh": "alloy", "en": "alloy"},
        description="Voice per language of engine `openai`.",
    )
    openai_key_file: str = Field("", description="File holding the OpenAI-compatible TTS key. Never logged.")
    openai_key_env: str = Field("", description="Environment variable holding that key.")
    cloud_connect_timeout_s: float = Field(
        2.0, gt=0, description="Connect timeout of the azure, iflytek and openai engines."
    )
    # A slot is mostly a wait on a provider's stream (cloud engines) or on Piper's lock; each
    # sentence holds one for its synthesis (~1 s for 250 ms first audio + 4x real time). With 8,
    # 50 devices on 2 cores queued sentences: TTS latency 524-573 ms against the provider's 250
    # and p95 first audio 2191-2258 ms (fail); with 32: 259-263 ms and 1562-1844 ms (pass).
    max_concurrency: int = Field(32, ge=1, description="Sentences synthesized at once.")
    queue_size: int = Field(64, ge=0, description="Sentences waiting beyond this are refused (overload).")
    breaker_failures: int = Field(2, ge=1, description="Consecutive failures that open an engine's breaker.")
    breaker_cooldown_s: float = Field(60.0, gt=0, description="How long an open breaker skips the engine.")
    timeout_s: float = Field(10.0, gt=0, description="Upper bound for one sentence.")
    opus_complexity: int = Field(
        5,
        ge=0,
        le=10,
        description="Opus encoder complexity of reply audio (libopus default 10 costs ~5x the CPU of 5, "
        "measured 11 vs 2 ms per audio-second at 24 kHz; speech on a small speaker sounds the same).",
    )

    @field_validator("engines")
    @classmethod
    def _known_engines(cls, engines: dict[str, list[str]]) -> dict[str, list[str]]:
        # A misspelt engine would otherwise be skipped in silence, leaving only the fallbacks.
        unknown = sorted({name for names in engines.values() for name in names} - set(TTS_ENGINES))
        if unknown:
            raise ValueError(f"unknown TTS engine(s) {', '.join(unknown)} (one of {', '.join(TTS_ENGINES)})")
        return engines
