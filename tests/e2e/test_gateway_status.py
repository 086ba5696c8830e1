"""The status page's VoicePipeline section, against a real kube-apiserver.

The API server, etcd and the controller manager only (tests/e2e/cluster.py's `local_cluster`, asked
for by name: `cluster()` would bring up a node with a kubelet when Docker and root are there, and
the gateway needs none). The real operator runs as a ServiceAccount bound to the chart's own
operator Role, so the gateway ServiceAccount, Role and RoleBinding it makes are made through the
chart's RBAC (the API server refuses a Role its maker does not itself hold). The gateway
(`voice-pipeline serve gateway`, as in a Pod) then reads its VoicePipeline with that
ServiceAccount's token and the API server's CA: /api/status and the page must show the plan and
conditions; with the token of a ServiceAccount that has no such Role they must say 403, and the
token must never appear in what the gateway answers or logs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .cluster import Cluster, free_port, local_cluster

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "voice-pipeline"
HELM = Path(os.environ.get("VP_HOME") or Path.home() / ".cache" / "voice-pipeline") / "bin" / "helm"
SCREENSHOTS = os.environ.get("BROWSER_SCREENSHOTS", "")
NS = "voice"
PIPELINE = "office"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.3)


def service_account_token(kube: Cluster, name: str) -> str:
    """A bound token for a ServiceAccount (TokenRequest: what the kubelet mounts in a Pod)."""
    answer = httpx.post(
        f"{kube.server}/api/v1/namespaces/{NS}/serviceaccounts/{name}/token",
        json={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
        headers={"Authorization": f"Bearer {kube.token}"},
        verify=False,
        timeout=10,
    )
    answer.raise_for_status()
    return str(answer.json()["status"]["token"])


def _operator_as_the_chart_grants(kube: Cluster, work: Path) -> subprocess.Popen[bytes]:
    """The chart's operator ServiceAccount, Role and RoleBinding in NS; the operator process runs
    with that ServiceAccount's token, watching NS."""
    rendered = subprocess.run(
        [str(HELM), "template", "vp", str(CHART), "--namespace", NS,
         "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kube.kubectl("-n", NS, "apply", "-f", "-", input=yaml.safe_dump_all(docs))
    account = next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
    kubeconfig = work / "operator-kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "op",
            "clusters": [{"name": "local", "cluster": {"server": kube.server, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "op", "user": {"token": service_account_token(kube, account)}}],
            "contexts": [{"name": "op", "context": {"cluster": "local", "user": "op", "namespace": NS}}],
        })
    )  # fmt: skip
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "VP_OPERATOR_RESYNC_SECONDS": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "voice_pipeline.cli", "operator", "--namespace", NS, "--standalone",
         "--liveness", f"http://127.0.0.1:{free_port()}/healthz"],
        stdout=(work / "operator.log").open("wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
    )  # fmt: skip


@dataclass
class Stack:
    kube: Cluster
    gateway: str  # http://127.0.0.1:port
    token_file: Path
    tokens: dict[str, str]  # "granted" | "stranger" -> token
    gateway_log: Path
    operator_log: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("gateway-status")
    with local_cluster() as kube:
        assert kube.workdir is not None and not kube.runs_pods  # the API server alone, no kubelet
        kube.kubectl("apply", "-f", str(ROOT / "crds" / "voicepipeline.yaml"))
        kube.kubectl(
            "wait", "--for=condition=Established", "--timeout=30s", "crd/voicepipelines.voice.pipeline.dev"
        )
        kube.kubectl("create", "namespace", NS)
        operator = _operator_as_the_chart_grants(kube, work)
        gateway: subprocess.Popen[bytes] | None = None
        try:
            pipeline = {
                "apiVersion": "voice.pipeline.dev/v1alpha1", "kind": "VoicePipeline",
                "metadata": {"name": PIPELINE, "namespace": NS}, "spec": {"devices": 15, "nodeSize": "4c16g"},
            }  # fmt: skip
            kube.kubectl("apply", "-f", "-", input=json.dumps(pipeline))

            def planned() -> bool:
                got = kube.kubectl("-n", NS, "get", "vp", PIPELINE, "-o", "json", check=False)
                status = json.loads(got.stdout or "{}").get("status") or {}
                bound = kube.kubectl("-n", NS, "get", "rolebinding", f"{PIPELINE}-gateway", check=False)
                return bool(status.get("plan") and status.get("conditions")) and bound.returncode == 0

            wait_for("the operator's plan and the gateway's RoleBinding", planned, 120)
            kube.kubectl("-n", NS, "create", "serviceaccount", "stranger")  # no Role: may read nothing
            tokens = {
                "granted": service_account_token(kube, f"{PIPELINE}-gateway"),
                "stranger": service_account_token(kube, "stranger"),
            }
            token_file = work / "token"
            token_file.write_text(tokens["granted"])
            port = free_port()
            gateway_log = work / "gateway.log"
            dead = free_port()  # the model stages are nowhere: this test is about the status page
            env = {
                **os.environ,
                "VP_GATEWAY__HOST": "127.0.0.1", "VP_GATEWAY__PORT": str(port),
                **{f"VP_STAGES__{s}_URL": f"http://127.0.0.1:{dead}" for s in ("VAD", "ASR", "LLM", "TTS")},
                # What the operator's ConfigMap gives a gateway Pod (checked below), and what the
                # kubelet would mount: the token and the API server's CA.
                "VP_GATEWAY__PIPELINE__NAME": PIPELINE, "VP_GATEWAY__PIPELINE__NAMESPACE": NS,
                "VP_GATEWAY__PIPELINE__API_URL": kube.server,
                "VP_GATEWAY__PIPELINE__TOKEN_FILE": str(token_file),
                "VP_GATEWAY__PIPELINE__CA_FILE": str(kube.workdir / "certs" / "apiserver.crt"),
                "VP_GATEWAY__PIPELINE__REFRESH_S": "0.2",
            }  # fmt: skip
            gateway = subprocess.Popen(
                [sys.executable, "-m", "voice_pipeline.cli", "serve", "gateway"],
                stdout=gateway_log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}"

            def up() -> bool:
                assert gateway is not None and gateway.poll() is None, gateway_log.read_text()[-3000:]
                try:
                    return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for("the gateway", up, 60)
            yield Stack(kube, url, token_file, tokens, gateway_log, work / "operator.log")
        finally:
            for process in (gateway, operator):
                if process is not None:
                    process.terminate()
                    try:
                        process.wait(15)
                    except subprocess.TimeoutExpired:
                        process.kill()
            print((work / "operator.log").read_text(errors="replace")[-3000:])


