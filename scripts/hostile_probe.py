"""Replay the hostile-client findings of issue 13 against a real all-in-one server (emulated LLM
and TTS, real VAD and ASR) on loopback and print what a client sees and what it cost the server.

    .venv/bin/python scripts/hostile_probe.py [--silent 600] [--flood 10000]

Measured: silent sockets against the caps (and whether a real device elsewhere still gets a
turn), a burst of tiny valid Opus frames (server CPU seconds, RSS, the errors and close), nested
JSON over the WebSocket and in OTA bodies, oversized OTA bodies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voice_pipeline.bench.procstat import tree_cpu_seconds, tree_rss_mib  # noqa: E402
from voice_pipeline.bench.rig import Rig  # noqa: E402
from voice_pipeline.common.audio import OpusEncoder  # noqa: E402

HELLO = json.dumps({"type": "hello", "version": 1, "audio_params": {"format": "opus", "sample_rate": 16000}})


async def _close_code(ws: Any, timeout: float = 10) -> str:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as closed:
        return str(closed.rcvd.code if closed.rcvd else None)
    except TimeoutError:
        return "open"


async def silent_sockets(url: str, count: int) -> dict[str, Any]:
    """`count` sockets that never say hello, then a device from another address."""
    opened: list[Any] = []
    refused: dict[str, int] = {}

    async def one() -> None:
        try:
            ws = await websockets.connect(url, open_timeout=10)
        except Exception as exc:
            refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1
            return
        try:
            first = await asyncio.wait_for(ws.recv(), 0.5)
            code = json.loads(first).get("code", "?") if isinstance(first, str) else "?"
            close = await _close_code(ws, 2)
            refused[f"{code}/{close}"] = refused.get(f"{code}/{close}", 0) + 1
        except TimeoutError:
            opened.append(ws)  # accepted and waiting for a hello that never comes

    await asyncio.gather(*(one() for _ in range(count)))
    started = time.monotonic()
    try:  # a device from another loopback address: hello answered?
        async with websockets.connect(url, local_addr=("127.0.0.2", 0), open_timeout=10) as ws:
            await ws.send(HELLO)
            outcome = json.loads(await asyncio.wait_for(ws.recv(), 10)).get("type", "?")
    except Exception as exc:
        outcome = f"refused: {exc}"[:120]
    closes = await asyncio.gather(*(_close_code(ws, 8) for ws in opened))
    return {
        "silent_sockets": count,
        "waiting_for_hello": len(opened),
        "refused": refused,
        "device_from_127.0.0.2": outcome,
        "device_connect_s": round(time.monotonic() - started, 2),
        "silent_sockets_closed_with": {c: closes.count(c) for c in set(closes)},
    }


async def flood(url: str, frames: int, server_pid: int) -> dict[str, Any]:
    packet = OpusEncoder(16000, 60).encode(np.zeros(960, np.int16))
    cpu0, rss0 = tree_cpu_seconds(server_pid), tree_rss_mib(server_pid)
    errors: dict[str, int] = {}
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(HELLO)
        await ws.recv()
        await ws.send(json.dumps({"type": "listen", "state": "start", "mode": "auto"}))
        started = time.monotonic()
        close = "open"
        try:
            for _ in range(frames):
                await ws.send(packet)
            sent_s = time.monotonic() - started
            await ws.send('{"type": "ping"}')
            while True:
                message = await asyncio.wait_for(ws.recv(), 60)
                if isinstance(message, str):
                    body = json.loads(message)
                    if body["type"] == "pong":
                        break
                    if body["type"] == "error":
                        errors[body["code"]] = errors.get(body["code"], 0) + 1
        except websockets.ConnectionClosed as closed:
            sent_s = time.monotonic() - started
            close = str(closed.rcvd.code if closed.rcvd else None)
        answered_s = time.monotonic() - started
    await asyncio.sleep(2)
    return {
        "frames": frames,
        "sent_in_s": round(sent_s, 2),
        "answered_after_s": round(answered_s, 2),
        "errors": errors,
        "close": close,
        "server_cpu_s": round(tree_cpu_seconds(server_pid) - cpu0, 2),
        "server_rss_delta_mib": round(tree_rss_mib(server_pid) - rss0, 1),
    }


async def nested_json(url: str, http: str, server_pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with websockets.connect(url) as ws:
        await ws.send("[" * 8000 + "]" * 8000)
        out["ws_before_hello"] = json.loads(await asyncio.wait_for(ws.recv(), 5)).get("code")
        await ws.send(HELLO)
        await ws.recv()
        await ws.send("[" * 8000 + "]" * 8000)
        out["ws_after_hello"] = json.loads(await asyncio.wait_for(ws.recv(), 5)).get("code")
    headers = {"Device-Id": "aa:bb:cc:dd:ee:ff", "Client-Id": "c1"}
    rss0 = tree_rss_mib(server_pid)
    async with httpx.AsyncClient(base_url=http, timeout=30) as client:
        deep = "[" * 30000 + "]" * 30000
        out["ota_nested_30000"] = (
            await client.post("/xiaozhi/ota/", content=deep, headers=headers)
        ).status_code
        deeper = "[" * 100000 + "]" * 100000
        out["ota_nested_100000"] = (
            await client.post("/xiaozhi/ota/", content=deeper, headers=headers)
        ).status_code
        big = b"x" * (10 << 20)
        codes = await asyncio.gather(
            *(client.post("/xiaozhi/ota/", content=big, headers=headers) for _ in range(8))
        )
        out["ota_8_bodies_of_10_MB"] = sorted({r.status_code for r in codes})
    out["ota_rss_delta_mib"] = round(tree_rss_mib(server_pid) - rss0, 1)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--silent", type=int, default=600)
    parser.add_argument("--flood", type=int, default=10000)
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="hostile-"))
    extra = {"VP_GATEWAY__MAX_CONNECTIONS_PER_IP": "32"}
    with Rig("allinone", log_dir, extra_env=extra) as rig:
        server = rig.procs["server"]
        pid = server.process.pid
        report = {
            "nested_json": await nested_json(rig.url, server.http, pid),
            "flood": await flood(rig.url, args.flood, pid),
            "silent_sockets": await silent_sockets(rig.url, args.silent),
        }
        log = (log_dir / "server.log").read_text(errors="replace")
        report["server_log_tracebacks"] = log.count("Traceback")
        report["server_log_errors"] = sum(" ERROR " in line for line in log.splitlines())
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
