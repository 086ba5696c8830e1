"""The capacity model's prediction for this machine, to compare with what the fleet measured.

Nothing here models capacity: it asks voice_operator's capacity model (the operator's own code
path) for a plan on a node the size of this machine, and reads the compute limit off the same
cost profile and workload the model uses.
"""

from __future__ import annotations

from typing import Any

LOCAL_MODEL_STAGES = ("vad", "asr")  # the stages that run models on the node when providers are remote
# What the benchmark runs: its LLM emulator is a remote OpenAI-compatible provider, its TTS emulator
# OpenAI's /v1/audio/speech (raw PCM).
BENCH_STAGES = {
    "llm": {"providers": [{"name": "emulator", "baseUrl": "http://127.0.0.1/v1"}]},
    "tts": {"engine": "openai"},
}


def predict(cores: float, memory_gib: float, profile_path: str | None = None) -> dict[str, Any]:
    from voice_operator.capacity import make_plan, stage_cost
    from voice_operator.profiles import Workload, load_profile
    from voice_operator.spec import parse_spec
    from voice_pipeline.contract import STAGES

    profile = load_profile(profile_path)
    workload = Workload()
    spec = parse_spec(
        {
            "devices": 1,
            "nodeResources": {"cpu": f"{cores:g}", "memory": f"{int(memory_gib * 1024)}Mi"},
            "stages": BENCH_STAGES,
        }
    )
    plan = make_plan(spec, profile, workload)

    def demand(stage: str) -> float:
        cost = stage_cost(stage, spec, profile)
        best = min(cost.cpu_seconds_per_unit.values())
        return workload.units_per_device_second(stage) * best

    per_device: dict[str, float] = {stage: demand(stage) for stage in STAGES}
    models = sum(per_device[s] for s in LOCAL_MODEL_STAGES)
    everything = sum(per_device.values())
    return {
        "cores": cores,
        "memory_gib": memory_gib,
        "plan_supported_devices": plan.supported_devices,
        "plan_bottleneck": plan.bottleneck,
        "plan_binding": plan.binding,
        "cpu_per_device": {k: round(v, 5) for k, v in per_device.items()},
        "compute_limit_models": int(cores / models) if models else None,
        "compute_limit_all_stages": int(cores / everything) if everything else None,
        "profile_measured": profile.measured.get("date", ""),
        "profile_cpu": profile.measured.get("machine", {}).get("cpu", ""),
    }


def difference(predicted: int, measured: int) -> float | None:
    """(measured - predicted) / predicted; None without a prediction."""
    return None if not predicted else (measured - predicted) / predicted
