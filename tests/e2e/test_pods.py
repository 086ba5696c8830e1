"""The running-Pods tier: the Helm chart installed with the images `make images` built, on a cluster
whose Pods run (the local node of `voice-pipeline cluster up`, kind, or any cluster given).

One release, in order: every Pod Running and Ready through its real probes with no restart and no
OOM kill -> `helm test` -> simulated devices talk through the gateway Service, every turn answered
(the LLM provider emulated by `voice-pipeline emulate llm`, as a Pod) -> `helm upgrade` to another
device count rolls the new plan while devices talk, with no failed turn -> `helm uninstall` leaves
nothing behind. Then the same uninstall when the cleanup hook cannot run: it fails fast, and
`--no-hooks` still leaves nothing.

Traffic stays on this machine: the devices reach the gateway through a NodePort on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from voice_pipeline.simulator.fleet import Fleet, FleetConfig, default_clip_paths, load_clips

from .cluster import BIN, IMAGES, Cluster
from .test_operator import get, wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "voice-pipeline"
RELEASE = "vp"
FULLNAME = "vp-voice-pipeline"
STAGES = ("gateway", "vad", "asr", "llm", "tts")
DEVICES = 10
UPGRADED_DEVICES = 14  # a new plan (slots, queues, CPU) that still fits this 2-core node
LLM_EMULATOR = "llm-emulator"

EMULATOR = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {LLM_EMULATOR}, labels: {{app: {LLM_EMULATOR}}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {LLM_EMULATOR}}}}}
  template:
    metadata: {{labels: {{app: {LLM_EMULATOR}}}}}
    spec:
      enableServiceLinks: false
      automountServiceAccountToken: false
      securityContext: {{runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
        - name: emulator
          image: {IMAGES["services"]}
          imagePullPolicy: IfNotPresent
          command: [voice-pipeline, emulate, llm, --host, 0.0.0.0, --port, "8080", --ttft-ms, "300", --tokens-per-s, "40"]
          ports: [{{containerPort: 8080}}]
          readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 2}}
          resources: {{requests: {{cpu: 20m, memory: 64Mi}}, limits: {{cpu: 300m, memory: 256Mi}}}}
          securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {{drop: [ALL]}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {LLM_EMULATOR}}}
spec:
  selector: {{app: {LLM_EMULATOR}}}
  ports: [{{port: 8080, targetPort: 8080}}]
---
# How a user exposes the gateway to devices outside the cluster (here: 127.0.0.1:<nodePort>).
apiVersion: v1
kind: Service
metadata: {{name: devices}}
spec:
  type: NodePort
  selector: {{app.kubernetes.io/instance: {FULLNAME}, app.kubernetes.io/component: gateway}}
  ports: [{{port: 8000, targetPort: 8000}}]
"""


def helm(
    kube: Cluster, *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / "helm"), "--kubeconfig", str(kube.kubeconfig), *args],
        capture_output=True, text=True, check=False, timeout=timeout,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def install_args(kube: Cluster, ns: str, devices: int) -> list[str]:
    # The local node and kind hold the images `make images` built: never pull (no registry here).
    pull = "Never" if kube.kind in ("local-node", "kind") else "IfNotPresent"
    providers = [
        {
            "name": "emulated",
            "type": "openai",
            "baseUrl": f"http://{LLM_EMULATOR}:8080/v1",
            "model": "emulated",
        }
    ]
    return [
        "-n", ns, "--set", f"image.services={IMAGES['services']}", "--set", f"image.operator={IMAGES['operator']}",
        "--set", f"redis.image={IMAGES['redis']}", "--set", f"pipeline.devices={devices}",
        "--set-json", f"pipeline.llmProviders={json.dumps(providers)}",
        # Offline engines only: no Pod may reach for a cloud TTS from this machine.
        "--set-json", 'pipeline.stages={"tts": {"engine": "piper"}}',
        "--set", "operator.resyncSeconds=5", "--set", f"image.pullPolicy={pull}",
    ]  # fmt: skip


