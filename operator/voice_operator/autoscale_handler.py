"""The closed loop, as a kopf timer per VoicePipeline: thin I/O around the pure parts.

Each `spec.autoscaling.intervalSeconds`: read the pipeline's signals from Prometheus -> feed the
observed costs -> decide (autoscaler.decide) -> apply through the same reconcile as every other
change -> `status.observed`, one Event per action, and a counter of the decisions on the
operator's own /metrics. `autoscaling.enabled: false` observes and reports but never acts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import kopf
from prometheus_client import Counter, Gauge, start_http_server

from voice_operator import handlers
from voice_operator.autoscaler import Config, Decision, NodeBudget, decide
from voice_operator.capacity import NoMeasuredCost, make_plan, stage_cost
from voice_operator.live import autoscaling_status, stage_states
from voice_operator.observed_costs import adjusted_profile, factors_from_status, observable, update_costs
from voice_operator.profiles import Workload
from voice_operator.prometheus import PrometheusClient, Snapshot, read_signals, selector_for
from voice_operator.reconcile import reconcile, status_patch
from voice_operator.spec import PipelineSpec, SpecError, parse_spec
from voice_pipeline import contract as c

log = logging.getLogger(__name__)
TICK_SECONDS = float(os.environ.get("VP_OPERATOR_AUTOSCALE_TICK_SECONDS", "5"))
LAST_ACTIONS = 8

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


@dataclass
class _Loop:
    """What one VoicePipeline's loop remembers between ticks (lost on restart: that only delays
    a scale-down by one stabilization window)."""

    window: deque[Snapshot] = field(default_factory=deque)
    last_run: float = 0.0
    autoscaling: dict[str, Any] | None = None  # the newest status.autoscaling we wrote
    told_unconfigured: bool = False


_loops: dict[str, _Loop] = {}


class _QuietTicks(logging.Filter):
    """kopf logs, and with posting at INFO also posts as a Kubernetes Event, every handler success:
    for this timer that is a write every tick (most ticks only check the interval). Actions are
    logged and posted by this module itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timer 'autoscale' succeeded")


logging.getLogger("kopf.objects").addFilter(_QuietTicks())
_clients: dict[str, PrometheusClient] = {}


def latest_autoscaling(uid: str, status: dict[str, Any]) -> dict[str, Any] | None:
    """The newer of status.autoscaling and what this process last wrote (the watch may lag)."""
    written = status.get("autoscaling")
    mine = _loops[uid].autoscaling if uid in _loops else None
    if mine is None:
        return dict(written) if written else None
    if written and int(written.get("revision", 0)) > int(mine.get("revision", 0)):
        return dict(written)
    return mine


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.startup()
def start_metrics(**_: Any) -> None:
    port = int(os.environ.get("VP_OPERATOR_METRICS_PORT", "8081") or 0)
    if not port:
        return
    try:
        start_http_server(port, addr=os.environ.get("VP_OPERATOR_METRICS_ADDR", "0.0.0.0"))
    except OSError as exc:  # the metrics are a report, never a reason not to run the operator
        log.error("operator metrics not served on port %d: %s (set --metrics-port)", port, exc)
        return
    log.info("operator metrics on :%d/metrics", port)


@kopf.on.cleanup()
async def close_clients(**_: Any) -> None:
    for client in _clients.values():
        await client.close()
    _clients.clear()


@kopf.on.delete(c.API_GROUP, c.API_VERSION, c.PLURAL, optional=True)
def forget(body: kopf.Body, **_: Any) -> None:
    """Drop a deleted pipeline's window (optional: no finalizer is added for it)."""
    _loops.pop(str(body.metadata.uid), None)


def _client(url: str) -> PrometheusClient:
    if url not in _clients:
        _clients[url] = PrometheusClient(url)
    return _clients[url]


def with_modelled_gateway(snapshot: Snapshot, spec: PipelineSpec, workload: Workload) -> Snapshot:
    """The gateway exports sessions, not compute: its demand is the sessions times the measured
    cost per session-second (the capacity model's own figure)."""
    gateway = snapshot.stages.get("gateway")
    if gateway is None or gateway.busy_rate is not None or snapshot.active_devices is None:
        return snapshot
    cost = stage_cost("gateway", spec, handlers._profile())
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


