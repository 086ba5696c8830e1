"""Peak RSS of `voice-pipeline serve llm` (a cloud provider client) under 40 concurrent streamed
replies from the LLM emulator for ~40 s: the per-request memory of the llm stage.

Run: PYTHONPATH=services:operator .venv/bin/python scripts/llm_client_rss.py
Measured 2026-11-29 (AMD EPYC, 2 cores): ready 74.5 MiB, after 2037 replies 83.6 MiB peak.
"""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from voice_pipeline.common.stages import ChatMessage
from voice_pipeline.transport.pool import ReplicaPool
from voice_pipeline.transport.remote import RemoteLlm

PY = sys.executable
env = {k: v for k, v in os.environ.items() if not k.startswith("VP_")}
emu = subprocess.Popen(
    [
        PY,
        "-m",
        "voice_pipeline.cli",
        "emulate",
        "llm",
        "--port",
        "9501",
        "--ttft-ms",
        "300",
        "--tokens-per-s",
        "40",
    ],
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
senv = {
    **env,
    "VP_LLM__BASE_URL": "http://127.0.0.1:9501/v1",
    "VP_LLM__MAX_CONCURRENCY": "40",
    "VP_LLM__QUEUE_SIZE": "80",
}
srv = subprocess.Popen(
    [PY, "-m", "voice_pipeline.cli", "serve", "llm", "--port", "9502"],
    env=senv,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)


def rss(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024


async def main():
    async with httpx.AsyncClient(timeout=1) as client:
        for _ in range(120):
            try:
                if (await client.get("http://127.0.0.1:9502/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    print("ready RSS", rss(srv.pid, "VmRSS:"))
    pool = ReplicaPool("llm", "http://127.0.0.1:9502")
    await pool.start()
    await asyncio.sleep(1)
    llm = RemoteLlm(pool)
    done = 0

    async def worker(i):
        nonlocal done
        end = time.monotonic() + 40
        while time.monotonic() < end:
            async for _ in llm.stream_chat(
                [ChatMessage("user", f"Question {i} {done}: tell me about the weather")]
            ):
                pass
            done += 1

    await asyncio.gather(*(worker(i) for i in range(40)))
    await pool.stop()
    print("replies", done, "RSS", rss(srv.pid, "VmRSS:"), "peak", rss(srv.pid, "VmHWM:"))


try:
    asyncio.run(main())
finally:
    srv.terminate()
    emu.terminate()
    srv.wait()
    emu.wait()
