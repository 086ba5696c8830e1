"""The one interface of each stage, whatever carries it.

The gateway talks to these protocols only. All-in-one mode binds them to in-process engines
(direct calls, model work batched across sessions); distributed mode binds them to clients of
the stage services. Audio crossing these interfaces is mono 16 kHz int16 for input and Opus
packets for output, so the same bytes can travel over the network unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from voice_pipeline.common.audio import Int16Array

Language = Literal["zh", "en", "auto"]
VAD_SAMPLE_RATE = 16000


def spoken_language(tag: str) -> Literal["zh", "en", ""]:
    """zh or en from a language tag or an Accept-Language value ("zh-CN", "en-US,en;q=0.9"):
    the first one named; '' for any other language or none."""
    first = tag.split(",", 1)[0].split(";", 1)[0].strip().lower()
    primary = first.replace("_", "-").split("-", 1)[0]
    return "zh" if primary == "zh" else "en" if primary == "en" else ""


def asr_language_tag(language: Language, fallback: str) -> str:
    """One string for what an ASR request asks: `auto/zh` = detect, and if unsure decode as zh.
    Carried on the stage wire and in cache keys (the fallback can change the transcript)."""
    return f"auto/{fallback}" if language == "auto" and fallback else language


def parse_asr_language_tag(tag: str) -> tuple[Language, str]:
    """(language, fallback) back from asr_language_tag; ValueError for anything else."""
    language, _, fallback = tag.partition("/")
    if language not in ("zh", "en", "auto") or (
        fallback and (language != "auto" or fallback not in ("zh", "en"))
    ):
        raise ValueError(f"language must be zh, en, auto or auto/zh|en, not {tag!r}")
    return language, fallback  # type: ignore[return-value]


@dataclass(frozen=True)
class VadEvent:
    """A speech boundary in one session's stream; `sample` counts samples fed since `open`."""

    # speech_pause: a silence inside speech reached the VAD's pause_ms (the end may follow).
    kind: Literal["speech_start", "speech_pause", "speech_end"]
    sample: int


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str  # detected or forced language code
    audio_seconds: float


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class SpeechRequest:
    text: str
    language: str  # "zh" | "en" ...: picks a voice when `voice` is empty
    sample_rate: int  # Opus output rate the device announced/accepts (16000 or 24000)
    frame_ms: int = 60
    voice: str = ""


@dataclass
class SpeechAudio:
    """One synthesized sentence as Opus packets of `frame_ms` each."""

    packets: list[bytes]
    sample_rate: int
    frame_ms: int
    engine: str

    @property
    def seconds(self) -> float:
        return len(self.packets) * self.frame_ms / 1000.0


class VadStage(Protocol):
    async def open(self, session_id: str) -> None: ...

    async def feed(self, session_id: str, pcm: Int16Array) -> list[VadEvent]:
        """Advance the session by `pcm` (16 kHz mono); return the boundaries it crossed."""
        ...

    async def reset(self, session_id: str) -> None:
        """Forget speech state (new listen turn) but keep the session."""
        ...

    async def close(self, session_id: str) -> None: ...


class AsrStage(Protocol):
    async def transcribe(self, pcm: Int16Array, language: Language, fallback: str = "") -> Transcript:
        """`fallback` (zh, en or ''): the device's own language, decoded in when `auto` detection
        cannot confidently choose ('' = the stage's configured fallback_language)."""
        ...


class LlmStage(Protocol):
    def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        """Yield the reply as text deltas, as soon as the provider produces them."""
        ...


class TtsStage(Protocol):
    def synthesize(self, request: SpeechRequest) -> AsyncIterator[SpeechAudio]:
        """Yield the sentence's audio in one or more chunks, the first as early as possible."""
        ...


# What one stage service serves: exactly one of the four (its name says which).
ServedStage = VadStage | AsrStage | LlmStage | TtsStage