@kopf.timer(c.API_GROUP, c.API_VERSION, c.PLURAL, interval=TICK_SECONDS, initial_delay=TICK_SECONDS)
async def autoscale(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    meta = body.metadata
    uid, namespace, name = str(meta.uid), str(meta.namespace), str(meta.name)
    status = dict(body.get("status") or {})
    generation = int(meta.get("generation") or 1)
    try:
        spec = parse_spec(dict(body.get("spec") or {}))
    except SpecError:
        return  # reconcile reports it
    loop = _loops.setdefault(uid, _Loop())
    now = time.time()
    if now - loop.last_run < spec.autoscaling.interval_seconds - TICK_SECONDS / 2:
        return
    if status.get("observedGeneration") != generation:
        return  # the reconcile of this generation goes first
    loop.last_run = now
    url = spec.autoscaling.prometheus_url or os.environ.get("VP_OPERATOR_PROMETHEUS_URL", "")
    if not url:
        # Plan only, said once as an Event: no status writes for a loop that cannot run.
        if not loop.told_unconfigured:
            loop.told_unconfigured = True
            kopf.info(body, reason="AutoscalingInactive", message="no Prometheus URL (operator "
                      "--prometheus-url or spec.autoscaling.prometheusUrl): plan only")  # fmt: skip
        return
    selector = selector_for(spec.autoscaling.prometheus_selector, namespace, name)
    snapshot = await read_signals(_client(url), selector, spec.autoscaling.metrics_window_seconds, time.time)
    workload = Workload()
    snapshot = with_modelled_gateway(snapshot, spec, workload)
    keep = spec.autoscaling.scale_down_stabilization_seconds + 3 * spec.autoscaling.interval_seconds
    loop.window.append(snapshot)
    while loop.window and loop.window[0].time < now - keep:
        loop.window.popleft()

    profile = handlers._profile()
    effective = adjusted_profile(profile, factors_from_status(status))
    try:
        plan = make_plan(spec, effective)
    except NoMeasuredCost:
        return  # reconcile reports it (a False condition naming the engine to calibrate)
    previous = latest_autoscaling(uid, status)
    states = stage_states(plan, spec, effective, previous, generation)
    config = Config(
        slo_s=spec.slo.end_to_end_p95_ms / 1000,
        stabilization_s=spec.autoscaling.scale_down_stabilization_seconds,
        scale_up_cooldown_s=3 * spec.autoscaling.interval_seconds,
    )
    decision = decide(list(loop.window), states, NodeBudget(spec.node(), spec.max_nodes), config, now)
    old_costs = dict((status.get("observed") or {}).get("costs") or {})
    costs = update_costs(
        old_costs,
        snapshot.stages,
        {s: stage_cost(s, spec, profile) for s in c.STAGES if observable(s, spec.stages.engine(s))},
        {s: st.batch_size for s, st in states.items()},
        workload,
    )
    enabled = spec.autoscaling.enabled
    acted = decision.actions if enabled else []
    old_observed = dict(status.get("observed") or {})
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
    new_status = {**status, "observed": observed}
    if enabled and snapshot.state in ("ok", "partial"):  # without signals there is nothing to decide
        new_status["autoscaling"] = autoscaling_status(decision, previous, generation)
        loop.autoscaling = new_status["autoscaling"]
    changed_factors = factors_from_status(new_status) != factors_from_status(status)
    changed_verdict = (previous or {}).get("capacitySufficient") != decision.capacity_sufficient
    judged = enabled and snapshot.state in ("ok", "partial")
    if acted or changed_factors or (judged and changed_verdict):
        new_status = await _reconcile(body, new_status, "Autoscaled" if acted else "")
    for key, value in status_patch(status, new_status).items():
        patch.status[key] = value
    _report(body, namespace, name, snapshot, decision, acted, old_observed, enabled)


async def _reconcile(body: kopf.Body, status: dict[str, Any], cause: str) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    fresh = {**dict(body), "status": status}
    try:
        outcome = await asyncio.to_thread(
            reconcile, fresh, handlers._api(), handlers._profile(), handlers._now,
            os.environ.get("VP_OPERATOR_IMAGE", ""), cause,
        )  # fmt: skip
    except ApiException as exc:
        raise kopf.TemporaryError(f"Kubernetes API error {exc.status}: {exc.reason}", delay=15) from exc
    for type_, reason, message in outcome.events:
        if reason != cause:  # the autoscaler posts its own Event per action
            (kopf.warn if type_ == "Warning" else kopf.info)(body, reason=reason, message=message[:1000])
    return outcome.status


def _report(
    body: kopf.Body,
    namespace: str,
    name: str,
    snapshot: Snapshot,
    decision: Decision,
    acted: list[Any],
    old_observed: dict[str, Any],
    enabled: bool,
) -> None:
    DECISIONS.labels(namespace, name, snapshot.state).inc()
    for stage, value in decision.saturation.items():
        SATURATION.labels(namespace, name, stage).set(value)
    for action in acted:
        ACTIONS.labels(namespace, name, action.stage, action.kind).inc()
        kopf.info(body, reason=EVENT_REASONS[action.kind], message=action.message())
        log.info("%s/%s: %s", namespace, name, action.message())
    was_down = str(old_observed.get("prometheus", "")).startswith("down")
    if snapshot.state == "down" and not was_down:
        kopf.warn(
            body,
            reason="MetricsUnavailable",
            message=f"Prometheus: {snapshot.detail}; no autoscaling until it answers",
        )
    if (
        enabled
        and decision.capacity_sufficient is False
        and old_observed.get("recommendation") != decision.recommendation
    ):
        kopf.warn(body, reason="CapacityInsufficient", message=decision.recommendation[:1000])
    for note in decision.notes:
        log.debug("%s/%s: %s", namespace, name, note)
