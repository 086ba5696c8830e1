"""The closed loop on real parts: load -> metrics -> Prometheus -> operator -> API server.

- the real stage services (`voice-pipeline serve gateway|vad|asr|llm|tts`, one process each, the
  gateway pointed at the others), driven by real simulated devices (`voice-pipeline simulate`);
- a real Prometheus (Debian's binary) scraping them every second, with the labels a ServiceMonitor
  on the stage Services gives (`namespace`, `service`), and scraping the operator's own /metrics;
- the real operator process against the real API server (tests/e2e/cluster.py), with short windows.

There is no kubelet here: the replicas the operator adds never run, so the measured load does not
spread over them. The test asserts the decisions and the objects (Deployment replicas, Events,
status.observed, the decision counter), not the effect of the new pods. ASR is made the
bottleneck cheaply by giving it a small CPU allotment (stages.asr.cpu: 50m); the SLO is set wide
(60 s) so that the other stages' latencies on this contended 2-core machine stay inside their share.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..integration.services import Process, launch, stop, wait_ready
from .cluster import Cluster, free_port
from .test_operator import get, vp, wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "tests" / "fixtures" / "en_weather.wav"
NAME = "loop"
DEVICES = 3
STABILIZATION_S = 20
MIN_LOAD_S = 25.0


@dataclass
class Proc:
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT
        )
    return Proc(process, log)


def wait_http(url: str, proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise RuntimeError(f"{proc.process.args!r} exited with {proc.process.returncode}:\n{proc.tail()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s:\n{proc.tail()}")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Process]]:
    """The five stage services (`voice-pipeline serve <stage>`), the gateway pointed at the others.
    No Redis: stage services then run without caches, so every utterance is real ASR work."""
    tmp = tmp_path_factory.mktemp("stages")
    extra = {"llm": {"VP_LLM__FIRST_TOKEN_TIMEOUT_S": "90", "VP_LLM__MAX_TOKENS": "12"}}
    stages = {stage: launch(tmp, stage, extra.get(stage, {})) for stage in ("vad", "asr", "llm", "tts")}
    try:
        wait_ready(list(stages.values()))
        urls = {f"VP_STAGES__{s.upper()}_URL": p.http for s, p in stages.items()}
        stages["gateway"] = launch(tmp, "gateway", urls)
        wait_ready([stages["gateway"]])
        yield stages
    finally:
        for process in stages.values():
            stop(process)


@dataclass
class Loop:
    prometheus: str
    operator: Proc
    prometheus_process: Proc
    timeline: list[tuple[float, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def mark(self, what: str) -> None:
        self.timeline.append((time.monotonic() - self.started, what))
        print(f"[{self.timeline[-1][0]:6.1f} s] {what}", flush=True)

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
        return list(body["data"]["result"])


@pytest.fixture
def loop(kube: Cluster, namespace: str, services: dict[str, Process], tmp_path: Path) -> Iterator[Loop]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus binary is missing: `make deps-debian` installs Debian's prometheus")
    prom_port, ops_port = free_port(), free_port()
    # Each stage service with the labels a ServiceMonitor on its Service gives (the operator's
    # default selector), plus the operator's own /metrics.
    jobs = "".join(
        f"""- job_name: {stage}
  static_configs:
  - targets: ["{p.host}:{p.port}"]
    labels: {{namespace: "{namespace}", service: "{NAME}-{stage}"}}
"""
        for stage, p in services.items()
    )
    (tmp_path / "prometheus.yml").write_text(f"""global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
{jobs}- job_name: operator
  static_configs:
  - targets: ["127.0.0.1:{ops_port}"]
""")
    prometheus = spawn([binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"], tmp_path / "prometheus.log")  # fmt: skip
    operator: Proc | None = None
    try:
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready", prometheus, 30)
        operator = spawn(
            [sys.executable, "-m", "voice_pipeline.cli", "operator", "--namespace", namespace, "--standalone",
             "--liveness", f"http://127.0.0.1:{free_port()}/healthz",
             "--prometheus-url", f"http://127.0.0.1:{prom_port}", "--metrics-port", str(ops_port)],
            tmp_path / "operator.log",
            {"KUBECONFIG": str(kube.kubeconfig), "VP_OPERATOR_RESYNC_SECONDS": "5",
             "VP_OPERATOR_AUTOSCALE_TICK_SECONDS": "1", "VP_OPERATOR_METRICS_ADDR": "127.0.0.1"},
        )  # fmt: skip
        yield Loop(f"http://127.0.0.1:{prom_port}", operator, prometheus)
    finally:
        if operator is not None:
            operator.stop()
            print("--- operator log (tail) ---\n" + operator.tail(4000))
        prometheus.stop()


MANIFEST = f"""apiVersion: voice.pipeline.dev/v1alpha1
kind: VoicePipeline
metadata: {{name: {NAME}}}
spec:
  devices: 2
  nodeSize: 4c8g
  slo: {{endToEndP95Ms: 60000}}
  stages:
    asr: {{cpu: 50m, maxReplicas: 4}}
  autoscaling:
    enabled: true
    intervalSeconds: 5
    scaleDownStabilizationSeconds: {STABILIZATION_S}
    metricsWindowSeconds: 10
