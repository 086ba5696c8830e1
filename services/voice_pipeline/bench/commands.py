"""`voice-pipeline bench` (the capacity search behind `make bench`) and `voice-pipeline report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    b = sub.add_parser(
        "bench",
        help="find the supported device count: fleet steps against the system with emulated providers",
        description="Starts the provider emulators and the system (all-in-one, or one process per stage), "
        "measures a single device (the latency floor), then steps the fleet size (grow x1.5 until a size "
        "misses the SLO, then bisect), profiles the supported load with py-spy, and writes "
        "bench/results/<date>-<mode>.json and docs/benchmarks.md with plots.",
    )
    b.add_argument(
        "--mode",
        action="append",
        choices=["allinone", "distributed"],
        help="mode(s) to measure (default allinone)",
    )
    b.add_argument(
        "--duration", type=float, default=60.0, help="seconds per step after the ramp (default 60)"
    )
    b.add_argument("--ramp", type=float, default=10.0, help="ramp seconds per step (default 10)")
    b.add_argument("--start", type=int, default=8, help="first fleet size of the search (default 8)")
    b.add_argument("--growth", type=float, default=1.5, help="growth factor until a size fails (default 1.5)")
    b.add_argument("--resolution", type=float, default=0.1, help="stop when bounds are this close (relative)")
    b.add_argument("--max-devices", type=int, default=400, help="never try more devices than this")
    b.add_argument("--max-steps", type=int, default=10, help="at most this many fleet sizes")
    b.add_argument(
        "--slo-ms", type=float, default=2000.0, help="p95 speech end -> first audio SLO (default 2000)"
    )
    b.add_argument("--no-floor", action="store_true", help="skip the single-device latency floor")
    # One device speaks every ~15 s: 60 s gave the breakdown 4-8 turns, too few for a mean.
    b.add_argument(
        "--floor-duration",
        type=float,
        default=240.0,
        help="seconds of the single-device floor after the ramp (default 240: ~16 turns)",
    )
    b.add_argument(
        "--profile-seconds", type=float, default=30.0, help="py-spy at the supported load (0 = off)"
    )
    b.add_argument(
        "--tts", choices=["emulator", "local"], default="emulator", help="TTS provider (default emulator)"
    )
    b.add_argument(
        "--llm",
        choices=["emulator", "local"],
        default="emulator",
        help="LLM provider: the emulator (default) or the local llama.cpp server (embedded mode)",
    )
    b.add_argument("--ttft-ms", type=float, default=400.0, help="LLM emulator time to first token")
    b.add_argument("--tokens-per-s", type=float, default=30.0, help="LLM emulator token rate")
    b.add_argument("--tts-first-audio-ms", type=float, default=250.0, help="TTS emulator time to first audio")
    b.add_argument(
        "--profile",
        help="also compare with this cost profile (e.g. `calibrate` run on the benchmark machine)",
    )
    b.add_argument(
        "--note", default="", help="conditions of this run, recorded with it (e.g. a busy machine)"
    )
    b.add_argument("--results", default="bench/results", help="results directory (default bench/results)")
    b.add_argument("--docs", default="docs/benchmarks.md", help="benchmarks page to regenerate")
    b.add_argument("--work-dir", default="bench/work", help="logs, fleet outputs and raw profiles")
    b.add_argument("--docs-only", action="store_true", help="only regenerate the page from the results")
    b.set_defaults(func=_bench)

    a = sub.add_parser(
        "bench-asr",
        help="ASR accuracy and cost on the fixed test set: WER/CER, CPU per utterance, bad audio, endpointing",
        description="Builds the ASR test set once (Piper voice, cached in $VP_HOME/asr-testset), then measures "
        "the default and the reference whisper decoding (WER English, CER Chinese, CPU per utterance, "
        "latency), CPU on garbled audio before and after the decode bounds, and the VAD end-of-turn "
        "silence (utterances cut short vs delay). Writes bench/results/<date>-asr.json and "
        "docs/benchmarks.md.",
    )
    a.add_argument("--limit", type=int, default=0, help="only the first N English utterances (0 = all)")
    a.add_argument("--threads", type=int, default=1, help="CTranslate2 threads (default 1, the ASR stage's)")
    a.add_argument("--note", default="", help="conditions of this run, recorded with it")
    a.add_argument("--results", default="bench/results", help="results directory (default bench/results)")
    a.add_argument("--docs", default="docs/benchmarks.md", help="benchmarks page to regenerate")
    a.set_defaults(func=_bench_asr)

    r = sub.add_parser(
        "report",
        help="write the capacity report (Markdown + PNG charts) from the cost profile and benchmark results",
        description="Per-stage capacity and latency, the bottleneck, what 4c8g / 4c16g / 4c32g nodes support "
        "(capacity model on the measured cost profile), the measured fleet results and the model check.",
    )
    r.add_argument("--results", default="bench/results", help="benchmark results directory")
    r.add_argument(
        "--output", default="docs/capacity-report.md", help="report file (charts go to img/ beside it)"
    )
    r.add_argument("--profile", help="cost profile JSON (default: the shipped, measured one)")
    r.add_argument("--devices", type=int, default=60, help="target devices for the node-size comparison")
    r.set_defaults(func=_report)


def _models(tts: str, llm: str) -> dict[str, str]:
    from voice_pipeline.allinone import AllInOneSettings

    s = AllInOneSettings()
    asr = s.asr.whisper_model if s.asr.backend == "whisper" else s.asr.backend
    return {
        "vad": "silero-vad",
        "asr": str(asr),
        "llm": "emulator (OpenAI-compatible)" if llm == "emulator" else f"llama.cpp {s.llm.local_model}",
        "tts": "emulator (OpenAI /v1/audio/speech pcm)" if tts == "emulator" else "piper / espeak-ng",
    }


def _predictions(machine: dict[str, Any], profile: str | None) -> dict[str, Any]:
    from voice_pipeline.bench.model_check import predict

    profiles: dict[str, str | None] = {"shipped cost profile": None}
    if profile:
        profiles[f"cost profile {profile}"] = profile
    out: dict[str, Any] = {}
    for name, path in profiles.items():
        # A profile the model cannot plan with (unreadable, or without a cost for a stage the
        # bench runs: NoMeasuredCost is a ValueError) is said in the record; the measurement is
        # the point of the run and is never lost to it.
        try:
            out[name] = predict(machine["cores"], machine["memory_gib"], path)
        except (OSError, ValueError) as exc:
            out[name] = {"error": str(exc)}
    return out


def _bench(args: argparse.Namespace) -> int:
    from voice_pipeline.bench.docs import render
    from voice_pipeline.bench.results import latest_of_kind, load_all, save

    results, docs = Path(args.results), Path(args.docs)
    if not args.docs_only:
        from voice_pipeline.bench.rig import Rig
        from voice_pipeline.bench.runner import StepPlan, run_record, search
        from voice_pipeline.emulators.profiles import LlmProfile, TtsProfile

        plan = StepPlan(duration_s=args.duration, ramp_s=args.ramp, slo_ms=args.slo_ms)
        for mode in args.mode or ["allinone"]:
            work = Path(args.work_dir) / mode
            work.mkdir(parents=True, exist_ok=True)
            rig = Rig(
                mode,
                work,
                LlmProfile(ttft_ms=args.ttft_ms, tokens_per_s=args.tokens_per_s),
                TtsProfile(first_audio_ms=args.tts_first_audio_ms),
                tts=args.tts,
                llm=args.llm,
            )
            with rig:
                print(f"[bench {mode}] system at {rig.url}; logs in {work}", file=sys.stderr, flush=True)
                found = search(
                    rig,
                    plan,
                    work,
                    start=args.start,
                    growth=args.growth,
                    resolution=args.resolution,
                    max_devices=args.max_devices,
                    max_steps=args.max_steps,
                    floor=not args.no_floor,
                    floor_s=args.floor_duration,
                    profile_s=args.profile_seconds,
                )
            # Local providers measure the embedded mode: a figure of its own, never mixed with the
            # emulated-provider capacity.
            label = mode if args.llm == args.tts == "emulator" else f"{mode}-embedded"
            record = run_record(label, rig, plan, found, _models(args.tts, args.llm), args.note)
            record["predictions"] = _predictions(record["machine"], args.profile)
            path = save(record, results)
            print(f"[bench {mode}] {found['supported_devices']} devices supported -> {path}", file=sys.stderr)
    # Hand-written conditions and analysis of the recorded runs, kept beside them.
    notes = results.parent / "analysis.md"
    asr = latest_of_kind(results, "asr-accuracy")
    render(load_all(results), docs.parent / "img", docs, notes.read_text() if notes.exists() else "", asr)
    print(f"wrote {docs}", file=sys.stderr)
    return 0


def _bench_asr(args: argparse.Namespace) -> int:
    from voice_pipeline.bench.asr_bench import run
    from voice_pipeline.bench.docs import render
    from voice_pipeline.bench.results import latest_of_kind, load_all, save

    results, docs = Path(args.results), Path(args.docs)
    record = run(
        args.limit or None, args.threads, args.note, lambda m: print(f"[bench-asr] {m}", file=sys.stderr)
    )
    path = save(record, results)
    for name, d in record["decodings"].items():
        s = d["summary"]
        print(
            f"[bench-asr] {name}: WER {s['wer_en'] * 100:.1f}% CER {s['cer_zh'] * 100:.1f}% "
            f"CPU {s['cpu_s_mean']:.3f} s/utterance -> {path}",
            file=sys.stderr,
        )
    notes = results.parent / "analysis.md"
    render(
        load_all(results),
        docs.parent / "img",
        docs,
        notes.read_text() if notes.exists() else "",
        latest_of_kind(results, "asr-accuracy"),
    )
    print(f"wrote {docs}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from voice_pipeline.bench.report import render_report
    from voice_pipeline.bench.results import load_all

    results = Path(args.results)
    records = load_all(results) if results.is_dir() else []
    render_report(records, Path(args.output), args.profile, args.devices)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0
