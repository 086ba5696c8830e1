"""The browser pages on the gateway's own port: `/` (talk), `/status`, `/static/*`, `/api/status`.

The talk page speaks the device protocol on /xiaozhi/v1/ like any device; the status page polls
`/api/status`, a JSON summary of this process's own `Metrics` with a short history kept here (a
sample at most every `SAMPLE_EVERY_S`, the last `WINDOW_S`), so the page shows the last minutes even
when it was opened a moment ago. The npm assets (libopus wasm, uPlot) are vendored into
`web/static/vendor/` by `make web-assets`; without them the gateway still starts, logs it, and the
pages say so instead of failing half-way in the browser.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from voice_pipeline import contract as c
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.gateway.pipeline_status import (
    KubePipelineSource,
    PipelineSource,
    PipelineStatus,
    PipelineStatusSettings,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parents[1] / "web" / "static"
VENDOR_FILES = ("opus-wasm.mjs", "uPlot.iife.min.js", "uPlot.min.css")
WINDOW_S = 600.0
SAMPLE_EVERY_S = 2.0

MISSING_PAGE = """<!doctype html><meta charset="utf-8"><title>voice-pipeline: assets missing</title>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto">
<h1>Browser assets are missing</h1>
<p>The page's vendored packages (the Opus codec and the chart library) were not built into
<code>{vendor}</code>. Run <code>make web-assets</code> (or <code>make run</code>, which does it) and
reload. The device protocol (<code>/xiaozhi/v1/</code>), <code>/metrics</code> and
<code>/api/status</code> work without them.</p>
<p>Missing: {missing}</p></body>"""


def missing_assets(static_dir: Path = STATIC_DIR) -> list[str]:
    return [name for name in VENDOR_FILES if not (static_dir / "vendor" / name).is_file()]


# --- a summary of the Metrics registry ----------------------------------------------------------
@dataclass
class Snapshot:
    """Cumulative values at one moment (counters and histogram sums only grow)."""

    t: float
    sessions: float = 0.0
    requests: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> outcome -> n
    latency: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage -> (count, sum)
    queue_wait: dict[str, tuple[float, float]] = field(default_factory=dict)
    busy: dict[str, float] = field(default_factory=dict)  # stage -> compute seconds
    inflight: dict[str, float] = field(default_factory=dict)
    max_concurrency: dict[str, float] = field(default_factory=dict)
    cache: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> result -> n
    first_audio: tuple[float, float] = (0.0, 0.0)  # (count, sum) of speech end -> first audio


def snapshot(metrics: Metrics, now: float) -> Snapshot:
    snap = Snapshot(t=now)
    for family in metrics.families():
        for s in family.samples:
            stage = s.labels.get(c.LABEL_STAGE, "")
            if s.name == c.METRIC_REQUESTS:
                snap.requests.setdefault(stage, {})[s.labels[c.LABEL_OUTCOME]] = s.value
            elif s.name == c.METRIC_CACHE:
                snap.cache.setdefault(stage, {})[s.labels[c.LABEL_RESULT]] = s.value
            elif s.name == c.METRIC_BUSY:
                snap.busy[stage] = s.value
            elif s.name == c.METRIC_INFLIGHT:
                snap.inflight[stage] = s.value
            elif s.name == c.METRIC_MAX_CONCURRENCY:
                snap.max_concurrency[stage] = s.value
            elif s.name == c.METRIC_SESSIONS:
                snap.sessions = s.value
            else:
                for base, target in (
                    (c.METRIC_LATENCY, snap.latency),
                    (c.METRIC_QUEUE_WAIT, snap.queue_wait),
                ):
                    if s.name in (base + "_count", base + "_sum"):
                        count, total = target.get(stage, (0.0, 0.0))
                        target[stage] = (s.value, total) if s.name.endswith("_count") else (count, s.value)
                if s.name == c.METRIC_E2E_FIRST_AUDIO + "_count":
                    snap.first_audio = (s.value, snap.first_audio[1])
                elif s.name == c.METRIC_E2E_FIRST_AUDIO + "_sum":
                    snap.first_audio = (snap.first_audio[0], s.value)
    return snap


def _mean_between(a: tuple[float, float], b: tuple[float, float]) -> float | None:
    count = b[0] - a[0]
    return (b[1] - a[1]) / count if count > 0 else None


def interval(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """What happened between two snapshots: per-stage request rate, mean latency and queue wait
    (None when no request finished), load (compute seconds per second over the stage's concurrency
    limit, the share of its slots in use), plus first-audio latency and cache hit ratios."""
    dt = max(b.t - a.t, 1e-6)
    stages: dict[str, Any] = {}
    for stage in c.MODEL_STAGES:
        done_a = sum(a.requests.get(stage, {}).values())
        done_b = sum(b.requests.get(stage, {}).values())
        busy_rate = (b.busy.get(stage, 0.0) - a.busy.get(stage, 0.0)) / dt
        limit = b.max_concurrency.get(stage, 0.0)
        stages[stage] = {
            "rate": (done_b - done_a) / dt,
            "latency_s": _mean_between(a.latency.get(stage, (0, 0)), b.latency.get(stage, (0, 0))),
            "queue_wait_s": _mean_between(a.queue_wait.get(stage, (0, 0)), b.queue_wait.get(stage, (0, 0))),
            "busy_cores": busy_rate,
            "load": busy_rate / limit if limit > 0 else None,
            "inflight": b.inflight.get(stage, 0.0),
        }
    return {
        "t": b.t,
        "sessions": b.sessions,
        "first_audio_s": _mean_between(a.first_audio, b.first_audio),
        "stages": stages,
    }


def binding_stage(points: list[dict[str, Any]]) -> str | None:
    """The stage that spent the most compute time over the window (None while nothing ran): on a
    shared machine the one whose cores run out first. A stage whose work happens elsewhere (a
    remote LLM provider) counts only the time its own process spends."""
    totals: dict[str, float] = {}
    for point in points:
        for stage, row in point["stages"].items():
            totals[stage] = totals.get(stage, 0.0) + row["busy_cores"]
    busiest = max(totals.items(), key=lambda kv: kv[1], default=(None, 0.0))
    return busiest[0] if busiest[1] > 0 else None


def hit_ratios(snap: Snapshot) -> dict[str, float | None]:
    ratios: dict[str, float | None] = {}
    for stage in c.CACHED_STAGES:
        counts = snap.cache.get(stage, {})
        looked = counts.get("hit", 0.0) + counts.get("miss", 0.0)
        ratios[stage] = counts.get("hit", 0.0) / looked if looked else None
    return ratios


class StatusHistory:
    """Snapshots of the last `window_s`, one every `every_s` at most: taken by a sampler thread (so
    a status page opened now shows the turns of the last minutes) and when the status is asked for.
    A thread, not a task: it needs no hook in the app's lifespan, and reading the registry is
    thread-safe and cheap (a few dozen samples)."""

    def __init__(self, metrics: Metrics, window_s: float = WINDOW_S, every_s: float = SAMPLE_EVERY_S) -> None:
        self.metrics = metrics
        self.window_s = window_s
        self.every_s = every_s
        self.snapshots: deque[Snapshot] = deque()
        self._lock = threading.Lock()

    def sample(self, now: float | None = None) -> list[Snapshot]:
        now = time.time() if now is None else now
        with self._lock:
            if not self.snapshots or now - self.snapshots[-1].t >= self.every_s:
                self.snapshots.append(snapshot(self.metrics, now))
            while self.snapshots and now - self.snapshots[0].t > self.window_s:
                self.snapshots.popleft()
            return list(self.snapshots)

    def start_sampling(self) -> None:
        """Sample in a daemon thread for as long as this history is referenced elsewhere."""
        ref = weakref.ref(self)
        every = self.every_s

        def run() -> None:
            while True:
                time.sleep(every)
                history = ref()
                if history is None:
                    return
                history.sample()
                del history  # hold no reference while asleep

        threading.Thread(target=run, name="status-sampler", daemon=True).start()

    def status(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        snaps = self.sample(now)
        points = [interval(a, b) for a, b in itertools.pairwise(snaps)]
        last = snaps[-1]
        return {
            "time": now,
            "window_s": self.window_s,
            "sessions": last.sessions,
            "requests": last.requests,
            "latency": {s: {"count": v[0], "sum": v[1]} for s, v in last.latency.items()},
            "queue_wait": {s: {"count": v[0], "sum": v[1]} for s, v in last.queue_wait.items()},
            "max_concurrency": last.max_concurrency,
            "turns": last.first_audio[0],
            "first_audio_mean_s": last.first_audio[1] / last.first_audio[0] if last.first_audio[0] else None,
            "cache": last.cache,
            "cache_hit_ratio": hit_ratios(last),
            "binding_stage": binding_stage(points),
            "series": points,
        }


def mount(
    app: FastAPI,
    metrics: Metrics,
    pipeline: PipelineStatusSettings | None = None,
    static_dir: Path = STATIC_DIR,
    source: PipelineSource | None = None,
) -> None:
    """Add the pages and /api/status to the gateway app. `/api/status` carries, under `pipeline`,
    the VoicePipeline's plan and conditions when the operator runs (gateway/pipeline_status.py)."""
    pipeline = pipeline or PipelineStatusSettings()
    resource = PipelineStatus(source or KubePipelineSource(pipeline), pipeline.refresh_s)
    history = StatusHistory(metrics)
    history.start_sampling()
    missing = missing_assets(static_dir)
    if missing:
        log.warning(
            "browser pages: vendored assets missing in %s (%s): run `make web-assets`; "
            "the pages show a notice until then",
            static_dir / "vendor",
            ", ".join(missing),
        )

    def page(name: str) -> Response:
        if missing_assets(static_dir):  # checked per request: `make web-assets` needs no restart
            body = MISSING_PAGE.format(
                vendor=static_dir / "vendor", missing=", ".join(missing_assets(static_dir))
            )
            return HTMLResponse(body, status_code=503)
        return FileResponse(static_dir / name, media_type="text/html")

    @app.get("/", include_in_schema=False)
    async def talk_page() -> Response:
        return page("index.html")

    @app.get("/status", include_in_schema=False)
    async def status_page() -> Response:
        return page("status.html")

    @app.get("/api/status")
    async def status_json() -> JSONResponse:
        return JSONResponse({**history.status(), "pipeline": await resource.current()})

    app.mount("/static", StaticFiles(directory=static_dir, check_dir=False), name="static")
