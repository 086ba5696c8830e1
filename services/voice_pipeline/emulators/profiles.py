"""The documented latency profiles of the provider emulators (pure data, printed beside figures)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LlmProfile:
    """An OpenAI-compatible chat provider: silent for `ttft_ms`, then `tokens_per_s`."""

    ttft_ms: float = 400.0
    tokens_per_s: float = 30.0
    reply_chars: int = 80  # the workload's reply length (operator Workload.reply_chars)
    reply_repeat: int = 1  # the canned reply said this many times: a long reply to talk over

    def describe(self) -> str:
        return f"LLM: first token {self.ttft_ms:.0f} ms, then {self.tokens_per_s:g} tokens/s"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TtsProfile:
    """An OpenAI /v1/audio/speech provider: first audio after `first_audio_ms`, then audio at
    `speed_factor` x real time, in chunks of `chunk_ms` of audio."""

    first_audio_ms: float = 250.0
    speed_factor: float = 4.0
    chunk_ms: int = 100
    sample_rate: int = 24000  # OpenAI's "pcm": raw s16le mono 24 kHz
    chars_per_s_latin: float = 14.0  # speaking rate that sets the audio length of a text
    chars_per_s_cjk: float = 4.5

    def describe(self) -> str:
        return f"TTS: first audio {self.first_audio_ms:.0f} ms, then {self.speed_factor:g}x real time"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
