"""metav1.Condition-style status helpers. PURE: the clock is passed in."""

from __future__ import annotations

from typing import Any

CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "CapacitySufficient")


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """A new list with `type_` set; lastTransitionTime changes only when the status flips."""
    value = "Unknown" if status is None else ("True" if status else "False")
    previous = next((c for c in conditions if c.get("type") == type_), None)
    changed = previous is None or previous.get("status") != value
    condition = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now if changed or previous is None else previous.get("lastTransitionTime", now),
    }
    others = [c for c in conditions if c.get("type") != type_]
    return sorted(
        [*others, condition],
        key=lambda c: CONDITION_TYPES.index(c["type"]) if c["type"] in CONDITION_TYPES else 99,
    )


def get_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)
