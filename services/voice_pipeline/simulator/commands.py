"""`voice-pipeline simulate`: talk to a gateway like a device does."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="act as a xiaozhi device: speak WAV clips, print transcript, reply and latencies",
        description="Connects like a real device (handshake headers, hello, listen, Opus frames paced in real "
        "time, silence until the server detects the end of speech) and reports each turn.",
    )
    p.add_argument("--url", default="ws://127.0.0.1:8000/xiaozhi/v1/", help="gateway WebSocket URL")
    p.add_argument(
        "--clip", action="append", required=True, help="WAV file to speak (repeat for several turns)"
    )
    p.add_argument("--turns", type=int, default=0, help="number of turns (default: one per clip)")
    p.add_argument("--mode", choices=["auto", "manual", "realtime"], default="auto", help="listen mode")
    p.add_argument("--save-audio", help="write the last reply's audio to this WAV file")
    p.add_argument("--json", action="store_true", help="one JSON object per turn on stdout")
    p.add_argument("--token", default="", help="device token (Authorization: Bearer ...)")
    p.add_argument("--device-id", default="", help="device id (a MAC address; random by default)")
    p.add_argument("--protocol-version", type=int, choices=[1, 2, 3], default=1, help="binary frame version")
    p.add_argument("--think-seconds", type=float, default=1.0, help="pause between turns")
    p.add_argument("--timeout", type=float, default=60.0, help="give up on a turn after this many seconds")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    import asyncio
    import json

    import numpy as np

    from voice_pipeline.common.audio import read_wav, resample, write_wav
    from voice_pipeline.simulator.device import UPLINK_RATE, SimulatedDevice

    clips = []
    for path in args.clip:
        pcm, rate = read_wav(path)
        clips.append(resample(pcm, rate, UPLINK_RATE))
    device = SimulatedDevice(
        args.url, args.device_id, token=args.token, protocol_version=args.protocol_version, mode=args.mode
    )
    try:
        await device.connect()
    except (OSError, TimeoutError, ConnectionError) as exc:
        print(f"error: cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1
    failed = 0
    try:
        for i in range(args.turns or len(clips)):
            result = await device.turn(clips[i % len(clips)], timeout=args.timeout)
            failed += not result.ok
            if args.json:
                print(json.dumps(result.as_json(), ensure_ascii=False), flush=True)
            else:
                print(f"turn {i + 1}: you said: {result.transcript!r}")
                print(f"        reply: {result.reply!r}")
                print(
                    f"        audio {result.audio_seconds:.2f} s; speech end -> stt {result.stt_ms} ms, "
                    f"-> first token {result.first_token_ms} ms, -> first audio {result.first_audio_ms} ms"
                    + (f"; ERROR {result.error}" if result.error else ""),
                    flush=True,
                )
            if args.save_audio and device.reply_audio:
                write_wav(args.save_audio, np.concatenate(device.reply_audio), device.downlink_rate)
            if i + 1 < (args.turns or len(clips)):
                await asyncio.sleep(args.think_seconds)
    finally:
        await device.close()
    return 1 if failed else 0
