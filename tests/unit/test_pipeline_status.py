"""The status page's VoicePipeline part: what the Kubernetes API answered -> what the page shows."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from voice_pipeline.gateway.pipeline_status import (
    SA_DIR,
    Fetched,
    PipelineStatus,
    PipelineStatusSettings,
    resolve,
    view,
)

PIPELINE: dict[str, Any] = {
    "metadata": {"name": "vp", "namespace": "voice", "generation": 3},
    "spec": {"devices": 60, "nodeSize": "4c16g"},
    "status": {
        "observedGeneration": 3,
        "conditions": [
            {"type": "CapacitySufficient", "status": "True", "reason": "PlanFits", "message": "fits",
             "lastTransitionTime": "2026-11-29T12:00:00Z", "observedGeneration": 3},
            {"type": "Ready", "status": "False", "reason": "StagesUnavailable", "message": "2/5 stages available",
             "lastTransitionTime": "2026-11-29T12:01:00Z", "observedGeneration": 3},
        ],
        "plan": {
            "supportedDevices": 64, "fits": True, "bottleneck": "asr", "nodeSize": "4c16g",
            "recommendation": "4c16g fits 64", "budget": {"cpu": "3500m", "memory": "14Gi"},
            "used": {"cpu": "3", "memory": "9Gi"},
            "stages": {
                "tts": {"replicas": 1, "cpu": "1", "memory": "512Mi", "maxConcurrency": 8, "devices": 80},
                "asr": {"replicas": 3, "cpu": "1", "memory": "1Gi", "batchSize": 8, "devices": 64},
                "gateway": {"replicas": 1, "cpu": "500m", "memory": "256Mi", "devices": 500},
            },
        },
    },
}  # fmt: skip


def test_a_planned_pipeline_shows_its_stages_in_pipeline_order_and_ready_first() -> None:
    shown = view(Fetched("ok", "vp", "voice", obj=PIPELINE))
    assert shown["state"] == "ok" and shown["message"] == ""
    assert (shown["devices"], shown["supportedDevices"], shown["bottleneck"]) == (60, 64, "asr")
    assert [s["stage"] for s in shown["stages"]] == ["gateway", "asr", "tts"]
    asr = shown["stages"][1]
    assert (asr["replicas"], asr["cpu"], asr["memory"], asr["batchSize"]) == (3, "1", "1Gi", 8)
    assert shown["stages"][2]["batchSize"] is None  # a field the stage has not: empty, not invented
    assert [cond["type"] for cond in shown["conditions"]] == ["Ready", "CapacitySufficient"]
    assert shown["conditions"][0] == {
        "type": "Ready", "status": "False", "reason": "StagesUnavailable",
        "message": "2/5 stages available", "lastTransitionTime": "2026-11-29T12:01:00Z",
    }  # fmt: skip


def test_an_unplanned_or_changed_pipeline_says_so() -> None:
    fresh = {"metadata": {"generation": 1}, "spec": {"devices": 10}}
    shown = view(Fetched("ok", "vp", "voice", obj=fresh))
    assert shown["state"] == "ok" and "not planned" in shown["message"] and shown["stages"] == []
    changed = {**PIPELINE, "metadata": {"generation": 4}}
    assert "generation 4" in view(Fetched("ok", "vp", "voice", obj=changed))["message"]


@pytest.mark.parametrize(
    ("fetched", "state", "words"),
    [
        (Fetched("unconfigured", detail="not started by the operator"), "none", "No operator"),
        (Fetched("no-cluster", "vp", "voice", detail="not running in a Kubernetes cluster"), "none", "No operator"),
        (Fetched("http-error", "vp", "voice", http_status=403, detail="cannot get resource"), "error", "403 Forbidden"),
        (Fetched("http-error", "vp", "voice", http_status=404), "error", "voice/vp was not found"),
        (Fetched("http-error", "vp", "voice", http_status=401), "error", "refused the gateway's service-account token"),
        (Fetched("http-error", "vp", "voice", http_status=500), "error", "HTTP 500"),
        (Fetched("unreachable", "vp", "voice", detail="https://10.0.0.1:443: ConnectError"), "error", "Cannot reach"),
    ],
)  # fmt: skip
def test_every_failure_is_a_message(fetched: Fetched, state: str, words: str) -> None:
    shown = view(fetched)
    assert shown["state"] == state and words in shown["message"], shown
    assert shown["stages"] == [] and shown["conditions"] == []
    if fetched.detail:
        assert fetched.detail in shown["message"]  # the API's own words help whoever fixes the RBAC


def test_resolve_uses_the_in_cluster_address_and_the_service_account_namespace() -> None:
    files = {f"{SA_DIR}/namespace": "voice\n"}
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    target = resolve(PipelineStatusSettings(name="vp"), env, files.get)
    assert (target.api_url, target.namespace, target.missing) == ("https://10.96.0.1:443", "voice", "")
    v6 = resolve(
        PipelineStatusSettings(name="vp", namespace="n"), {"KUBERNETES_SERVICE_HOST": "fd00::1"}, files.get
    )
    assert v6.api_url == "https://[fd00::1]:443"
    given = resolve(
        PipelineStatusSettings(name="vp", namespace="n", api_url="https://k:6443/"), {}, files.get
    )
    assert (given.api_url, given.namespace, given.missing) == ("https://k:6443", "n", "")


def test_resolve_says_why_there_is_no_call() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    assert "VP_GATEWAY__PIPELINE__NAME" in resolve(PipelineStatusSettings(), env, lambda _: None).missing
    assert (
        "not running in a Kubernetes cluster"
        in resolve(PipelineStatusSettings(name="vp"), {}, lambda _: None).missing
    )
    assert "namespace" in resolve(PipelineStatusSettings(name="vp"), env, lambda _: None).missing


class _Counting:
    def __init__(self) -> None:
        self.calls = 0

    async def fetch(self) -> Fetched:
        self.calls += 1
        return Fetched("ok", "vp", "voice", obj=PIPELINE)


def test_the_answer_is_reused_for_refresh_s() -> None:
    source, now = _Counting(), [100.0]
    status = PipelineStatus(source, refresh_s=5, clock=lambda: now[0])

    async def run() -> None:
        await asyncio.gather(*(status.current() for _ in range(5)))  # pages polling at once: one call
        assert source.calls == 1
        now[0] += 4.9
        await status.current()
        assert source.calls == 1
        now[0] += 0.2
        assert (await status.current())["supportedDevices"] == 64
        assert source.calls == 2

    asyncio.run(run())
