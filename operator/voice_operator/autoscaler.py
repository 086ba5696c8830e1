"""The autoscaler's decision. PURE: a window of per-stage signals + where each stage stands + the
node budget + the clock -> actions, each with its reason.

Policy, in the order it is applied:
- Compute-bound (busy seconds over allotted CPU above HIGH_UTILIZATION): scale up at once to the
  replicas that bring utilization back to the capacity model's TARGET_UTILIZATION.
- Queue-bound (queue wait or in-flight over budget while the CPU is not the problem):
  first a bigger batch (a measured batch size: bigger batches cost less per item and drain the
  queue faster), then one replica more; one such step per cool-down.
- Slack: scale down only when every sample of a full stabilization window says so, and not within
  a stabilization window of the stage's last change; then to the replicas the window's peak needs
  at TARGET_UTILIZATION. The band between TARGET and HIGH is the hysteresis: a stage scaled down
  lands at or below TARGET and needs more than HIGH to come back up, so it cannot oscillate.
- Budget: when scale-ups do not fit the node budget, replicas move from stages with slack over
  the whole window to the bottleneck; what still does not fit makes CapacitySufficient=False with
  a recommendation (the next node size, or the node count).
A stage with no signals is left alone; no signals at all (Prometheus down) means no action.
Latency over the stage's share of the SLO names the bottleneck (saturation) but alone neither adds
a replica nor holds one: replicas relieve waiting, not a slow request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from voice_operator.capacity import (
    SCHEMA_MAX_NODES,
    TARGET_UTILIZATION,
    Budget,
    Usage,
    budget_for,
    nodes_for,
    smallest_node_size,
)
from voice_operator.profiles import NODE_SIZES, NodeProfile
from voice_operator.prometheus import Snapshot, StageSignals
from voice_operator.quantity import format_cpu, format_memory

HIGH_UTILIZATION = 0.85  # scale up above this
IDLE = 0.01  # below this saturation everywhere there is no bottleneck to name
LOW_PRESSURE = 0.5  # queue wait / in-flight / latency below half their budget count as slack
# Share of the end-to-end SLO (speech end -> first audio) each stage's p95 latency may take, and the
# share of it queueing may take. Policy, not measurement: the LLM's first sentence dominates a turn.
LATENCY_SHARE = {"gateway": 0.05, "vad": 0.05, "asr": 0.3, "llm": 0.45, "tts": 0.15}
QUEUE_WAIT_SHARE = 0.05  # of the SLO, per stage (100 ms at the default 2 s)

ActionKind = Literal["scale_up", "scale_down", "rebalance", "batch_up", "batch_down"]


@dataclass(frozen=True)
class StageState:
    """Where a stage stands now, and what it may become."""

    replicas: int
    batch_size: int
    cpu_limit: float  # per replica: the allotted CPU
    cpu_request: float  # per replica: what the budget pays
    memory_mib: float
    min_replicas: int
    max_replicas: int
    plan_batch_size: int
    batch_sizes: tuple[int, ...] = (1,)  # measured batch sizes the stage may use
    last_change: float | None = None  # clock of the last replica change (either way)
    last_scale_up: float | None = None  # clock of the last queue-driven step up


@dataclass(frozen=True)
class Config:
    slo_s: float = 2.0
    stabilization_s: float = 300.0
    scale_up_cooldown_s: float = 90.0

    def latency_budget_s(self, stage: str) -> float:
        return self.slo_s * LATENCY_SHARE[stage]

    @property
    def queue_wait_budget_s(self) -> float:
        return self.slo_s * QUEUE_WAIT_SHARE


@dataclass(frozen=True)
class NodeBudget:
    node: NodeProfile
    nodes: int

    @property
    def budget(self) -> Budget:
        return budget_for(self.node, self.nodes)


@dataclass(frozen=True)
class Action:
    stage: str
    kind: ActionKind
    old: int
    new: int
    reason: str
    queued: bool = False  # a queue-driven step (one per cool-down)

    @property
    def what(self) -> str:
        return "batch size" if self.kind.startswith("batch") else "replicas"

    def message(self) -> str:
        return f"{self.stage} {self.old} -> {self.new} {self.what}: {self.reason}"


@dataclass(frozen=True)
class Pressure:
    """A stage's signals normalized so that 1.0 is the limit of each."""

    utilization: float | None  # busy / allotted CPU
    queue: float | None  # queue wait p95 / budget
    inflight: float | None  # in flight / max concurrency
    latency: float | None  # latency p95 / the stage's share of the SLO
    busy: float | None  # cores in use (absolute demand)
    texts: dict[str, str] = field(default_factory=dict)  # signal -> "queue wait p95 180 ms > 100 ms budget"

    @property
    def saturation(self) -> float:
        values = [v for v in (self.utilization, self.queue, self.inflight, self.latency) if v is not None]
        return max(values) if values else 0.0

    @property
    def dominant(self) -> str:
        values = {
            k: v
            for k, v in (
                ("utilization", self.utilization),
                ("queue", self.queue),
                ("inflight", self.inflight),
                ("latency", self.latency),
            )
            if v is not None
        }
        return max(values, key=lambda k: values[k]) if values else ""

    @property
    def queueing(self) -> float:
        """Waiting, the pressure another replica or a bigger batch relieves. Not latency: a stage
        slower than its share of the SLO with nothing queued is slow per request (its CPU size,
        its provider), which more replicas do not change; counted here it scaled such a stage to
        maxReplicas and then never let it scale in while any request came."""
        values = [v for v in (self.queue, self.inflight) if v is not None]
        return max(values) if values else 0.0