def pipeline_status(stack: Stack, state: str, words: str = "") -> dict[str, Any]:
    """The gateway's `pipeline` answer once it is in `state` and its message has `words` (the
    gateway re-reads the token file every 0.2 s)."""

    def shown() -> dict[str, Any] | None:
        answer: dict[str, Any] = httpx.get(f"{stack.gateway}/api/status", timeout=10).json()["pipeline"]
        return answer if answer["state"] == state and words in answer["message"] else None

    found: dict[str, Any] = wait_for(f"pipeline state {state} saying {words!r}", shown, 30)
    return found


def test_the_operator_names_the_pipeline_for_its_gateway(stack: Stack) -> None:
    settings = json.loads(
        stack.kube.kubectl("-n", NS, "get", "configmap", f"{PIPELINE}-settings", "-o", "json").stdout
    )
    assert settings["data"]["gateway.VP_GATEWAY__PIPELINE__NAME"] == PIPELINE
    assert settings["data"]["gateway.VP_GATEWAY__PIPELINE__NAMESPACE"] == NS
    pod = json.loads(
        stack.kube.kubectl("-n", NS, "get", "deployment", f"{PIPELINE}-gateway", "-o", "json").stdout
    )
    assert pod["spec"]["template"]["spec"]["serviceAccountName"] == f"{PIPELINE}-gateway"
    # What the gateway's ServiceAccount may do, as the API server itself judges it.
    who = f"--as=system:serviceaccount:{NS}:{PIPELINE}-gateway"
    can = [
        stack.kube.kubectl("-n", NS, "auth", "can-i", verb, what, who, check=False).stdout.strip()
        for verb, what in (
            ("get", f"voicepipelines.voice.pipeline.dev/{PIPELINE}"),
            ("get", "voicepipelines.voice.pipeline.dev/other"),
            ("list", "voicepipelines.voice.pipeline.dev"),
            ("patch", f"voicepipelines.voice.pipeline.dev/{PIPELINE}"),
            ("get", "secrets"),
        )
    ]
    assert can == ["yes", "no", "no", "no", "no"], can


def test_status_shows_the_plan_and_conditions_then_a_403_without_the_role(stack: Stack) -> None:
    stack.token_file.write_text(stack.tokens["granted"])
    shown = pipeline_status(stack, "ok")
    live = json.loads(stack.kube.kubectl("-n", NS, "get", "vp", PIPELINE, "-o", "json").stdout)["status"]
    assert (shown["name"], shown["namespace"], shown["devices"]) == (PIPELINE, NS, 15)
    assert (
        shown["supportedDevices"] == live["plan"]["supportedDevices"]
        and shown["bottleneck"] == live["plan"]["bottleneck"]
    )
    plan = {s["stage"]: s for s in shown["stages"]}
    assert list(plan) == ["gateway", "vad", "asr", "llm", "tts"]
    for stage, row in plan.items():
        want = live["plan"]["stages"][stage]
        assert (row["replicas"], row["cpu"], row["memory"], row["batchSize"]) == (
            want["replicas"], want["cpu"], want["memory"], want["batchSize"]
        ), stage  # fmt: skip
    conditions = {cond["type"]: cond for cond in shown["conditions"]}
    assert {"Ready", "Progressing", "Degraded", "CapacitySufficient"} <= set(conditions)
    ready = next(cond for cond in live["conditions"] if cond["type"] == "Ready")
    assert conditions["Ready"]["status"] == ready["status"] == "False"  # no kubelet: no Pod is available
    assert conditions["Ready"]["lastTransitionTime"] == ready["lastTransitionTime"]

    stack.token_file.write_text(stack.tokens["stranger"])  # as a rotated token would be re-read
    refused = pipeline_status(stack, "error", "403")
    assert "403" in refused["message"] and "may not read" in refused["message"], refused
    assert "system:serviceaccount:voice:stranger" in refused["message"]  # the API's own words
    assert refused["stages"] == [] and refused["conditions"] == []

    stack.token_file.write_text("not-a-token")
    assert "service-account token" in pipeline_status(stack, "error", "401")["message"]
    stack.token_file.write_text(stack.tokens["granted"])
    pipeline_status(stack, "ok")

    everything = httpx.get(f"{stack.gateway}/api/status", timeout=10).text + stack.gateway_log.read_text()
    for token in stack.tokens.values():
        assert token not in everything and token[-24:] not in everything


