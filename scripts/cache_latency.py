"""Cache hit latency vs miss latency of each cached stage, on the real engines and a real Redis.

Builds the stages as a process does (cache.build.open_caches + assembly.build_*: whisper-base ASR,
the local llama.cpp server, espeak-ng TTS) with the caches on a redis-server it starts on a free
loopback port (or the in-process store with `--backend memory`), then times, `--runs` times each:

- ASR: one utterance (the fixture clips, cycled) transcribed with the cache emptied (miss: model
  call + look-up + store) and again (hit);
- LLM: a first-turn question with the cache emptied (miss: embedding + search + the provider's
  whole reply + store) and a paraphrase of it (hit: embedding + search + GET + replay); first delta
  and whole reply; the embedding alone is timed too;
- TTS: a sentence with the cache emptied (miss: synthesis + Opus + store) and again (hit).

Prints a table and one JSON object. The machine may be shared: the load average is printed beside.

    .venv/bin/python scripts/cache_latency.py --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

from voice_pipeline import assembly
from voice_pipeline.asr.settings import AsrSettings
from voice_pipeline.cache.build import Caches, open_caches
from voice_pipeline.cache.settings import CacheSettings
from voice_pipeline.common.audio import read_wav, resample
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import AsrStage, LlmStage, SpeechRequest, TtsStage
from voice_pipeline.llm.settings import LlmSettings
from voice_pipeline.tts.settings import TtsSettings
from voice_pipeline.turn.history import ChatHistory

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ["en_weather", "en_hello", "zh_story", "zh_hello"]
QUESTIONS = [  # (asked first, paraphrase asked second): scores >= the default threshold
    ("What is the capital of France?", "What's the capital city of France?"),
    ("What time is it now?", "What time is it right now?"),
    ("今天天气怎么样？", "今天的天气如何？"),
    ("你叫什么名字？", "你的名字是什么？"),
]
SENTENCES = [
    "The weather today is sunny with a light breeze.",
    "Here is a short joke about a cat and a piano.",
    "I can answer questions and tell you stories.",
    "Sorry, I did not catch that, could you say it again?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("redis-server did not start")


async def flush(caches: Caches) -> None:
    """Empty the cache so the next call is a miss (the LLM's vector mirror too)."""
    assert caches.guard is not None
    backend: Any = caches.guard.backend
    if backend.name == "redis":
        await backend._client.flushdb()
    else:
        backend._values.clear()
        backend._logs.clear()
        backend._bytes = 0


def clear_mirrors(llm: LlmStage) -> None:
    replies = getattr(llm, "replies", None)
    if replies is not None:
        replies.mirrors._indexes.clear()


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await fn()
    return (time.perf_counter() - started) * 1000


async def stream_times(llm: LlmStage, question: str, language: str) -> tuple[float, float, str]:
    messages = ChatHistory(LlmSettings().system_prompts).messages(question, language)
    started = time.perf_counter()
    first: float | None = None
    parts = []
    async for delta in llm.stream_chat(messages):
        if first is None:
            first = time.perf_counter() - started
        parts.append(delta)
    total = time.perf_counter() - started
    return (first or total) * 1000, total * 1000, "".join(parts)


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(values), 2), "min_ms": round(min(values), 2)}