@dataclass
class Decision:
    actions: list[Action]
    targets: dict[str, StageState]  # the states after the actions
    saturation: dict[str, float]
    bottleneck: str
    capacity_sufficient: bool | None  # None: no verdict (no signals)
    recommendation: str = ""
    notes: list[str] = field(default_factory=list)  # what was left alone and why


def pressure(stage: str, signals: StageSignals, state: StageState, config: Config) -> Pressure:
    allotted = state.replicas * state.cpu_limit
    texts: dict[str, str] = {}
    utilization = None
    if signals.busy_rate is not None and allotted > 0:
        utilization = signals.busy_rate / allotted
        texts["utilization"] = (
            f"CPU {utilization:.0%} of {format_cpu(allotted)} allotted > {HIGH_UTILIZATION:.0%}"
        )
    queue = None
    if signals.queue_wait_p95_s is not None:
        budget = config.queue_wait_budget_s
        queue = signals.queue_wait_p95_s / budget
        texts["queue"] = (
            f"queue wait p95 {signals.queue_wait_p95_s * 1000:.0f} ms > {budget * 1000:.0f} ms budget"
        )
    inflight = None
    if signals.inflight is not None and signals.max_concurrency:
        inflight = signals.inflight / signals.max_concurrency
        texts["inflight"] = (
            f"in flight {signals.inflight:.1f} of max concurrency {signals.max_concurrency:.0f}"
        )
    latency = None
    if signals.latency_p95_s is not None:
        budget = config.latency_budget_s(stage)
        latency = signals.latency_p95_s / budget
        texts["latency"] = (
            f"latency p95 {signals.latency_p95_s * 1000:.0f} ms > {budget * 1000:.0f} ms share of the SLO"
        )
    return Pressure(utilization, queue, inflight, latency, signals.busy_rate, texts)


def _clamp(value: int, state: StageState) -> int:
    return max(state.min_replicas, 1, min(state.max_replicas, value)) if state.max_replicas else value


def _needed(busy: float, state: StageState) -> int:
    """Replicas that run `busy` cores at TARGET_UTILIZATION."""
    return max(1, math.ceil(busy / (state.cpu_limit * TARGET_UTILIZATION) - 1e-9))


def _calm(stage: str, window: Sequence[Snapshot], state: StageState, config: Config) -> bool:
    """Every sample shows slack on everything but compute (compute slack is judged by the peak)."""
    for snap in window:
        signals = snap.stages.get(stage)
        if signals is None or not signals.present or snap.state == "down":
            return False
        if pressure(stage, signals, state, config).queueing > LOW_PRESSURE:
            return False
    return True


