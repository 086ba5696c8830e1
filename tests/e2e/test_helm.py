"""The Helm chart against the real API server: server-side validation of every scenario, then
install -> the operator (run here with the chart's own ServiceAccount token, so every call goes
through the chart's RBAC) reconciles the chart's VoicePipeline -> upgrade replans -> uninstall
(with the pre-delete cleanup hook) leaves nothing but the CRD.

No Pod starts in this test's namespace (a zero-Pod quota; test_pods.py installs the chart with
running Pods): the operator and the hook Job's command run as local processes with their
ServiceAccounts' tokens, and the test marks the hook Job complete for Helm, as a kubelet would after
the command exited 0."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .cluster import BIN, Cluster
from .test_operator import get, wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "voice-pipeline"
RELEASE = "vp"
FULLNAME = "vp-voice-pipeline"  # the chart's fullname for release "vp"
PERMISSION_TROUBLE = ("forbidden", "Forbidden", " 403", "Not enough permissions", "Failed to post an event")


def helm(kube: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / "helm"), "--kubeconfig", str(kube.kubeconfig), *args],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.parametrize("values", sorted((CHART / "ci").glob("*-values.yaml")), ids=lambda p: p.name)
def test_rendered_manifests_pass_server_side_validation(kube: Cluster, namespace: str, values: Path) -> None:
    kube.kubectl(
        "-n", namespace, "delete", "quota", "no-pods"
    )  # a dry run creates nothing; the test Pod is validated too
    server = json.loads(kube.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    rendered = helm(
        kube, "template", RELEASE, str(CHART), "-n", namespace, "-f", str(values), "--include-crds",
        "--kube-version", server,  # what `helm install` learns from the cluster itself
    ).stdout  # fmt: skip
    result = kube.kubectl(
        "-n", namespace, "apply", "--dry-run=server", "-f", "-", input=rendered, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "voicepipeline.voice.pipeline.dev/" in result.stdout and "(server dry run)" in result.stdout
    assert "customresourcedefinition.apiextensions.k8s.io/voicepipelines.voice.pipeline.dev" in result.stdout
    assert "customresourcedefinition.apiextensions.k8s.io/kopfpeerings.kopf.dev" in result.stdout
    assert f"kopfpeering.kopf.dev/{FULLNAME}" in result.stdout  # the leader election object


def _token_kubeconfig(kube: Cluster, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig holding the ServiceAccount's token (1.20's token controller mints it)."""

    def token_secret() -> dict[str, Any] | None:
        for s in get(kube, namespace, "secrets")["items"]:
            annotations = s["metadata"].get("annotations") or {}
            if (
                s["type"] == "kubernetes.io/service-account-token"
                and annotations.get("kubernetes.io/service-account.name") == service_account
                and (s.get("data") or {}).get("token")
            ):
                return dict(s)
        return None

    secret = wait_for(f"the token of ServiceAccount {service_account}", token_secret)
    token = base64.b64decode(secret["data"]["token"]).decode()
    path.write_text(
        f"apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{kube.server}', insecure-skip-tls-verify: true}}\n"
        f"users:\n- name: sa\n  user: {{token: '{token}'}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: sa, namespace: {namespace}}}\n"
        "current-context: c\n"
    )
    return path