async def measure(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    metrics = Metrics()
    settings = CacheSettings(redis_url=redis_url, preload_enabled=False)
    tts_settings = TtsSettings(engines={"en": ["espeak"], "zh": ["espeak"]}, edge_enabled=False)
    llm_settings = LlmSettings(max_tokens=48, temperature=0, first_token_timeout_s=120)
    results: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        caches = await stack.enter_async_context(open_caches(settings, metrics, allow_memory=True))
        llm: LlmStage = await stack.enter_async_context(assembly.build_llm(llm_settings, metrics, caches))
        asr: AsrStage = await stack.enter_async_context(assembly.build_asr(AsrSettings(), metrics, caches))
        tts: TtsStage = await stack.enter_async_context(assembly.build_tts(tts_settings, metrics, caches))
        assert caches.embedder is not None

        # Warm-up: first model calls pay one-off costs (allocations, page faults).
        await asr.transcribe(clip(CLIPS[0]), "auto")
        await stream_times(llm, "Hello.", "en")
        async for _ in tts.synthesize(SpeechRequest("Warm up.", "en", 24000, 60)):
            pass

        asr_miss, asr_hit = [], []
        for i in range(args.runs):
            audio = clip(CLIPS[i % len(CLIPS)])
            await flush(caches)
            asr_miss.append(await timed(partial(asr.transcribe, audio, "auto")))
            asr_hit.append(await timed(partial(asr.transcribe, audio, "auto")))
        results["asr"] = {"miss": summary(asr_miss), "hit": summary(asr_hit)}

        embedder = caches.embedder
        embed = [await timed(partial(embedder.embed, q)) for q, _ in QUESTIONS * 3]
        miss_first, miss_total, hit_first, hit_total, hits = [], [], [], [], 0
        for i in range(args.runs):
            question, paraphrase = QUESTIONS[i % len(QUESTIONS)]
            language = "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in question) else "en"
            await flush(caches)
            clear_mirrors(llm)
            first, total, reply = await stream_times(llm, question, language)
            miss_first.append(first)
            miss_total.append(total)
            before = (
                metrics.registry.get_sample_value(
                    "voice_cache_requests_total", {"stage": "llm", "result": "hit"}
                )
                or 0
            )
            first, total, cached = await stream_times(llm, paraphrase, language)
            after = (
                metrics.registry.get_sample_value(
                    "voice_cache_requests_total", {"stage": "llm", "result": "hit"}
                )
                or 0
            )
            hits += int(after > before and cached == reply)
            hit_first.append(first)
            hit_total.append(total)
        results["llm"] = {
            "embedding": summary(embed),
            "miss_first_delta": summary(miss_first),
            "miss_whole_reply": summary(miss_total),
            "hit_first_delta": summary(hit_first),
            "hit_whole_reply": summary(hit_total),
            "paraphrase_hits": f"{hits}/{args.runs}",
        }

        tts_miss_first, tts_miss, tts_hit = [], [], []
        for i in range(args.runs):
            request = SpeechRequest(SENTENCES[i % len(SENTENCES)], "en", 24000, 60)
            await flush(caches)
            started = time.perf_counter()
            first_chunk: float | None = None
            async for _ in tts.synthesize(request):
                first_chunk = first_chunk or (time.perf_counter() - started) * 1000
            tts_miss.append((time.perf_counter() - started) * 1000)
            tts_miss_first.append(first_chunk or 0.0)

            async def replay(request: SpeechRequest = request) -> None:
                async for _ in tts.synthesize(request):
                    pass

            tts_hit.append(await timed(replay))
        results["tts"] = {
            "miss_first_chunk": summary(tts_miss_first),
            "miss": summary(tts_miss),
            "hit": summary(tts_hit),
        }
    return results


def clip(name: str) -> Any:
    pcm, rate = read_wav(ROOT / "tests" / "fixtures" / f"{name}.wav")
    return resample(pcm, rate, 16000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="misses and hits timed per stage")
    parser.add_argument("--backend", choices=["redis", "memory"], default="redis", help="cache store")
    args = parser.parse_args()
    process = None
    with tempfile.TemporaryDirectory() as tmp:
        url = ""
        if args.backend == "redis":
            process, url = start_redis(Path(tmp))
        try:
            results = asyncio.run(measure(args, url))
        finally:
            if process is not None:
                process.terminate()
                process.wait(10)
    results["backend"] = args.backend
    results["runs"] = args.runs
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    results["cpus"] = os.cpu_count()
    print(f"{'':28}{'median ms':>12}{'min ms':>10}")
    for stage in ("asr", "llm", "tts"):
        for what, row in results[stage].items():
            if isinstance(row, dict):
                print(f"{stage + ' ' + what:28}{row['median_ms']:>12}{row['min_ms']:>10}")
    print(f"llm paraphrase hits: {results['llm']['paraphrase_hits']}; load average {results['load_average']}")
    print(json.dumps(results, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
