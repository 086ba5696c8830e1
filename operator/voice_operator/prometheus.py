"""A thin async client for the Prometheus HTTP query API, and the per-stage signals it reads.

The queries are built from the metric contract (voice_pipeline.contract) and scoped to one
VoicePipeline by a label selector (how Prometheus labels the stage pods depends on how it scrapes
them: the chart's ServiceMonitor gives `namespace` and `service`; a static config gives what its
`labels:` say; so the selector is configurable). Prometheus being down, slow, or answering without
a series is a reported state (`Snapshot.state`), never an exception: the caller decides what a
missing signal means.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from voice_pipeline import contract as c

State = Literal["ok", "partial", "down", "unconfigured"]
QUANTILE = 0.95


@dataclass(frozen=True)
class StageSignals:
    """One stage, summed over its replicas. None: no series (or no traffic for a quantile)."""

    busy_rate: float | None = None  # compute seconds per second (cores in use)
    request_rate: float | None = None  # requests that did work (ok + error) per second
    overload_rate: float | None = None  # refused at once (queue full) per second
    queue_wait_p95_s: float | None = None
    latency_p95_s: float | None = None
    inflight: float | None = None
    max_concurrency: float | None = None
    mean_batch: float | None = None

    @property
    def present(self) -> bool:
        return any(v is not None for v in (self.busy_rate, self.request_rate, self.inflight))


@dataclass(frozen=True)
class Snapshot:
    time: float
    state: State
    detail: str = ""  # why down/partial, in words
    stages: dict[str, StageSignals] = field(default_factory=dict)
    active_devices: float | None = None
    missing: tuple[str, ...] = ()  # stages with no series at all


class PrometheusError(Exception):
    """The query API failed (unreachable, timeout, HTTP error, error status)."""


class PrometheusClient:
    """`GET /api/v1/query` with a timeout; one shared httpx client per operator process."""

    def __init__(
        self, base_url: str, timeout_s: float = 5.0, client: httpx.AsyncClient | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self.timeout_s = timeout_s

    async def close(self) -> None:
        await self._client.aclose()

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector's samples: [{"metric": {...}, "value": [t, "1.5"]}, ...]."""
        try:
            response = await self._client.get(
                f"{self.base_url}/api/v1/query", params={"query": promql}, timeout=self.timeout_s
            )
        except httpx.TimeoutException as exc:
            raise PrometheusError(f"timeout after {self.timeout_s:.0f} s") from exc
        except httpx.HTTPError as exc:
            raise PrometheusError(f"unreachable: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise PrometheusError(f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            body = response.json()
        except ValueError as exc:
            raise PrometheusError("answer is not JSON") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType', 'error')}: {body.get('error', '')}"[:300])
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise PrometheusError(f"expected a vector, got {data.get('resultType')}")
        return list(data.get("result") or [])


def selector_for(template: str, namespace: str, name: str) -> str:
    return template.format(namespace=namespace, name=name)


def _with(selector: str, extra: str = "") -> str:
    inner = ",".join(part for part in (selector, extra) if part)
    return "{" + inner + "}"


def queries(selector: str, window_s: int) -> dict[str, str]:
    """PromQL per signal, each an instant vector by `stage` (sessions: one sample)."""
    w = f"[{window_s}s]"
    s = _with(selector)
    by = f"sum by ({c.LABEL_STAGE})"

    def p95(histogram: str) -> str:
        return (
            f"histogram_quantile({QUANTILE}, sum by ({c.LABEL_STAGE}, le) (rate({histogram}_bucket{s}{w})))"
        )

    worked = _with(selector, f'{c.LABEL_OUTCOME}=~"ok|error"')
    refused = _with(selector, f'{c.LABEL_OUTCOME}="overload"')
    return {
        "busy": f"{by} (rate({c.METRIC_BUSY}{s}{w}))",
        "work": f"{by} (rate({c.METRIC_REQUESTS}{worked}{w}))",
        "overload": f"{by} (rate({c.METRIC_REQUESTS}{refused}{w}))",
        "queue_p95": p95(c.METRIC_QUEUE_WAIT),
        "latency_p95": p95(c.METRIC_LATENCY),
        "inflight": f"{by} (avg_over_time({c.METRIC_INFLIGHT}{s}{w}))",
        "max_concurrency": f"{by} ({c.METRIC_MAX_CONCURRENCY}{s})",
        "batch": f"{by} (rate({c.METRIC_BATCH_SIZE}_sum{s}{w})) / {by} (rate({c.METRIC_BATCH_SIZE}_count{s}{w}))",
        "sessions": f"sum(max_over_time({c.METRIC_SESSIONS}{s}{w}))",
    }


def _number(sample: dict[str, Any]) -> float | None:
    try:
        value = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def _by_stage(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    return {
        str(s.get("metric", {}).get(c.LABEL_STAGE, "")): _number(s)
        for s in samples
        if s.get("metric", {}).get(c.LABEL_STAGE)
    }


async def read_signals(
    client: PrometheusClient, selector: str, window_s: int, clock: Callable[[], float]
) -> Snapshot:
    """All signals of one pipeline in one round of concurrent queries."""
    named = queries(selector, window_s)
    now = clock()
    results = await asyncio.gather(*(client.query(q) for q in named.values()), return_exceptions=True)
    answers: dict[str, list[dict[str, Any]]] = {}
    failures: list[str] = []
    for key, result in zip(named, results, strict=True):
        if isinstance(result, PrometheusError):
            failures.append(f"{key}: {result}")
        elif isinstance(result, BaseException):
            raise result
        else:
            answers[key] = result
    if len(failures) == len(named):
        return Snapshot(now, "down", failures[0].split(": ", 1)[1])
    per = {key: _by_stage(answers.get(key, [])) for key in named if key != "sessions"}
    stages: dict[str, StageSignals] = {}
    for stage in c.STAGES:
        stages[stage] = StageSignals(
            busy_rate=per["busy"].get(stage),
            request_rate=per["work"].get(stage),
            overload_rate=per["overload"].get(stage),
            queue_wait_p95_s=per["queue_p95"].get(stage),
            latency_p95_s=per["latency_p95"].get(stage),
            inflight=per["inflight"].get(stage),
            max_concurrency=per["max_concurrency"].get(stage),
            mean_batch=per["batch"].get(stage),
        )
    sessions = answers.get("sessions") or []
    active = _number(sessions[0]) if sessions else None
    # The gateway is sized by its sessions: it counts as present when they are.
    missing = tuple(
        stage
        for stage, signals in stages.items()
        if not (signals.present or (stage == "gateway" and active is not None))
    )
    problems = [*failures]
    if missing:
        problems.append(f"no series for {', '.join(missing)}")
    if active is None:
        problems.append(f"no {c.METRIC_SESSIONS} series")
    state: State = "partial" if problems else "ok"
    return Snapshot(now, state, "; ".join(problems), stages, active, missing)
