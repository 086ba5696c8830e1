"""A capacity run: fleet steps against a rig, each measured, until the search settles.

Each step runs the fleet (`voice-pipeline simulate --devices N`) as its own process and meanwhile
samples CPU and RSS of every process tree (system, emulators, client) over the steady window
(after the ramp), scrapes the system's /metrics before and after, and records the machine's load
average so a figure taken on a busy machine says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from voice_pipeline.bench import metrics, profiler
from voice_pipeline.bench.machine import git_commit, load_average, machine_info, now_iso
from voice_pipeline.bench.procstat import TreeSampler, wait_per_run
from voice_pipeline.bench.rig import CLI, Rig
from voice_pipeline.bench.search import next_size, supported
from voice_pipeline.simulator.stats import meets_slo


@dataclass(frozen=True)
class StepPlan:
    duration_s: float = 60.0
    ramp_s: float = 10.0
    seed: int = 0
    turn_timeout_s: float = 30.0
    slo_ms: float = 2000.0
    min_success: float = 0.99


def run_step(
    rig: Rig, devices: int, plan: StepPlan, work_dir: Path, profile_s: float = 0.0
) -> dict[str, Any]:
    """One fleet of `devices` against the rig, measured; `profile_s` > 0 also runs py-spy."""
    out = work_dir / f"fleet-{rig.mode}-n{devices}-{int(time.time())}.json"
    argv = [*CLI, "simulate", "--url", rig.url, "--devices", str(devices), "--duration", str(plan.duration_s)]
    argv += ["--ramp", str(plan.ramp_s), "--seed", str(plan.seed), "--turn-timeout", str(plan.turn_timeout_s)]
    argv += ["--output", str(out)]
    load_before = load_average()
    before = metrics.scrape(rig.metrics_urls())
    t0 = time.monotonic()
    with (work_dir / "fleet.log").open("ab") as log:
        client = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    # Steady state only: the sampler starts when every device has connected.
    time.sleep(min(plan.ramp_s, plan.duration_s))
    sampler = TreeSampler({**rig.roots(), "client": client.pid}).start()
    # One py-spy per system process (distributed mode: each stage service on its own).
    spies: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    if profile_s > 0:
        for name in rig.system_names():
            spy_out = work_dir / f"pyspy-{rig.mode}-n{devices}-{name}.txt"
            spy = profiler.record(rig.procs[name].process.pid, min(profile_s, plan.duration_s), spy_out)
            if spy is not None:
                spies[name] = (spy, spy_out)
    try:
        client.wait(plan.ramp_s + plan.duration_s + plan.turn_timeout_s + 120)
    except subprocess.TimeoutExpired:
        client.kill()
        client.wait()
    usage = sampler.stop()
    seconds = time.monotonic() - t0
    after = metrics.scrape(rig.metrics_urls())
    if not out.exists():
        raise RuntimeError(
            f"the fleet of {devices} wrote no result (exit {client.returncode}); see {work_dir}/fleet.log"
        )
    fleet = json.loads(out.read_text())
    system = [usage[name] for name in rig.system_names()]
    step: dict[str, Any] = {
        "devices": devices,
        "date": now_iso(),
        "load_average": {"before": load_before, "after": load_average()},
        **{
            k: fleet[k]
            for k in (
                "turns",
                "ok_turns",
                "success_ratio",
                "first_audio_ms",
                "stt_ms",
                "first_token_ms",
                "errors",
                "clips",
                "first_audio_p50_by_clip",
            )
        },
        "duration_s": plan.duration_s,
        "ramp_s": plan.ramp_s,
        "client": {**fleet["client"], "sampled": usage.get("client")},
        "processes": usage,
        "system_cpu_cores": round(sum(p["cpu_cores"] for p in system), 3),
        # Whole machine (the load generator and emulators too) and the system's wait for a core.
        "machine_busy_share": sampler.machine_busy_share,
        "system_cpu_wait_per_run": wait_per_run(
            sum(p["on_cpu_seconds"] for p in system), sum(p["runnable_wait_seconds"] for p in system)
        ),
        "system_rss_mib": round(sum(p["rss_mib_peak"] for p in system), 1),
        "emulator_cpu_cores": round(
            sum(v["cpu_cores"] for k, v in usage.items() if k.endswith("emulator")), 3
        ),
        "stages": metrics.stage_deltas(before, after, seconds),
        "turn_steps": metrics.turn_steps(before, after),
        "early": metrics.early_work(before, after),
    }
    step["meets_slo"] = meets_slo(step, plan.slo_ms, plan.min_success)
    if profile_s > 0:
        step["profiles"] = {}
        for name, (spy, spy_out) in spies.items():
            _, err = spy.communicate(timeout=plan.duration_s + 60)
            step["profiles"][name] = (
                profiler.summarize(spy_out.read_text(errors="replace"))
                if spy_out.exists()
                else {"error": err.decode(errors="replace")[-300:]}
            )
        if not spies:
            step["profiles"]["-"] = {"error": "py-spy is not installed (make bench-deps)"}
    return step


def search(
    rig: Rig,
    plan: StepPlan,
    work_dir: Path,
    start: int = 8,
    growth: float = 1.5,
    resolution: float = 0.1,
    max_devices: int = 400,
    max_steps: int = 12,
    floor: bool = True,
    profile_s: float = 30.0,
    log: Any = None,
    floor_s: float | None = None,
) -> dict[str, Any]:
    """Single-device latency floor (for `floor_s`, default the steps' duration), then the stepped
    search, then py-spy at the supported load."""
    log = log or sys.stderr
    steps: list[dict[str, Any]] = []
    outcomes: dict[int, bool] = {}

    def run(n: int, profile: float = 0.0, duration_s: float | None = None) -> dict[str, Any]:
        step_plan = replace(plan, duration_s=duration_s or plan.duration_s)
        print(f"[bench {rig.mode}] {n} devices for {step_plan.duration_s:.0f} s ...", file=log, flush=True)
        step = run_step(rig, n, step_plan, work_dir, profile)
        fa = step["first_audio_ms"]
        print(
            f"[bench {rig.mode}] {n} devices: success {step['success_ratio'] * 100:.1f}% p95 first audio "
            f"{fa['p95']} ms, system cpu {step['system_cpu_cores']:.2f} cores "
            f"(waits {step['system_cpu_wait_per_run']} s per s on a core), machine busy "
            f"{step['machine_busy_share']}, rss {step['system_rss_mib']:.0f} MiB, "
            f"client cpu {step['client']['cpu_cores']:.2f}, load {step['load_average']['after']} -> "
            f"{'PASS' if step['meets_slo'] else 'FAIL'}",
            file=log,
            flush=True,
        )
        return step

    # The commit the processes were started from (a commit made during a long search must not
    # be credited with the figures).
    commit = git_commit()
    floor_step = run(1, duration_s=floor_s) if floor else None
    while len(outcomes) < max_steps:
        n = next_size(outcomes, start, growth, resolution, max_devices)
        if n is None:
            break
        step = run(n)
        steps.append(step)
        outcomes[n] = step["meets_slo"]
    best = supported(outcomes)
    profiled = run(best, profile_s) if best and profile_s > 0 else None
    return {
        "floor": floor_step,
        "steps": steps,
        "supported_devices": best,
        "profiled_step": profiled,
        "commit": commit,
    }


def run_record(
    mode: str, rig: Rig, plan: StepPlan, result: dict[str, Any], models: dict[str, str], note: str
) -> dict[str, Any]:
    """The JSON written to bench/results: everything needed to judge and reproduce the figure."""
    return {
        "kind": "capacity-search",
        "mode": mode,
        "date": now_iso(),
        "machine": machine_info(),
        "commit": result.get("commit") or git_commit(),
        "models": models,
        "providers": rig.profile_json(),
        "workload": {
            "duration_s": plan.duration_s,
            "ramp_s": plan.ramp_s,
            "think_s": [3.0, 8.0],
            "seed": plan.seed,
            "clips": "tests/fixtures en_weather, en_hello, zh_story, zh_hello",
        },
        "slo_ms": plan.slo_ms,
        "min_success": plan.min_success,
        "note": note,
        **result,
    }
