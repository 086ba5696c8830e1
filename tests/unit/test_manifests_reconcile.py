"""Manifests from a plan, conditions, and the reconcile loop against a fake API."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from voice_operator.capacity import make_plan
from voice_operator.conditions import get_condition, set_condition
from voice_operator.manifests import Owner, desired_objects, is_subset
from voice_operator.profiles import load_profile
from voice_operator.quantity import format_memory, parse_cpu, parse_memory_mib
from voice_operator.reconcile import reconcile, status_patch
from voice_operator.spec import parse_spec

OWNER = Owner("office", "voice", "uid-1")
PROFILE = load_profile()


def body(
    devices: int = 60, generation: int = 1, status: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "office", "namespace": "voice", "uid": "uid-1", "generation": generation},
        "spec": {"devices": devices, "nodeSize": "4c16g", **spec},
        "status": status or {},
    }


class FakeApi:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[str] = []

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found else None

    def apply(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(len(self.writes))  # server-added fields are fine
        self.objects[(obj["kind"], obj["metadata"]["name"])] = stored
        self.writes.append(f"{obj['kind']}/{obj['metadata']['name']}")
        return stored

    def pdb_api_version(self) -> str:
        return "policy/v1"


def now() -> str:
    return "2026-11-24T00:00:00Z"


def test_objects_carry_owner_labels_plan_and_settings() -> None:
    plan = make_plan(parse_spec({"devices": 60, "nodeSize": "4c16g"}), PROFILE)
    objects = desired_objects(OWNER, plan, image="img:1", redis_url="redis://r:6379/0")
    kinds = [o["kind"] for o in objects]
    assert kinds.count("Deployment") == kinds.count("Service") == kinds.count("PodDisruptionBudget") == 5
    asr = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "office-asr")
    assert asr["spec"]["replicas"] == plan.stages["asr"].replicas
    assert asr["metadata"]["ownerReferences"][0] == OWNER.reference()
    container = asr["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "img:1" and container["command"][-1] == "asr"
    env = {e["name"]: e["valueFrom"]["configMapKeyRef"]["key"] for e in container["env"] if "valueFrom" in e}
    assert env["VP_ASR__BATCH_MAX_SIZE"] == "asr.VP_ASR__BATCH_MAX_SIZE"
    # In a Pod the stage binds every address (a local `serve` binds loopback).
    assert {"name": "VP_SERVICE__HOST", "value": "0.0.0.0"} in container["env"]
    settings = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    assert settings["asr.VP_ASR__BATCH_MAX_SIZE"] == str(plan.stages["asr"].batch_size)
    assert settings["llm.VP_LLM__MAX_CONCURRENCY"] == str(plan.stages["llm"].max_concurrency)
    assert settings["asr.VP_CACHE__REDIS_URL"] == "redis://r:6379/0"
    assert "vad.VP_CACHE__REDIS_URL" not in settings  # VAD has no cache, and refuses unknown keys
    assert settings["gateway.VP_STAGES__TTS_URL"] == "http://office-tts:9000"
    asr_service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "office-asr")
    assert asr_service["spec"]["clusterIP"] == "None"  # headless: the gateway sees every replica


def test_only_the_gateway_gets_a_token_and_it_may_only_read_its_own_pipeline() -> None:
    plan = make_plan(parse_spec({"devices": 60, "nodeSize": "4c16g"}), PROFILE)
    objects = desired_objects(OWNER, plan)
    by = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    role = by[("Role", "office-gateway")]
    assert role["rules"] == [
        {"apiGroups": ["voice.pipeline.dev"], "resources": ["voicepipelines"], "resourceNames": ["office"], "verbs": ["get"]}
    ]  # fmt: skip
    binding = by[("RoleBinding", "office-gateway")]
    assert binding["roleRef"]["name"] == "office-gateway"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "office-gateway", "namespace": OWNER.namespace}
    ]
    assert by[("ServiceAccount", "office-gateway")]["metadata"]["ownerReferences"] == [OWNER.reference()]
    for stage in ("gateway", "vad", "asr", "llm", "tts"):
        pod = by[("Deployment", f"office-{stage}")]["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is (stage == "gateway"), stage
        assert pod.get("serviceAccountName") == ("office-gateway" if stage == "gateway" else None)
    settings = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    assert settings["gateway.VP_GATEWAY__PIPELINE__NAME"] == "office"
    assert settings["gateway.VP_GATEWAY__PIPELINE__NAMESPACE"] == OWNER.namespace
    # The ServiceAccount is applied before the Deployment whose Pods run as it.
    names = [f"{o['kind']}/{o['metadata']['name']}" for o in objects]
    assert names.index("ServiceAccount/office-gateway") < names.index("Deployment/office-gateway")


def test_is_subset_ignores_server_defaults_but_not_changes() -> None:
    desired = {"spec": {"replicas": 2, "ports": [{"port": 1}]}}
    assert is_subset(
        desired, {"spec": {"replicas": 2, "ports": [{"port": 1, "protocol": "TCP"}], "extra": 1}}
    )
    assert not is_subset(desired, {"spec": {"replicas": 3, "ports": [{"port": 1}]}})
    assert not is_subset(desired, {"spec": {"replicas": 2, "ports": []}})


def test_condition_transition_time_changes_only_on_flips() -> None:
    conditions = set_condition([], "Ready", False, "Waiting", "0/5", 1, "t1")
    conditions = set_condition(conditions, "Ready", False, "Waiting", "1/5", 2, "t2")
    ready = get_condition(conditions, "Ready")
    assert ready is not None and ready["lastTransitionTime"] == "t1" and ready["message"] == "1/5"
    conditions = set_condition(conditions, "Ready", True, "AllStagesAvailable", "5/5", 2, "t3")
    assert get_condition(conditions, "Ready")["lastTransitionTime"] == "t3"  # type: ignore[index]


def test_reconcile_applies_once_then_writes_nothing() -> None:
    api = FakeApi()
    first = reconcile(body(), api, PROFILE, now)
    # 5 stages x (Deployment, Service, PDB) + ConfigMap + the gateway's ServiceAccount, Role, RoleBinding
    assert len(first.applied) == 19 and first.events[0][:2] == ("Normal", "Applied")
    assert first.status["observedGeneration"] == 1 and first.status["ready"] == "0/5"
    writes = len(api.writes)
    second = reconcile(body(status=first.status), api, PROFILE, now)
    assert second.applied == [] and len(api.writes) == writes
    # Progressing moves from "Applying" to "Rollout" once; after that the status is stable too.
    third = reconcile(body(status=second.status), api, PROFILE, now)
    assert third.applied == [] and status_patch(second.status, third.status) == {}


def test_drift_is_restored_with_an_event() -> None:
    api = FakeApi()
    first = reconcile(body(), api, PROFILE, now)
    api.objects[("Deployment", "office-tts")]["spec"]["replicas"] = 9
    again = reconcile(body(status=first.status), api, PROFILE, now)
    assert again.applied == ["Deployment/office-tts"]
    assert again.events[0][1] == "Restored"


def test_new_generation_replans_and_reports_replica_changes() -> None:
    api = FakeApi()
    first = reconcile(body(devices=20), api, PROFILE, now)
    bigger = reconcile(body(devices=300, generation=2, status=first.status, maxNodes=4), api, PROFILE, now)
    assert bigger.status["observedGeneration"] == 2
    assert any(reason == "Replanned" and "asr" in message for _, reason, message in bigger.events)


def test_invalid_spec_is_a_condition_not_an_exception() -> None:
    api = FakeApi()
    outcome = reconcile(body(stages={"asr": {"minReplicas": 4, "maxReplicas": 1}}), api, PROFILE, now)
    ready = get_condition(outcome.status["conditions"], "Ready")
    assert ready is not None and ready["reason"] == "InvalidSpec" and "minReplicas" in ready["message"]
    assert api.writes == [] and outcome.events[0][:2] == ("Warning", "InvalidSpec")


def test_too_large_target_still_deploys_the_best_plan_and_says_so() -> None:
    api = FakeApi()
    outcome = reconcile(body(devices=5000), api, PROFILE, now)
    capacity = get_condition(outcome.status["conditions"], "CapacitySufficient")
    assert capacity is not None and capacity["status"] == "False" and "5000 devices" in capacity["message"]
    assert api.writes  # the best plan within maxReplicas is deployed meanwhile
    assert any(reason == "CapacityInsufficient" for _, reason, _ in outcome.events)


EXAMPLES = Path(__file__).resolve().parents[2] / "crds" / "examples"


def test_the_full_example_runs_the_engines_it_names() -> None:
    """crds/examples/full.yaml: SenseVoiceSmall ASR, Edge TTS, cloud LLM providers."""
    example = yaml.safe_load((EXAMPLES / "full.yaml").read_text(encoding="utf-8"))
    profile = PROFILE.model_copy(deep=True)
    if "asr:sensevoice" not in profile.stages:  # sized from some cost: this test is about the Pods
        profile.stages["asr:sensevoice"] = profile.stages["asr"].model_copy(
            update={"engines": ["sensevoice"]}
        )
    api = FakeApi()
    outcome = reconcile(
        {"metadata": {"name": "fleet", "namespace": "voice", "uid": "u", "generation": 1}, "spec": example["spec"]},
        api, profile, now,
    )  # fmt: skip
    settings = api.objects[("ConfigMap", "fleet-settings")]["data"]
    assert settings["asr.VP_ASR__BACKEND"] == "sensevoice"
    assert settings["asr.VP_ASR__SOLO_THREADS"] == "0"  # the one model copy its memory was costed for
    assert json.loads(settings["tts.VP_TTS__ENGINES"]) == {"zh": ["edge", "espeak"], "en": ["edge", "espeak"]}
    assert "llm.VP_LLM__LOCAL_THREADS" not in settings  # cloud providers: no local server
    assert outcome.plan is not None and outcome.plan.stages["llm"].engine == "cloud"
    llm = api.objects[("Deployment", "fleet-llm")]["spec"]["template"]["spec"]["containers"][0]
    assert llm["resources"]["limits"]["memory"] == format_memory(outcome.plan.stages["llm"].memory_mib)


def test_without_providers_the_llm_pod_is_sized_for_its_llama_cpp_server() -> None:
    if "llm:llamacpp" not in PROFILE.stages:
        pytest.skip("the shipped profile has no llm:llamacpp cost")
    api = FakeApi()
    outcome = reconcile(body(devices=5), api, PROFILE, now)
    llm = api.objects[("Deployment", "office-llm")]["spec"]["template"]["spec"]["containers"][0]
    server = PROFILE.stages["llm:llamacpp"].memory_mib_per_replica
    assert parse_memory_mib(llm["resources"]["limits"]["memory"]) >= server  # not 51Mi: not OOM-killed
    assert parse_cpu(llm["resources"]["limits"]["cpu"]) == 2.0
    settings = api.objects[("ConfigMap", "office-settings")]["data"]
    assert settings["llm.VP_LLM__LOCAL_THREADS"] == "2"
    assert outcome.plan is not None and outcome.plan.stages["llm"].engine == "llamacpp"


def test_an_engine_without_measured_cost_is_a_false_condition_and_no_writes() -> None:
    profile = PROFILE.model_copy(deep=True)
    profile.stages.pop("asr:sensevoice", None)
    api = FakeApi()
    outcome = reconcile(body(stages={"asr": {"engine": "sensevoice"}}), api, profile, now)
    for kind in ("Ready", "CapacitySufficient"):
        cond = get_condition(outcome.status["conditions"], kind)
        assert cond is not None and cond["status"] == "False" and cond["reason"] == "NoMeasuredCost"
        assert (
            "asr:sensevoice" in cond["message"]
            and "voice-pipeline calibrate --only asr:sensevoice" in cond["message"]
        )
    assert api.writes == [] and outcome.events[0][:2] == ("Warning", "NoMeasuredCost")
