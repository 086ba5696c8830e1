"""Observed costs feed the capacity model. PURE.

A stage's measured cost per unit of work is its busy seconds over the requests that did work,
divided by the units one request carries. It moves the stage's calibrated cost by a factor that
is smoothed (EWMA, so one noisy window does not replan the pipeline; the plan moves only when the
smoothed factor leaves a dead band around the applied one) and bounded (a factor of
MAX_FACTOR either way: a broken metric cannot shrink a stage to nothing or blow it up). The factor
lives in `status.observed.costs`, and the plan is made on the calibrated profile times it, so the
plan converges on what the pipeline really costs.

Only stages whose request is a whole unit of the workload are fed: ASR (one utterance: its audio
seconds) and the LLM (one request). VAD requests are chunks of a stream and TTS requests sentences;
their cost unit (audio-second, character) is not countable from the contract's metrics, so they
keep the calibrated cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voice_operator.profiles import CostProfile, StageCost, Workload
from voice_operator.prometheus import StageSignals
from voice_pipeline.contract import LLM_LOCAL_ENGINE

ALPHA = 0.3  # EWMA weight of the newest observation
MAX_FACTOR = 3.0
DEADBAND = 0.1  # relative change of the smoothed factor that replans
# Requests a window must hold to say anything: a cost per request from a handful is noise (the
# closed-loop run, 10 s windows at ~0.6 utterances/s: each round moved the factor past the dead
# band, and each replan changed the asr CPU request, which rolls every asr Pod under load).
MIN_REQUESTS = 30


def units_per_request(stage: str, workload: Workload) -> float | None:
    if stage == "asr":
        return workload.utterance_s + workload.asr_extra_s
    if stage == "llm":
        return 1.0
    return None


def observable(stage: str, engine: str) -> bool:
    """Whether the stage's busy seconds see its engine's compute. Not a local llama.cpp LLM: the
    model runs in the server process the stage starts, and the stage's busy seconds count only its
    client (fed, they would drive the calibrated cost to its lower bound)."""
    return not (stage == "llm" and engine == LLM_LOCAL_ENGINE)


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def update_costs(
    previous: Mapping[str, Mapping[str, Any]],
    signals: Mapping[str, StageSignals],
    costs: Mapping[str, StageCost],
    batch_sizes: Mapping[str, int],
    workload: Workload,
    window_s: float = 60.0,
) -> dict[str, dict[str, Any]]:
    """The next `status.observed.costs`: {stage: {factor, observedCpuSecondsPerUnit, ...}}."""
    out = {stage: dict(entry) for stage, entry in previous.items()}
    for stage, s in signals.items():
        units = units_per_request(stage, workload)
        if units is None or stage not in costs or s.busy_rate is None or s.request_rate is None:
            continue
        if s.request_rate * window_s < MIN_REQUESTS:
            continue
        batch = round(s.mean_batch) if s.mean_batch else batch_sizes.get(stage, 1)
        calibrated = costs[stage].cpu_at(max(1, batch))
        if calibrated <= 0:
            continue
        observed = s.busy_rate / s.request_rate / units
        ratio = clamp(observed / calibrated, 1 / MAX_FACTOR, MAX_FACTOR)
        before = previous.get(stage, {})
        ewma = clamp((1 - ALPHA) * float(before.get("ewma", 1.0)) + ALPHA * ratio, 1 / MAX_FACTOR, MAX_FACTOR)
        applied = float(before.get("factor", 1.0))
        # The plan follows only moves beyond the dead band: requests derived from the cost would
        # otherwise change (and roll every pod) with each window's noise.
        if abs(ewma - applied) > DEADBAND * applied:
            applied = ewma
        out[stage] = {
            "factor": round(applied, 3),
            "ewma": round(ewma, 4),
            "observedCpuSecondsPerUnit": round(observed, 6),
            "calibratedCpuSecondsPerUnit": round(calibrated, 6),
            "unit": costs[stage].unit,
            "samples": int(previous.get(stage, {}).get("samples", 0)) + 1,
        }
    return out


def factors_from_status(status: Mapping[str, Any]) -> dict[str, float]:
    costs = ((status.get("observed") or {}).get("costs")) or {}
    out = {}
    for stage, entry in costs.items():
        try:
            out[stage] = clamp(float(entry.get("factor", 1.0)), 1 / MAX_FACTOR, MAX_FACTOR)
        except (TypeError, ValueError, AttributeError):
            continue
    return out


def adjusted_profile(profile: CostProfile, factors: Mapping[str, float]) -> CostProfile:
    """The calibrated profile with each fed stage's CPU costs (every engine of it) times its factor."""
    if not factors or all(f == 1.0 for f in factors.values()):
        return profile
    stages = {}
    for key, cost in profile.stages.items():
        factor = factors.get(key.split(":", 1)[0], 1.0)
        stages[key] = (
            cost
            if factor == 1.0
            else cost.model_copy(
                update={"cpu_seconds_per_unit": {b: v * factor for b, v in cost.cpu_seconds_per_unit.items()}}
            )
        )
    return profile.model_copy(update={"stages": stages})