async def test_the_page_shows_the_plan_and_conditions_and_the_refusal(stack: Stack, tmp_path: Path) -> None:
    from tests.integration.browser import chromium

    stack.token_file.write_text(stack.tokens["granted"])
    async with chromium(tmp_path, ROOT / "tests" / "fixtures" / "en_weather.wav") as page:
        await page.goto(stack.gateway + "/status")
        await page.wait_for("document.querySelectorAll('#plan tbody tr').length === 5", 30, "the plan table")
        shown = await page.evaluate(
            "({rows: Array.from(document.querySelectorAll('#plan tbody tr'), (r) => Array.from(r.cells, (c) => c.textContent)),"
            " ready: Array.from(document.querySelector('#condition-Ready').cells, (c) => c.textContent),"
            " readyClass: document.querySelector('#condition-Ready').cells[1].className,"
            " summary: document.getElementById('pipeline-summary').textContent,"
            " name: document.getElementById('pipeline-name').textContent,"
            " notice: document.getElementById('pipeline-state').hidden})"
        )
        if SCREENSHOTS:
            await page.screenshot(ROOT / SCREENSHOTS / "status-page-operator.png")
        stack.token_file.write_text(stack.tokens["stranger"])
        refused = await page.wait_for(
            "document.getElementById('pipeline').dataset.state === 'error'"
            " && document.getElementById('pipeline-body').hidden"
            " && document.getElementById('pipeline-state').textContent",
            30,
            "the refusal on the page",
        )
    stack.token_file.write_text(stack.tokens["granted"])
    got = await asyncio.to_thread(stack.kube.kubectl, "-n", NS, "get", "vp", PIPELINE, "-o", "json")
    plan = json.loads(got.stdout)["status"]["plan"][
        "stages"
    ]  # what the operator wrote, not what the gateway said
    assert [r[0] for r in shown["rows"]] == ["gateway", "vad", "asr", "llm", "tts"]
    asr = next(r for r in shown["rows"] if r[0] == "asr")
    assert asr[1] == str(plan["asr"]["replicas"]) and asr[4] == plan["asr"]["memory"], asr
    assert asr[5] == str(plan["asr"]["batchSize"]), asr
    assert shown["ready"][:3] == ["Ready", "False", "StagesUnavailable"] and shown["readyClass"] == "bad", (
        shown
    )
    assert shown["name"] == f"{NS}/{PIPELINE}" and "15 devices wanted" in shown["summary"], shown
    assert "403" in refused, refused


async def test_an_unreachable_or_untrusted_api_is_a_message(stack: Stack, tmp_path: Path) -> None:
    from voice_pipeline.gateway.pipeline_status import KubePipelineSource, PipelineStatusSettings, view

    token = tmp_path / "token"
    token.write_text(stack.tokens["granted"])
    assert stack.kube.workdir is not None
    ca = str(stack.kube.workdir / "certs" / "apiserver.crt")
    other_ca = "/etc/ssl/certs/ca-certificates.crt"  # the public roots: they never signed this API server

    def source(api_url: str, ca_file: str) -> KubePipelineSource:
        settings = PipelineStatusSettings(
            name=PIPELINE, namespace=NS, api_url=api_url, token_file=str(token), ca_file=ca_file
        )
        return KubePipelineSource(settings, env={})

    trusted = view(await source(stack.kube.server, ca).fetch())
    closed = view(await source(f"https://127.0.0.1:{free_port()}", ca).fetch())
    untrusted = view(await source(stack.kube.server, other_ca).fetch())
    assert trusted["state"] == "ok" and trusted["stages"], trusted
    assert closed["state"] == "error" and "Cannot reach the Kubernetes API" in closed["message"], closed
    assert untrusted["state"] == "error" and "CERTIFICATE_VERIFY_FAILED" in untrusted["message"], untrusted
    assert not any(stack.tokens["granted"] in json.dumps(v) for v in (trusted, closed, untrusted))
