"""Pure summaries of fleet turns: percentiles, success ratio, error counts."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TurnRecord:
    """One device turn as the fleet saw it (times relative to the fleet's start)."""

    device: int
    started_s: float
    clip: str
    ok: bool
    stt_ms: int | None = None
    first_token_ms: int | None = None
    first_audio_ms: int | None = None
    audio_seconds: float = 0.0
    error: str = ""


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def distribution(values: Iterable[float | None]) -> dict[str, float | None]:
    present = [float(v) for v in values if v is not None]
    return {
        "count": len(present),
        "p50": percentile(present, 50),
        "p95": percentile(present, 95),
        "p99": percentile(present, 99),
        "mean": round(sum(present) / len(present), 1) if present else None,
        "max": max(present) if present else None,
    }


def error_counts(records: Iterable[TurnRecord], limit: int = 10) -> dict[str, int]:
    """The most frequent error messages (digits folded so one cause counts once)."""
    counts = Counter(_fold(r.error) for r in records if r.error)
    return dict(counts.most_common(limit))


def _fold(message: str) -> str:
    return "".join("#" if ch.isdigit() else ch for ch in message[:120])


def summarize(records: Sequence[TurnRecord]) -> dict[str, Any]:
    """Turns, success ratio and latency distributions (latencies over turns that measured them;
    a failed turn counts against the success ratio, not as a latency)."""
    ok = [r for r in records if r.ok]
    return {
        "turns": len(records),
        "ok_turns": len(ok),
        "success_ratio": round(len(ok) / len(records), 4) if records else 0.0,
        "first_audio_ms": distribution(r.first_audio_ms for r in ok),
        "stt_ms": distribution(r.stt_ms for r in ok),
        "first_token_ms": distribution(r.first_token_ms for r in ok),
        "audio_seconds": distribution(r.audio_seconds for r in ok),
        "errors": error_counts(records),
        "clips": dict(Counter(r.clip for r in records)),
        # The latency floor differs by clip (utterance length, the reply's first sentence).
        "first_audio_p50_by_clip": {
            clip: percentile(
                [r.first_audio_ms for r in ok if r.clip == clip and r.first_audio_ms is not None], 50
            )
            for clip in sorted({r.clip for r in ok})
        },
    }


def meets_slo(summary: dict[str, Any], slo_ms: float, min_success: float = 0.99) -> bool:
    """The workload's definition of a supported load: success >= 99% and p95 first audio <= SLO."""
    p95 = summary["first_audio_ms"]["p95"]
    return (
        bool(summary["turns"])
        and summary["success_ratio"] >= min_success
        and p95 is not None
        and p95 <= slo_ms
    )
