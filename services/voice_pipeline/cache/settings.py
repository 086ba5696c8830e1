"""Cache settings: where the cache lives, how long entries last, how close a paraphrase must be."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Chosen from measured scores (tests/integration/test_cache_threshold.py): with multilingual-e5-small,
# rewordings of one question score >= 0.97 and other questions <= 0.961, near misses included
# ("tell me a joke" vs "tell me a story" in Chinese: 0.961; "turn on/off the lights": 0.956).
# Looser paraphrases (0.94-0.96) miss: a miss costs one LLM call, a false hit a wrong answer.
DEFAULT_SIMILARITY = 0.965


class CacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Master switch of the ASR, LLM and TTS caches.")
    redis_url: str = Field(
        "",
        description="redis:// URL shared by every replica. Empty: an in-process cache (all-in-one mode only).",
    )
    op_timeout_ms: float = Field(
        80.0, gt=0, le=5000, description="Give up on one Redis call after this long (the request goes on)."
    )
    retry_after_s: float = Field(
        5.0, gt=0, description="After a Redis failure, skip Redis this long before trying it again."
    )
    key_prefix: str = Field("vp", description="Prefix of every Redis key (several pipelines, one Redis).")
    memory_max_mb: int = Field(64, ge=1, description="Size bound of the in-process cache.")
    asr_enabled: bool = Field(True, description="Cache transcripts by audio content hash.")
    asr_ttl_s: int = Field(3600, ge=1, description="Lifetime of a cached transcript.")
    tts_enabled: bool = Field(True, description="Cache each sentence's Opus packets.")
    tts_ttl_s: int = Field(3600, ge=1, description="Lifetime of a cached sentence's audio.")
    llm_enabled: bool = Field(
        True, description="Semantic cache of first-turn replies (no earlier turns in the request)."
    )
    llm_ttl_s: int = Field(1800, ge=1, description="Lifetime of a cached reply.")
    similarity_threshold: float = Field(
        DEFAULT_SIMILARITY,
        gt=0,
        le=1,
        description="Cosine similarity (multilingual-e5-small) at which a question reuses a cached reply.",
    )
    llm_index_size: int = Field(
        2000, ge=1, description="Recent questions searched per system prompt (newest kept)."
    )
    preload_enabled: bool = Field(
        True, description="Answer the common questions at start-up (in the background) to warm the caches."
    )
    preload_quiet_s: float = Field(
        10.0,
        ge=0,
        description=(
            "A preload step starts only after this long without an open device session (and after "
            "start-up): work already running in a model cannot be taken back when a device arrives."
        ),
    )
    common_questions_file: str = Field(
        "", description="YAML file {language: [questions]}; empty = the shipped English and Chinese list."
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{value!r} is not a Redis URL: use redis://host:6379/0 (rediss:// for TLS)")
        return value
