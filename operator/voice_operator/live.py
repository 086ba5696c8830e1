"""The autoscaler's targets between decisions: kept in `status.autoscaling`, read back as the live
plan the reconcile applies. PURE.

The plan is the model's prediction for `spec.devices`; the live plan is the plan with the replicas
and batch sizes the autoscaler chose from what it measured. Targets belong to one spec generation:
a new spec (the user's new intent) starts again from its plan. With `autoscaling.enabled: false`
the live plan is the plan (plan-only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from voice_operator.autoscaler import Decision, StageState
from voice_operator.capacity import Plan
from voice_operator.profiles import CostProfile
from voice_operator.spec import PipelineSpec

# The status fields the autoscaler writes (and nothing else writes): context.py says who owns which.
AUTOSCALER_FIELDS = frozenset({"observed", "autoscaling"})


def newest_autoscaler_fields(status: Mapping[str, Any], written: Mapping[str, Any] | None) -> dict[str, Any]:
    """`observed` and `autoscaling`: the newer of what the status shows and what this process's
    autoscaler wrote last (the watch may not have delivered it yet). Every action raises the
    revision; at the same revision this process's copy is the newer one (while its loop runs it is
    the only writer), a higher revision in the status is another process's later work."""
    shown = {k: status[k] for k in AUTOSCALER_FIELDS if status.get(k)}
    if written is None:
        return shown
    revision_shown = int((shown.get("autoscaling") or {}).get("revision", 0))
    revision_mine = int((written.get("autoscaling") or {}).get("revision", 0))
    if revision_shown > revision_mine:
        return shown
    return {**shown, **{k: v for k, v in written.items() if v}}


def _targets(autoscaling: Mapping[str, Any] | None, generation: int) -> dict[str, Any]:
    if not autoscaling or autoscaling.get("generation") != generation:
        return {}
    return dict(autoscaling.get("stages") or {})


def live_plan(plan: Plan, autoscaling: Mapping[str, Any] | None, generation: int, enabled: bool) -> Plan:
    targets = _targets(autoscaling, generation) if enabled else {}
    if not targets:
        return plan
    stages = dict(plan.stages)
    for stage, target in targets.items():
        if stage not in stages:
            continue
        stages[stage] = replace(
            stages[stage],
            replicas=int(target.get("replicas", stages[stage].replicas)),
            batch_size=int(target.get("batchSize", stages[stage].batch_size)),
        )
    return replace(plan, stages=stages)


def stage_states(
    plan: Plan,
    spec: PipelineSpec,
    profile: CostProfile,
    autoscaling: Mapping[str, Any] | None,
    generation: int,
) -> dict[str, StageState]:
    """Where each stage stands: the plan's shape with the autoscaler's current targets."""
    from voice_operator.capacity import stage_cost

    targets = _targets(autoscaling, generation)
    states = {}
    for stage, p in plan.stages.items():
        t = targets.get(stage, {})
        bounds = spec.stages.get(stage)
        cost = stage_cost(stage, spec, profile)
        # Batch sizes the autoscaler may choose: measured ones, never below the plan's, never
        # beyond a fixed batchSize the user set.
        sizes = (
            tuple(b for b in cost.batch_sizes if b >= p.batch_size)
            if not bounds.batch_size
            else (p.batch_size,)
        )
        states[stage] = StageState(
            replicas=int(t.get("replicas", p.replicas)),
            batch_size=int(t.get("batchSize", p.batch_size)),
            cpu_limit=p.cpu_limit,
            cpu_request=p.cpu_request,
            memory_mib=p.memory_mib,
            min_replicas=bounds.min_replicas,
            max_replicas=bounds.max_replicas,
            plan_batch_size=p.batch_size,
            batch_sizes=sizes or (p.batch_size,),
            last_change=t.get("lastChange"),
            last_scale_up=t.get("lastStep"),
        )
    return states


def autoscaling_status(
    decision: Decision, previous: Mapping[str, Any] | None, generation: int
) -> dict[str, Any]:
    revision = int((previous or {}).get("revision", 0)) + (1 if decision.actions else 0)
    return {
        "revision": revision,
        "generation": generation,
        "stages": {
            stage: {
                "replicas": s.replicas,
                "batchSize": s.batch_size,
                "lastChange": s.last_change,
                "lastStep": s.last_scale_up,
            }
            for stage, s in decision.targets.items()
        },
        "capacitySufficient": decision.capacity_sufficient,
        "recommendation": decision.recommendation,
    }


def capacity_verdict(
    autoscaling: Mapping[str, Any] | None, generation: int, enabled: bool
) -> tuple[bool, str] | None:
    """(sufficient, recommendation) from the live load, when the autoscaler has judged this spec."""
    if not enabled or not autoscaling or autoscaling.get("generation") != generation:
        return None
    verdict = autoscaling.get("capacitySufficient")
    if verdict is None:
        return None
    return bool(verdict), str(autoscaling.get("recommendation") or "")