def pod_problems(kube: Cluster, ns: str) -> list[str]:
    """Restarts, OOM kills and Pods not Running, with their reason."""
    problems = []
    for pod in get(kube, ns, "pods")["items"]:
        name = pod["metadata"]["name"]
        if pod["metadata"].get("labels", {}).get("app.kubernetes.io/component") in ("test", "cleanup"):
            continue
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            last = (cs.get("lastState") or {}).get("terminated") or {}
            if cs.get("restartCount"):
                problems.append(
                    f"{name}: {cs['restartCount']} restart(s), last {last.get('reason')} exit {last.get('exitCode')}"
                )
            if "OOMKilled" in (
                last.get("reason"),
                ((cs.get("state") or {}).get("terminated") or {}).get("reason"),
            ):
                problems.append(f"{name}: OOMKilled")
    return problems


def all_ready(kube: Cluster, ns: str) -> bool:
    deployments = get(kube, ns, "deployments")["items"]
    names = {d["metadata"]["name"] for d in deployments}
    if not {f"{FULLNAME}-{s}" for s in STAGES} | {f"{FULLNAME}-operator", LLM_EMULATOR} <= names:
        return False
    ready = all(
        (d.get("status") or {}).get("updatedReplicas") == d["spec"]["replicas"]
        and (d.get("status") or {}).get("availableReplicas") == d["spec"]["replicas"]
        and not (d.get("status") or {}).get("unavailableReplicas")
        for d in deployments
    )
    redis = get(kube, ns, "statefulset", f"{FULLNAME}-redis")
    return ready and (redis.get("status") or {}).get("readyReplicas") == 1


def run_fleet(url: str, devices: int, duration_s: float, seed: int) -> dict[str, Any]:
    config = FleetConfig(
        url=url, devices=devices, duration_s=duration_s, ramp_s=5, seed=seed, turn_timeout_s=30
    )
    return asyncio.run(Fleet(config, load_clips(default_clip_paths())).run())


def n_failed(result: dict[str, Any]) -> int:
    return int(result["turns"]) - int(result["ok_turns"])


def failed_turns(result: dict[str, Any]) -> str:
    return f"{result['turns']} turns, {n_failed(result)} failed: {result.get('errors')}"


def usage_table(kube: Cluster, ns: str) -> str:
    """Each container's CPU and memory (kubelet's summary API) against its limits."""
    nodes = get(kube, ns, "nodes")["items"]
    pods = {p["metadata"]["name"]: p for p in get(kube, ns, "pods")["items"]}
    rows = ["pod/container                                  cpu (limit)        memory (limit)"]
    for node in nodes:
        raw = kube.kubectl(
            "get", "--raw", f"/api/v1/nodes/{node['metadata']['name']}/proxy/stats/summary", check=False
        )
        if raw.returncode != 0:
            return f"(no kubelet summary: {raw.stderr.strip()[:200]})"
        for pod in json.loads(raw.stdout).get("pods", []):
            if pod["podRef"]["namespace"] != ns or pod["podRef"]["name"] not in pods:
                continue
            spec = {c["name"]: c for c in pods[pod["podRef"]["name"]]["spec"]["containers"]}
            for c in pod.get("containers", []):
                limits = (spec.get(c["name"], {}).get("resources") or {}).get("limits") or {}
                cpu_m = (c.get("cpu") or {}).get("usageNanoCores", 0) / 1e6
                mem_mi = (c.get("memory") or {}).get("workingSetBytes", 0) / 2**20
                rows.append(f"{pod['podRef']['name'][-40:]:40}/{c['name'][:6]:6} {cpu_m:6.0f}m ({limits.get('cpu', '-'):>6})"
                            f"  {mem_mi:7.0f}Mi ({limits.get('memory', '-'):>7})")  # fmt: skip
    return "\n".join(rows)


