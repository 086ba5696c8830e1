"""Piper (ONNX VITS) English voice, in process; synthesis runs in a worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from voice_pipeline.models.registry import require_model
from voice_pipeline.tts.engine import PcmChunk


class PiperEngine:
    name = "piper"
    languages = frozenset({"en"})

    def __init__(self, model_name: str = "piper-en-us-joe") -> None:
        self.model_name = model_name
        self._voice: Any = None
        self._lock = threading.Lock()  # one PiperVoice is not safe to share between threads

    async def start(self) -> None:
        path = require_model(self.model_name)
        onnx = next(path.glob("*.onnx"))

        def load() -> Any:
            from piper import PiperVoice

            return PiperVoice.load(onnx)

        self._voice = await asyncio.to_thread(load)

    async def close(self) -> None:
        self._voice = None

    def _synthesize(self, text: str) -> list[PcmChunk]:
        with self._lock:
            return [
                PcmChunk(np.asarray(chunk.audio_int16_array, dtype=np.int16), int(chunk.sample_rate))
                for chunk in self._voice.synthesize(text)
            ]

    async def synthesize(self, text: str, language: str) -> AsyncIterator[PcmChunk]:
        if self._voice is None:
            await self.start()
        for chunk in await asyncio.to_thread(self._synthesize, text):
            yield chunk
