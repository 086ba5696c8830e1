"""The operator against a real API server: plan -> objects -> status, drift, bad specs, deletion."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from voice_operator.capacity import make_plan
from voice_operator.profiles import load_profile
from voice_operator.spec import parse_spec

from .cluster import Cluster

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
STAGES = ("gateway", "vad", "asr", "llm", "tts")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (subprocess.CalledProcessError, KeyError, json.JSONDecodeError, TypeError):
            last = None
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def get(kube: Cluster, ns: str, *what: str) -> dict[str, Any]:
    return dict(json.loads(kube.kubectl("-n", ns, "get", *what, "-o", "json").stdout))


def vp(kube: Cluster, ns: str, name: str) -> dict[str, Any]:
    return get(kube, ns, "voicepipeline", name)


def apply(kube: Cluster, ns: str, manifest: str) -> subprocess.CompletedProcess[str]:
    return kube.kubectl("-n", ns, "apply", "-f", "-", input=manifest, check=False)


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in body.get("status", {}).get("conditions", []) if c["type"] == type_)


def manifest(name: str, devices: int, node_size: str = "4c16g", extra: str = "") -> str:
    return f"""apiVersion: voice.pipeline.dev/v1alpha1
kind: VoicePipeline
metadata: {{name: {name}}}
spec:
  devices: {devices}
  nodeSize: {node_size}
{extra}"""


def expected_plan(devices: int, node_size: str = "4c16g") -> Any:
    return make_plan(parse_spec({"devices": devices, "nodeSize": node_size}), load_profile())


def test_example_becomes_planned_objects_and_status(kube: Cluster, namespace: str, operator: Any) -> None:
    started = time.monotonic()
    assert (
        kube.kubectl("-n", namespace, "apply", "-f", str(ROOT / "crds/examples/minimal.yaml")).returncode == 0
    )
    plan = expected_plan(15, "4c8g")
    deployments = wait_for(
        "five stage Deployments",
        lambda: (
            len(get(kube, namespace, "deployments")["items"]) == 5 and get(kube, namespace, "deployments")
        ),
    )
    by_stage = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in deployments["items"]}
    for stage in STAGES:
        d = by_stage[stage]
        assert d["spec"]["replicas"] == plan.stages[stage].replicas
        container = d["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["voice-pipeline", "serve", stage]
        assert container["resources"]["limits"]["cpu"] == plan.stages[stage].as_status()["cpu"]
        assert d["metadata"]["ownerReferences"][0]["kind"] == "VoicePipeline"
    settings = get(kube, namespace, "configmap", "office-settings")["data"]
    assert settings["asr.VP_ASR__BATCH_MAX_SIZE"] == str(plan.stages["asr"].batch_size)
    assert settings["gateway.VP_STAGES__ASR_URL"] == "http://office-asr:9000"
    assert len(get(kube, namespace, "services")["items"]) == 5
    assert len(get(kube, namespace, "poddisruptionbudgets")["items"]) == 5
    body = wait_for(
        "status",
        lambda: vp(kube, namespace, "office").get("status", {}).get("plan") and vp(kube, namespace, "office"),
    )
    status = body["status"]
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert status["supportedDevices"] == plan.supported_devices and status["bottleneck"] == plan.bottleneck
    assert condition(body, "CapacitySufficient")["status"] == "True"
    assert (
        condition(body, "Ready")["status"] == "False"
    )  # a zero-Pod quota here: no Pod ever becomes available
    print(f"apply -> objects + status in {time.monotonic() - started:.1f} s")
    table = kube.kubectl("-n", namespace, "get", "vp").stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "DEVICES", "SUPPORTED", "BOTTLENECK", "READY", "AGE"], table
    assert table.splitlines()[1].split()[:4] == ["office", "15", str(plan.supported_devices), plan.bottleneck]


def _resource_versions(kube: Cluster, ns: str) -> dict[str, str]:
    items = get(kube, ns, "deployments,services,configmaps,poddisruptionbudgets,voicepipelines")["items"]
    return {
        f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"]
        for i in items
        if i["metadata"]["name"] != "kube-root-ca.crt"
    }


def test_devices_change_replans_and_a_resync_writes_nothing(
    kube: Cluster, namespace: str, operator: Any
) -> None:
    apply(kube, namespace, manifest("fleet", 20))
    wait_for(
        "first plan", lambda: vp(kube, namespace, "fleet").get("status", {}).get("observedGeneration") == 1
    )
    started = time.monotonic()
    apply(kube, namespace, manifest("fleet", 100))
    target = expected_plan(100).stages["asr"].replicas
    wait_for(
        "asr replicas follow",
        lambda: get(kube, namespace, "deployment", "fleet-asr")["spec"]["replicas"] == target,
    )
    body = wait_for(
        "generation 2 observed",
        lambda: (b := vp(kube, namespace, "fleet"))["status"]["observedGeneration"] == 2 and b,
    )
    assert body["status"]["plan"]["targetDevices"] == 100
    print(f"devices 20 -> 100: replicas followed in {time.monotonic() - started:.1f} s")
    # Let it settle, then three resyncs (2 s apart) must not write anything.
    time.sleep(3)
    before = _resource_versions(kube, namespace)
    time.sleep(7)
    assert _resource_versions(kube, namespace) == before


def test_hand_edited_deployment_is_restored(kube: Cluster, namespace: str, operator: Any) -> None:
    apply(kube, namespace, manifest("edited", 30))
    want = wait_for(
        "deployment", lambda: get(kube, namespace, "deployment", "edited-tts")["spec"]["replicas"]
    )
    kube.kubectl("-n", namespace, "scale", "deployment", "edited-tts", "--replicas=7")
    kube.kubectl("-n", namespace, "set", "resources", "deployment", "edited-tts", "--limits=cpu=3")
    started = time.monotonic()
    wait_for(
        "replicas and limits restored",
        lambda: (
            (d := get(kube, namespace, "deployment", "edited-tts"))["spec"]["replicas"] == want
            and d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1"
        ),
    )
    print(f"hand edit restored in {time.monotonic() - started:.1f} s")
    events = kube.kubectl("-n", namespace, "get", "events", "-o", "json").stdout
    assert "Restored" in events


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("  devices: -5\n  nodeSize: 4c8g\n", "devices"),
        ("  devices: 10\n  nodeSize: 3c1g\n", "nodeSize"),
        ("  devices: 10\n  stages: {asr: {maxReplicas: 0}}\n", "maxReplicas"),
    ],
)
def test_schema_rejects_bad_specs(kube: Cluster, namespace: str, spec: str, fragment: str) -> None:
    result = apply(
        kube,
        namespace,
        f"apiVersion: voice.pipeline.dev/v1alpha1\nkind: VoicePipeline\nmetadata: {{name: bad}}\nspec:\n{spec}",
    )
    assert result.returncode != 0 and fragment in result.stderr, result.stderr


def test_meaningless_and_too_large_specs_are_reported_in_conditions(
    kube: Cluster, namespace: str, operator: Any
) -> None:
    apply(
        kube, namespace, manifest("bounds", 10, extra="  stages: {asr: {minReplicas: 5, maxReplicas: 2}}\n")
    )
    body = wait_for("InvalidSpec", lambda: (b := vp(kube, namespace, "bounds")).get("status") and b)
    ready = condition(body, "Ready")
    assert (
        ready["status"] == "False" and ready["reason"] == "InvalidSpec" and "minReplicas" in ready["message"]
    )
    assert not get(kube, namespace, "deployments")["items"]
    apply(kube, namespace, manifest("huge", 500, node_size="4c8g"))
    body = wait_for(
        "capacity verdict", lambda: (b := vp(kube, namespace, "huge")).get("status", {}).get("plan") and b
    )
    capacity = condition(body, "CapacitySufficient")
    assert capacity["status"] == "False" and "500 devices need" in capacity["message"], capacity
    events = kube.kubectl("-n", namespace, "get", "events", "-o", "json").stdout
    assert "InvalidSpec" in events and "CapacityInsufficient" in events


def test_deleting_the_pipeline_collects_what_it_owns(kube: Cluster, namespace: str, operator: Any) -> None:
    apply(kube, namespace, manifest("doomed", 10))
    wait_for("objects", lambda: len(get(kube, namespace, "deployments")["items"]) == 5)
    started = time.monotonic()
    kube.kubectl("-n", namespace, "delete", "voicepipeline", "doomed", "--wait=false")
    wait_for(
        "garbage collection",
        lambda: (
            not get(
                kube,
                namespace,
                "deployments,services,configmaps,poddisruptionbudgets",
                "-l",
                "app.kubernetes.io/instance=doomed",
            )["items"]
        ),
        timeout=120,
    )
    print(f"owned objects collected {time.monotonic() - started:.1f} s after delete")