def _peak_busy(stage: str, window: Sequence[Snapshot]) -> float | None:
    values = [s.stages[stage].busy_rate for s in window if stage in s.stages]
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _covered(window: Sequence[Snapshot], now: float, seconds: float) -> list[Snapshot]:
    """The samples of the last `seconds`, or [] when the window does not reach back that far."""
    if not window or window[0].time > now - seconds:
        return []
    return [s for s in window if s.time >= now - seconds]


def _fits(states: Mapping[str, StageState], budget: Budget) -> bool:
    return budget.holds(Usage.of(states.values()))


def recommend(states: Mapping[str, StageState], where: NodeBudget) -> str:
    """The next node size that holds these replicas, else the node count (the plan's own search)."""
    usage = Usage.of(states.values())
    size = smallest_node_size(usage, where.nodes) if where.node.name in NODE_SIZES else ""
    if size and size != where.node.name:
        return f"the live load needs {usage}: use nodeSize {size} (x {where.nodes})"
    nodes = max(where.nodes + 1, nodes_for(usage, where.node))
    if nodes > SCHEMA_MAX_NODES:
        return f"the live load needs {usage}: more than {SCHEMA_MAX_NODES} nodes of {where.node.name}"
    have = where.budget
    return (
        f"the live load needs {usage}, the budget is {format_cpu(have.cpu)} CPU and "
        f"{format_memory(have.memory_mib)}: use maxNodes: {nodes} of {where.node.name}"
    )


def decide(
    window: Sequence[Snapshot],
    current: Mapping[str, StageState],
    where: NodeBudget,
    config: Config,
    now: float,
) -> Decision:
    targets = dict(current)
    latest = window[-1] if window else None
    if latest is None or latest.state in ("down", "unconfigured"):
        why = latest.detail if latest else "no samples yet"
        return Decision([], targets, {}, "", None, notes=[f"no action: metrics unavailable ({why})"])

    pressures = {
        stage: pressure(stage, latest.stages[stage], state, config)
        for stage, state in current.items()
        if stage in latest.stages and latest.stages[stage].present
    }
    notes = [f"{stage}: no series, left alone" for stage in current if stage not in pressures]
    saturation = {stage: round(p.saturation, 3) for stage, p in pressures.items()}
    # The stage that binds first; none while everything idles.
    bottleneck = max(saturation, key=lambda s: saturation[s]) if saturation else ""
    if bottleneck and saturation[bottleneck] < IDLE:
        bottleneck = ""

    ups: list[Action] = []
    downs: list[Action] = []
    stable = _covered(window, now, config.stabilization_s)
    for stage in sorted(pressures, key=lambda s: -pressures[s].saturation):
        state, p = current[stage], pressures[stage]
        compute_bound = p.utilization is not None and p.utilization > HIGH_UTILIZATION
        if compute_bound and p.busy is not None:
            want = _clamp(_needed(p.busy, state), state)
            if want > state.replicas:
                ups.append(Action(stage, "scale_up", state.replicas, want, p.texts["utilization"]))
            continue
        if p.queueing > 1.0:
            worst = max(
                (k for k in ("queue", "inflight") if getattr(p, k) is not None),
                key=lambda k: float(getattr(p, k)),
            )
            reason = p.texts[worst]
            cooled = state.last_scale_up is None or now - state.last_scale_up >= config.scale_up_cooldown_s
            bigger = [b for b in state.batch_sizes if b > state.batch_size]
            if not cooled:
                continue
            if p.queue is not None and p.queue > 1.0 and bigger:
                cpu = f"CPU at {p.utilization:.0%}" if p.utilization is not None else "CPU unknown"
                ups.append(
                    Action(stage, "batch_up", state.batch_size, bigger[0], f"{p.texts['queue']} with {cpu}")
                )
            elif state.replicas < state.max_replicas:
                ups.append(Action(stage, "scale_up", state.replicas, state.replicas + 1, reason, queued=True))
            continue
        # Slack: only after a full stabilization window of it, and a window after the last change.
        if not stable or (state.last_change is not None and now - state.last_change < config.stabilization_s):
            continue
        if not _calm(stage, stable, state, config):
            continue
        peak = _peak_busy(stage, stable)
        want = _clamp(_needed(peak, state) if peak is not None else state.replicas - 1, state)
        if want < state.replicas:
            load = (
                f"peak CPU {format_cpu(peak)} over {config.stabilization_s:.0f} s fits {want} replica(s) "
                f"at {TARGET_UTILIZATION:.0%}"
                if peak is not None
                else f"no queueing for {config.stabilization_s:.0f} s"
            )
            downs.append(Action(stage, "scale_down", state.replicas, want, load))
        elif state.batch_size > state.plan_batch_size:
            downs.append(
                Action(stage, "batch_down", state.batch_size, state.plan_batch_size,
                       f"no queueing for {config.stabilization_s:.0f} s")
            )  # fmt: skip

    for action in downs:
        targets[action.stage] = _applied(targets[action.stage], action, now)
    budget = where.budget
    done: list[Action] = [*downs]
    unmet: dict[str, StageState] = {}
    for action in ups:
        trial = {**targets, action.stage: _applied(targets[action.stage], action, now)}
        if _fits(trial, budget):
            targets = trial
            done.append(action)
            continue
        moved = _rebalance(action, targets, trial, pressures, window, config, budget, now)
        if moved is not None:
            targets, rebalanced = moved
            done += [*rebalanced, action]
            continue
        # What fits of this step, and the verdict for the rest.
        unmet[action.stage] = trial[action.stage]
        partial = action.old
        while partial + 1 < action.new and _fits(
            {**targets, action.stage: replace(targets[action.stage], replicas=partial + 1)}, budget
        ):
            partial += 1
        if partial > action.old:
            step = replace(
                action, new=partial, reason=f"{action.reason} (budget allows {partial} of {action.new})"
            )
            targets = {**targets, action.stage: _applied(targets[action.stage], step, now)}
            done.append(step)
    if unmet:
        wanted = {**targets, **unmet}
        short = ", ".join(
            f"{s} wants {st.replicas} replicas (has {targets[s].replicas})" for s, st in unmet.items()
        )
        return Decision(
            done, targets, saturation, bottleneck, False, f"{short}; {recommend(wanted, where)}", notes
        )
    return Decision(done, targets, saturation, bottleneck, True, "", notes)


