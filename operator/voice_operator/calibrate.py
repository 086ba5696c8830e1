"""`voice-pipeline calibrate`: measure each stage's real cost on this machine -> a cost profile.

CPU is process CPU time (all threads) around the model work only, so it is what a replica's CPU
limit must pay for. Memory is the growth of this process's RSS when the stage's model loads. Every
figure comes from running the real engine on real clips; nothing is estimated.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
CLIPS = ("en_weather", "en_hello", "zh_story", "zh_hello")
SENTENCES = (
    "It is sunny today with a light breeze from the west.",
    "You could take a walk in the park this afternoon.",
    "今天天气很好，适合出去散步。",
)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_time(work: Callable[[], Any], repeat: int = 1) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) per call, after one warm-up call."""
    work()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        work()
    return (time.process_time() - cpu0) / repeat, (time.perf_counter() - wall0) / repeat


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _clips() -> list[npt.NDArray[np.float32]]:
    from voice_pipeline.common.audio import int16_to_float, read_wav, resample

    out = []
    for name in CLIPS:
        pcm, rate = read_wav(FIXTURES / f"{name}.wav")
        out.append(int16_to_float(resample(pcm, rate, 16000)))
    return out


def measure_vad(batches: tuple[int, ...] = (1, 4, 16, 64)) -> dict[str, Any]:
    from voice_pipeline.models.registry import require_model
    from voice_pipeline.vad.engine import SileroVad, VadState, split_windows

    before = rss_mib()
    model = SileroVad(require_model("silero-vad") / "silero_vad.onnx", threads=1)
    memory = rss_mib() - before
    audio = np.concatenate(_clips())
    windows, _ = split_windows(audio)
    seconds = len(windows) * 512 / 16000
    cost, latency = {}, {}
    for batch in batches:
        states = [VadState() for _ in range(batch)]
        cpu, wall = cpu_time(lambda s=states: model.run_sequences(s, [windows] * len(s)))  # type: ignore[misc]
        cost[batch] = cpu / (seconds * batch)
        latency[batch] = wall / len(windows) * 1000  # one lock-step model call
        _say(f"  vad  batch {batch:3}: {cost[batch] * 1000:.2f} ms CPU per audio-second")
    state_bytes = (2 * 128 + 64 + 512) * 4  # recurrent state + context + a window remainder, float32
    return {"unit": "audio-second", "engine": "silero-vad v6 onnx", "cpu_seconds_per_unit": cost,
            "latency_ms_per_batch": latency, "memory_mib_per_replica": round(memory + BASE_RSS_MIB, 1),
            "memory_mib_per_stream": state_bytes / 2**20}  # fmt: skip


def measure_asr(batches: tuple[int, ...] = (1, 2, 4, 8)) -> dict[str, Any]:
    from voice_pipeline.asr.engine import AsrItem
    from voice_pipeline.asr.whisper import WhisperEngine
    from voice_pipeline.models.registry import require_model

    before = rss_mib()
    engine = WhisperEngine(require_model("whisper-base"), threads=2)
    clips = _clips()
    engine.transcribe_batch([AsrItem(clips[0], "en")])
    memory = rss_mib() - before
    cost, latency = {}, {}
    for batch in batches:
        items = [AsrItem(clips[i % len(clips)], "auto") for i in range(batch)]
        seconds = sum(item.seconds for item in items)
        cpu, wall = cpu_time(lambda it=items: engine.transcribe_batch(it), repeat=2)  # type: ignore[misc]
        cost[batch] = cpu / seconds
        latency[batch] = wall * 1000
        _say(
            f"  asr  batch {batch:3}: {cost[batch]:.3f} CPU-s per audio-second, {wall * 1000:.0f} ms per batch"
        )
    return {"unit": "audio-second", "engine": "faster-whisper base int8, 2 threads, 10 s window",
            "cpu_seconds_per_unit": cost, "latency_ms_per_batch": latency,
            "memory_mib_per_replica": round(memory + BASE_RSS_MIB, 1), "memory_mib_per_stream": 30 * 16000 * 4 / 2**20}  # fmt: skip


