"""Throughput of the ASR service, batched vs unbatched, over the real transport.

For each batch size it starts `voice-pipeline serve asr` with VP_ASR__BATCH_MAX_SIZE=<size> on a
free loopback port, warms it up, then sends rounds of `--concurrency` concurrent utterances (the
test clips, cycled) through the gateway's own client (`transport.remote.RemoteAsr`) and reports
utterances per second of wall time and per CPU-second of the service process, the batch sizes
the service recorded, and the load average (on a shared machine wall time is noisy; CPU time of
the service is the steadier number).

    .venv/bin/python scripts/asr_batch_throughput.py --batch-sizes 8 1 --concurrency 8 --rounds 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from voice_pipeline.common.audio import read_wav, resample
from voice_pipeline.transport.pool import ReplicaPool
from voice_pipeline.transport.remote import RemoteAsr

ROOT = Path(__file__).resolve().parents[1]
CLIPS = [("en_hello", "en"), ("en_weather", "en"), ("zh_hello", "zh"), ("zh_story", "zh")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_asr(batch_size: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "VP_SERVICE__HOST": "127.0.0.1",
        "VP_SERVICE__PORT": str(port),
        "VP_SERVICE__DRAIN_TIMEOUT_S": "1",
        "VP_ASR__BATCH_MAX_SIZE": str(batch_size),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "voice_pipeline.cli", "serve", "asr", "--no-install"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"asr service exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit("asr service not ready after 300 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the service process (all its threads): unlike wall time, barely
    disturbed by other work on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_histogram(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        if family.name == "voice_stage_batch_size":
            for s in family.samples:
                if s.name.endswith("_count"):
                    out["batches"] = s.value
                elif s.name.endswith("_sum"):
                    out["items"] = s.value
    return out


async def measure(url: str, pid: int, concurrency: int, rounds: int) -> dict[str, Any]:
    clips = []
    for name, language in CLIPS:
        pcm, rate = read_wav(ROOT / "tests" / "fixtures" / f"{name}.wav")
        clips.append((resample(pcm, rate, 16000), language))
    pool = ReplicaPool("asr", url)
    await pool.start()
    try:
        asr = RemoteAsr(pool)
        work = [clips[i % len(clips)] for i in range(concurrency)]
        await asyncio.gather(*(asr.transcribe(pcm, lang) for pcm, lang in work))  # type: ignore[arg-type]  # warm-up
        before = batch_histogram(url)
        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        for _ in range(rounds):
            await asyncio.gather(*(asr.transcribe(pcm, lang) for pcm, lang in work))  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu_before
        after = batch_histogram(url)
    finally:
        await pool.stop()
    batches = after["batches"] - before["batches"]
    items = after["items"] - before["items"]
    return {
        "utterances": concurrency * rounds,
        "seconds": round(elapsed, 2),
        "utterances_per_second": round(concurrency * rounds / elapsed, 2),
        "cpu_seconds": round(cpu, 2),
        "utterances_per_cpu_second": round(concurrency * rounds / cpu, 2),
        "mean_batch_size": round(items / batches, 2) if batches else None,
        "audio_seconds_per_round": round(sum(len(p) for p, _ in work) / 16000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 1])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--log-dir", default="/tmp")
    args = parser.parse_args()
    results = []
    for size in args.batch_sizes:
        load_before = os.getloadavg()
        process, url = start_asr(size, Path(args.log_dir) / f"asr-throughput-b{size}.log")
        try:
            result = asyncio.run(measure(url, process.pid, args.concurrency, args.rounds))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        result.update(
            batch_max_size=size,
            concurrency=args.concurrency,
            loadavg_before=[round(x, 2) for x in load_before],
            loadavg_after=[round(x, 2) for x in os.getloadavg()],
            cpus=os.cpu_count(),
        )
        results.append(result)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
