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

Part of `make test` (`make e2e-closed-loop` runs it alone and keeps its report in bench/results/).
Before, it passed 1 run in 3; the causes, each fixed where it was: the fleet replayed 4 clips, so the
ASR cache answered nearly every utterance and asr idled and was rightly scaled in under load (now
every turn's audio is new); busy seconds were wall time (now CPU time); latency over its SLO share,
which a 200m replica has at any load, added replicas and blocked scale-in (now only waiting does);
observed costs from a handful of requests replanned (and rolled asr) every round; and the reconcile
applied stale targets from a lagging watch (Applied/Restored alternating; now one writer per status
field and the autoscaler's newest targets from the memo).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from voice_pipeline.devcluster.cluster import free_port
from voice_pipeline.devcluster.dns import scrape_targets
from voice_pipeline.simulator.device import EncodedClip
from voice_pipeline.simulator.fleet import Fleet, FleetConfig, default_clip_paths
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

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
# One 200m ASR replica computes an utterance in ~1.5 s (0.3 CPU-s): first audio cannot come much
# under 3 s on it even unloaded, so the SLO leaves room for that and not for queueing.
SLO_MS = 4000
# ~0.6 utterances/s at 10 devices: more CPU than one 200m replica has (0.3 CPU-s each), less than two.
HEAVY_DEVICES = 10
HEAVY_S = 200
# The heavy fleet comes online over this long, as a fleet does, so the one 200m asr replica is
# overloaded gradually rather than by ten first turns at once. Over 4 s (then 12 s) the first turns
# met it together: at ~0.45 CPU s a transcription on this contended node (~2.3 s each at 200m) the
# last of them got no transcript within the simulator's 18 s limit, before any scale-out could help
# (docs/closed-loop.md). Over 30 s the replica passes 85% CPU (what the test scales on) at ~6
# devices on this VM and ~8 on a faster one, and the queue from then until the new replica serves
# stays far under 18 s.
HEAVY_RAMP_S = 30
LIGHT_DEVICES = 2
STABILIZATION_S = 30
ASR = f"{FULLNAME}-asr"
# Batch sizes fixed: the loop under test is replicas. A batch-size change rolls the stage's Pods
# (its settings are env), and on a 2-core node shared with the load the queue-wait signal raised and
# restored them every 30 s (asr 1 -> 2 -> 4 -> 1), each time restarting the replicas under load.
PIPELINE = {
    "stages": {
        "tts": {"engine": "piper"},
        "asr": {"cpu": "200m", "maxReplicas": 3, "batchSize": 1},
        "vad": {"batchSize": 1},
    }
}


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


def spoken_clips(variants: int) -> list[EncodedClip]:
    """The default clips at `variants` loudness levels: devices never send the same audio twice,
    but replayed clips would, and the ASR cache (by audio hash) answers those without the model.
    Then ASR work stops after the first few turns and the autoscaler rightly scales it in under a
    load that is not there (the "peak CPU 0" of earlier runs)."""
    from voice_pipeline.common.audio import read_wav, resample
    from voice_pipeline.simulator.device import UPLINK_RATE, encode_clip

    sources = [(path.stem, *read_wav(path)) for path in default_clip_paths()]
    clips = []
    for i in range(variants):
        name, pcm, rate = sources[i % len(sources)]
        gain = 0.6 + 0.4 * i / variants
        louder = np.clip(resample(pcm, rate, UPLINK_RATE).astype(np.float32) * gain, -32768, 32767)
        clips.append(encode_clip(louder.astype(np.int16), f"{name}-{i}", name[:2]))
    random.Random(7).shuffle(clips)
    return clips


class Load:
    """A fleet in a thread; its TurnRecords are the evidence."""

    def __init__(
        self,
        url: str,
        devices: int,
        duration_s: float,
        seed: int,
        clips: list[EncodedClip],
        ramp_s: float = 4,
    ) -> None:
        config = FleetConfig(
            url=url, devices=devices, duration_s=duration_s, ramp_s=ramp_s, seed=seed, turn_timeout_s=30
        )
        self.fleet = Fleet(config, clips)
        self.result: dict[str, Any] = {}
        self.started = time.monotonic()
        self.thread = threading.Thread(target=lambda: self.result.update(asyncio.run(self.fleet.run())))
        self.thread.start()

    def records_after(self, t: float) -> list[TurnRecord]:
        """Turns started after monotonic time t."""
        return [r for r in list(self.fleet.records) if self.started + r.started_s >= t]

    def failed_so_far(self) -> int:
        return sum(1 for r in list(self.fleet.records) if not r.ok)

    def join(self) -> dict[str, Any]:
        self.thread.join(timeout=300)
        assert not self.thread.is_alive()
        return self.result


def failed(records: list[TurnRecord]) -> list[str]:
    return [f"device {r.device} at {r.started_s:.0f} s: {r.error}" for r in records if not r.ok]


def p95_first_audio(records: list[TurnRecord]) -> float | None:
    return percentile([float(r.first_audio_ms) for r in records if r.ok and r.first_audio_ms is not None], 95)


class Replicas:
    """The asr Deployment's replicas, sampled every second in a thread: what it was at any time."""

    def __init__(self, kube: Cluster, ns: str) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(kube, ns), daemon=True)
        self._thread.start()

    def _run(self, kube: Cluster, ns: str) -> None:
        while not self._stop.wait(1.0):
            done = kube.kubectl(
                "-n", ns, "get", "deployment", ASR, "-o", "jsonpath={.spec.replicas}", check=False
            )
            if done.returncode == 0 and done.stdout.strip().isdigit():
                self.samples.append((time.monotonic(), int(done.stdout)))

    def between(self, start: float, end: float) -> list[int]:
        return [n for t, n in self.samples if start <= t <= end]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def planned_vs_used(
    prometheus: Prometheus, ns: str, spec: dict[str, Any], devices: int, start: float, end: float
) -> dict[str, Any]:
    """The capacity model's plan for the test load beside what the stage Pods used while it held
    (CPU from busy seconds, which are CPU seconds; replicas as the autoscaler left them)."""
    from voice_operator.capacity import make_plan
    from voice_operator.profiles import load_profile
    from voice_operator.spec import parse_spec

    plan = make_plan(parse_spec({**spec, "devices": devices}), load_profile())
    seconds = max(10, round(end - start))
    ago = max(0, round(time.monotonic() - end))
    offset = f" offset {ago}s" if ago else ""
    used = {
        r["metric"]["stage"]: float(r["value"][1])
        for r in prometheus.query(
            f'sum by (stage) (increase(voice_stage_busy_seconds_total{{namespace="{ns}"}}[{seconds}s]{offset}))'
        )
    }
    requests = {
        r["metric"]["stage"]: float(r["value"][1])
        for r in prometheus.query(
            f'sum by (stage) (increase(voice_stage_requests_total{{namespace="{ns}",outcome="ok"}}[{seconds}s]{offset}))'
        )
    }
    out: dict[str, Any] = {"devices": devices, "window_s": seconds, "stages": {}}
    for stage, p in plan.stages.items():
        predicted = p.utilization * p.cpu_limit * p.replicas  # cores of demand the model expects
        out["stages"][stage] = {
            "planned_replicas": p.replicas,
            "planned_cpu_cores": round(predicted, 3),
            "used_cpu_cores": None if stage not in used else round(used[stage] / seconds, 3),
            "requests_per_s": None if stage not in requests else round(requests[stage] / seconds, 3),
        }
    return out


def test_load_scales_asr_out_and_back_in_with_no_device_noticing(
    kube: Cluster, pods_namespace: str, tmp_path: Path
) -> None:
    if kube.kind != "local-node":
        pytest.skip(
            "the operator Pods must reach a Prometheus this test starts on the host: the local node only"
        )
    ns = pods_namespace
    timeline: list[dict[str, Any]] = []
    t0 = time.monotonic()
    loads: list[Load] = []

    def mark(what: str) -> float:
        now = time.monotonic()
        failed_turns = sum(load.failed_so_far() for load in loads)
        timeline.append({"t_s": round(now - t0, 1), "event": what, "failed_turns": failed_turns})
        print(f"{now - t0:6.1f} s  {what}  (failed turns so far: {failed_turns})", flush=True)
        return now

    clips = spoken_clips(400)
    prometheus = Prometheus(kube, ns, tmp_path)
    replicas_seen: Replicas | None = None
    report: dict[str, Any] = {"spec": PIPELINE, "slo_ms": SLO_MS, "timeline": timeline}
    try:
        assert kube.kubectl("-n", ns, "apply", "-f", "-", input=EMULATOR, check=False).returncode == 0
        helm(
            kube, "install", RELEASE, str(CHART), *install_args(kube, ns, 4),
            "--set", f"operator.prometheusUrl={prometheus.url}", "--set", f"pipeline.sloP95Ms={SLO_MS}",
            "--set-json", f"pipeline.stages={json.dumps(PIPELINE['stages'])}",
            "--set", "pipeline.autoscaling.intervalSeconds=5",
            "--set", f"pipeline.autoscaling.scaleDownStabilizationSeconds={STABILIZATION_S}",
            "--set", "pipeline.autoscaling.metricsWindowSeconds=10",
        )  # fmt: skip
        wait_for("every Pod Ready", lambda: all_ready(kube, ns), timeout=600)
        assert get(kube, ns, "deployment", ASR)["spec"]["replicas"] == 1
        replicas_seen = Replicas(kube, ns)
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

        heavy = Load(url, HEAVY_DEVICES, HEAVY_S, seed=11, clips=clips, ramp_s=HEAVY_RAMP_S)
        loads.append(heavy)
        load_start = mark(f"load start: {HEAVY_DEVICES} devices")
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
            lambda: (get(kube, ns, "deployment", ASR)["status"].get("readyReplicas") or 0) >= 2,
            timeout=180,
        )
        ready = mark("new asr Pod(s) Ready")

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
            f"first requests on every asr replica: {', '.join(f'{p[-5:]} +{v:.0f}' for p, v in sorted(per_pod.items()))}"
        )

        def under_slo() -> float | None:
            recent = [r for r in heavy.records_after(serving) if r.ok]
            p95 = p95_first_audio(recent)
            return p95 if len(recent) >= 6 and p95 is not None and p95 < SLO_MS else None

        p95 = wait_for(f"p95 first audio back under {SLO_MS} ms", under_slo, timeout=150)
        mark(f"p95 first audio of turns since then: {p95:.0f} ms (< {SLO_MS})")

        light = Load(url, LIGHT_DEVICES, 220, seed=12, clips=clips)
        loads.append(light)  # keeps talking through the scale-in
        heavy_result = heavy.join()
        stop = mark(f"heavy load stop: {heavy_result['turns']} turns, {n_failed(heavy_result)} failed")
        held = replicas_seen.between(decided, stop)
        spec = get(kube, ns, "voicepipeline", FULLNAME)["spec"]
        report["model"] = planned_vs_used(prometheus, ns, spec, HEAVY_DEVICES, serving, stop)
        report["model"]["asr_replicas_used"] = max(held) if held else None
        assert n_failed(heavy_result) == 0, failed(heavy.fleet.records)
        # The defect this test caught: asr scaled back in while the devices still talked.
        assert held and min(held) >= 2, f"asr replicas while the load held: {held}"

        # From what it had when the load stopped (while the load held it may already have moved
        # between 2 and 3: the demand sits near what 2 replicas hold at the 70% target).
        at_stop = get(kube, ns, "deployment", ASR)["spec"]["replicas"]
        scaled_in = wait_for(
            "the operator to scale asr back in",
            lambda: (r := get(kube, ns, "deployment", ASR)["spec"]["replicas"]) < at_stop and r,
            timeout=STABILIZATION_S + 150,
        )
        mark(f"decision: scale asr in {at_stop} -> {scaled_in} (stabilization {STABILIZATION_S} s); drain")
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
        mark(f"light load stop: {light_result['turns']} turns, {n_failed(light_result)} failed")
        assert n_failed(light_result) == 0, failed(light.fleet.records)
        assert light_result["turns"] >= LIGHT_DEVICES * 3
        assert pod_problems(kube, ns) == []
        report["durations_s"] = {
            "load_to_decision": round(decided - load_start, 1),
            "decision_to_ready": round(ready - decided, 1),
            "ready_to_serving": round(serving - ready, 1),
            "load_stop_to_replica_gone": round(gone - stop, 1),
        }
        report["p95_first_audio_ms_after_scale_out"] = round(p95)
        print(f"closed loop: {json.dumps(report['durations_s'])}", flush=True)
    finally:
        if replicas_seen is not None:
            replicas_seen.stop()
        print(json.dumps(report, indent=1), flush=True)
        (tmp_path / "closed-loop.json").write_text(json.dumps(report, indent=1))
        results = os.environ.get("VP_E2E_RESULTS")
        if results:  # make e2e-closed-loop keeps it with the benchmarks
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            Path(results).mkdir(parents=True, exist_ok=True)
            (Path(results) / f"{stamp}-closed-loop.json").write_text(json.dumps(report, indent=1) + "\n")
        print(
            kube.kubectl(
                "-n", ns, "get", "events", "--field-selector", "involvedObject.kind=VoicePipeline", check=False
            ).stdout[-3000:]
        )  # fmt: skip
        logs = kube.kubectl(
            "-n", ns, "logs", "-l", "app.kubernetes.io/component=operator", "--prefix", "--tail=2000", check=False
        )  # fmt: skip
        (tmp_path / "operator.log").write_text(logs.stdout + logs.stderr)
        prometheus.stop()
        if os.environ.get("VP_E2E_KEEP"):
            print(f"prometheus log: {prometheus.log}")
    helm(kube, "uninstall", RELEASE, "-n", ns, "--timeout", "3m")
