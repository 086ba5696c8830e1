"""The TTS engine interface: text in, mono int16 PCM chunks out, first chunk as early as possible."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from voice_pipeline.common.audio import Int16Array


@dataclass(frozen=True)
class PcmChunk:
    pcm: Int16Array
    sample_rate: int


class TtsEngine(Protocol):
    name: str
    languages: frozenset[str]  # empty = any language

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def synthesize(self, text: str, language: str) -> AsyncIterator[PcmChunk]:
        """Raise ProviderUnavailableError before the first chunk when the engine cannot serve."""
        ...