def test_chart_runs_serves_devices_upgrades_and_uninstalls(kube: Cluster, pods_namespace: str) -> None:
    ns = pods_namespace
    if kube.kind == "local-node":
        missing = [
            i
            for i in IMAGES.values()
            if subprocess.run(["docker", "image", "inspect", i], capture_output=True).returncode
        ]
        assert not missing, f"images not built: {missing} (make images)"
    timeline: list[str] = []
    started = time.monotonic()

    def mark(what: str) -> None:
        timeline.append(f"{time.monotonic() - started:6.1f} s  {what}")
        print(timeline[-1], flush=True)

    result = kube.kubectl("-n", ns, "apply", "-f", "-", input=EMULATOR, check=False)
    assert result.returncode == 0, result.stderr
    helm(kube, "install", RELEASE, str(CHART), *install_args(kube, ns, DEVICES))
    mark("helm install")
    try:
        wait_for("every Deployment and Redis Ready", lambda: all_ready(kube, ns), timeout=600)
        mark("all Pods Ready (operator x2, 5 stages, Redis, emulator)")
        assert pod_problems(kube, ns) == []
        operators = get(kube, ns, "deployment", f"{FULLNAME}-operator")
        assert operators["status"]["readyReplicas"] == 2  # leader election: one leads, one stands by
        vp = wait_for(
            "the VoicePipeline's Ready condition (the operator's next resync)",
            lambda: (
                (v := get(kube, ns, "voicepipeline", FULLNAME))
                and any(c["type"] == "Ready" and c["status"] == "True" for c in v["status"]["conditions"])
                and v
            ),
            timeout=60,
        )
        assert vp["status"]["plan"]["targetDevices"] == DEVICES
        mark("VoicePipeline Ready")

        test = helm(kube, "test", RELEASE, "-n", ns, timeout=300)  # (its Pod is deleted once it succeeded)
        assert "Phase:          Succeeded" in test.stdout, test.stdout
        mark("helm test passed")

        port = get(kube, ns, "service", "devices")["spec"]["ports"][0]["nodePort"]
        url = f"ws://127.0.0.1:{port}/xiaozhi/v1/"
        first = wait_for(
            "a first answered turn",
            lambda: (r := run_fleet(url, 1, 1, seed=7))["ok_turns"] >= 1 and r,
            timeout=120,
        )
        assert n_failed(first) == 0, failed_turns(first)
        mark(f"first device turn answered (first audio {first['first_audio_ms']['p50']} ms)")

        loaded: dict[str, Any] = {}
        load = threading.Thread(target=lambda: loaded.update(run_fleet(url, DEVICES, 60, seed=1)))
        load.start()
        time.sleep(40)  # mid-load: what each container uses against its limits
        print(usage_table(kube, ns), flush=True)
        load.join(timeout=200)
        fleet = loaded
        mark(
            f"{DEVICES} devices x 60 s: {failed_turns(fleet)}; p95 first audio {fleet['first_audio_ms']['p95']} ms"
        )
        assert pod_problems(kube, ns) == []
        assert fleet["turns"] >= DEVICES * 3 and n_failed(fleet) == 0, failed_turns(fleet)

        # helm upgrade while devices talk: the new plan rolls stage by stage, no turn fails.
        before = {
            d["metadata"]["name"]: d["metadata"]["generation"] for d in get(kube, ns, "deployments")["items"]
        }
        during: dict[str, Any] = {}
        talking = threading.Thread(target=lambda: during.update(run_fleet(url, DEVICES, 75, seed=2)))
        talking.start()
        time.sleep(8)
        helm(
            kube,
            "upgrade",
            RELEASE,
            str(CHART),
            "--reuse-values",
            "-n",
            ns,
            "--set",
            f"pipeline.devices={UPGRADED_DEVICES}",
        )
        mark(f"helm upgrade pipeline.devices={UPGRADED_DEVICES}")
        wait_for(
            "the new plan",
            lambda: (
                get(kube, ns, "voicepipeline", FULLNAME)["status"]["plan"]["targetDevices"]
                == UPGRADED_DEVICES
            ),
        )
        changed = wait_for(
            "stage Deployments rolled to the new plan",
            lambda: (
                (rolled := sorted(n for n, d in ((d["metadata"]["name"], d) for d in get(kube, ns, "deployments")["items"])
                                  if d["metadata"]["generation"] != before.get(n)))
                and all_ready(kube, ns) and rolled
            ),
            timeout=300,
        )  # fmt: skip
        mark(f"rolled: {', '.join(changed)}")
        talking.join(timeout=200)
        assert not talking.is_alive()
        mark(f"devices during the upgrade: {failed_turns(during)}")
        assert during["turns"] >= DEVICES * 3 and n_failed(during) == 0, failed_turns(during)
        assert pod_problems(kube, ns) == []
        logs = kube.kubectl(
            "-n", ns, "logs", "-l", "app.kubernetes.io/component=operator", "--tail=-1", check=False
        ).stdout
        # The chart's RBAC was enough (the words kopf and the client log for a refused call; a bare
        # "403" also matches byte counts in access-log lines).
        trouble = [line for line in logs.splitlines()
                   if any(t in line for t in ("Forbidden", "forbidden", "Not enough permissions", "Failed to post an event"))]  # fmt: skip
        assert not trouble, "\n".join(trouble[:10])
    finally:
        print(kube.kubectl("-n", ns, "get", "pods,deployments,vp", "-o", "wide", check=False).stdout)
        print("\n".join(timeline))

    helm(kube, "uninstall", RELEASE, "-n", ns, "--timeout", "3m")
    mark("helm uninstall returned")
    kube.kubectl("-n", ns, "delete", "-f", "-", input=EMULATOR, check=False)
    assert_nothing_left(kube, ns)
    mark("nothing left in the namespace")


