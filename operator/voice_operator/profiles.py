"""Node sizes, the standard workload, and the measured cost profile the capacity model reads.

The cost profile is data produced by `voice-pipeline calibrate` on real engines (the shipped one
records the machine and date it was measured on); nothing here invents a cost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class NodeProfile:
    name: str
    cpu: float  # cores
    memory_mib: int


NODE_SIZES: dict[str, NodeProfile] = {
    "4c8g": NodeProfile("4c8g", 4.0, 8 * 1024),
    "4c16g": NodeProfile("4c16g", 4.0, 16 * 1024),
    "4c32g": NodeProfile("4c32g", 4.0, 32 * 1024),
}


@dataclass(frozen=True)
class Reserve:
    """What a node keeps for itself and for Redis before the pipeline gets anything."""

    cpu: float = 0.4  # kubelet, OS, kube-proxy (typical kube-reserved + system-reserved on 4 cores)
    memory_mib: int = 1024 + 512  # same, plus a Redis cache of 512 MiB


@dataclass(frozen=True)
class Workload:
    """docs/benchmark-workload.md: one turn every `turn_period` seconds per device."""

    utterance_s: float = 3.0  # clips of 2-4 s
    listen_tail_s: float = 0.6  # silence streamed until the server detects the end of speech
    asr_extra_s: float = 0.7  # pre-roll + hangover transcribed with each utterance
    response_s: float = 1.5  # speech end -> first audio
    reply_s: float = 5.0  # reply playback
    think_s: float = 5.5  # uniform 3-8 s
    reply_chars: float = 80.0
    # Sentences per reply, each one TTS request. Measured: the fleet benchmark's TTS stage served 414
    # requests for 203 turns (bench/results/20261125T012937Z-allinone.json, 47 devices).
    reply_sentences: float = 2.0

    @property
    def turn_period_s(self) -> float:
        return self.utterance_s + self.listen_tail_s + self.response_s + self.reply_s + self.think_s

    def units_per_device_second(self, stage: str) -> float:
        """Work each device brings to a stage per second, in that stage's cost unit."""
        per_turn = {
            "gateway": self.utterance_s + self.listen_tail_s + self.reply_s,  # audio-seconds in and out
            "vad": self.utterance_s + self.listen_tail_s,  # audio-seconds streamed while listening
            "asr": self.utterance_s + self.asr_extra_s,  # audio-seconds transcribed
            "llm": 1.0,  # requests
            "tts": self.reply_chars,  # characters
        }[stage]
        return per_turn / self.turn_period_s

    def requests_per_device_second(self, stage: str) -> float:
        """Requests each device sends a stage per second (what queues and batches are made of)."""
        per_turn = {
            "gateway": 1.0,  # turns
            "vad": (self.utterance_s + self.listen_tail_s)
            / self.utterance_s,  # per utterance-length of audio
            "asr": 1.0,  # utterances
            "llm": 1.0,  # replies
            "tts": self.reply_sentences,  # sentences
        }[stage]
        return per_turn / self.turn_period_s

    @property
    def sentence_playback_s(self) -> float:
        """How long one reply sentence plays: a TTS engine streaming slower than this would make the
        device stutter, so it bounds how long one sentence holds a TTS slot."""
        return self.reply_s / self.reply_sentences


# The profile entries `voice-pipeline calibrate` can measure (calibrate.MEASURES has one function
# for each; a unit test keeps the two in step). Kept here so the operator needs no model runtime.
CALIBRATED_ENTRIES: tuple[str, ...] = (
    "gateway", "vad", "asr", "asr:sensevoice", "tts", "tts:pcm", "tts:piper", "tts:espeak", "llm", "llm:llamacpp",
)  # fmt: skip


class StageCost(BaseModel):
    model_config = ConfigDict(extra="ignore")

    unit: str
    engine: str = ""
    # The `stages.<stage>.engine` names this measured cost stands for (e.g. one cloud-client cost for
    # the engines that send the same audio format). Empty in profiles calibrated before engines were
    # recorded: the plain `<stage>` entry then stands for the stage's default engine.
    engines: list[str] = Field(default_factory=list)
    notes: str = ""  # how it was measured, when it differs from the profile's `measured.notes`
    measured: dict[str, Any] = Field(default_factory=dict)  # when/where, if measured apart from the rest
    cpu_seconds_per_unit: dict[int, float] = Field(description="batch size -> CPU-seconds per unit of work")
    latency_ms_per_batch: dict[int, float] = Field(default_factory=dict)
    memory_mib_per_replica: float
    memory_mib_per_stream: float = 0.0

    def cpu_at(self, batch: int) -> float:
        """Cost at the largest measured batch size not above `batch` (batching never assumed)."""
        sizes = sorted(self.cpu_seconds_per_unit)
        usable = [b for b in sizes if b <= max(batch, sizes[0])]
        return self.cpu_seconds_per_unit[usable[-1]]

    @property
    def batch_sizes(self) -> list[int]:
        return sorted(self.cpu_seconds_per_unit)


class CostProfile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    measured: dict[str, Any] = Field(default_factory=dict)
    stages: dict[str, StageCost]


def load_profile(path: str | Path | None = None) -> CostProfile:
    if path:
        text = Path(path).read_text(encoding="utf-8")
    else:
        text = (
            resources.files("voice_operator").joinpath("data/cost-profile.json").read_text(encoding="utf-8")
        )
    return CostProfile.model_validate(json.loads(text))
