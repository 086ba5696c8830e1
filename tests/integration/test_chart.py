"""The Helm chart, rendered by the pinned helm: lint, every ci/ scenario, schema refusals, the
commands its Pods run, RBAC shape, alert rules through promtool, the dashboard and the helm test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from voice_operator import manifests
from voice_operator.capacity import make_plan
from voice_operator.profiles import load_profile
from voice_operator.spec import parse_spec
from voice_pipeline import contract as c
from voice_pipeline.cli import build_parser

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "voice-pipeline"
BIN = Path(os.environ.get("VP_HOME") or Path.home() / ".cache" / "voice-pipeline") / "bin"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
Doc = dict[str, Any]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = BIN / "helm"
    if not binary.exists():
        raise RuntimeError("helm is not installed: run `make kube-bins` (scripts/kube-local.sh tools)")
    return subprocess.run([str(binary), *args], capture_output=True, text=True, check=check, timeout=60)


def render(*args: str) -> list[Doc]:
    out = helm("template", "vp", str(CHART), "--namespace", "voice", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def one(docs: list[Doc], kind: str, suffix: str = "") -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, (kind, suffix, [d["metadata"]["name"] for d in found])
    return found[0]


def cli_parses(command: list[str]) -> bool:
    assert command[0] == "voice-pipeline", command
    try:
        return callable(build_parser().parse_args(command[1:]).func)
    except SystemExit:
        return False


def test_lint_passes_for_every_scenario() -> None:
    assert len(SCENARIOS) >= 6
    for values in SCENARIOS:
        result = helm("lint", str(CHART), "-f", str(values), check=False)
        assert result.returncode == 0, (values.name, result.stdout, result.stderr)


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_each_scenario_renders_the_expected_objects(values: Path) -> None:
    docs = render("-f", str(values))
    kinds = [d["kind"] for d in docs]
    assert {"Deployment", "Role", "RoleBinding", "ServiceAccount", "VoicePipeline", "Job"} <= set(kinds)
    pipeline = one(docs, "VoicePipeline")
    scenario = yaml.safe_load(values.read_text()) or {}
    spec = pipeline["spec"]
    if "external-redis" in values.name:
        assert "StatefulSet" not in kinds and spec["redis"]["url"] == "redis://redis.example:6379/0"
    else:
        assert one(docs, "StatefulSet", "-redis")["spec"]["template"]["spec"]["containers"][0][
            "image"
        ].startswith("redis:")
        assert spec["redis"]["url"] == "redis://vp-voice-pipeline-redis:6379/0"
    wanted = scenario.get("pipeline", {})
    for key in ("devices", "nodeSize"):
        if key in wanted:
            assert spec[key] == wanted[key]
    if "stages" in wanted:
        for stage, override in wanted["stages"].items():
            assert spec["stages"][stage] == override
    assert spec["autoscaling"]["enabled"] is wanted.get("autoscaling", {}).get("enabled", True)
    # The operator accepts what the chart renders, and plans it.
    plan = make_plan(parse_spec(spec), load_profile())
    assert plan.supported_devices > 0 and plan.fits


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "pipeline.nodeSize=4c64g"], 'pipeline.nodeSize must be one of the following: "4c8g", "4c16g", "4c32g"'),
        (["--set", "pipeline.devices=-5"], "pipeline.devices: Must be greater than or equal to 1"),
        (["--set", "pipeline.devicez=5"], "pipeline: Additional property devicez is not allowed"),
        (["--set", "pipeline.devices=lots"], "pipeline.devices: Invalid type. Expected: integer, given: string"),
        (["--set", "pipeline.stages.asr.minReplicas=-1"], "pipeline.stages.asr.minReplicas: Must be greater than or equal to 0"),
        (["--set", "pipeline.stages.whisper.maxReplicas=2"], "Additional property whisper is not allowed"),
        (["--set", "redis.external.url=http://nope"], "redis.external.url: Does not match pattern"),
        (["--set", "operator.logLevel=LOUD"], "operator.logLevel must be one of the following"),
        (["--set", "operator.replicas=0"], "operator.replicas: Must be greater than or equal to 1"),
        (["--set", "operator.leaderElection.peeringName=Not_A_Name"], "operator.leaderElection.peeringName: Does not match pattern"),
        (["--set-json", 'pipeline.llmProviders=[{"name":"q","apiKey":"sk-123"}]'], "Additional property apiKey is not allowed"),
    ],
)  # fmt: skip
def test_schema_refuses_bad_values_with_a_clear_error(args: list[str], message: str) -> None:
    result = helm("template", "vp", str(CHART), *args, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert "values don't meet the specifications of the schema" in result.stderr
    assert "sk-123" not in result.stderr  # a refused key is not echoed back


def test_pods_run_cli_commands_with_the_chart_service_accounts() -> None:
    docs = render()
    operator = one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]
    container = operator["containers"][0]
    assert cli_parses(container["command"])
    assert container["command"][container["command"].index("--namespace") + 1] == "voice"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (
        env["VP_OPERATOR_IMAGE"] == yaml.safe_load((CHART / "values.yaml").read_text())["image"]["services"]
    )
    assert env["VP_OPERATOR_RESYNC_SECONDS"] == "60" and env["VP_OPERATOR_PROMETHEUS_URL"] == ""
    assert env["VP_OPERATOR_METRICS_PORT"] == "8081"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": 8080, "metrics": 8081}
    prometheus = "http://prometheus-operated.monitoring:9090"
    pod = one(render("--set", f"operator.prometheusUrl={prometheus}"), "Deployment", "-operator")["spec"][
        "template"
    ]["spec"]
    assert {"name": "VP_OPERATOR_PROMETHEUS_URL", "value": prometheus} in pod["containers"][0]["env"]
    assert operator["securityContext"]["runAsNonRoot"] is True
    binding = one(docs, "RoleBinding", "-operator")
    assert binding["subjects"][0]["name"] == operator["serviceAccountName"] == one(docs, "ServiceAccount", "voice-pipeline")["metadata"]["name"]  # fmt: skip
    job = one(docs, "Job", "-cleanup")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    cleanup = job["spec"]["template"]["spec"]
    assert cli_parses(cleanup["containers"][0]["command"])
    assert "app.kubernetes.io/instance=vp" in cleanup["containers"][0]["command"]
    hook_binding = one(docs, "RoleBinding", "-cleanup")
    assert hook_binding["subjects"][0]["name"] == cleanup["serviceAccountName"]
    # Only the Job is a hook: its RBAC belongs to the release, so a failed hook leaves nothing behind.
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    assert "hook-failed" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    assert all("helm.sh/hook" not in (one(docs, k, "-cleanup")["metadata"].get("annotations") or {})
               for k in ("ServiceAccount", "Role", "RoleBinding"))  # fmt: skip


def test_rbac_is_namespaced_and_least_privilege() -> None:
    docs = render()
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    rules = one(docs, "Role", "-operator")["rules"]
    granted = {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert not any("*" in item for item in granted)
    assert not any(r in ("secrets", "pods", "clusterroles", "clusterrolebindings") for _, r, _ in granted)
    # Exactly what the operator does: kopf watches/patches VoicePipelines and their status, posts
    # Events; reconcile GETs and server-side-applies (PATCH, authorized as create when it creates) what it owns,
    # including each gateway's ServiceAccount, Role and RoleBinding (never "bind" or "escalate": the
    # API server lets it grant only what it holds, and the gateway Role is a `get` it holds).
    owned = {
        ("apps", "deployments"),
        ("", "services"),
        ("", "configmaps"),
        ("policy", "poddisruptionbudgets"),
        ("", "serviceaccounts"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
    }
    assert not any(v in ("bind", "escalate", "impersonate") for _, _, v in granted)
    for group, resource in owned:
        assert {v for g, r, v in granted if (g, r) == (group, resource)} == {"get", "create", "patch"}, (
            resource
        )
    assert {v for g, r, v in granted if r == "voicepipelines"} == {"get", "list", "watch", "patch"}
    assert {v for g, r, v in granted if r == "events"} == {"create"}
    # Leader election: the pre-flight GET, kopf's list/watch and keep-alive PATCH of the KopfPeering.
    assert {v for g, r, v in granted if (g, r) == ("kopf.dev", "kopfpeerings")} == {
        "get",
        "list",
        "watch",
        "patch",
    }
    assert not any(r == "clusterkopfpeerings" for _, r, _ in granted)


def test_without_the_operator_no_rbac_is_rendered() -> None:
    kinds = {d["kind"] + "/" + d["metadata"]["name"] for d in render("--set", "operator.enabled=false")}
    assert (
        "Deployment/vp-voice-pipeline-operator" not in kinds
        and "Role/vp-voice-pipeline-operator" not in kinds
    )


def test_calibrated_cost_profile_reaches_the_operator(tmp_path: Path) -> None:
    profile = ROOT / "operator" / "voice_operator" / "data" / "cost-profile.json"
    docs = render("--set-file", f"operator.costProfile={profile}")
    data = one(docs, "ConfigMap", "-cost-profile")["data"]["cost-profile.json"]
    copy = tmp_path / "cost-profile.json"
    copy.write_text(data)
    assert load_profile(copy) == load_profile(profile)
    pod = one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "cost-profile")
    assert env["VP_OPERATOR_PROFILE"] == f"{mount['mountPath']}/cost-profile.json"


def test_crds_folder_renders_the_source_of_truth() -> None:
    docs = render("--include-crds")
    crd = one(docs, "CustomResourceDefinition", "voicepipelines.voice.pipeline.dev")
    assert crd == yaml.safe_load((ROOT / "crds" / "voicepipeline.yaml").read_text())
    peering = [d for d in yaml.safe_load_all((ROOT / "crds" / "kopf-peering.yaml").read_text()) if d]
    crds = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert [crds[d["metadata"]["name"]] for d in peering] == peering and len(crds) == 3
    assert {d["spec"]["names"]["kind"]: d["spec"]["scope"] for d in peering} == {
        "KopfPeering": "Namespaced",
        "ClusterKopfPeering": "Cluster",
    }


def _operator_command(docs: list[Doc]) -> list[str]:
    return list(one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]["command"])


def test_leader_election_runs_replicas_on_the_release_peering() -> None:
    docs = render()
    deployment = one(docs, "Deployment", "-operator")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    command = _operator_command(docs)
    assert cli_parses(command) and "--standalone" not in command
    peering = one(docs, "KopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert command[command.index("--peering") + 1] == peering["metadata"]["name"] == "vp-voice-pipeline"
    assert command[command.index("--peering-lifetime") + 1] == "30"
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env
    pdb = one(docs, "PodDisruptionBudget", "-operator")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    named = render("--set", "operator.leaderElection.peeringName=ops", "--set", "operator.replicas=3")
    assert one(named, "KopfPeering")["metadata"]["name"] == "ops" and "--peering" in _operator_command(named)
    assert _operator_command(named)[_operator_command(named).index("--peering") + 1] == "ops"
    assert one(named, "Deployment", "-operator")["spec"]["replicas"] == 3
    single = render("--set", "operator.replicas=1")
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"]  # a PDB on 1 Pod blocks drains
    assert one(single, "KopfPeering") and "--peering" in _operator_command(single)


def test_without_leader_election_one_standalone_replica() -> None:
    docs = render("--set", "operator.leaderElection.enabled=false", "--set", "operator.replicas=3")
    deployment = one(docs, "Deployment", "-operator")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    command = _operator_command(docs)
    assert cli_parses(command) and "--standalone" in command and "--peering" not in command
    assert not [d for d in docs if d["kind"] in ("KopfPeering", "PodDisruptionBudget")]
    rules = one(docs, "Role", "-operator")["rules"]
    assert not [r for r in rules if "kopf.dev" in r["apiGroups"]]


def test_monitoring_objects_follow_the_available_apis() -> None:
    plain = {d["kind"] for d in render()}
    assert "ServiceMonitor" not in plain and "PrometheusRule" not in plain
    apis = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor", "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]  # fmt: skip
    docs = render(*apis)
    monitor = one(docs, "ServiceMonitor", "voice-pipeline")
    # It selects the Services the operator creates for each stage, by their port name.
    owner = manifests.Owner("vp-voice-pipeline", "voice", "uid")
    service = manifests.service(owner, "asr")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    operator_monitor, operator_service = (
        one(docs, "ServiceMonitor", "-operator"),
        one(docs, "Service", "-operator"),
    )
    assert (
        operator_monitor["spec"]["selector"]["matchLabels"].items()
        <= operator_service["metadata"]["labels"].items()
    )
    assert operator_monitor["spec"]["endpoints"][0]["port"] == operator_service["spec"]["ports"][0]["name"]
    rule = one(docs, "PrometheusRule")
    assert len(rule["spec"]["groups"][0]["rules"]) == 5


def test_alert_rules_pass_promtool_and_carry_the_thresholds(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus (make deps-debian does)"
    docs = render(
        "--set-json",
        "monitoring.rules.asrP95Seconds=0.75",
        "--set-json",
        "monitoring.rules.cacheHitRatio=0.2",
    )
    rules = one(docs, "ConfigMap", "-alert-rules")
    path = tmp_path / "rules.yaml"
    path.write_text(rules["data"]["voice-pipeline.rules.yaml"])
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "SUCCESS: 5 rules found" in result.stdout, result.stdout + result.stderr
    text = path.read_text()
    assert "> 0.75" in text and "< 0.2" in text and "> 0.85" in text and "> 0.8" in text and "> 0.02" in text
    # The PrometheusRule carries the same groups as the checked file.
    operator_rule = one(render("--api-versions", "monitoring.coreos.com/v1/PrometheusRule"), "PrometheusRule")
    plain_rules = one(render(), "ConfigMap", "-alert-rules")["data"]["voice-pipeline.rules.yaml"]
    assert operator_rule["spec"] == yaml.safe_load(plain_rules)


def test_a_broken_rule_fails_promtool(tmp_path: Path) -> None:
    """The promtool check above can fail: a rule with a syntax error is refused."""
    promtool = shutil.which("promtool")
    assert promtool
    path = tmp_path / "bad.yaml"
    path.write_text("groups:\n- name: x\n  rules:\n  - alert: Bad\n    expr: sum(rate(x[5m]) >\n")
    assert (
        subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, check=False).returncode
        != 0
    )


def test_dashboard_is_valid_grafana_json_over_contract_metrics() -> None:
    dashboard = one(render(), "ConfigMap", "-dashboard")
    body = json.loads(dashboard["data"]["voice-pipeline.json"])
    exprs = " ".join(t["expr"] for p in body["panels"] for t in p["targets"])
    for metric in (c.METRIC_SESSIONS, c.METRIC_LATENCY, c.METRIC_BUSY, c.METRIC_BATCH_SIZE, c.METRIC_CACHE,
                   c.METRIC_QUEUE_WAIT, c.METRIC_E2E_FIRST_AUDIO, c.METRIC_REQUESTS, c.METRIC_TURN_STEP):  # fmt: skip
        assert metric in exprs, metric
    from voice_operator import autoscale_handler

    for metric in (autoscale_handler.ACTIONS, autoscale_handler.SATURATION):  # the operator's own metrics
        assert metric._name in exprs, metric._name
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


class _Gateway(BaseHTTPRequestHandler):
    """Answers like the gateway: /readyz, and OTA through the gateway's own OTA function."""

    ready = True

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(200 if self.ready else 503, {"ready": self.ready})

    def do_POST(self) -> None:
        from voice_pipeline.gateway.auth import AuthSettings
        from voice_pipeline.gateway.ota import OtaSettings, build_ota_response

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = build_ota_response(
            dict(self.headers), body, OtaSettings(), AuthSettings(), "ws://gw:8000/xiaozhi/v1/", 0.0
        )
        self._answer(200, reply)

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def gateway() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    _Gateway.ready = True


