"""The ASR back-end interface: a batch of utterances in, one transcript each out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from voice_pipeline.common.stages import Transcript

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class AsrItem:
    pcm: npt.NDArray[np.float32]  # 16 kHz mono in [-1, 1]
    language: str  # "zh" | "en" | "auto"
    fallback: str = ""  # under auto, the language of an unconfident detection ('' = the engine's)

    @property
    def seconds(self) -> float:
        return len(self.pcm) / SAMPLE_RATE


class AsrEngine(Protocol):
    name: str

    def transcribe_batch(self, items: Sequence[AsrItem]) -> list[Transcript]:
        """Blocking; called from a worker thread. Results in the order of `items`."""
        ...


def clean_text(text: str) -> str:
    return " ".join(text.split()).strip()