def _applied(state: StageState, action: Action, now: float) -> StageState:
    if action.kind in ("batch_up", "batch_down"):
        return replace(
            state,
            batch_size=action.new,
            last_scale_up=now if action.kind == "batch_up" else state.last_scale_up,
        )
    return replace(
        state,
        replicas=action.new,
        last_change=now,
        last_scale_up=now if action.queued else state.last_scale_up,
    )


def _rebalance(
    action: Action,
    targets: dict[str, StageState],
    trial: dict[str, StageState],
    pressures: Mapping[str, Pressure],
    window: Sequence[Snapshot],
    config: Config,
    budget: Budget,
    now: float,
) -> tuple[dict[str, StageState], list[Action]] | None:
    """Take replicas from stages with slack (in every sample we have, with one replica fewer)
    until the scale-up fits; None when even all of that is not enough."""
    moved: list[Action] = []
    trial = dict(trial)
    donors = sorted(
        (s for s in pressures if s != action.stage and pressures[s].saturation < LOW_PRESSURE),
        key=lambda s: pressures[s].saturation,
    )
    for donor in donors:
        state = trial[donor]
        while not _fits(trial, budget) and state.replicas > max(state.min_replicas, 1):
            fewer = state.replicas - 1
            peak = _peak_busy(donor, window)
            if peak is not None and peak > fewer * state.cpu_limit * TARGET_UTILIZATION:
                break
            if not _calm(donor, window, replace(state, replicas=fewer), config):
                break
            state = replace(state, replicas=fewer, last_change=now)
            trial[donor] = state
        if state.replicas < targets[donor].replicas:
            moved.append(
                Action(donor, "rebalance", targets[donor].replicas, state.replicas,
                       f"slack moved to {action.stage} (node budget {format_cpu(budget.cpu)} CPU is used up)")
            )  # fmt: skip
        if _fits(trial, budget):
            return trial, moved
    return None