def _opus_complexity() -> int:
    """The reply encoder's complexity as the TTS stage runs it (its CPU cost depends on it)."""
    from voice_pipeline.tts.settings import TtsSettings

    return TtsSettings().opus_complexity


def measure_tts() -> dict[str, Any]:
    from voice_pipeline.common.audio import OpusEncoder, resample
    from voice_pipeline.tts.espeak import EspeakEngine  # noqa: F401  (subprocess engine: cost is outside)
    from voice_pipeline.tts.piper import PiperEngine

    before = rss_mib()
    engine = PiperEngine()
    import asyncio

    asyncio.run(engine.start())
    memory = rss_mib() - before
    english = [s for s in SENTENCES if s.isascii()]

    def speak() -> None:
        for text in english:
            for chunk in engine._synthesize(text):
                pcm = resample(chunk.pcm, chunk.sample_rate, 24000)
                OpusEncoder(24000, 60, "audio", complexity=_opus_complexity()).encode_all(pcm)

    cpu, wall = cpu_time(speak, repeat=2)
    chars = sum(len(s) for s in english)
    _say(f"  tts  piper: {cpu / chars * 1000:.2f} ms CPU per character ({wall / chars * 1000:.2f} ms wall)")
    return {"unit": "character", "engine": "piper en_US-joe-medium + Opus 24 kHz", "cpu_seconds_per_unit": {1: cpu / chars},
            "latency_ms_per_batch": {1: wall / len(english) * 1000}, "memory_mib_per_replica": round(memory + BASE_RSS_MIB, 1),
            "memory_mib_per_stream": 0.5}  # fmt: skip


def _mp3(pcm: npt.NDArray[np.int16], rate: int) -> bytes:
    """What a cloud TTS (Edge: 24 kHz mono MP3) sends; made locally, not timed."""
    import io

    import av

    out = io.BytesIO()
    with av.open(out, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="mono")  # type: ignore[call-overload]
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


def measure_tts_cloud() -> dict[str, Any]:
    """A cloud TTS costs this node only the client side: MP3 decode, resample, Opus encode."""
    import asyncio

    from voice_pipeline.common.audio import OpusEncoder, resample
    from voice_pipeline.tts.edge import decode_mp3
    from voice_pipeline.tts.piper import PiperEngine

    engine = PiperEngine()
    asyncio.run(engine.start())
    english = [s for s in SENTENCES if s.isascii()]
    mp3s = []
    for text in english:
        pcm = np.concatenate([c.pcm for c in engine._synthesize(text)])
        mp3s.append(_mp3(resample(pcm, 22050, 24000), 24000))

    def receive() -> None:
        for data in mp3s:
            chunk = decode_mp3(data)
            OpusEncoder(24000, 60, "audio", complexity=_opus_complexity()).encode_all(
                resample(chunk.pcm, chunk.sample_rate, 24000)
            )

    cpu, wall = cpu_time(receive, repeat=3)
    chars = sum(len(s) for s in english)
    _say(f"  tts  cloud client: {cpu / chars * 1000:.3f} ms CPU per character (MP3 decode + Opus encode)")
    return {"unit": "character", "engine": "cloud TTS client (Edge/Azure MP3 -> Opus 24 kHz)",
            "cpu_seconds_per_unit": {1: cpu / chars}, "latency_ms_per_batch": {1: wall / len(english) * 1000},
            "memory_mib_per_replica": round(BASE_RSS_MIB + 20, 1), "memory_mib_per_stream": 0.5}  # fmt: skip


