"""Shared helpers for integration tests: clips, words, one spoken turn, a one-shot ASR for reply
audio."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import numpy as np

from voice_pipeline.common.audio import Int16Array, int16_to_float, read_wav, resample
from voice_pipeline.simulator.device import SimulatedDevice, TurnResult

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def clip(name: str) -> Int16Array:
    pcm, rate = read_wav(FIXTURES / f"{name}.wav")
    return resample(pcm, rate, 16000)


async def one_turn(url: str, name: str, timeout: float = 90) -> TurnResult:
    """A fresh simulated device speaks the fixture clip `name` once and hangs up."""
    device = SimulatedDevice(url)
    await device.connect()
    try:
        return await device.turn(clip(name), timeout=timeout)
    finally:
        await device.close()


def words(text: str) -> set[str]:
    """Lower-case Latin words and single CJK characters (Chinese has no spaces)."""
    latin = {w for w in re.findall(r"[a-z']+", text.lower()) if len(w) > 2}
    cjk = set(re.findall(r"[\u3400-\u9fff]", text))
    return latin | cjk


@cache
def _whisper():  # type: ignore[no-untyped-def]
    from voice_pipeline.asr.whisper import WhisperEngine
    from voice_pipeline.models.registry import require_model

    return WhisperEngine(require_model("whisper-base"))


def transcribe(pcm: Int16Array, rate: int, language: str) -> str:
    from voice_pipeline.asr.engine import AsrItem

    audio = int16_to_float(resample(pcm, rate, 16000))
    return str(_whisper().transcribe_batch([AsrItem(audio.astype(np.float32), language)])[0].text)