def _cli(args: list[str], kubeconfig: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """`voice-pipeline ARGS` as the same local process a Pod of the chart would run."""
    assert args[0] == "voice-pipeline", args
    return subprocess.Popen(
        [sys.executable, "-m", "voice_pipeline.cli", *args[1:]],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT,
        env={**os.environ, "KUBECONFIG": str(kubeconfig), **env},
    )  # fmt: skip


def _chart_operator(kube: Cluster, namespace: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment of the chart's operator container, with its two ports moved to
    free loopback ports (parallel tests) and a 2 s resync so the test runs fast."""
    from .cluster import free_port

    deployment = get(kube, namespace, "deployment", f"{FULLNAME}-operator")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = list(container["command"])
    command[command.index("--liveness") + 1] = f"http://127.0.0.1:{free_port()}/healthz"
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    assert env.pop("POD_ID") == ""  # a fieldRef: what the kubelet would fill in is the Pod's name
    env.update(
        POD_ID=f"{FULLNAME}-operator-local",
        VP_OPERATOR_RESYNC_SECONDS="2",
        VP_OPERATOR_METRICS_PORT=str(free_port()),
        VP_OPERATOR_METRICS_ADDR="127.0.0.1",
    )
    return command, env


@pytest.fixture
def operator_log(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "operator.log"
    yield path
    if path.exists():
        print("--- operator log (tail) ---\n" + path.read_text(errors="replace")[-3000:])


def test_install_reconcile_upgrade_uninstall_with_the_chart_rbac(
    kube: Cluster, namespace: str, tmp_path: Path, operator_log: Path
) -> None:
    if kube.kind not in ("local", "local-node"):
        pytest.skip(
            "runs the chart's Pods as local processes: the local clusters only (test_pods.py runs them as Pods)"
        )
    timeline: list[str] = []
    started = time.monotonic()

    def mark(what: str) -> None:
        timeline.append(f"{time.monotonic() - started:6.1f} s  {what}")

    helm(
        kube,
        "install",
        RELEASE,
        str(CHART),
        "-n",
        namespace,
        "--set",
        "pipeline.devices=20",
        "--set",
        "pipeline.nodeSize=4c8g",
    )
    mark("helm install")
    status = json.loads(helm(kube, "status", RELEASE, "-n", namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    assert "kubectl -n " + namespace + " get vp" in status["info"]["notes"]
    assert kube.kubectl("get", "crd", "voicepipelines.voice.pipeline.dev").returncode == 0
    for kind, name in [("serviceaccount", FULLNAME), ("role", f"{FULLNAME}-operator"), ("rolebinding", f"{FULLNAME}-operator"),
                       ("statefulset", f"{FULLNAME}-redis"), ("voicepipeline", FULLNAME)]:  # fmt: skip
        assert kube.kubectl("-n", namespace, "get", kind, name).returncode == 0, (kind, name)

    operator_kubeconfig = _token_kubeconfig(kube, namespace, FULLNAME, tmp_path / "operator-kubeconfig")
    command, env = _chart_operator(kube, namespace)
    assert env["VP_OPERATOR_IMAGE"] == "ghcr.io/voice-pipeline/services:0.1.0"
    operator = _cli(command, operator_kubeconfig, operator_log, **env)
    try:
        deployments = wait_for(
            "stage Deployments from the chart's VoicePipeline",
            lambda: (d := get(kube, namespace, "deployments", "-l", "app.kubernetes.io/managed-by=voice-pipeline-operator"))["items"]
            and len(d["items"]) == 5 and d,
            timeout=90,
        )  # fmt: skip
        mark("operator (chart ServiceAccount) applied the 5 stage Deployments")
        # Leader election through the chart's KopfPeering, with the chart's RBAC: the one replica leads.
        peering = command[command.index("--peering") + 1]
        peers = wait_for(
            "the operator's keep-alive in the chart's KopfPeering",
            lambda: get(kube, namespace, "kopfpeering", peering).get("status"),
        )
        assert list(peers) == [f"{FULLNAME}-operator-local"], peers
        image = next(iter(deployments["items"]))["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "ghcr.io/voice-pipeline/services:0.1.0"  # the chart's image.services
        asr_before = get(kube, namespace, "deployment", f"{FULLNAME}-asr")["spec"]["replicas"]
        vp = wait_for(
            "status.plan",
            lambda: (
                (v := get(kube, namespace, "voicepipeline", FULLNAME)).get("status", {}).get("plan") and v
            ),
        )
        assert vp["status"]["plan"]["targetDevices"] == 20
        assert vp["spec"]["redis"]["url"] == f"redis://{FULLNAME}-redis:6379/0"
        assert "voice.pipeline.dev/finalizer" in vp["metadata"].get(
            "finalizers", []
        )  # why the cleanup hook exists
        print(
            "\n$ kubectl get vp  (after helm install, devices=20 on 4c8g)\n"
            + kube.kubectl("-n", namespace, "get", "vp").stdout
        )

        helm(
            kube,
            "upgrade",
            RELEASE,
            str(CHART),
            "-n",
            namespace,
            "--reuse-values",
            "--set",
            "pipeline.devices=300",
            "--set",
            "pipeline.maxNodes=4",
        )
        mark("helm upgrade devices=300 maxNodes=4")
        wait_for(
            "plan for 300 devices",
            lambda: get(kube, namespace, "voicepipeline", FULLNAME)["status"]["plan"]["targetDevices"] == 300,
        )
        asr_after = wait_for(
            "more asr replicas",
            lambda: (
                (r := get(kube, namespace, "deployment", f"{FULLNAME}-asr")["spec"]["replicas"]) > asr_before
                and r
            ),
        )
        mark(f"replanned: asr {asr_before} -> {asr_after} replicas")
        print(
            "$ kubectl get vp  (after helm upgrade, devices=300 on 4c8g x 4)\n"
            + kube.kubectl("-n", namespace, "get", "vp").stdout
        )
        bad = helm(
            kube,
            "upgrade",
            RELEASE,
            str(CHART),
            "-n",
            namespace,
            "--reuse-values",
            "--set",
            "pipeline.nodeSize=4c64g",
            check=False,
        )
        assert bad.returncode != 0 and "pipeline.nodeSize must be one of the following" in bad.stderr, (
            bad.stderr
        )
        history = json.loads(helm(kube, "history", RELEASE, "-n", namespace, "-o", "json").stdout)
        assert [r["revision"] for r in history] == [1, 2]  # the refused upgrade never reached the cluster
        assert get(kube, namespace, "voicepipeline", FULLNAME)["spec"]["nodeSize"] == "4c8g"
        events = get(kube, namespace, "events", "--field-selector", "involvedObject.kind=VoicePipeline")[
            "items"
        ]
        reasons = {e["reason"] for e in events}
        assert {"Applied", "Replanned"} <= reasons, reasons  # Events posted with the chart's RBAC

        # helm uninstall: the pre-delete hook Job runs `voice-pipeline cleanup` while the operator still runs.
        uninstall = subprocess.Popen(
            [str(BIN / "helm"), "--kubeconfig", str(kube.kubeconfig), "uninstall", RELEASE, "-n", namespace, "--timeout", "3m"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        job = wait_for(
            "the pre-delete cleanup Job", lambda: get(kube, namespace, "job", f"{FULLNAME}-cleanup")
        )
        mark("helm uninstall: pre-delete hook Job created")
        pod_spec = job["spec"]["template"]["spec"]
        hook_kubeconfig = _token_kubeconfig(
            kube, namespace, pod_spec["serviceAccountName"], tmp_path / "hook-kubeconfig"
        )
        hook_log = tmp_path / "cleanup.log"
        hook = _cli(pod_spec["containers"][0]["command"], hook_kubeconfig, hook_log)
        assert hook.wait(180) == 0, hook_log.read_text()
        output = hook_log.read_text()
        print("cleanup hook: " + output.strip().splitlines()[-1])
        assert f"deleted 1 VoicePipeline(s) in {namespace}: {FULLNAME}" in output
        assert "removed the operator's finalizer" not in output  # the operator released it itself
        mark("cleanup hook: VoicePipeline gone (operator removed its finalizer)")
        # Everything the operator did while the release existed must pass the chart's RBAC. Once the
        # hook is done, helm deletes the operator's Deployment and its Role together: a keep-alive
        # in flight then may be refused, as in a cluster, and the KopfPeering goes away anyway.
        release_log = operator_log.read_text(errors="replace")
        kube.kubectl("-n", namespace, "patch", "job", f"{FULLNAME}-cleanup", "--subresource=status", "--type=merge",
                     "-p", json.dumps({"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}))  # fmt: skip
        out, _ = uninstall.communicate(timeout=240)
        assert uninstall.returncode == 0, out
        mark("helm uninstall returned")
    finally:
        operator.terminate()
        operator.wait(15)

    trouble = [line for line in release_log.splitlines() if any(t in line for t in PERMISSION_TROUBLE)]
    assert not trouble, "the chart's RBAC refused the operator something:\n" + "\n".join(trouble[:10])

    kinds = "deployments,services,configmaps,statefulsets,roles,rolebindings,poddisruptionbudgets,voicepipelines,serviceaccounts,jobs,pods,secrets,kopfpeerings"

    def leftovers() -> list[str]:
        items = get(kube, namespace, kinds)["items"]
        keep = ("kube-root-ca.crt", "default")
        return [f"{i['kind']}/{i['metadata']['name']}" for i in items
                if i["metadata"]["name"] not in keep and not i["metadata"]["name"].startswith("default-token-")]  # fmt: skip

    try:
        wait_for("nothing left but the CRD", lambda: leftovers() == [], timeout=120)
    finally:
        print(f"after uninstall, left: {leftovers()}")
    mark("namespace empty (owned objects garbage-collected)")
    assert kube.kubectl("get", "crd", "voicepipelines.voice.pipeline.dev").returncode == 0
    assert kube.kubectl("get", "crd", "kopfpeerings.kopf.dev").returncode == 0
    print("timeline:\n" + "\n".join(timeline))