"""


def autoscaler_events(kube: Cluster, ns: str) -> list[dict[str, Any]]:
    items = get(kube, ns, "events")["items"]
    reasons = {
        "ScaledUp",
        "ScaledDown",
        "Rebalanced",
        "BatchSizeRaised",
        "BatchSizeRestored",
        "CapacityInsufficient",
    }
    events = [e for e in items if e.get("reason") in reasons and e["involvedObject"].get("name") == NAME]
    return sorted(events, key=lambda e: e.get("firstTimestamp") or e.get("eventTime") or "")


def asr_replicas(kube: Cluster, ns: str) -> int:
    return int(get(kube, ns, "deployment", f"{NAME}-asr")["spec"]["replicas"])


def test_load_scales_the_bottleneck_up_and_back_down(
    kube: Cluster, namespace: str, services: dict[str, Process], loop: Loop, tmp_path: Path
) -> None:
    assert kube.kubectl("-n", namespace, "apply", "-f", "-", input=MANIFEST).returncode == 0
    initial = int(wait_for("the planned asr Deployment", lambda: asr_replicas(kube, namespace), timeout=60))
    observed = wait_for(
        "a first observation",
        lambda: (vp(kube, namespace, NAME).get("status", {}).get("observed") or {}).get("prometheus", "").startswith(("ok", "partial")) and vp(kube, namespace, NAME)["status"]["observed"],
        timeout=60,
    )  # fmt: skip
    loop.mark(
        f"pipeline planned (asr {initial} replica(s)); operator observes: prometheus {observed['prometheus']!r}"
    )
    assert autoscaler_events(kube, namespace) == [], "no action before any load"

    devices = [
        spawn([sys.executable, "-m", "voice_pipeline.cli", "simulate", "--url", services["gateway"].ws,
               "--clip", str(CLIP), "--turns", "500", "--think-seconds", "0.3", "--timeout", "60", "--json"],
              tmp_path / f"device-{i}.log", {"PYTHONUNBUFFERED": "1"})  # each turn's JSON line as it happens
        for i in range(DEVICES)
    ]  # fmt: skip
    loop.mark(f"load start: {DEVICES} simulated devices talking")
    load_start = loop.timeline[-1][0]
    seen_bottleneck: set[str] = set()
    try:

        def scaled_up() -> int:
            status = vp(kube, namespace, NAME).get("status", {})
            seen_bottleneck.add((status.get("observed") or {}).get("bottleneck", ""))
            replicas = asr_replicas(kube, namespace)
            return replicas if replicas > initial else 0

        peak = int(wait_for("asr replicas to rise under load", scaled_up, timeout=240))
        loop.mark(f"first scale-up: asr {initial} -> {peak} replicas")

        def reported() -> Any:
            status = vp(kube, namespace, NAME)["status"]
            observed = status.get("observed") or {}
            seen_bottleneck.add(observed.get("bottleneck", ""))
            acted = any(a.split(" ", 1)[1].startswith("asr ") for a in observed.get("lastActions", []))
            return acted and status

        status = wait_for("status.observed to record the step", reported)  # written just after the apply
        observed = status["observed"]
        # status.observed named ASR the bottleneck under load (after the step it may name another).
        assert "asr" in seen_bottleneck, (seen_bottleneck, observed)
        assert observed["activeDevices"] >= 1 and observed["saturation"]["asr"] > 0, observed
        assert status["autoscaling"]["stages"]["asr"]["replicas"] >= peak
        up = wait_for(
            "the ScaledUp Event",
            lambda: [
                e
                for e in autoscaler_events(kube, namespace)
                if e["reason"] == "ScaledUp" and e["message"].startswith("asr ")
            ],
        )
        assert up[0]["message"].startswith(f"asr {initial} -> "), up[0]["message"]
        loop.mark(f"event ScaledUp: {up[0]['message']}")
        # More load (MIN_LOAD_S in all): the decisions that follow must hold the step, not undo it.
        time.sleep(max(3.0, MIN_LOAD_S - (time.monotonic() - loop.started - load_start)))
        peak = asr_replicas(kube, namespace)
        assert peak <= 4, "maxReplicas bounds the autoscaler"
    finally:
        for d in devices:
            d.stop()
    loop.mark(f"load stop (asr at {peak} replicas)")
    turns = [
        json.loads(line)
        for d in devices
        for line in d.log.read_text(errors="replace").splitlines()
        if line.startswith("{")
    ]
    # The load was real work: utterances reached the ASR service (whole turns are slow on a shared
    # 2-core box, so completed turns are reported, not required).
    transcribed = loop.query(
        f'sum(voice_stage_requests_total{{namespace="{namespace}",stage="asr",outcome="ok"}})'
    )
    assert transcribed and float(transcribed[0]["value"][1]) >= 1, devices[0].tail()

    def fell_back() -> bool:
        nonlocal peak
        replicas = asr_replicas(kube, namespace)
        peak = max(peak, replicas)  # the rate window still holds load for a while after it stops
        return replicas == initial

    wait_for("asr replicas to fall back after the window", fell_back, timeout=180)
    loop.mark(f"scale-down: asr {peak} -> {initial} replica(s)")
    down = wait_for(
        "the ScaledDown Event",
        lambda: [
            e
            for e in autoscaler_events(kube, namespace)
            if e["reason"] == "ScaledDown" and e["message"].startswith("asr ")
        ],
    )
    loop.mark(f"event ScaledDown: {down[-1]['message']}")
    # Scale-down waited out the stabilization window after the last change, and came after the load.
    first_up = next(t for t, what in loop.timeline if what.startswith("first scale-up"))
    load_stop = next(t for t, what in loop.timeline if what.startswith("load stop"))
    scale_down = next(t for t, what in loop.timeline if what.startswith("scale-down"))
    assert scale_down - first_up >= STABILIZATION_S and scale_down > load_stop

    # The operator's own metric of its decisions, scraped by the same Prometheus.
    def counted() -> dict[str, float]:
        rows = loop.query(
            f'sum by (action) (voice_operator_autoscaler_actions_total{{namespace="{namespace}",stage="asr"}})'
        )
        found = {r["metric"]["action"]: float(r["value"][1]) for r in rows}
        return found if found.get("scale_up") == ups and found.get("scale_down") == downs else {}

    # One count per action: as many as the Events say.
    events = [e for e in autoscaler_events(kube, namespace) if e["message"].startswith("asr ")]
    ups = sum(int(e.get("count") or 1) for e in events if e["reason"] == "ScaledUp")
    downs = sum(int(e.get("count") or 1) for e in events if e["reason"] == "ScaledDown")
    actions = wait_for("the decision counter in Prometheus", counted, timeout=30)
    assert actions["scale_up"] >= 1 and actions["scale_down"] >= 1
    final = vp(kube, namespace, NAME)["status"]
    print("\n--- timeline ---")
    for t, what in loop.timeline:
        print(f"{t:7.1f} s  {what}")
    print(
        f"--- {len(turns)} device turns completed, {float(transcribed[0]['value'][1]):.0f} utterances transcribed; "
        f"asr cost observed: {final['observed'].get('costs', {}).get('asr')}"
    )
    print("--- autoscaler Events ---")
    for e in autoscaler_events(kube, namespace):
        print(
            f"{e.get('firstTimestamp') or e.get('eventTime')}  {e['reason']}  x{e.get('count', 1)}  {e['message']}"
        )
    print("--- status.observed ---\n" + json.dumps(final["observed"], indent=1))
    assert any(a.endswith(up[0]["message"]) for a in final["observed"]["lastActions"]), final["observed"]
    print(f"--- decision counter (Prometheus): {actions}")

    # Prometheus down: a reported state and a Warning, no action, no error loop.
    loop.prometheus_process.stop()
    down = wait_for(
        "status.observed to report Prometheus down",
        lambda: (o := vp(kube, namespace, NAME)["status"]["observed"])["prometheus"].startswith("down") and o,
        timeout=60,
    )
    loop.mark(f"prometheus stopped: status.observed.prometheus {down['prometheus']!r}")
    assert wait_for(
        "the MetricsUnavailable Event",
        lambda: [
            e for e in get(kube, namespace, "events")["items"] if e.get("reason") == "MetricsUnavailable"
        ],
    )
    time.sleep(6)  # another decision round without metrics
    # Rounds are not Events (kopf posts each handler success; the loops are daemons): only decisions are.
    ticks = [
        e
        for e in get(kube, namespace, "events")["items"]
        if e.get("message", "").startswith(("Timer ", "Daemon ", "Handler 'autoscal"))
    ]
    assert ticks == [], ticks[:1]
    assert asr_replicas(kube, namespace) == initial and loop.operator.process.poll() is None
