"""One round of the closed loop for one VoicePipeline: thin I/O around the pure parts.

handlers.autoscaler runs a round every `spec.autoscaling.intervalSeconds`: read the pipeline's
signals from Prometheus -> feed the observed costs -> decide (autoscaler.decide) -> write
`status.observed` and `status.autoscaling` (this loop's fields, and only these: context.py) -> wake
the reconcile loop, which applies the new targets -> one Event per action, and counters on the
operator's own /metrics. `autoscaling.enabled: false` observes and reports but never acts.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import kopf
from prometheus_client import Counter, Gauge

from voice_operator.autoscaler import Config, Decision, NodeBudget, decide
from voice_operator.capacity import NoMeasuredCost, make_plan, stage_cost
from voice_operator.context import OperatorContext, PipelineMemory, owned
from voice_operator.live import (
    AUTOSCALER_FIELDS,
    autoscaling_status,
    newest_autoscaler_fields,
    stage_states,
)
from voice_operator.observed_costs import adjusted_profile, factors_from_status, observable, update_costs
from voice_operator.profiles import CostProfile, Workload
from voice_operator.prometheus import Snapshot, read_signals, selector_for
from voice_operator.reconcile import status_patch
from voice_operator.spec import PipelineSpec, SpecError, parse_spec
from voice_pipeline import contract as c

log = logging.getLogger(__name__)
LAST_ACTIONS = 8
# Before the reconcile of a new generation has run, the round waits this long and looks again.
NOT_RECONCILED_RETRY_S = 1.0
INVALID_SPEC_RETRY_S = 5.0

ACTIONS = Counter(
    "voice_operator_autoscaler_actions_total",
    "Autoscaler actions applied, by stage and kind (scale_up, scale_down, rebalance, batch_up, batch_down)",
    ["namespace", "pipeline", "stage", "action"],
)
DECISIONS = Counter(
    "voice_operator_autoscaler_decisions_total",
    "Autoscaler decision rounds, by the Prometheus state they saw (ok, partial, down, unconfigured)",
    ["namespace", "pipeline", "prometheus"],
)
SATURATION = Gauge(
    "voice_operator_stage_saturation",
    "Observed saturation per stage (1.0 = a signal at its limit)",
    ["namespace", "pipeline", "stage"],
)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_modelled_gateway(
    snapshot: Snapshot, spec: PipelineSpec, profile: CostProfile, workload: Workload
) -> Snapshot:
    """The gateway exports sessions, not compute: its demand is the sessions times the measured
    cost per session-second (the capacity model's own figure)."""
    gateway = snapshot.stages.get("gateway")
    if gateway is None or gateway.busy_rate is not None or snapshot.active_devices is None:
        return snapshot
    cost = stage_cost("gateway", spec, profile)
    busy = snapshot.active_devices * workload.units_per_device_second("gateway") * cost.cpu_at(1)
    return replace(snapshot, stages={**snapshot.stages, "gateway": replace(gateway, busy_rate=busy)})


def _signals_status(snapshot: Snapshot) -> dict[str, Any]:
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {
        stage: {
            "busyCores": r(s.busy_rate),
            "requestsPerSecond": r(s.request_rate),
            "overloadsPerSecond": r(s.overload_rate),
            "queueWaitP95Ms": ms(s.queue_wait_p95_s),
            "latencyP95Ms": ms(s.latency_p95_s),
            "inflight": r(s.inflight),
            "maxConcurrency": r(s.max_concurrency),
            "meanBatch": r(s.mean_batch),
        }
        for stage, s in snapshot.stages.items()
        if s.present
    }


EVENT_REASONS = {"scale_up": "ScaledUp", "scale_down": "ScaledDown", "rebalance": "Rebalanced",
                 "batch_up": "BatchSizeRaised", "batch_down": "BatchSizeRestored"}  # fmt: skip


Event = tuple[str, str, str]  # (type, reason, message), as reconcile.Outcome.events


@dataclass
class Round:
    next_in_s: float  # seconds until the next round
    events: list[Event] = field(default_factory=list)  # for the caller to post


async def autoscale_once(
    body: kopf.Body, ctx: OperatorContext, memory: PipelineMemory, clock: Callable[[], float]
) -> Round:
    meta = body.metadata
    namespace, name = str(meta.namespace), str(meta.name)
    status = dict(body.get("status") or {})
    generation = int(meta.get("generation") or 1)
    try:
        spec = parse_spec(dict(body.get("spec") or {}))
    except SpecError:
        return Round(INVALID_SPEC_RETRY_S)  # the reconcile reports it
    if status.get("observedGeneration") != generation:
        return Round(NOT_RECONCILED_RETRY_S)  # the reconcile of this generation goes first
    interval = float(spec.autoscaling.interval_seconds)
    now = clock()
    url = spec.autoscaling.prometheus_url or os.environ.get("VP_OPERATOR_PROMETHEUS_URL", "")
    if not url:
        # Plan only, said once as an Event: no status writes for a loop that cannot run.
        if memory.told_unconfigured:
            return Round(interval)
        memory.told_unconfigured = True
        return Round(interval, [("Normal", "AutoscalingInactive", "no Prometheus URL (operator "
                                 "--prometheus-url or spec.autoscaling.prometheusUrl): plan only")])  # fmt: skip
    selector = selector_for(spec.autoscaling.prometheus_selector, namespace, name)
    snapshot = await read_signals(
        ctx.prometheus(url), selector, spec.autoscaling.metrics_window_seconds, clock
    )
    workload = Workload()
    snapshot = with_modelled_gateway(snapshot, spec, ctx.profile, workload)
    keep = spec.autoscaling.scale_down_stabilization_seconds + 3 * spec.autoscaling.interval_seconds
    memory.window.append(snapshot)
    while memory.window and memory.window[0].time < now - keep:
        memory.window.popleft()

    mine = newest_autoscaler_fields(status, memory.written)  # what this loop wrote last
    effective = adjusted_profile(ctx.profile, factors_from_status(mine))
    try:
        plan = make_plan(spec, effective)
    except NoMeasuredCost:
        return Round(interval)  # the reconcile reports it (a False condition naming the engine to calibrate)
    previous = mine.get("autoscaling")
    states = stage_states(plan, spec, effective, previous, generation)
    config = Config(
        slo_s=spec.slo.end_to_end_p95_ms / 1000,
        stabilization_s=spec.autoscaling.scale_down_stabilization_seconds,
        scale_up_cooldown_s=3 * spec.autoscaling.interval_seconds,
    )
    decision = decide(list(memory.window), states, NodeBudget(spec.node(), spec.max_nodes), config, now)
    old_observed = dict(mine.get("observed") or {})
    costs = update_costs(
        dict(old_observed.get("costs") or {}),
        snapshot.stages,
        {s: stage_cost(s, spec, ctx.profile) for s in c.STAGES if observable(s, spec.stages.engine(s))},
        {s: st.batch_size for s, st in states.items()},
        workload,
        spec.autoscaling.metrics_window_seconds,
    )
    enabled = spec.autoscaling.enabled
    acted = decision.actions if enabled else []
    history = list(old_observed.get("lastActions") or [])
    history = [*history, *(f"{_iso(now)} {a.message()}" for a in acted)][-LAST_ACTIONS:]
    observed = {
        "time": _iso(now),
        "prometheus": snapshot.state + (f": {snapshot.detail}" if snapshot.detail else ""),
        "mode": "autoscaling" if enabled else "plan-only",
        "activeDevices": None if snapshot.active_devices is None else round(snapshot.active_devices),
        "bottleneck": decision.bottleneck,
        "saturation": decision.saturation,
        "signals": _signals_status(snapshot),
        "costs": costs,
        "recommendation": decision.recommendation,
        "lastActions": history,
        # Plan-only: what the loop would have done, so that turning it on holds no surprise.
        "proposed": [] if enabled else [a.message() for a in decision.actions],
    }
    if {k: v for k, v in observed.items() if k != "time"} == {
        k: v for k, v in old_observed.items() if k != "time"
    }:
        observed["time"] = old_observed.get("time")  # nothing new seen: no write
    new = {**mine, "observed": observed}
    judged = enabled and snapshot.state in ("ok", "partial")  # without signals there is nothing to decide
    if judged:
        new["autoscaling"] = autoscaling_status(decision, previous, generation)
    changes = owned(status_patch(mine, new), AUTOSCALER_FIELDS)
    if changes:
        await asyncio.to_thread(ctx.api.patch_status, namespace, name, changes)
    memory.written = {k: new[k] for k in AUTOSCALER_FIELDS if k in new}
    changed_factors = factors_from_status(new) != factors_from_status(mine)
    changed_verdict = (previous or {}).get("capacitySufficient") != decision.capacity_sufficient
    if acted or changed_factors or (judged and changed_verdict):
        # The reconcile loop applies the new targets (or the plan the new costs make) at once.
        memory.request_reconcile()
    return Round(interval, _report(namespace, name, snapshot, decision, acted, old_observed, enabled))


def _report(
    namespace: str,
    name: str,
    snapshot: Snapshot,
    decision: Decision,
    acted: list[Any],
    old_observed: dict[str, Any],
    enabled: bool,
) -> list[Event]:
    """The operator's own metrics, and the round's Events: one per action, and changes of state."""
    events: list[Event] = []
    DECISIONS.labels(namespace, name, snapshot.state).inc()
    for stage, value in decision.saturation.items():
        SATURATION.labels(namespace, name, stage).set(value)
    for action in acted:
        ACTIONS.labels(namespace, name, action.stage, action.kind).inc()
        events.append(("Normal", EVENT_REASONS[action.kind], action.message()))
        log.info("%s/%s: %s", namespace, name, action.message())
    was_down = str(old_observed.get("prometheus", "")).startswith("down")
    if snapshot.state == "down" and not was_down:
        events.append(
            (
                "Warning",
                "MetricsUnavailable",
                f"Prometheus: {snapshot.detail}; no autoscaling until it answers",
            )
        )
    if (
        enabled
        and decision.capacity_sufficient is False
        and old_observed.get("recommendation") != decision.recommendation
    ):
        events.append(("Warning", "CapacityInsufficient", decision.recommendation))
    for note in decision.notes:
        log.debug("%s/%s: %s", namespace, name, note)
    return events