def assert_nothing_left(kube: Cluster, ns: str) -> None:
    kinds = ("deployments,services,configmaps,statefulsets,roles,rolebindings,poddisruptionbudgets,"
             "voicepipelines,serviceaccounts,jobs,pods,secrets,kopfpeerings")  # fmt: skip

    def leftovers() -> list[str]:
        keep = ("kube-root-ca.crt", "default")
        return [f"{i['kind']}/{i['metadata']['name']}" for i in get(kube, ns, kinds)["items"]
                if i["metadata"]["name"] not in keep and not i["metadata"]["name"].startswith("default-token-")]  # fmt: skip

    try:
        wait_for("nothing left", lambda: leftovers() == [], timeout=180)
    finally:
        print(f"left in {ns}: {leftovers()}")


def test_uninstall_fails_fast_when_the_cleanup_hook_cannot_run(kube: Cluster, pods_namespace: str) -> None:
    """The hook's image cannot be had (pullPolicy Never, an image no node holds): `helm uninstall`
    fails within the hook's deadline instead of hanging, and `--no-hooks` then leaves nothing."""
    ns = pods_namespace
    helm(kube, "install", RELEASE, str(CHART), "-n", ns, "--set", "operator.enabled=false", "--set", "redis.enabled=false",
         "--set", "image.operator=voice-pipeline/not-built:none", "--set", "image.pullPolicy=Never",
         "--set", "cleanup.timeoutSeconds=20", "--set", "pipeline.devices=5")  # fmt: skip
    assert get(kube, ns, "voicepipeline", FULLNAME)["spec"]["devices"] == 5
    started = time.monotonic()
    failed = helm(kube, "uninstall", RELEASE, "-n", ns, "--timeout", "4m", check=False)
    took = time.monotonic() - started
    print(
        f"helm uninstall with a hook that cannot run: exit {failed.returncode} after {took:.0f} s: {failed.stderr.strip()}"
    )
    assert failed.returncode != 0
    assert took < 120, f"took {took:.0f} s"
    assert "cleanup" in failed.stderr and ("DeadlineExceeded" in failed.stderr or "failed" in failed.stderr)
    helm(kube, "uninstall", RELEASE, "-n", ns, "--no-hooks")
    assert_nothing_left(kube, ns)
