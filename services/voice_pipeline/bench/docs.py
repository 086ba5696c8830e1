"""docs/benchmarks.md from bench/results: the table, the plots, the model check, the profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voice_pipeline import contract as c
from voice_pipeline.bench import charts
from voice_pipeline.bench.asr_docs import asr_lines
from voice_pipeline.bench.model_check import difference, predict
from voice_pipeline.bench.results import latest

MODES = ("allinone", "distributed", "allinone-embedded")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def isa_summary(m: dict[str, Any]) -> str:
    """CPU flags and what the runtimes dispatch to, for records that carry them (issue 14)."""
    parts = []
    if m.get("cpu_flags"):
        parts.append("flags " + " ".join(f for f in m["cpu_flags"] if f.startswith(("avx", "amx"))))
    ct2 = (m.get("runtimes") or {}).get("ctranslate2") or {}
    if ct2.get("selected_isa"):
        parts.append(
            f"CTranslate2 {ct2.get('version', '?')} ISA {ct2['selected_isa']}"
            f" ({ct2.get('compute_type', '?')}, int8 GEMM {ct2.get('gemm_s8_backend', '?').split(' ')[0]})"
        )
    ort = (m.get("runtimes") or {}).get("onnxruntime") or {}
    if ort.get("version"):
        parts.append(f"onnxruntime {ort['version']} {ort.get('provider_in_use', '')}".strip())
    return "; ".join(parts)


def _machine(m: dict[str, Any]) -> str:
    isa = isa_summary(m)
    return f"{m['cores']} cores, {m['memory_gib']:g} GiB, {m['cpu']}" + (f" ({isa})" if isa else "")


def _models(models: dict[str, str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in models.items())


def _providers(p: dict[str, Any]) -> str:
    return f"{p['llm']['describe']}; {p['tts']['describe']}"


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"  # records before these figures have none


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def step_rows(record: dict[str, Any]) -> list[str]:
    rows = []
    steps = [record["floor"]] if record.get("floor") else []
    steps += record.get("steps", [])
    for step in steps:
        fa, stt = step["first_audio_ms"], step["stt_ms"]
        load = step.get("load_average", {}).get("after") or []
        rows.append(
            "| "
            + " | ".join(
                [
                    step["date"][:16].replace("T", " "),
                    record["mode"],
                    str(step["devices"]),
                    str(step["turns"]),
                    f"{step['success_ratio'] * 100:.1f}%",
                    f"{_ms(fa['p50'])} / {_ms(fa['p95'])} / {_ms(fa['p99'])}",
                    f"{_ms(stt['p50'])} / {_ms(stt['p95'])}",
                    f"{step['system_cpu_cores']:.2f}",
                    _share(step.get("machine_busy_share")),
                    _num(step.get("system_cpu_wait_per_run")),
                    f"{step['system_rss_mib']:.0f}",
                    f"{step['client']['cpu_cores']:.2f}",
                    f"{step['emulator_cpu_cores']:.2f}",
                    " ".join(f"{x:g}" for x in load),
                    "yes" if step["meets_slo"] else "no",
                    record["commit"],
                    _machine(record["machine"]),
                    _models(record["models"]),
                    _providers(record["providers"]),
                ]
            )
            + " |"
        )
    return rows


TABLE_HEAD = [
    "| date (UTC) | mode | devices | turns | success | first audio p50 / p95 / p99 ms | stt p50 / p95 ms "
    "| system CPU (cores) | machine busy | system's wait for a core (s per s on one) | system RSS MiB "
    "| load generator CPU | emulators CPU | load avg (1/5/15 min) | within SLO | commit | machine | models "
    "| providers |",
    "|" + "---|" * 19,
]


def predictions(record: dict[str, Any], profile_path: str | None = None) -> dict[str, dict[str, Any]]:
    """The capacity model's predictions for the record's machine: those stored with the run (the
    shipped profile, and one calibrated on the machine if the run had it), else the shipped one
    (or `profile_path`). The last is the most specific."""
    m = record["machine"]
    if profile_path:
        return {f"cost profile {profile_path}": predict(m["cores"], m["memory_gib"], profile_path)}
    # A prediction the run could not make is kept in the record as {"error": ...}; skip it here.
    stored = {k: v for k, v in (record.get("predictions") or {}).items() if "error" not in v}
    if stored:
        return stored
    return {"shipped cost profile": predict(m["cores"], m["memory_gib"])}


def cpu_per_device(record: dict[str, Any]) -> tuple[float, float] | None:
    """Least-squares line of the system's CPU (cores) over fleet size: (per device, fixed).
    CPU time, unlike latency, hardly depends on what else runs on the machine."""
    points = [
        (s["devices"], s["system_cpu_cores"]) for s in [record.get("floor"), *record.get("steps", [])] if s
    ]
    if len({n for n, _ in points}) < 2:
        return None
    mean_n = sum(n for n, _ in points) / len(points)
    mean_c = sum(c for _, c in points) / len(points)
    var = sum((n - mean_n) ** 2 for n, _ in points)
    slope = sum((n - mean_n) * (c - mean_c) for n, c in points) / var
    return slope, mean_c - slope * mean_n


def model_check_lines(record: dict[str, Any], profile_path: str | None = None) -> list[str]:
    m = record["machine"]
    measured = int(record.get("supported_devices") or 0)
    lines = [f"Measured ({record['mode']}, {record['date'][:16]}): **{measured} devices**.", ""]
    fit = cpu_per_device(record)
    if fit and fit[0] > 0:
        per, fixed = fit
        lines += [
            f"Measured CPU of the system: {per:.4f} cores per device (+ {fixed:.2f} fixed), fitted over "
            f"every fleet size; the {m['cores']} cores would be full at **{int((m['cores'] - fixed) / per)} "
            "devices** (the CPU-bound ceiling; CPU time is far less sensitive than latency to the machine's other load).",
            "",
        ]
    for label, pred in predictions(record, profile_path).items():
        diff = difference(pred["plan_supported_devices"], measured)
        share = measured / pred["compute_limit_models"] if pred["compute_limit_models"] else None
        lines += [
            f"With the {label} (measured {pred['profile_measured'][:10]} on {pred['profile_cpu'] or '?'}):",
            "",
            f"- capacity model (`voice_operator.capacity.make_plan`, node = this machine: {m['cores']} cores, "
            f"{m['memory_gib']:g} GiB; 0.4 core and 1.5 GiB reserved, stages planned at 70% utilization): "
            f"**{pred['plan_supported_devices']} devices**, bottleneck {pred['plan_bottleneck']} "
            f"({pred['plan_binding']})",
            f"- difference (measured - predicted) / predicted: **{'-' if diff is None else f'{diff * 100:+.0f}%'}** "
            "(target: within 15%)",
            f"- compute limit (cores / measured model CPU per device at the best batch size, VAD + ASR): "
            f"{pred['compute_limit_models']} devices; with every stage's client cost: "
            f"{pred['compute_limit_all_stages']}; measured / compute limit = "
            f"{'-' if share is None else f'{share * 100:.0f}%'} (target >= 90%)",
            "- CPU per device the profile predicts (cores): "
            + ", ".join(f"{k} {v:.4f}" for k, v in pred["cpu_per_device"].items()),
            *(
                [
                    f"- this profile comes from a different CPU than the run ({m['cpu']}): part of the "
                    "difference is the hardware; `make calibrate` on the benchmark machine removes it"
                ]
                if pred["profile_cpu"] and pred["profile_cpu"] != m["cpu"]
                else []
            ),
            "",
        ]
    return lines


def profile_lines(record: dict[str, Any]) -> list[str]:
    step = record.get("profiled_step") or {}
    profiles = step.get("profiles") or {}
    if not profiles:
        return ["No profile was recorded for this run."]
    lines: list[str] = []
    for name, prof in profiles.items():
        if "error" in prof:
            lines += [f"py-spy on {name} failed: `{prof['error']}`", ""]
            continue
        lines += [
            f"py-spy on **{name}**, {prof['samples']} busy samples at {step['devices']} devices "
            f"({prof.get('idle_samples', 0)} idle-wait samples left out; native threads of the ASR "
            "runtime are invisible to it, see the per-stage busy time instead). By the code the CPU was "
            "in (top of the stack, grouped by package):",
            "",
            "| # | code | share of busy samples |",
            "|---|---|---|",
            *[
                f"| {i} | `{r['function']}` | {r['share'] * 100:.1f}% |"
                for i, r in enumerate(prof.get("areas", []), 1)
            ],
            "",
            "By function (self time):",
            "",
            "| # | function (self) | share |",
            "|---|---|---|",
            *[
                f"| {i} | `{r['function']}` | {r['share'] * 100:.1f}% |"
                for i, r in enumerate(prof["self"], 1)
            ],
            "",
            "Inclusive time under this package's functions:",
            "",
            "| function | share |",
            "|---|---|",
            *[f"| `{r['function']}` | {r['share'] * 100:.1f}% |" for r in prof["inclusive_ours"]],
            "",
        ]
    return lines


def process_lines(record: dict[str, Any]) -> list[str]:
    """CPU and RSS of every process tree at the supported load (system, emulators, generator)."""
    n = record.get("supported_devices")
    step = next((s for s in record.get("steps", []) if s["devices"] == n), None)
    if step is None:
        return ["No fleet size met the SLO, so there is no supported load to show."]
    lines = [
        f"At {n} devices (steady window after the ramp):",
        "",
        "| process | role | CPU (cores) | RSS peak MiB |",
        "|---|---|---|---|",
    ]
    for name, p in step["processes"].items():
        role = (
            "provider emulator (not the system)"
            if name.endswith("emulator")
            else "load generator"
            if name == "client"
            else "system"
        )
        lines.append(f"| {name} | {role} | {p['cpu_cores']:.3f} | {p['rss_mib_peak']:.0f} |")
    return lines


STEP_WORDS = {
    "silence": "end-of-turn silence (last voiced frame -> the chunk that completed the wait)",
    "vad": "VAD deciding the turn is over (batching included)",
    "asr": "ASR",
    "llm_first_token": "LLM first token (history, cache look-up, request, model)",
    "first_sentence": "LLM writing the first sentence",
    "tts_first_audio": "TTS first audio of that sentence (synthesis, resampling, Opus)",
    "send": "send (queue, pacing, WebSocket write)",
}


def provider_ms(record: dict[str, Any], step: str, mean: float) -> float | None:
    """The emulated provider's share of a step (its configured delay), None if the provider is
    not an emulator (a local model's time is the system's own)."""
    providers = record.get("providers") or {}
    llm = (providers.get("llm") or {}).get("emulator")
    tts = (providers.get("tts") or {}).get("emulator")
    if step == "llm_first_token" and llm:
        # Not capped by the step: a reply begun at a pause spends part of it inside the silence.
        return float(llm["ttft_ms"])
    if step == "first_sentence" and llm:
        return mean  # the emulator's tokens arriving at its configured rate
    if step == "tts_first_audio" and tts:
        return min(mean, float(tts["first_audio_ms"]))
    return None


def breakdown_lines(record: dict[str, Any]) -> list[str]:
    """End of speech -> first audio at one device, step by step (means over the floor's turns)."""
    floor = record.get("floor") or {}
    steps = floor.get("turn_steps") or {}
    if not any((v or {}).get("count") for v in steps.values()):
        return ["This run recorded no per-step times (a record from before they existed)."]
    rows = ["| step | mean ms | emulated provider ms | ours ms |", "|---|---:|---:|---:|"]
    total = ours = 0.0
    hidden = False
    for step in c.TURN_STEPS:  # in the order they happen; STEP_WORDS says each in words
        words = STEP_WORDS[step]
        mean = (steps.get(step) or {}).get("mean_ms")
        if mean is None:
            continue
        theirs = provider_ms(record, step, mean)
        total += mean
        ours += mean - (theirs or 0.0)
        hidden = hidden or mean < (theirs or 0.0)
        rows.append(f"| {words} | {mean:.0f} | {_ms(theirs)} | {mean - (theirs or 0.0):.0f} |")
    rows.append(f"| **total** (last voiced frame -> first frame sent) | **{total:.0f}** | | **{ours:.0f}** |")
    encode = (steps.get("encode") or {}).get("mean_ms")
    n = (steps.get("asr") or {}).get("count")
    early = floor.get("early") or {}
    notes = []
    if hidden:
        notes.append(
            "A negative share: the provider's request began before the turn ended (the reply begun "
            "at a pause, `gateway.early_reply`), so that much of its time passed inside the "
            "end-of-turn silence and the turn did not wait for it. The total of ours is the whole "
            "wait less the providers' time."
        )
    if early:
        asr, reply = early.get("asr") or {}, early.get("reply") or {}
        notes.append(
            f"Work begun at pauses over this run: transcriptions used {asr.get('used', 0)} / dropped "
            f"{asr.get('dropped', 0)}, replies used {reply.get('used', 0)} / dropped {reply.get('dropped', 0)}."
        )
    return [
        f"Means over the {n} turns of the single-device floor, from the gateway's per-turn timestamps "
        "(`voice_turn_step_seconds`; the steps of a turn add up to its time from the last 10 ms above "
        "-40 dBFS to the first Opus frame sent). The device's network and playback are not in it."
        + (f" Opus encoding of a sentence's first chunk: {encode:.0f} ms of the TTS step." if encode else ""),
        "",
        *rows,
        *(["", " ".join(notes)] if notes else []),
    ]


def targets_lines(record: dict[str, Any], profile_path: str | None = None) -> list[str]:
    pred = list(predictions(record, profile_path).values())[-1]
    measured = int(record.get("supported_devices") or 0)
    floor = (record.get("floor") or {}).get("first_audio_ms", {}).get("p50")
    at = next((s for s in record.get("steps", []) if s["devices"] == measured), None)
    p95 = at["first_audio_ms"]["p95"] if at else None
    rss = at["system_rss_mib"] if at else None
    total_rss = sum(p["rss_mib_peak"] for p in at["processes"].values()) if at else None
    diff = difference(pred["plan_supported_devices"], measured)
    limit = pred["compute_limit_models"]

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("met" if ok else "missed")

    rows = [
        (
            "supported >= 90% of compute limit",
            f"{measured} of {limit}",
            verdict(measured >= 0.9 * limit if limit else None),
        ),
        (
            "single-device p50 first audio <= 900 ms",
            f"{_ms(floor)} ms",
            verdict(floor <= 900 if floor is not None else None),
        ),
        (
            "p95 first audio <= 2000 ms at supported load",
            f"{_ms(p95)} ms",
            verdict(p95 <= 2000 if p95 is not None else None),
        ),
        (
            "total RSS at supported load <= 2 GB",
            f"system {rss:.0f} MiB, all processes {total_rss:.0f} MiB"
            if rss is not None and total_rss is not None
            else "-",
            verdict(total_rss <= 2048 if total_rss is not None else None),
        ),
        (
            "predicted vs measured within 15%",
            "-" if diff is None else f"{diff * 100:+.0f}%",
            verdict(abs(diff) <= 0.15 if diff is not None else None),
        ),
    ]
    return ["| target | measured | |", "|---|---|---|", *[f"| {a} | {b} | {c} |" for a, b, c in rows]]


def render(
    records: list[dict[str, Any]],
    img_dir: Path,
    doc_path: Path,
    conditions: str = "",
    asr: dict[str, Any] | None = None,
) -> str:
    img_dir.mkdir(parents=True, exist_ok=True)
    rel = Path("img")  # docs/img next to docs/benchmarks.md
    lines = [
        "# Benchmarks: devices per node",
        "",
        "Generated by `make bench` (`voice-pipeline bench`, then `voice-pipeline bench --docs-only`) from "
        "`bench/results/*.json`; do not edit by hand. Workload: `../shared/docs/benchmark-workload.md` "
        "(EN + ZH clips paced in real time, think time uniform 3-8 s, seeded); supported devices = the "
        "largest fleet with turn success >= 99% and p95 speech end -> first audio <= the SLO (2000 ms). "
        "Providers are local emulators with the documented profiles (their CPU is reported apart, it is "
        "not the system's).",
        "",
    ]
    if conditions:
        lines += ["## Conditions and analysis (bench/analysis.md, written by hand)", "", conditions, ""]
    for mode in MODES:
        record = latest(records, mode)
        if record is None:
            lines += [f"## {mode}", "", f"No {mode} run recorded yet.", ""]
            continue
        lat = charts.latency_chart(record, img_dir / f"bench-{mode}-latency.png")
        cpu = charts.cpu_chart(record, img_dir / f"bench-{mode}-cpu.png")
        floor = (record.get("floor") or {}).get("first_audio_ms", {})
        lines += [
            f"## {mode}: {record['supported_devices']} devices supported",
            "",
            f"Run of {record['date']} on {_machine(record['machine'])}, commit {record['commit']}; "
            f"models: {_models(record['models'])}; providers: {_providers(record['providers'])}. "
            f"Single-device latency floor: first audio p50 {_ms(floor.get('p50'))} ms.",
            "",
            f"![latency vs devices]({rel / lat.name})",
            f"![CPU and memory vs devices]({rel / cpu.name})",
            "",
        ]
        if record.get("note"):
            lines += [record["note"], ""]
        if record.get("commit_note"):
            lines += [f"Commit: {record['commit_note']}.", ""]
        lines += [
            "### Targets",
            "",
            *targets_lines(record),
            "",
            "### End of speech -> first audio at one device",
            "",
            *breakdown_lines(record),
            "",
            "### Processes",
            "",
            *process_lines(record),
            "",
            "### Model check",
            "",
            *model_check_lines(record),
            "",
        ]
        lines += ["### Where the time goes (profiler at the supported load)", "", *profile_lines(record), ""]
    lines += asr_lines(asr, _machine(asr["machine"]) if asr else "")
    lines += ["## All measured rows", "", *TABLE_HEAD]
    for record in records:
        lines += step_rows(record)
    lines.append("")
    text = "\n".join(lines)
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    doc_path.write_text(text, encoding="utf-8")
    return text
