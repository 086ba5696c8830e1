"""`voice-pipeline calibrate`: measure each stage's real cost on this machine -> a cost profile.

CPU is process CPU time (all threads) around the model work only, so it is what a replica's CPU
limit must pay for. Memory is the growth of this process's RSS when the stage's model loads. Every
figure comes from running the real engine on real clips; nothing is estimated.
"""

from __future__ import annotations

import contextlib
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


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak_rss() -> None:
    """Start VmHWM afresh (Linux: writing 5 to clear_refs), so a peak is this measurement's own."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def process_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of another process, e.g. the llama.cpp server child."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cpu, peak


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
    from voice_pipeline.asr.settings import AsrSettings
    from voice_pipeline.asr.whisper import WhisperEngine
    from voice_pipeline.models.registry import require_model

    shipped = AsrSettings()  # the threads and window the ASR stage runs with
    window = shipped.encoder_window_s  # reads the CPU's flags
    return _measure_asr_engine(
        lambda: WhisperEngine(require_model("whisper-base"), threads=shipped.threads, min_window_s=window),
        batches,
        {
            "engine": f"faster-whisper base int8, {shipped.threads} thread(s), {window:g} s window",
            "engines": ["whisper"],
        },
    )


def measure_sensevoice(batches: tuple[int, ...] = (1, 2, 4, 8)) -> dict[str, Any]:
    """SenseVoiceSmall through the production engine (funasr-onnx), from VP_ASR__SENSEVOICE_DIR or
    the installed model directory, as the ASR stage loads it."""
    from voice_pipeline.asr.sensevoice import SenseVoiceEngine
    from voice_pipeline.asr.settings import AsrSettings
    from voice_pipeline.common.paths import models_dir

    settings = AsrSettings(
        sensevoice_dir=os.environ.get("VP_ASR__SENSEVOICE_DIR", ""),
        sensevoice_quantized=os.environ.get("VP_ASR__SENSEVOICE_QUANTIZED", "true").lower() != "false",
    )
    model_dir = Path(settings.sensevoice_dir or models_dir() / "sensevoice-small")
    notes = (
        (model_dir / "PROVENANCE.txt").read_text().strip() if (model_dir / "PROVENANCE.txt").is_file() else ""
    )
    weights = "int8 (model_quant.onnx)" if settings.sensevoice_quantized else "fp32 (model.onnx)"
    return _measure_asr_engine(
        lambda: SenseVoiceEngine(
            model_dir, threads=settings.threads, quantized=settings.sensevoice_quantized, batch_size=max(batches)
        ),
        batches,
        {"engine": f"SenseVoiceSmall {weights} via funasr-onnx, {settings.threads} threads",
         "engines": ["sensevoice"], "notes": notes},
    )  # fmt: skip


def _measure_asr_engine(
    load: Callable[[], Any], batches: tuple[int, ...], labels: dict[str, Any]
) -> dict[str, Any]:
    from voice_pipeline.asr.engine import AsrItem

    reset_peak_rss()
    before = rss_mib()
    engine = load()
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
    # Peak RSS, not the level after loading: inference buffers of the largest batch count too.
    peak = max(rss_mib(), peak_rss_mib()) - before
    return {"unit": "audio-second", **labels, "cpu_seconds_per_unit": cost, "latency_ms_per_batch": latency,
            "memory_mib_per_replica": round(max(memory, peak) + BASE_RSS_MIB, 1),
            "memory_mib_per_stream": 30 * 16000 * 4 / 2**20}  # fmt: skip


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
    return {"unit": "character", "engine": "piper en_US-joe-medium + Opus 24 kHz", "engines": ["piper"], "cpu_seconds_per_unit": {1: cpu / chars},
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
    return {"unit": "character", "engine": "cloud TTS client (Edge MP3 -> Opus 24 kHz)", "engines": ["edge"],
            "cpu_seconds_per_unit": {1: cpu / chars}, "latency_ms_per_batch": {1: wall / len(english) * 1000},
            "memory_mib_per_replica": round(BASE_RSS_MIB + 20, 1), "memory_mib_per_stream": 0.5}  # fmt: skip


def measure_tts_pcm_cloud() -> dict[str, Any]:
    """Cloud engines that send raw PCM (Azure and OpenAI 24 kHz, iFlytek 16 kHz): this node pays
    the resample to 24 kHz and the Opus encode."""
    import asyncio

    from voice_pipeline.common.audio import OpusEncoder, resample
    from voice_pipeline.tts.piper import PiperEngine

    engine = PiperEngine()
    asyncio.run(engine.start())
    english = [s for s in SENTENCES if s.isascii()]
    received = []
    for text in english:
        pcm = np.concatenate([c.pcm for c in engine._synthesize(text)])
        received += [(resample(pcm, 22050, 24000), 24000), (resample(pcm, 22050, 16000), 16000)]

    def receive() -> None:
        for pcm, rate in received:
            OpusEncoder(24000, 60, "audio", complexity=_opus_complexity()).encode_all(
                resample(pcm, rate, 24000)
            )

    cpu, wall = cpu_time(receive, repeat=3)
    chars = 2 * sum(len(s) for s in english)  # each sentence once at 24 kHz, once at 16 kHz
    _say(f"  tts  cloud PCM client: {cpu / chars * 1000:.3f} ms CPU per character (resample + Opus encode)")
    return {"unit": "character", "engine": "cloud TTS client (Azure/OpenAI/iFlytek raw PCM -> Opus 24 kHz)",
            "engines": ["azure", "openai", "iflytek"], "cpu_seconds_per_unit": {1: cpu / chars},
            "latency_ms_per_batch": {1: wall / len(received) * 1000},
            "memory_mib_per_replica": round(BASE_RSS_MIB + 20, 1), "memory_mib_per_stream": 0.5}  # fmt: skip


def measure_tts_espeak() -> dict[str, Any]:
    """espeak-ng runs as a subprocess per sentence: its CPU (children's rusage) plus ours (WAV
    parse, resample, Opus encode) is what the TTS replica pays."""
    import asyncio
    import resource

    from voice_pipeline.common.audio import OpusEncoder, resample
    from voice_pipeline.tts.espeak import EspeakEngine
    from voice_pipeline.tts.settings import TtsSettings

    settings = TtsSettings()
    engine = EspeakEngine(settings.espeak_voices, settings.espeak_rate, settings.timeout_s)
    asyncio.run(engine.start())

    async def speak_all() -> None:
        for text in SENTENCES:
            language = "en" if text.isascii() else "zh"
            async for chunk in engine.synthesize(text, language):
                OpusEncoder(24000, 60, "audio", complexity=_opus_complexity()).encode_all(
                    resample(chunk.pcm, chunk.sample_rate, 24000)
                )

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    asyncio.run(speak_all())  # warm-up
    repeat = 3
    child0 = children_cpu()
    own, wall = cpu_time(lambda: asyncio.run(speak_all()), repeat=repeat)
    child = (children_cpu() - child0) / (repeat + 1)  # cpu_time's own warm-up call ran it once more
    cpu = own + child
    chars = sum(len(s) for s in SENTENCES)
    _say(
        f"  tts  espeak-ng: {cpu / chars * 1000:.3f} ms CPU per character (subprocess {child / chars * 1000:.3f})"
    )
    return {"unit": "character", "engine": "espeak-ng subprocess + Opus 24 kHz", "engines": ["espeak"],
            "cpu_seconds_per_unit": {1: cpu / chars}, "latency_ms_per_batch": {1: wall / len(SENTENCES) * 1000},
            "memory_mib_per_replica": round(BASE_RSS_MIB + 20, 1), "memory_mib_per_stream": 0.5,
            "notes": "CPU = espeak-ng processes (RUSAGE_CHILDREN) + the stage's decode/resample/Opus"}  # fmt: skip


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
    return {"unit": "request", "engine": "OpenAI-compatible streaming client (provider compute excluded)", "engines": ["cloud"],
            "cpu_seconds_per_unit": {1: cpu / n}, "latency_ms_per_batch": {1: wall / n * 1000},
            "memory_mib_per_replica": round(BASE_RSS_MIB, 1), "memory_mib_per_stream": 0.1}  # fmt: skip


QUESTIONS = (
    "What is the weather like today?",
    "Tell me a short joke.",
    "你好，请介绍一下你自己。",
    "How far away is the moon?",
    "给我讲一个简短的故事。",
    "What should I cook for dinner tonight?",
)


def measure_llm_local() -> dict[str, Any]:
    """The llm stage as it runs with no providers: the stage process plus the local llama.cpp server
    it starts (the installed Qwen2.5 0.5B GGUF). CPU per request = both processes' CPU time over
    one reply at a time (the server answers one request at a time; concurrent ones wait for it);
    memory = the stage process baseline plus the server's peak RSS.

    The server runs on ONE thread here: with several, ggml's threads spin at their barriers while
    another process holds the core, so on a shared machine CPU time measures the contention (2
    threads at load 8-10 on 2 cores: 21 CPU-s and 57 s per reply). One thread has no barrier, so
    its CPU time is the reply's compute wherever it runs; a replica's `local_threads` threads share
    that compute, so the reply lasts its CPU time / threads on the replica's own cores.
    """
    import asyncio

    from voice_pipeline.common.metrics import Metrics
    from voice_pipeline.common.stages import ChatMessage
    from voice_pipeline.llm.llamacpp import LlamaCppServer
    from voice_pipeline.llm.settings import LlmSettings
    from voice_pipeline.llm.stage import InProcessLlm

    planned = LlmSettings()
    settings = planned.model_copy(update={"local_threads": 1})

    async def run() -> tuple[float, float, float, float, int]:
        async with LlamaCppServer.from_settings(settings) as server:
            assert server._process is not None
            pid = server._process.pid
            async with InProcessLlm(
                settings.model_copy(update={"base_url": server.base_url}), Metrics()
            ) as llm:
                async for _ in llm.stream_chat([ChatMessage("user", "Hello!")]):  # warm-up
                    pass
                server_cpu0, _ = process_usage(pid)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                for q in QUESTIONS:
                    async for _ in llm.stream_chat([ChatMessage("user", q)]):
                        pass
                wall = time.perf_counter() - wall0
                own = time.process_time() - cpu0
                server_cpu, peak = process_usage(pid)
            return own, server_cpu - server_cpu0, wall, peak, len(QUESTIONS)

    own, server, wall, server_peak, n = asyncio.run(run())
    per_reply = (own + server) / n
    reply_s = server / n / planned.local_threads + own / n
    _say(
        f"  llm  local llama.cpp ({settings.local_model}): {per_reply:.2f} CPU-s per request (server "
        f"{server / n:.2f}, stage {own / n:.3f}), {wall / n:.2f} s wall on 1 thread here, server peak RSS "
        f"{server_peak:.0f} MiB"
    )
    return {"unit": "request", "engine": f"local llama.cpp server, {settings.local_model} GGUF "
            f"(+ the stage's client)", "engines": ["llamacpp"],
            "cpu_seconds_per_unit": {1: per_reply}, "latency_ms_per_batch": {1: reply_s * 1000},
            "memory_mib_per_replica": round(BASE_RSS_MIB + server_peak, 1), "memory_mib_per_stream": 0.1,
            "notes": f"CPU = stage + llama.cpp server process CPU time over {n} replies (max_tokens "
            f"{settings.max_tokens}) one at a time, the server on 1 thread (see measure_llm_local); latency "
            f"= server CPU / {planned.local_threads} threads + the stage's CPU (wall here, shared machine: "
            f"{wall / n:.1f} s); memory = stage baseline + server VmHWM {server_peak:.0f} MiB"}  # fmt: skip


BASE_RSS_MIB = 0.0


def measure_service_baseline(timeout_s: float = 120.0) -> float:
    """RSS of a ready stage service process that loads no model (`serve llm` with a remote
    provider): Python, FastAPI/uvicorn, metrics, transport. What every stage Pod holds before its
    model; an importing process alone (40 MiB) was short of it (74 MiB measured)."""
    import httpx

    from voice_pipeline.llm.llamacpp import free_port

    port = free_port()
    # Only its own setting: a stage service refuses the other stages' (e.g. VP_ASR__SENSEVOICE_DIR).
    env = {k: v for k, v in os.environ.items() if not k.startswith("VP_") or k == "VP_HOME"}
    env["VP_LLM__BASE_URL"] = "http://127.0.0.1:9/v1"
    cmd = [sys.executable, "-m", "voice_pipeline.cli", "serve", "llm", "--port", str(port)]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(
                f"`{' '.join(cmd)}` was not ready within {timeout_s:.0f} s (exit {process.poll()})"
            )
        time.sleep(1)
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")
    finally:
        process.terminate()
        process.wait(10)


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


# Profile entry -> how to measure it. `calibrate --only` measures some and keeps the rest of the
# profile it writes into.
MEASURES: dict[str, Callable[[], dict[str, Any]]] = {
    "gateway": measure_gateway,
    "vad": measure_vad,
    "asr": measure_asr,
    "asr:sensevoice": measure_sensevoice,
    "tts": measure_tts_cloud,
    "tts:pcm": measure_tts_pcm_cloud,
    "tts:piper": measure_tts,
    "tts:espeak": measure_tts_espeak,
    "llm": measure_llm,
    "llm:llamacpp": measure_llm_local,
}
# What a plain `calibrate` runs: everything installed models can measure (SenseVoiceSmall's model
# directory is not one of them: `--only asr:sensevoice` where it is).
DEFAULT_ENTRIES = tuple(k for k in MEASURES if k != "asr:sensevoice")
NOTES = (
    "CPU = process CPU time of the model work; memory = RSS growth on model load plus the baseline "
    "of a ready stage service process (measure_service_baseline). `tts` is the Edge client (MP3), `tts:pcm` the raw-PCM cloud clients (provider compute "
    "excluded), `tts:piper` the local voice. `llm` is a cloud provider's client, `llm:llamacpp` the "
    "stage with its local llama.cpp server. Entries with their own `measured` were measured apart."
)


def calibrate(output: Path, only: tuple[str, ...] = ()) -> dict[str, Any]:
    global BASE_RSS_MIB
    unknown = [k for k in only if k not in MEASURES]
    if unknown:
        from voice_pipeline.common.errors import ConfigError

        raise ConfigError(f"calibrate cannot measure {', '.join(unknown)}; it measures {', '.join(MEASURES)}")
    BASE_RSS_MIB = measure_service_baseline()
    _say(
        f"calibrating on {machine()['cpu']} ({os.cpu_count()} cores); stage process baseline {BASE_RSS_MIB:.0f} MiB"
    )
    load_before = os.getloadavg()[0]
    stages = {key: MEASURES[key]() for key in (only or DEFAULT_ENTRIES)}
    # Other work on the machine inflates wall latencies (and a little CPU time): recorded with it.
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    measured = {"date": now, "machine": machine(), "load_average": load, "command": "voice-pipeline calibrate",
                "notes": NOTES}  # fmt: skip
    if only and output.is_file():
        # Keep the rest of the profile; the new entries say when and where they were measured.
        profile: dict[str, Any] = json.loads(output.read_text(encoding="utf-8"))
        for entry in stages.values():
            entry["measured"] = {"date": now, "machine": measured["machine"], "load_average": load,
                                 "command": f"voice-pipeline calibrate --only {','.join(only)}"}  # fmt: skip
        profile["stages"] = {**profile.get("stages", {}), **stages}
    else:
        profile = {"measured": measured, "stages": stages}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(profile, indent=2, ensure_ascii=False) + "\n")
    _say(f"cost profile written to {output}")
    return profile
