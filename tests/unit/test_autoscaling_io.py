"""The autoscaler's edges: the Prometheus client's states, observed costs, and the live plan the
reconcile applies (fake Kubernetes API from test_manifests_reconcile)."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx

from voice_operator.autoscaler import Action, Decision
from voice_operator.capacity import make_plan
from voice_operator.conditions import get_condition
from voice_operator.live import autoscaling_status, live_plan
from voice_operator.observed_costs import (
    MAX_FACTOR,
    adjusted_profile,
    factors_from_status,
    observable,
    update_costs,
)
from voice_operator.profiles import Workload, load_profile
from voice_operator.prometheus import PrometheusClient, StageSignals, queries, read_signals
from voice_operator.reconcile import reconcile
from voice_operator.spec import DEFAULT_PROMETHEUS_SELECTOR, parse_spec

from .test_manifests_reconcile import PROFILE, FakeApi, body, now


def vector(*samples: tuple[dict[str, str], float | str]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector",
            "result": [{"metric": m, "value": [1.0, str(v)]} for m, v in samples]}}  # fmt: skip


def fake_prometheus(answers: dict[str, dict[str, Any]]) -> PrometheusClient:
    """Answers each query by the first key it contains (a fake behind the HTTP interface)."""

    def handle(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        for needle, answer in answers.items():
            if needle in query:
                return httpx.Response(200, json=answer)
        return httpx.Response(200, json=vector())

    return PrometheusClient(
        "http://prometheus", client=httpx.AsyncClient(transport=httpx.MockTransport(handle))
    )


def test_queries_are_built_from_the_contract_and_scoped_by_the_selector() -> None:
    selector = DEFAULT_PROMETHEUS_SELECTOR.format(namespace="voice", name="office")
    q = queries(selector, 60)
    assert q["busy"] == (
        'sum by (stage) (rate(voice_stage_busy_seconds_total{namespace="voice",'
        'service=~"office-(gateway|vad|asr|llm|tts)"}[60s]))'
    )
    assert 'outcome=~"ok|error"' in q["work"] and "histogram_quantile(0.95" in q["queue_p95"]
    assert "voice_stage_queue_wait_seconds_bucket" in q["queue_p95"]
    assert all(selector in text for text in q.values())


def test_signals_per_stage_and_missing_series_reported() -> None:
    client = fake_prometheus({
        "busy_seconds": vector(({"stage": "asr"}, 1.5), ({"stage": "vad"}, 0.1)),
        'outcome=~"ok|error"': vector(({"stage": "asr"}, 2.0)),
        "queue_wait": vector(({"stage": "asr"}, 0.18), ({"stage": "vad"}, "NaN")),
        "voice_gateway_sessions": vector(({}, 12)),
    })  # fmt: skip
    snap = asyncio.run(read_signals(client, 'job="x"', 30, lambda: 5.0))
    assert snap.time == 5.0 and snap.active_devices == 12
    assert snap.stages["asr"] == StageSignals(busy_rate=1.5, request_rate=2.0, queue_wait_p95_s=0.18)
    assert snap.stages["vad"].queue_wait_p95_s is None  # NaN (no traffic) is "no value", not 0
    assert snap.state == "partial" and snap.missing == ("llm", "tts")  # gateway counts by its sessions
    assert "no series for llm, tts" in snap.detail


def test_prometheus_down_is_a_state_not_an_exception() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    snap = asyncio.run(read_signals(PrometheusClient(f"http://127.0.0.1:{port}", 2.0), "", 30, lambda: 1.0))
    assert snap.state == "down" and "unreachable" in snap.detail and snap.stages == {}

    def failing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": "parse error"})

    client = PrometheusClient("http://p", client=httpx.AsyncClient(transport=httpx.MockTransport(failing)))
    snap = asyncio.run(read_signals(client, "", 30, lambda: 1.0))
    assert snap.state == "down" and "HTTP 400" in snap.detail

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client = PrometheusClient("http://p", client=httpx.AsyncClient(transport=httpx.MockTransport(slow)))
    assert "timeout" in asyncio.run(read_signals(client, "", 30, lambda: 1.0)).detail


def test_observed_costs_are_smoothed_bounded_and_dead_banded() -> None:
    profile = load_profile()
    costs = {"asr": profile.stages["asr"], "llm": profile.stages["llm"], "tts": profile.stages["tts"]}
    workload = Workload()
    calibrated = profile.stages["asr"].cpu_at(1)
    per_request = calibrated * (workload.utterance_s + workload.asr_extra_s)
    double = {"asr": StageSignals(busy_rate=2 * per_request, request_rate=1.0, mean_batch=1),
              "tts": StageSignals(busy_rate=5.0, request_rate=1.0)}  # fmt: skip
    state: dict[str, Any] = {}
    factors = []
    for _ in range(12):
        state = update_costs(state, double, costs, {"asr": 1}, workload)
        factors.append(state["asr"]["factor"])
    assert "tts" not in state  # a TTS request is a sentence, not its cost unit: not fed
    assert abs(state["asr"]["observedCpuSecondsPerUnit"] - 2 * calibrated) < 1e-6
    assert 1.0 < factors[0] < factors[-1] <= 2.0  # smoothed: a third of the way at first
    assert factors == sorted(factors) and abs(factors[-1] - 2.0) < 0.25  # converges on reality
    assert len(set(factors)) < len(factors)  # the dead band: small moves do not replan
    near = {"asr": StageSignals(busy_rate=1.05 * per_request, request_rate=1.0, mean_batch=1)}
    steady: dict[str, Any] = {}
    for _ in range(20):
        steady = update_costs(steady, near, costs, {"asr": 1}, workload)
    assert steady["asr"]["factor"] == 1.0 and steady["asr"]["ewma"] > 1.0
    wild = {"asr": StageSignals(busy_rate=1000.0, request_rate=1.0)}
    for _ in range(30):
        state = update_costs(state, wild, costs, {"asr": 1}, workload)
    assert (
        state["asr"]["ewma"] >= MAX_FACTOR - 1e-3 and 0.9 * MAX_FACTOR <= state["asr"]["factor"] <= MAX_FACTOR
    )
    idle = update_costs(state, {"asr": StageSignals(busy_rate=0.0, request_rate=0.0)}, costs, {}, workload)
    assert idle == state  # no traffic says nothing about cost
    few = {"asr": StageSignals(busy_rate=30 * per_request, request_rate=1.0, mean_batch=1)}
    assert update_costs(state, few, costs, {"asr": 1}, workload, window_s=10) == state  # 10 requests: noise
    assert update_costs(state, few, costs, {"asr": 1}, workload, window_s=60) != state
    adjusted = adjusted_profile(profile, factors_from_status({"observed": {"costs": state}}))
    assert adjusted.stages["asr"].cpu_at(4) == profile.stages["asr"].cpu_at(4) * state["asr"]["factor"]
    spec = parse_spec({"devices": 60, "nodeSize": "4c16g"})
    assert make_plan(spec, adjusted).stages["asr"].replicas > make_plan(spec, profile).stages["asr"].replicas


def _decision(replicas: int, sufficient: bool | None = True, recommendation: str = "") -> Decision:
    from voice_operator.autoscaler import StageState

    target = StageState(replicas, 4, 2.0, 1.0, 300, 1, 20, 2, (2, 4, 8), last_change=100.0)
    return Decision([Action("asr", "scale_up", 2, replicas, "test")], {"asr": target}, {"asr": 1.2}, "asr",
                    sufficient, recommendation)  # fmt: skip


def test_reconcile_applies_the_autoscaler_targets_of_this_generation_only() -> None:
    api = FakeApi()
    first = reconcile(body(), api, PROFILE, now)
    planned = first.plan.stages["asr"]  # type: ignore[union-attr]
    targets = autoscaling_status(_decision(planned.replicas + 2), None, generation=1)
    status = {**first.status, "autoscaling": targets}
    scaled = reconcile(body(status=status), api, PROFILE, now, cause="Autoscaled")
    assert scaled.applied == ["ConfigMap/office-settings", "Deployment/office-asr"]
    assert scaled.events[0][1] == "Autoscaled"
    deployment = api.objects[("Deployment", "office-asr")]
    assert deployment["spec"]["replicas"] == planned.replicas + 2
    settings = api.objects[("ConfigMap", "office-settings")]["data"]
    assert [v for k, v in settings.items() if k.startswith("asr.") and k.endswith("BATCH_MAX_SIZE")] == ["4"]
    assert scaled.status["plan"]["stages"]["asr"]["replicas"] == planned.replicas  # the plan stays the plan
    # A resync with the same status changes nothing; a new generation starts from its plan again.
    assert reconcile(body(status=scaled.status), api, PROFILE, now).applied == []
    new_spec = reconcile(body(generation=2, status=scaled.status), api, PROFILE, now)
    assert api.objects[("Deployment", "office-asr")]["spec"]["replicas"] == planned.replicas
    assert "Deployment/office-asr" in new_spec.applied
    # Plan-only: the targets are ignored.
    plan_only = body(status=scaled.status, autoscaling={"enabled": False})
    reconcile(plan_only, api, PROFILE, now)
    assert api.objects[("Deployment", "office-asr")]["spec"]["replicas"] == planned.replicas


def test_live_verdict_sets_capacity_sufficient_false_with_the_recommendation() -> None:
    api = FakeApi()
    first = reconcile(body(devices=10), api, PROFILE, now)  # fits with the local llama.cpp LLM
    assert get_condition(first.status["conditions"], "CapacitySufficient")["status"] == "True"  # type: ignore[index]
    verdict = autoscaling_status(
        _decision(3, False, "asr wants 9 replicas (has 3); use maxNodes: 2 of 4c16g"), None, 1
    )
    again = reconcile(body(devices=10, status={**first.status, "autoscaling": verdict}), api, PROFILE, now)
    condition = get_condition(again.status["conditions"], "CapacitySufficient")
    assert condition is not None and condition["status"] == "False"
    assert condition["reason"] == "LiveLoadExceedsBudget" and "maxNodes: 2" in condition["message"]


def test_live_plan_is_the_plan_without_targets() -> None:
    plan = make_plan(parse_spec({"devices": 30, "nodeSize": "4c8g"}), PROFILE)
    assert live_plan(plan, None, 1, True) is plan
    assert live_plan(plan, {"generation": 2, "stages": {"asr": {"replicas": 9}}}, 1, True) is plan
    assert (
        live_plan(plan, {"generation": 1, "stages": {"asr": {"replicas": 9}}}, 1, True).stages["asr"].replicas
        == 9
    )
    json.dumps(autoscaling_status(_decision(3), None, 1))  # status must serialize


def test_a_local_llama_cpp_llm_is_not_fed_from_its_client_busy_seconds() -> None:
    # The model runs in the server process: the stage's busy seconds are its client's alone.
    assert not observable("llm", "llamacpp")
    assert observable("llm", "cloud") and observable("asr", "sensevoice")
