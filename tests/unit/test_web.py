"""The gateway's browser pages: the status summary of the Metrics, and pages without their assets."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from voice_pipeline.common.metrics import Metrics
from voice_pipeline.gateway import web


def _work(metrics: Metrics, stage: str, seconds: float, wait: float) -> None:
    metrics.requests.labels(stage, "ok").inc()
    metrics.latency.labels(stage).observe(seconds)
    metrics.queue_wait.labels(stage).observe(wait)
    metrics.busy.labels(stage).inc(seconds - wait)


def test_status_reports_intervals_hit_ratios_and_the_binding_stage() -> None:
    metrics = Metrics()
    for stage, limit in (("vad", 8), ("asr", 2), ("llm", 16), ("tts", 4)):
        metrics.max_concurrency.labels(stage).set(limit)
    history = web.StatusHistory(metrics, window_s=60, every_s=2)
    assert history.status(now=1000.0)["binding_stage"] is None  # nothing ran yet

    metrics.sessions.inc()
    _work(metrics, "asr", 1.5, 0.5)  # 1 busy second on 2 slots over 10 s: load 0.05
    _work(metrics, "llm", 0.5, 0.0)  # half a busy second on 16 slots
    metrics.e2e_first_audio.observe(0.8)
    metrics.cache.labels("asr", "hit").inc(1)
    metrics.cache.labels("asr", "miss").inc(3)
    status = history.status(now=1010.0)

    assert status["sessions"] == 1 and status["turns"] == 1 and status["first_audio_mean_s"] == 0.8
    assert status["requests"]["asr"] == {"ok": 1.0}
    point = status["series"][-1]
    assert point["stages"]["asr"]["latency_s"] == 1.5 and point["stages"]["asr"]["queue_wait_s"] == 0.5
    assert abs(point["stages"]["asr"]["load"] - 0.05) < 1e-9
    assert abs(point["stages"]["asr"]["busy_cores"] - 0.1) < 1e-9
    assert point["stages"]["tts"]["latency_s"] is None  # nothing finished: no mean, not zero
    assert status["binding_stage"] == "asr"
    assert status["cache_hit_ratio"] == {"asr": 0.25, "llm": None, "tts": None}

    # Asked again within the sampling period: no new point; the window drops old snapshots.
    assert len(history.status(now=1011.0)["series"]) == 1
    assert history.status(now=1100.0)["series"] == [] and len(history.snapshots) == 1


def test_pages_are_served_and_say_so_when_the_assets_are_missing(tmp_path: Path) -> None:
    static = tmp_path / "static"
    shutil.copytree(web.STATIC_DIR, static, ignore=shutil.ignore_patterns("vendor"))
    app = FastAPI()
    web.mount(app, Metrics(), static_dir=static)
    client = TestClient(app)

    missing = client.get("/")
    assert missing.status_code == 503 and "make web-assets" in missing.text
    assert client.get("/status").status_code == 503
    assert client.get("/api/status").json()["sessions"] == 0  # the JSON needs no assets

    (static / "vendor").mkdir()
    for name in web.VENDOR_FILES:
        (static / "vendor" / name).write_text("/* stand-in */")
    page = client.get("/")  # no restart needed after `make web-assets`
    assert page.status_code == 200 and "/static/talk.js" in page.text
    assert "uPlot.iife.min.js" in client.get("/status").text
    assert client.get("/static/talk.js").status_code == 200
    assert client.get("/static/vendor/opus-wasm.mjs").text == "/* stand-in */"
