"""`voice-pipeline simulate`: talk to a gateway like a device does."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="act as a xiaozhi device (or a fleet of them: --devices N): speak clips, report latencies",
        description="Connects like a real device (handshake headers, hello, listen, Opus frames paced in real "
        "time, silence until the server detects the end of speech) and reports each turn. With --devices N "
        "it runs the standard fleet workload (docs/benchmark-workload.md) from one process: a live progress "
        "line on stderr, a one-line summary, and a JSON result on stdout (or --output).",
    )
    p.add_argument("--url", default="ws://127.0.0.1:8000/xiaozhi/v1/", help="gateway WebSocket URL")
    p.add_argument(
        "--clip",
        action="append",
        help="WAV file to speak (repeat for several turns); fleet default: the EN and ZH test clips",
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
    fleet = p.add_argument_group("fleet (the standard workload)")
    fleet.add_argument("--devices", type=int, help="run a fleet of N devices instead of one")
    fleet.add_argument("--duration", type=float, default=120.0, help="seconds after the ramp (default 120)")
    fleet.add_argument(
        "--ramp", type=float, default=10.0, help="devices start staggered over this (default 10)"
    )
    fleet.add_argument("--seed", type=int, default=0, help="seed of clip choice and think times")
    fleet.add_argument("--think-min", type=float, default=3.0, help="shortest think time, s (default 3)")
    fleet.add_argument("--think-max", type=float, default=8.0, help="longest think time, s (default 8)")
    fleet.add_argument("--turn-timeout", type=float, default=30.0, help="a turn fails after this long")
    fleet.add_argument("--output", help="also write the JSON result to this file")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    import asyncio

    if args.devices is not None:
        if (
            args.devices < 1
            or args.duration <= 0
            or args.ramp < 0
            or not 0 <= args.think_min <= args.think_max
        ):
            print(
                "error: need --devices >= 1, --duration > 0, --ramp >= 0, 0 <= --think-min <= --think-max",
                file=sys.stderr,
            )
            return 2
        import json
        from pathlib import Path

        result = asyncio.run(_fleet(args))
        text = json.dumps(result, ensure_ascii=False, indent=2)
        if args.output:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        print(text)
        return 0 if result["turns"] and result["ok_turns"] == result["turns"] else 1
    if not args.clip:
        print("error: give --clip FILE.wav (one device) or --devices N (a fleet)", file=sys.stderr)
        return 2
    return asyncio.run(_run(args))


async def _fleet(args: argparse.Namespace) -> dict[str, Any]:
    from voice_pipeline.simulator.fleet import (
        Fleet,
        FleetConfig,
        ProgressLine,
        default_clip_paths,
        load_clips,
        one_line_summary,
    )

    config = FleetConfig(
        url=args.url,
        devices=args.devices,
        duration_s=args.duration,
        ramp_s=args.ramp,
        think_min_s=args.think_min,
        think_max_s=args.think_max,
        seed=args.seed,
        turn_timeout_s=args.turn_timeout,
        protocol_version=args.protocol_version,
    )
    clips = load_clips(args.clip or default_clip_paths())
    progress = ProgressLine()
    result = await Fleet(config, clips).run(progress)
    progress.done()
    print(one_line_summary(result), file=sys.stderr, flush=True)
    return result


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
