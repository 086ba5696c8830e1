"""`voice-pipeline soak`: a fleet for a long time, watching the system for leaks.

`make soak` (not part of `make test`): 20 devices for 30 minutes against the all-in-one server
with the provider emulators (LLM and TTS), the real VAD and ASR. Every `--interval` seconds it
records, for the system's process tree: RSS, open file descriptors and threads, and over the turns
of that interval: count, failures and p95 of speech end -> first audio. The result file is
rewritten after each sample (an interrupted run keeps what it measured) and ends with a summary:
RSS, fds and threads at the start of the steady state and at the end, with the growth per hour of a
least-squares line through the samples; a PNG plot is written beside it when matplotlib is there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from voice_pipeline.bench.procstat import tree, tree_rss_mib
from voice_pipeline.simulator.stats import percentile


def register(sub: Any) -> None:
    p = sub.add_parser(
        "soak",
        help="run a fleet for a long time and sample RSS, fds, threads and p95 (leak hunting)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--duration", type=float, default=1800.0, help="seconds of load after the ramp")
    p.add_argument("--ramp", type=float, default=20.0)
    p.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    p.add_argument("--mode", choices=["allinone", "distributed"], default="allinone")
    p.add_argument("--output", default="", help="result JSON (default bench/results/soak-<time>.json)")
    p.set_defaults(func=_soak)


def _count(pid: int, what: str) -> int:
    try:
        if what == "fds":
            return len(list(Path(f"/proc/{pid}/fd").iterdir()))
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_sample(roots: dict[str, int]) -> dict[str, Any]:
    """RSS (MiB), open fds and threads of each named process tree."""
    out: dict[str, Any] = {}
    for name, root in roots.items():
        pids = tree(root)
        out[name] = {
            "rss_mib": round(tree_rss_mib(root), 1),
            "fds": sum(_count(pid, "fds") for pid in pids),
            "threads": sum(_count(pid, "threads") for pid in pids),
        }
    return out


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    if var == 0:
        return None
    cov = sum((x - mx) * (y - my) for x, y in points)
    return round(cov / var * 3600, 2)


def summarize_samples(samples: list[dict[str, Any]], ramp_s: float) -> dict[str, Any]:
    """Per process and metric: first steady-state value, last, max and growth per hour."""
    steady = [s for s in samples if s["t_s"] >= ramp_s] or samples
    summary: dict[str, Any] = {}
    if not steady:
        return summary
    for name in steady[0]["processes"]:
        per: dict[str, Any] = {}
        for metric in ("rss_mib", "fds", "threads"):
            points = [(s["t_s"], float(s["processes"][name][metric])) for s in steady]
            values = [v for _, v in points]
            per[metric] = {
                "first": values[0],
                "last": values[-1],
                "max": max(values),
                "growth_per_hour": slope_per_hour(points),
            }
        summary[name] = per
    p95s = [s["first_audio_p95_ms"] for s in steady if s["first_audio_p95_ms"] is not None]
    summary["first_audio_p95_ms"] = {"first": p95s[0] if p95s else None, "last": p95s[-1] if p95s else None}
    summary["turns"] = sum(s["turns"] for s in samples)
    summary["failed_turns"] = sum(s["failed"] for s in samples)
    return summary


def _plot(result: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    samples = result["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
    for name in result["system"]:
        axes[0].plot(minutes, [s["processes"][name]["rss_mib"] for s in samples], label=name)
        axes[1].plot(minutes, [s["processes"][name]["fds"] for s in samples], label=name)
        axes[2].plot(minutes, [s["processes"][name]["threads"] for s in samples], label=name)
    axes[3].plot(minutes, [s["first_audio_p95_ms"] or 0 for s in samples])
    for ax, label in zip(axes, ["RSS MiB", "open fds", "threads", "p95 first audio ms"], strict=True):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[3].set_xlabel("minutes")
    fig.suptitle(f"soak: {result['devices']} devices, {result['mode']}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


async def _run(args: argparse.Namespace, output: Path) -> dict[str, Any]:
    from voice_pipeline.bench.rig import Rig
    from voice_pipeline.simulator.fleet import Fleet, FleetConfig, default_clip_paths, load_clips

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    log_dir = output.with_suffix("")
    with Rig(args.mode, log_dir) as rig:
        system = {name: rig.procs[name].process.pid for name in rig.system_names()}
        fleet = Fleet(
            FleetConfig(rig.url, args.devices, args.duration, args.ramp, seed=7),
            load_clips(default_clip_paths()),
        )
        result: dict[str, Any] = {
            "started_at": started_at,
            "devices": args.devices,
            "duration_s": args.duration,
            "ramp_s": args.ramp,
            "interval_s": args.interval,
            "mode": args.mode,
            "system": list(system),
            "samples": [],
        }
        t0 = time.monotonic()
        seen = 0

        def sample() -> None:
            nonlocal seen
            records = fleet.records[seen:]
            seen += len(records)
            latencies = [float(r.first_audio_ms) for r in records if r.ok and r.first_audio_ms is not None]
            entry = {
                "t_s": round(time.monotonic() - t0, 1),
                "processes": process_sample(system),
                "turns": len(records),
                "failed": sum(not r.ok for r in records),
                "first_audio_p95_ms": percentile(latencies, 95) if latencies else None,
            }
            result["samples"].append(entry)
            result["summary"] = summarize_samples(result["samples"], args.ramp)
            output.write_text(json.dumps(result, indent=1))
            print(json.dumps(entry), file=sys.stderr, flush=True)

        async def sampler() -> None:
            while True:
                sample()
                await asyncio.sleep(args.interval)

        task = asyncio.create_task(sampler())
        try:
            result["fleet"] = {k: v for k, v in (await fleet.run()).items() if k != "records"}
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        sample()
    return result


def _soak(args: argparse.Namespace) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = Path(args.output or f"bench/results/soak-{stamp}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(_run(args, output))
    output.write_text(json.dumps(result, indent=1))
    _plot(result, output.with_suffix(".png"))
    print(json.dumps(result["summary"], indent=1))
    print(f"soak result: {output}", file=sys.stderr)
    return 0
