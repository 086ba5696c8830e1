"""LLM settings: the provider, the local llama.cpp server, the prompt and the history window."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# One prompt per language the user may speak: a 0.5B model follows a prompt written in the reply
# language far better than "reply in the user's language" (measured: English replies to Chinese).
DEFAULT_SYSTEM_PROMPTS = {
    "en": (
        "You are a friendly voice assistant on a small speaker. Reply in English, in one to three short "
        "spoken sentences. No lists, no markdown, no code, no emojis."
    ),
    "zh": "你是一个友好的语音助手，运行在一个小音箱上。请用简体中文回答，一到三句简短的口语，不要列表，不要表情符号。",
}


class LlmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        "", description="OpenAI-compatible API base (…/v1). Empty = start the local llama.cpp server."
    )
    model: str = Field("qwen2.5-0.5b-instruct", description="Model name sent to the provider.")
    provider_name: str = Field("local", description="Name used in metrics and logs.")
    api_key_file: str = Field("", description="File holding the API key (a mounted Secret). Never logged.")
    api_key_env: str = Field("", description="Environment variable holding the API key. Never logged.")
    system_prompts: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_SYSTEM_PROMPTS),
        description="System prompt per language heard by ASR (zh, en); `en` is used for any other.",
    )
    max_tokens: int = Field(96, ge=1, le=4096, description="Reply length cap (spoken replies are short).")
    temperature: float = Field(0.5, ge=0, le=2, description="Sampling temperature.")
    history_turns: int = Field(6, ge=0, description="Earlier user/assistant turns sent with each request.")
    history_chars: int = Field(
        2000, ge=0, description="Character budget of that history (oldest dropped first)."
    )
    connect_timeout_s: float = Field(3.0, gt=0, description="Connect timeout to the provider.")
    first_token_timeout_s: float = Field(15.0, gt=0, description="Give up on a provider silent this long.")
    max_concurrency: int = Field(16, ge=1, description="Requests in flight to the provider at once.")
    queue_size: int = Field(64, ge=0, description="Requests waiting for a slot beyond this are refused.")
    local_model: str = Field("qwen2.5-0.5b-instruct", description="Installed GGUF the local server loads.")
    local_threads: int = Field(2, ge=1, description="CPU threads of the local llama.cpp server.")
    local_ctx: int = Field(2048, ge=256, description="Context window of the local server.")
    local_port: int = Field(0, ge=0, le=65535, description="Port of the local server (0 = a free one).")
