"""The closed loop on running Pods: load rises, the operator finds the bottleneck, a new replica
starts and takes work, latency comes back under the SLO; load falls, a replica drains and goes, and
no device notices.

Everything is real: the chart installed with the built images on the local node (operator Pods with
leader election, five stage Pods, Redis), a Prometheus (Debian's) that discovers the stage Pods
through the API from the chart's scrape annotations, labelled as charts/voice-pipeline/files/
prometheus-scrape.yaml does (not static targets), stages with real CPU limits (ASR gets 200m, so a
handful of devices saturate one replica), and the fleet simulator's per-turn results as the
evidence that no device noticed. The LLM provider is emulated (`voice-pipeline emulate llm`, a Pod).

Only on the local node cluster: the operator Pods reach the Prometheus this test starts on the
host's bridge address.

NOT part of `make test` yet (`make e2e-closed-loop` runs it): in 3 runs it passed once; the other
two timed out waiting for every asr replica to serve, while the autoscaler scaled asr back in
("peak CPU 0 over 30 s") with the 8 devices still talking and plan/autoscaler writes to the asr
Deployment alternated (Applied/Restored Events). Those are the defects this test exists to catch.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from voice_pipeline.devcluster.cluster import free_port
from voice_pipeline.devcluster.dns import scrape_targets
from voice_pipeline.simulator.fleet import Fleet, FleetConfig, default_clip_paths, load_clips
from voice_pipeline.simulator.stats import TurnRecord, percentile

from .cluster import Cluster
from .test_operator import get, wait_for
from .test_pods import (
    CHART,
    EMULATOR,
    FULLNAME,
    RELEASE,
    all_ready,
    helm,
    install_args,
    n_failed,
    pod_problems,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("VP_E2E_CLOSED_LOOP"),
        reason="make e2e-closed-loop (not yet reliable, see the docstring)",
    ),
]
ROOT = Path(__file__).resolve().parents[2]
SLO_MS = 3000
HEAVY_DEVICES = 8
LIGHT_DEVICES = 2
STABILIZATION_S = 30
ASR = f"{FULLNAME}-asr"


class Prometheus:
    """Debian's Prometheus on the host's bridge address (the operator Pods query it), scraping the
    Pods the API lists with the chart's scrape annotations, every 2 s. Debian builds Prometheus
    without Kubernetes service discovery, so a thread does that discovery through the API and hands
    Prometheus file_sd targets labelled as charts/voice-pipeline/files/prometheus-scrape.yaml would."""

    def __init__(self, kube: Cluster, namespace: str, work: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("the prometheus binary is missing: `make deps-debian` installs Debian's prometheus")
        self.targets = work / "targets.json"
        self.targets.write_text("[]")
        self._stop = threading.Event()
        self._discovery = threading.Thread(target=self._discover, args=(kube, namespace), daemon=True)
        self._discovery.start()
        config = {
            "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
            "scrape_configs": [
                {
                    "job_name": "voice-pipeline-pods",
                    "file_sd_configs": [{"files": [str(self.targets)], "refresh_interval": "2s"}],
                }
            ],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        bridge = kube.server.split("//")[1].rsplit(":", 1)[0]
        port = free_port(bridge)
        self.url = f"http://{bridge}:{port}"
        self.log = work / "prometheus.log"
        self.process = subprocess.Popen(
            [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
             f"--web.listen-address={bridge}:{port}", "--log.level=warn"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for("Prometheus ready", lambda: self._ready(), timeout=30)

    def _discover(self, kube: Cluster, namespace: str) -> None:
        while not self._stop.wait(1.0):
            listed = kube.kubectl("-n", namespace, "get", "pods", "-o", "json", check=False)
            if listed.returncode == 0:
                groups = scrape_targets(json.loads(listed.stdout)["items"])
                tmp = self.targets.with_suffix(".tmp")
                tmp.write_text(json.dumps(groups))
                tmp.replace(self.targets)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        return list(body["data"]["result"])

    def stop(self) -> None:
        self._stop.set()
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Load:
    """A fleet in a thread; its TurnRecords are the evidence."""

    def __init__(self, url: str, devices: int, duration_s: float, seed: int) -> None:
        config = FleetConfig(
            url=url, devices=devices, duration_s=duration_s, ramp_s=4, seed=seed, turn_timeout_s=30
        )
        self.fleet = Fleet(config, load_clips(default_clip_paths()))
        self.result: dict[str, Any] = {}
        self.started = time.monotonic()
        self.thread = threading.Thread(target=lambda: self.result.update(asyncio.run(self.fleet.run())))
        self.thread.start()

    def records_after(self, t: float) -> list[TurnRecord]:
        """Turns started after monotonic time t."""
        return [r for r in list(self.fleet.records) if self.started + r.started_s >= t]

    def join(self) -> dict[str, Any]:
        self.thread.join(timeout=300)
        assert not self.thread.is_alive()
        return self.result


def failed(records: list[TurnRecord]) -> list[str]:
    return [f"device {r.device} at {r.started_s:.0f} s: {r.error}" for r in records if not r.ok]


def p95_first_audio(records: list[TurnRecord]) -> float | None:
    return percentile([float(r.first_audio_ms) for r in records if r.ok and r.first_audio_ms is not None], 95)


def test_load_scales_asr_out_and_back_in_with_no_device_noticing(
    kube: Cluster, pods_namespace: str, tmp_path: Path
) -> None:
    if kube.kind != "local-node":
        pytest.skip(
            "the operator Pods must reach a Prometheus this test starts on the host: the local node only"
        )
    ns = pods_namespace
    timeline: list[str] = []
    t0 = time.monotonic()

    def mark(what: str) -> float:
        now = time.monotonic()
        timeline.append(f"{now - t0:6.1f} s  {what}")
        print(timeline[-1], flush=True)
        return now

    prometheus = Prometheus(kube, ns, tmp_path)
    try:
        assert kube.kubectl("-n", ns, "apply", "-f", "-", input=EMULATOR, check=False).returncode == 0
        helm(
            kube, "install", RELEASE, str(CHART), *install_args(kube, ns, 4),
            "--set", f"operator.prometheusUrl={prometheus.url}", "--set", f"pipeline.sloP95Ms={SLO_MS}",
            "--set-json", 'pipeline.stages={"tts": {"engine": "piper"}, "asr": {"cpu": "200m", "maxReplicas": 3}}',
            "--set", "pipeline.autoscaling.intervalSeconds=5",
            "--set", f"pipeline.autoscaling.scaleDownStabilizationSeconds={STABILIZATION_S}",
            "--set", "pipeline.autoscaling.metricsWindowSeconds=10",
        )  # fmt: skip
        wait_for("every Pod Ready", lambda: all_ready(kube, ns), timeout=600)
        assert get(kube, ns, "deployment", ASR)["spec"]["replicas"] == 1
        mark("installed: asr 1 replica (200m), Prometheus discovering the stage Pods")
        wait_for(
            "Prometheus scraping all five stages",
            lambda: (
                len({s["metric"]["service"] for s in prometheus.query(f'up{{namespace="{ns}"}} == 1')}) >= 5
            ),
            timeout=60,
        )
        port = get(kube, ns, "service", "devices")["spec"]["ports"][0]["nodePort"]
        url = f"ws://127.0.0.1:{port}/xiaozhi/v1/"

        heavy = Load(url, HEAVY_DEVICES, 200, seed=11)
        load_start = mark(f"load: {HEAVY_DEVICES} devices")
        replicas = wait_for(
            "the operator to scale asr out",
            lambda: (r := get(kube, ns, "deployment", ASR)["spec"]["replicas"]) > 1 and r,
            timeout=120,
        )
        decided = mark(f"decision: asr 1 -> {replicas} replicas")
        events = get(kube, ns, "events", "--field-selector", "involvedObject.kind=VoicePipeline")["items"]
        scaled = [e["message"] for e in events if e["reason"] == "ScaledUp"]
        assert any(m.startswith("asr ") for m in scaled), scaled  # (other stages may scale too: tts did)
        wait_for(
            "the new asr replicas Ready",
            lambda: get(kube, ns, "deployment", ASR)["status"].get("readyReplicas") == replicas,
            timeout=180,
        )
        ready = mark(f"new asr Pods Ready ({replicas})")

        def served_by_every_replica() -> dict[str, float] | None:
            """Every Ready asr Pod (not one being replaced: a replan may roll them) took work lately."""
            rows = prometheus.query(
                f'sum by (pod) (increase(voice_stage_requests_total{{namespace="{ns}",service="{ASR}",outcome="ok"}}[20s]))'
            )
            served = {r["metric"]["pod"]: float(r["value"][1]) for r in rows}
            ready = [
                p["metadata"]["name"]
                for p in get(kube, ns, "pods", "-l", "app.kubernetes.io/component=asr")["items"]
                if not p["metadata"].get("deletionTimestamp")
                and any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in p["status"].get("conditions") or []
                )
            ]
            if len(ready) < 2 or not all(served.get(name, 0) > 0 for name in ready):
                return None
            return {name: served[name] for name in ready}

        per_pod = wait_for(
            "every asr replica serving (its request counter rising)", served_by_every_replica, timeout=150
        )
        serving = mark(
            f"every asr replica serves: {', '.join(f'{p[-5:]} +{v:.0f}' for p, v in sorted(per_pod.items()))}"
        )

        def under_slo() -> float | None:
            recent = [r for r in heavy.records_after(serving) if r.ok]
            p95 = p95_first_audio(recent)
            return p95 if len(recent) >= 6 and p95 is not None and p95 < SLO_MS else None

        p95 = wait_for(f"p95 first audio back under {SLO_MS} ms", under_slo, timeout=120)
        mark(f"p95 first audio of turns since then: {p95:.0f} ms (< {SLO_MS})")

        light = Load(url, LIGHT_DEVICES, 220, seed=12)  # keeps talking through the scale-in
        heavy_result = heavy.join()
        stop = mark(f"heavy load stopped: {heavy_result['turns']} turns, {n_failed(heavy_result)} failed")
        assert n_failed(heavy_result) == 0, failed(heavy.fleet.records)

        wait_for(
            "the operator to scale asr back in",
            lambda: get(kube, ns, "deployment", ASR)["spec"]["replicas"] < replicas,
            timeout=STABILIZATION_S + 120,
        )
        mark(f"decision: scale asr in (stabilization {STABILIZATION_S} s)")
        wait_for(
            "the removed asr Pod gone after its drain",
            lambda: (
                len(get(kube, ns, "pods", "-l", "app.kubernetes.io/component=asr")["items"])
                == get(kube, ns, "deployment", ASR)["spec"]["replicas"]
            ),
            timeout=120,
        )
        gone = mark(f"replica gone: asr {get(kube, ns, 'deployment', ASR)['spec']['replicas']} replica(s)")
        light_result = light.join()
        mark(
            f"light load during the scale-in: {light_result['turns']} turns, {n_failed(light_result)} failed"
        )
        assert n_failed(light_result) == 0, failed(light.fleet.records)
        assert light_result["turns"] >= LIGHT_DEVICES * 3
        assert pod_problems(kube, ns) == []
        print(
            f"closed loop: load->decision {decided - load_start:.0f} s, decision->Ready {ready - decided:.0f} s, "
            f"Ready->serving {serving - ready:.0f} s, load stop->replica gone {gone - stop:.0f} s",
            flush=True,
        )
    finally:
        print("\n".join(timeline), flush=True)
        print(
            kube.kubectl(
                "-n",
                ns,
                "get",
                "events",
                "--field-selector",
                "involvedObject.kind=VoicePipeline",
                check=False,
            ).stdout[-3000:]
        )
        prometheus.stop()
        if os.environ.get("VP_E2E_KEEP"):
            print(f"prometheus log: {prometheus.log}")
    helm(kube, "uninstall", RELEASE, "-n", ns, "--timeout", "3m")
