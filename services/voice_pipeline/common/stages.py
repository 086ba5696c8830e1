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
    async def transcribe(self, pcm: Int16Array, language: Language) -> Transcript: ...


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