def test_helm_test_pod_checks_the_gateway_the_operator_creates(gateway: ThreadingHTTPServer) -> None:
    pod = one(render(), "Pod", "-test-gateway")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    command = pod["spec"]["containers"][0]["command"]
    owner = manifests.Owner("vp-voice-pipeline", "voice", "uid")
    gateway_service = manifests.service(owner, "gateway")
    assert (
        command[-1]
        == f"http://{gateway_service['metadata']['name']}:{gateway_service['spec']['ports'][0]['port']}"
    )
    # Run the Pod's own command here against a server answering like the gateway.
    local = [sys.executable, *command[1:-1], f"http://127.0.0.1:{gateway.server_address[1]}"]
    ok = subprocess.run(local, capture_output=True, text=True, timeout=30, check=False)
    assert ok.returncode == 0 and "/xiaozhi/v1/" in ok.stdout, ok.stdout + ok.stderr
    _Gateway.ready = False
    assert subprocess.run(local, capture_output=True, timeout=30, check=False).returncode != 0


def test_llm_provider_keys_go_from_values_to_mounted_secrets() -> None:
    """values -> VoicePipeline -> the operator's llm Deployment: the key is a mounted Secret, the
    values and every rendered object hold only the Secret's name."""
    providers = '[{"name":"qwen","type":"openai","baseUrl":"https://dashscope.example/v1","model":"qwen-plus","apiKeySecret":{"name":"llm-keys","key":"qwen"}}]'
    docs = render("--set-json", f"pipeline.llmProviders={providers}")
    spec = one(docs, "VoicePipeline")["spec"]
    assert spec["stages"]["llm"]["providers"][0]["apiKeySecret"] == {"name": "llm-keys", "key": "qwen"}
    parsed = parse_spec(spec)
    owner = manifests.Owner("vp-voice-pipeline", "voice", "uid")
    objects = manifests.desired_objects(
        owner, make_plan(parsed, load_profile()), "img", "", "policy/v1", parsed.stages.llm.providers
    )
    llm = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-llm"))
    volumes = llm["spec"]["template"]["spec"].get("volumes", [])
    assert any(v.get("secret", {}).get("secretName") == "llm-keys" for v in volumes), volumes
    # The only Secret the chart makes is the stage services' own random token, never a provider key.
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"] == ["vp-voice-pipeline-stage-auth"]


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_every_rendered_pod_is_restricted(values: Path) -> None:
    """The "restricted" Pod Security Standard for every Pod the chart renders (operator, Redis, the
    cleanup hook, the helm test Pod), in every scenario."""
    from tests.pod_security import pod_spec_of, violations

    docs = render("-f", str(values))
    pods = [(f"{d['kind']}/{d['metadata']['name']}", pod_spec_of(d)) for d in docs]
    pods = [(name, spec) for name, spec in pods if spec is not None]
    assert pods, "no Pod rendered"
    for name, spec in pods:
        assert violations(spec) == [], name
        assert spec.get("enableServiceLinks") is False, name  # VP_* service variables would be refused
