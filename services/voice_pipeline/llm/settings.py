"""LLM settings: the providers, the local llama.cpp server, the prompt and the history window."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_ANTHROPIC_URL = "https://api.anthropic.com/v1"

# One prompt per language the user may speak: a 0.5B model follows a prompt written in the reply
# language far better than "reply in the user's language" (measured: English replies to Chinese).
DEFAULT_SYSTEM_PROMPTS = {
    "en": (
        "You are a friendly voice assistant on a small speaker. Reply in English, in one to three short "
        "spoken sentences. No lists, no markdown, no code, no emojis."
    ),
    "zh": "你是一个友好的语音助手，运行在一个小音箱上。请用简体中文回答，一到三句简短的口语，不要列表，不要表情符号。",
}


class ProviderSettings(BaseModel):
    """One LLM provider of the router: an OpenAI-compatible endpoint or Anthropic's Messages API."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Name in metrics and logs (unique).")
    type: Literal["openai", "anthropic"] = Field("openai", description="Wire protocol.")
    base_url: str = Field(
        "",
        description="API base (…/v1). Empty: the local llama.cpp server (openai) or Anthropic's API.",
    )
    model: str = Field("", description="Model name sent to the provider (empty = llm.model).")
    api_key_file: str = Field("", description="File holding the API key (a mounted Secret). Never logged.")
    api_key_env: str = Field("", description="Environment variable holding the API key. Never logged.")
    weight: float = Field(1.0, gt=0, description="Preference: the latency score is divided by it.")
    max_concurrency: int = Field(16, ge=1, description="Requests in flight to this provider at once.")

    @property
    def is_local(self) -> bool:
        return self.type == "openai" and not self.base_url


class HistorySettings(BaseModel):
    """What the conversation sends the LLM with each turn (section `llm`). The distributed gateway
    reads only these; all-in-one mode and the LLM service read them as part of `LlmSettings`."""

    model_config = ConfigDict(extra="forbid")

    system_prompts: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_SYSTEM_PROMPTS),
        description="System prompt per language heard by ASR (zh, en); `en` is used for any other.",
    )
    history_turns: int = Field(6, ge=0, description="Earlier user/assistant turns sent with each request.")
    history_chars: int = Field(
        2000, ge=0, description="Character budget of that history (oldest dropped first)."
    )


class LlmSettings(HistorySettings):
    base_url: str = Field(
        "", description="OpenAI-compatible API base (…/v1). Empty = start the local llama.cpp server."
    )
    model: str = Field("qwen2.5-0.5b-instruct", description="Model name sent to the provider.")
    provider_name: str = Field("local", description="Name used in metrics and logs.")
    api_key_file: str = Field("", description="File holding the API key (a mounted Secret). Never logged.")
    api_key_env: str = Field("", description="Environment variable holding the API key. Never logged.")
    max_tokens: int = Field(96, ge=1, le=4096, description="Reply length cap (spoken replies are short).")
    temperature: float = Field(0.5, ge=0, le=2, description="Sampling temperature.")
    connect_timeout_s: float = Field(3.0, gt=0, description="Connect timeout to the provider.")
    first_token_timeout_s: float = Field(15.0, gt=0, description="Give up on a provider silent this long.")
    max_concurrency: int = Field(16, ge=1, description="Requests in flight to the provider at once.")
    queue_size: int = Field(64, ge=0, description="Requests waiting for a slot beyond this are refused.")
    providers: list[ProviderSettings] = Field(
        default_factory=list,
        description="Router providers (JSON list in env); empty = the single provider above.",
    )
    ewma_alpha: float = Field(
        0.3, gt=0, le=1, description="Weight of the newest time-to-first-token in a provider's EWMA."
    )
    breaker_failures: int = Field(3, ge=1, description="Consecutive failures that open a provider's breaker.")
    breaker_cooldown_s: float = Field(
        15.0, gt=0, description="Open breaker skips the provider this long, then one probe."
    )
    local_model: str = Field("qwen2.5-0.5b-instruct", description="Installed GGUF the local server loads.")
    local_threads: int = Field(2, ge=1, description="CPU threads of the local llama.cpp server.")
    local_ctx: int = Field(2048, ge=256, description="Context window of the local server.")
    local_port: int = Field(0, ge=0, le=65535, description="Port of the local server (0 = a free one).")
    # The local server generates one reply at a time: a turn that would wait behind more than
    # `local_waiting` others is answered busy at once (a spoken "busy" and error `overloaded`)
    # instead of queueing into the first-token timeout (issue 14, item 5).
    local_waiting: int = Field(
        1,
        ge=0,
        description="Turns that may wait while the local llama.cpp server answers another; more get a busy answer.",
    )

    @model_validator(mode="after")
    def _unique_provider_names(self) -> LlmSettings:
        names = [p.name for p in self.providers]
        if len(set(names)) != len(names):
            raise ValueError(f"llm provider names must be unique, got {names}")
        return self

    def effective_providers(self) -> list[ProviderSettings]:
        """The router's providers: the `providers` list, or the single provider of the flat fields."""
        if self.providers:
            return list(self.providers)
        return [
            ProviderSettings(
                name=self.provider_name,
                base_url=self.base_url,
                model=self.model,
                api_key_file=self.api_key_file,
                api_key_env=self.api_key_env,
                max_concurrency=self.max_concurrency,
            )
        ]

    def needs_local_server(self) -> bool:
        """True when some provider is the local llama.cpp server (no base URL given)."""
        return any(p.is_local for p in self.effective_providers())

    def with_local_server(self, base_url: str) -> LlmSettings:
        """These settings with the local server's URL filled in wherever none was given, and the
        local provider's concurrency cut to what the server holds (one answering, `local_waiting`
        waiting): beyond that the router answers overloaded at once."""
        local = {"base_url": base_url}
        providers = [
            p.model_copy(update={**local, "max_concurrency": min(p.max_concurrency, 1 + self.local_waiting)})
            if p.is_local
            else p
            for p in self.effective_providers()
        ]
        return self.model_copy(update={"base_url": self.base_url or base_url, "providers": providers})