def measure_gateway() -> dict[str, Any]:
    from voice_pipeline.common.audio import OpusDecoder, OpusEncoder, resample
    from voice_pipeline.gateway.protocol import decode_audio_frame, encode_audio_frame, parse_text

    pcm = (np.concatenate(_clips()) * 32767).astype(np.int16)
    packets = OpusEncoder(16000, 60).encode_all(pcm)
    seconds = len(packets) * 0.06

    def handle() -> None:
        decoder = OpusDecoder(16000, 60)
        for packet in packets:
            decoder.decode(decode_audio_frame(packet, 1))
            encode_audio_frame(packet, 1)
        parse_text('{"type":"listen","state":"start","mode":"auto"}')

    cpu, wall = cpu_time(handle, repeat=3)
    _ = resample
    _say(f"  gateway: {cpu / seconds * 1000:.2f} ms CPU per audio-second (decode uplink, frame downlink)")
    per_session = (20 * 16000 * 2 + 64 * 1024) / 2**20  # longest utterance buffer + Opus/WS state
    return {"unit": "audio-second", "engine": "opus decode + xiaozhi framing", "cpu_seconds_per_unit": {1: cpu / seconds},
            "latency_ms_per_batch": {1: wall / len(packets) * 1000}, "memory_mib_per_replica": round(BASE_RSS_MIB, 1),
            "memory_mib_per_stream": per_session}  # fmt: skip


def measure_llm() -> dict[str, Any]:
    """The LLM stage's own cost: streaming a reply from a provider (a local llama.cpp server here;
    the provider's compute is the provider's, as with a cloud API)."""
    import asyncio

    from voice_pipeline.common.metrics import Metrics
    from voice_pipeline.common.stages import ChatMessage
    from voice_pipeline.llm.llamacpp import LlamaCppServer
    from voice_pipeline.llm.settings import LlmSettings
    from voice_pipeline.llm.stage import InProcessLlm

    async def run() -> tuple[float, float, int]:
        settings = LlmSettings()
        async with (
            LlamaCppServer.from_settings(settings) as server,
            InProcessLlm(settings.model_copy(update={"base_url": server.base_url}), Metrics()) as llm,
        ):
            questions = [
                "What is the weather like today?",
                "Tell me a short joke.",
                "你好，请介绍一下你自己。",
            ]
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for q in questions:
                async for _ in llm.stream_chat([ChatMessage("user", q)]):
                    pass
            return time.process_time() - cpu0, time.perf_counter() - wall0, len(questions)

    cpu, wall, n = asyncio.run(run())
    _say(
        f"  llm  router: {cpu / n * 1000:.1f} ms CPU per request (provider time excluded), {wall / n:.2f} s wall"
    )
    return {"unit": "request", "engine": "OpenAI-compatible streaming client (provider compute excluded)",
            "cpu_seconds_per_unit": {1: cpu / n}, "latency_ms_per_batch": {1: wall / n * 1000},
            "memory_mib_per_replica": round(BASE_RSS_MIB, 1), "memory_mib_per_stream": 0.1}  # fmt: skip


BASE_RSS_MIB = 0.0


def machine() -> dict[str, Any]:
    cpu_model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {"cpu": cpu_model, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "python": platform.python_version(), "commit": commit}  # fmt: skip


def calibrate(output: Path) -> dict[str, Any]:
    global BASE_RSS_MIB
    import voice_pipeline.common.metrics  # noqa: F401  (a stage process's baseline: Python + libraries)

    BASE_RSS_MIB = rss_mib()
    _say(
        f"calibrating on {machine()['cpu']} ({os.cpu_count()} cores); process baseline {BASE_RSS_MIB:.0f} MiB"
    )
    stages = {
        "gateway": measure_gateway(),
        "vad": measure_vad(),
        "asr": measure_asr(),
        "tts": measure_tts_cloud(),
        "tts:piper": measure_tts(),
        "llm": measure_llm(),
    }
    profile = {
        "measured": {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": machine(),
            "command": "voice-pipeline calibrate",
            "notes": "CPU = process CPU time of the model work; memory = RSS growth on model load plus the "
            "process baseline. `tts` is a cloud TTS client (provider compute excluded), `tts:piper` the local "
            "voice. ASR is the offline whisper-base; SenseVoiceSmall needs its own run (no offline weights).",
        },
        "stages": stages,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(profile, indent=2, ensure_ascii=False) + "\n")
    _say(f"cost profile written to {output}")
    return profile
