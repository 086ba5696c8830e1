"""The one level-based reconcile: observe -> plan -> apply what differs -> status.

Called for create, update, resume and on a periodic resync; it never depends on what triggered
it. An unchanged spec with untouched children makes no writes. A spec that cannot work becomes a
False condition with a clear message (and the caller posts an Event), never an exception loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voice_operator.capacity import NoMeasuredCost, Plan, make_plan
from voice_operator.conditions import set_condition
from voice_operator.kube import KubeApi
from voice_operator.live import capacity_verdict, live_plan
from voice_operator.manifests import FIELD_MANAGER, Owner, desired_objects, is_subset
from voice_operator.observed_costs import adjusted_profile, factors_from_status
from voice_operator.profiles import CostProfile
from voice_operator.spec import SpecError, parse_spec

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    status: dict[str, Any]
    applied: list[str] = field(default_factory=list)  # "Kind/name" written this pass
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    plan: Plan | None = None


def _availability(api: KubeApi, objects: list[dict[str, Any]]) -> tuple[int, int, list[str]]:
    ready, total, waiting = 0, 0, []
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        total += 1
        current = (
            api.get("apps/v1", "Deployment", obj["metadata"]["namespace"], obj["metadata"]["name"]) or {}
        )
        want = obj["spec"]["replicas"]
        available = (current.get("status") or {}).get("availableReplicas") or 0
        if available >= want:
            ready += 1
        else:
            waiting.append(
                f"{obj['metadata']['labels'].get('app.kubernetes.io/component')} {available}/{want}"
            )
    return ready, total, waiting


def reconcile(
    body: dict[str, Any],
    api: KubeApi,
    profile: CostProfile,
    now: Callable[[], str],
    image: str = "",
    cause: str = "",
) -> Outcome:
    """`cause` names why objects change when the caller knows (the autoscaler: "Autoscaled")."""
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    old_status = dict(body.get("status") or {})
    conditions = list(old_status.get("conditions") or [])
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    events: list[tuple[str, str, str]] = []

    try:
        spec = parse_spec(dict(body.get("spec") or {}))
    except SpecError as exc:
        conditions = set_condition(conditions, "Ready", False, "InvalidSpec", str(exc), generation, now())
        conditions = set_condition(
            conditions, "CapacitySufficient", None, "InvalidSpec", str(exc), generation, now()
        )
        conditions = set_condition(conditions, "Degraded", True, "InvalidSpec", str(exc), generation, now())
        events.append(("Warning", "InvalidSpec", str(exc)))
        status = {**old_status, "observedGeneration": generation, "conditions": conditions, "ready": "False"}
        return Outcome(status, events=events)

    # The calibrated costs, moved by what the running pipeline measured (status.observed.costs).
    try:
        plan = make_plan(spec, adjusted_profile(profile, factors_from_status(old_status)))
    except NoMeasuredCost as exc:
        # Sizing from another engine's cost would be a guess: say what to measure, change nothing.
        for kind, value in (("Ready", False), ("CapacitySufficient", False), ("Degraded", True)):
            conditions = set_condition(conditions, kind, value, "NoMeasuredCost", str(exc), generation, now())
        if old_status.get("observedGeneration") != generation:
            events.append(("Warning", "NoMeasuredCost", str(exc)))
        status = {**old_status, "observedGeneration": generation, "conditions": conditions, "ready": "False",
                  "recommendation": str(exc)}  # fmt: skip
        return Outcome(status, events=events)
    plan_status = plan.as_status()
    capacity_ok = plan.fits
    conditions = set_condition(
        conditions,
        "CapacitySufficient",
        capacity_ok,
        "PlanFits"
        if capacity_ok
        else ("PlanImpossible" if plan.supported_devices == 0 else "TargetTooLarge"),
        plan.recommendation + ("; " + "; ".join(plan.problems) if plan.problems else ""),
        generation,
        now(),
    )
    verdict = capacity_verdict(old_status.get("autoscaling"), generation, spec.autoscaling.enabled)
    if capacity_ok and verdict is not None and not verdict[0]:  # the plan fits; the live load does not
        conditions = set_condition(
            conditions, "CapacitySufficient", False, "LiveLoadExceedsBudget", verdict[1], generation, now()
        )
    if plan.supported_devices == 0:
        message = "; ".join(plan.problems)
        conditions = set_condition(conditions, "Ready", False, "PlanImpossible", message, generation, now())
        conditions = set_condition(conditions, "Degraded", True, "PlanImpossible", message, generation, now())
        status = {**old_status, "observedGeneration": generation, "conditions": conditions, "plan": plan_status,
                  "supportedDevices": 0, "bottleneck": plan.bottleneck, "recommendation": plan.recommendation, "ready": "False"}  # fmt: skip
        if old_status.get("observedGeneration") != generation:
            events.append(("Warning", "PlanImpossible", message))
        return Outcome(status, events=events, plan=plan)

    live = live_plan(plan, old_status.get("autoscaling"), generation, spec.autoscaling.enabled)
    objects = desired_objects(
        owner,
        live,
        spec.image or image,
        spec.redis.url,
        api.pdb_api_version(),
        spec.stages.llm.providers,
        spec.stage_auth,
    )
    applied = []
    for obj in objects:
        m = obj["metadata"]
        current = api.get(obj["apiVersion"], obj["kind"], m["namespace"], m["name"])
        if current is not None and is_subset(obj, current):
            continue
        api.apply(obj, FIELD_MANAGER)
        applied.append(f"{obj['kind']}/{m['name']}")
    if applied:
        # Same generation and same plan, yet objects differed: someone edited them by hand.
        drift = old_status.get("observedGeneration") == generation and old_status.get("plan") == plan_status
        reason = cause or ("Restored" if drift else "Applied")
        events.append(
            ("Normal", reason, f"{reason.lower()} {len(applied)} object(s): {', '.join(applied[:6])}")
        )
    if old_status.get("plan", {}).get("stages") != plan_status["stages"] and old_status.get("plan"):
        changes = [
            f"{name} {old_status['plan']['stages'].get(name, {}).get('replicas')} -> {s['replicas']} replicas"
            for name, s in plan_status["stages"].items()
            if old_status["plan"]["stages"].get(name, {}).get("replicas") != s["replicas"]
        ]
        if changes:
            events.append(("Normal", "Replanned", "; ".join(changes)))
    if not capacity_ok and old_status.get("recommendation") != plan.recommendation:
        events.append(("Warning", "CapacityInsufficient", plan.recommendation))

    ready, total, waiting = _availability(api, objects)
    all_ready = ready == total
    conditions = set_condition(
        conditions, "Ready", all_ready, "AllStagesAvailable" if all_ready else "StagesUnavailable",
        f"{ready}/{total} stages available" + (f" (waiting: {', '.join(waiting)})" if waiting else ""), generation, now(),
    )  # fmt: skip
    conditions = set_condition(
        conditions, "Progressing", bool(applied) or not all_ready, "Applying" if applied else ("Rollout" if not all_ready else "Complete"),
        f"applied {len(applied)} object(s)" if applied else f"{ready}/{total} stages available", generation, now(),
    )  # fmt: skip
    conditions = set_condition(
        conditions, "Degraded", not capacity_ok, "TargetTooLarge" if not capacity_ok else "AsPlanned",
        plan.recommendation, generation, now(),
    )  # fmt: skip
    status = {
        **old_status,
        "observedGeneration": generation,
        "conditions": conditions,
        "plan": plan_status,
        "supportedDevices": plan.supported_devices,
        "bottleneck": plan.bottleneck,
        "recommendation": plan.recommendation,
        "ready": f"{ready}/{total}",
    }
    return Outcome(status, applied=applied, events=events, plan=plan)


# The status fields the reconcile writes (and nothing else writes): context.py says who owns which.
RECONCILE_FIELDS = frozenset(
    {"observedGeneration", "conditions", "plan", "supportedDevices", "bottleneck", "recommendation", "ready"}
)


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Only the keys that changed: an unchanged status makes no write at all."""
    return {k: v for k, v in new.items() if old.get(k) != v}
