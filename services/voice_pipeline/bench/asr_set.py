"""The fixed ASR test set (issue 14, item 2): built offline, once, cached under $VP_HOME.

- English: every sentence of `data/asr_testset_en.txt`, spoken by the neural Piper voice
  (en_US-joe-medium), resampled to 16 kHz like the devices' microphone stream. Piper's VITS model
  samples noise inside its ONNX graph (two runs of one sentence differ, 37888 vs 39424 samples),
  so the set is synthesized with noise_scale = noise_w_scale = 0: the same text gives the same
  audio on every build, at the price of the voice's average prosody.
- Chinese: the fixture clips of tests/fixtures with their texts (espeak-ng Mandarin: robotic,
  whisper-base gets only part of it; there is no neural Mandarin voice offline).
- Pauses (for endpointing, item 4): pairs of consecutive English sentences joined by a pause drawn
  from a seeded uniform 150-600 ms, the range of a speaker's breath between two sentences of one
  request. Piper pads each sentence with its own silence, so each sentence is first cut to its
  voiced span (10 ms frames above -40 dBFS): the pause is then the stated one.

The cache key hashes everything the clips depend on (sentences, voice file size, fixture bytes,
builder version), so a changed input builds a new set beside the old one.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from voice_pipeline.common.audio import Int16Array, int16_to_float, read_wav, resample, write_wav
from voice_pipeline.common.audio import voiced_span as audio_voiced_span
from voice_pipeline.common.paths import vp_home

BUILDER_VERSION = 3  # bump when the clips change for a reason the key cannot see
SAMPLE_RATE = 16000
VOICE = "piper-en-us-joe"
FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures"
ZH_CLIPS = {"zh_hello": "你好，请介绍一下你自己。", "zh_story": "我想听一个故事。"}
PAUSE_PAIRS = 40
PAUSE_RANGE_MS = (150, 600)
PAUSE_SEED = 14


@dataclass(frozen=True)
class Clip:
    name: str
    language: str  # "en" | "zh"
    text: str
    path: Path
    seconds: float
    speech_end_s: float = 0.0  # pauses set: where the last word ends (before trailing silence)
    pause_ms: float = 0.0  # pauses set: the silence between the two sentences


def sentences() -> list[str]:
    text = resources.files("voice_pipeline.data").joinpath("asr_testset_en.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def pause_plan(
    n_sentences: int, pairs: int = PAUSE_PAIRS, seed: int = PAUSE_SEED
) -> list[tuple[int, int, int]]:
    """(first sentence, second sentence, pause ms) for the pause clips: consecutive sentences,
    spread over the list, the pause from a seeded generator (same set on every machine)."""
    rng = random.Random(seed)
    step = max(1, (n_sentences - 1) // pairs)
    return [(i, i + 1, rng.randint(*PAUSE_RANGE_MS)) for i in range(0, n_sentences - 1, step)[:pairs]]


def voiced_span(pcm: Int16Array) -> tuple[int, int]:
    """[first, last) samples of the 10 ms frames above -40 dBFS (common.audio.voiced_span)."""
    return audio_voiced_span(int16_to_float(pcm))


def cache_key(voice_file: Path, texts: list[str], pause_pairs: int) -> str:
    h = hashlib.sha256()
    h.update(f"v{BUILDER_VERSION} {pause_pairs} {PAUSE_RANGE_MS} {PAUSE_SEED}".encode())
    h.update("\n".join(texts).encode())
    h.update(str(voice_file.stat().st_size).encode())
    for name in sorted(ZH_CLIPS):
        h.update((FIXTURES / f"{name}.wav").read_bytes())
    return h.hexdigest()[:12]


def default_dir() -> Path:
    return vp_home() / "asr-testset"


def _piper(voice_dir: Path) -> Callable[[str], tuple[Int16Array, int]]:
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(next(voice_dir.glob("*.onnx")))

    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)  # deterministic, see above

    def speak(text: str) -> tuple[Int16Array, int]:
        chunks = list(voice.synthesize(text, config))
        pcm = np.concatenate([np.asarray(c.audio_int16_array, dtype=np.int16) for c in chunks])
        return pcm, int(chunks[0].sample_rate)

    return speak


def _manifest_clip(root: Path, entry: dict[str, Any]) -> Clip:
    return Clip(**{**entry, "path": root / entry["path"]})


def build(
    cache_root: Path | None = None,
    progress: Callable[[str], None] | None = None,
    texts: list[str] | None = None,
    pause_pairs: int = PAUSE_PAIRS,
) -> Path:
    """The test set's directory, built if missing: clips/*.wav and manifest.json. `texts` and
    `pause_pairs` replace the shipped sentences and pause clips (tests build a few clips)."""
    from voice_pipeline.models.registry import require_model

    voice_dir = require_model(VOICE)
    voice_file = next(voice_dir.glob("*.onnx"))
    texts = sentences() if texts is None else texts
    root = (cache_root or default_dir()) / cache_key(voice_file, texts, pause_pairs)
    if (root / "manifest.json").is_file():
        return root
    tmp = root.with_name(root.name + ".tmp")
    (tmp / "clips").mkdir(parents=True, exist_ok=True)
    speak = _piper(voice_dir)
    entries: list[dict[str, Any]] = []
    english: list[Int16Array] = []
    for i, text in enumerate(texts):
        pcm, rate = speak(text)
        pcm16 = resample(pcm, rate, SAMPLE_RATE)
        english.append(pcm16)
        name = f"en_{i:03d}"
        write_wav(tmp / "clips" / f"{name}.wav", pcm16, SAMPLE_RATE)
        entries.append(
            {"name": name, "language": "en", "text": text, "path": f"clips/{name}.wav",
             "seconds": round(len(pcm16) / SAMPLE_RATE, 3)}
        )  # fmt: skip
        if progress and i % 25 == 0:
            progress(f"synthesized {i + 1} English sentences")
    for name, text in ZH_CLIPS.items():
        pcm, rate = read_wav(FIXTURES / f"{name}.wav")
        pcm16 = resample(pcm, rate, SAMPLE_RATE)
        write_wav(tmp / "clips" / f"{name}.wav", pcm16, SAMPLE_RATE)
        entries.append(
            {"name": name, "language": "zh", "text": text, "path": f"clips/{name}.wav",
             "seconds": round(len(pcm16) / SAMPLE_RATE, 3)}
        )  # fmt: skip
    pauses: list[dict[str, Any]] = []
    for a, b, pause_ms in pause_plan(len(texts), pause_pairs) if pause_pairs else []:
        gap = np.zeros(SAMPLE_RATE * pause_ms // 1000, np.int16)
        (a0, a1), (b0, b1) = voiced_span(english[a]), voiced_span(english[b])
        speech = np.concatenate([english[a][a0:a1], gap, english[b][b0:b1]])
        name = f"pause_{a:03d}_{b:03d}"
        write_wav(tmp / "clips" / f"{name}.wav", speech, SAMPLE_RATE)
        pauses.append(
            {"name": name, "language": "en", "text": f"{texts[a]} {texts[b]}", "path": f"clips/{name}.wav",
             "seconds": round(len(speech) / SAMPLE_RATE, 3), "speech_end_s": round(len(speech) / SAMPLE_RATE, 3),
             "pause_ms": pause_ms}
        )  # fmt: skip
    manifest = {"version": BUILDER_VERSION, "voice": VOICE, "sample_rate": SAMPLE_RATE, "clips": entries,
                "pauses": pauses}  # fmt: skip
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), "utf-8")
    tmp.rename(root)
    return root


def load(root: Path) -> tuple[list[Clip], list[Clip]]:
    """(transcription clips, pause clips) of a built set."""
    manifest = json.loads((root / "manifest.json").read_text("utf-8"))
    return (
        [_manifest_clip(root, e) for e in manifest["clips"]],
        [_manifest_clip(root, e) for e in manifest["pauses"]],
    )


def audio(clip: Clip) -> Int16Array:
    pcm, rate = read_wav(clip.path)
    return resample(pcm, rate, SAMPLE_RATE)


def iter_audio(clips: list[Clip]) -> Iterator[tuple[Clip, Int16Array]]:
    for clip in clips:
        yield clip, audio(clip)
