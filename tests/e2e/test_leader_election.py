"""Leader election between two `voice-pipeline operator` processes (kopf peering) on a real API
server: one KopfPeering, two replicas with different priorities -> only the higher one reconciles;
kill it (SIGKILL, no goodbye) -> the other takes over within about the peering lifetime and
reconciles a spec change. Also: a missing peering object is one clear error, not a silent pause."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .cluster import Cluster, free_port
from .test_operator import apply, expected_plan, get, manifest, vp, wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PEERING = "e2e-operators"
LIFETIME = 4  # seconds; kopf then sends a keep-alive every second
# What kopf logs for each handler run on an object, and what the reconcile loop logs for each pass.
HANDLED = ("kopf.objects: ", ": reconciled generation ")


class Replica:
    """One operator process with a peering priority and its own log."""

    def __init__(
        self,
        kube: Cluster,
        namespace: str,
        log: Path,
        name: str,
        priority: int | None,
        lifetime: int = LIFETIME,
    ) -> None:
        self.name, self.log = name, log
        chosen = [] if priority is None else ["--priority", str(priority)]  # None: the default, by start time
        env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "VP_OPERATOR_RESYNC_SECONDS": "2",
               "VP_OPERATOR_METRICS_PORT": "0", "POD_ID": name}  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voice_pipeline.cli", "operator", "--namespace", namespace,
             "--peering", PEERING, *chosen, "--peering-lifetime", str(lifetime),
             "--liveness", f"http://127.0.0.1:{free_port()}/healthz"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def handled(self) -> list[str]:
        """Log lines of work on VoicePipelines (the test namespace holds one)."""
        return [line for line in self.text().splitlines() if any(h in line for h in HANDLED)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.stop()
        print(f"--- {replica.name} log (tail) ---\n" + replica.text()[-2500:])


def peers(kube: Cluster, namespace: str) -> dict[str, Any]:
    return dict(get(kube, namespace, "kopfpeering", PEERING).get("status") or {})


def test_missing_peering_object_is_a_clear_error(kube: Cluster, namespace: str, tmp_path: Path) -> None:
    """kopf alone would start, pass its health check and stay paused forever (DEBUG logs only)."""
    result = subprocess.run(
        [sys.executable, "-m", "voice_pipeline.cli", "operator", "--namespace", namespace, "--peering", "absent",
         "--liveness", f"http://127.0.0.1:{free_port()}/healthz"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
        env={**os.environ, "KUBECONFIG": str(kube.kubeconfig), "VP_OPERATOR_METRICS_PORT": "0"},
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr  # a configuration error (exit 2)
    assert f"the KopfPeering 'absent' does not exist in namespace(s) {namespace}" in result.stderr
    assert f"kubectl -n {namespace} apply -f -" in result.stderr and "--standalone" in result.stderr


def create_peering(kube: Cluster, namespace: str) -> None:
    peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}}
    assert apply(kube, namespace, json.dumps(peering)).returncode == 0


def test_one_replica_leads_and_the_other_takes_over(
    kube: Cluster, namespace: str, tmp_path: Path, replicas: list[Replica]
) -> None:
    create_peering(kube, namespace)
    leader = Replica(kube, namespace, tmp_path / "leader.log", "leader", priority=200)
    replicas.append(leader)
    wait_for("the leader's keep-alive", lambda: "leader" in peers(kube, namespace), timeout=90)
    standby = Replica(kube, namespace, tmp_path / "standby.log", "standby", priority=100)
    replicas.append(standby)
    status = wait_for("both keep-alives", lambda: len(s := peers(kube, namespace)) == 2 and s, timeout=90)
    assert {name: peer["priority"] for name, peer in status.items()} == {"leader": 200, "standby": 100}
    assert all(peer["lifetime"] == LIFETIME for peer in status.values())

    # Exactly one replica works: the leader creates and resyncs; the standby touches nothing.
    apply(kube, namespace, manifest("office", 20))
    wait_for("5 stage Deployments", lambda: len(get(kube, namespace, "deployments")["items"]) == 5)
    wait_for("the leader's create handler and resyncs", lambda: len(leader.handled()) >= 4, timeout=60)
    assert standby.process.poll() is None and not standby.handled(), standby.handled()
    assert "Resuming operations" in leader.text() and "Resuming operations" not in standby.text()

    # Kill the leader without a goodbye: its keep-alive stays until its lifetime runs out.
    leader.process.send_signal(signal.SIGKILL)
    leader.process.wait(10)
    killed = time.monotonic()
    apply(kube, namespace, manifest("office", 100))
    target = expected_plan(100).stages["asr"].replicas
    assert target != expected_plan(20).stages["asr"].replicas
    wait_for(
        "the standby reconciles the spec change",
        lambda: get(kube, namespace, "deployment", "office-asr")["spec"]["replicas"] == target,
        timeout=90,
    )
    failover = time.monotonic() - killed
    print(f"failover (SIGKILL leader -> standby reconciled devices 20 -> 100): {failover:.1f} s "
          f"with a {LIFETIME} s peering lifetime")  # fmt: skip
    # The status patch and kopf's log lines follow the Deployment write of the same handler run.
    wait_for(
        "the standby's status patch and log",
        lambda: (
            vp(kube, namespace, "office")["status"]["plan"]["targetDevices"] == 100
            and standby.handled()
            and "Resuming operations" in standby.text()
        ),
    )
    # The dead leader's keep-alive is cleaned up by the survivor.
    wait_for("only the standby left in the peering", lambda: list(peers(kube, namespace)) == ["standby"])


def test_default_priorities_the_oldest_leads_and_a_clean_stop_hands_over_at_once(
    kube: Cluster, namespace: str, tmp_path: Path, replicas: list[Replica]
) -> None:
    """As the chart runs them: no --priority. A rollout's SIGTERM must not leave the pipeline
    unattended for a whole lifetime: the stopping leader removes its keep-alive on the way out."""
    create_peering(kube, namespace)
    lifetime = 120  # far longer than the wait below: only the goodbye can explain a takeover
    first = Replica(kube, namespace, tmp_path / "first.log", "first", None, lifetime)
    replicas.append(first)
    wait_for("the first keep-alive", lambda: "first" in peers(kube, namespace), timeout=90)
    second = Replica(kube, namespace, tmp_path / "second.log", "second", None, lifetime)
    replicas.append(second)
    status = wait_for("both keep-alives", lambda: len(s := peers(kube, namespace)) == 2 and s, timeout=90)
    assert status["first"]["priority"] > status["second"]["priority"]  # the older replica leads

    apply(kube, namespace, manifest("lab", 10))
    wait_for(
        "the leader's work",
        lambda: len(get(kube, namespace, "deployments")["items"]) == 5 and first.handled(),
    )
    assert not second.handled(), second.handled()

    first.process.terminate()
    assert first.process.wait(30) == 0
    stopped = time.monotonic()
    assert "second" in peers(kube, namespace) and "first" not in peers(kube, namespace)
    apply(kube, namespace, manifest("lab", 100))
    target = expected_plan(100).stages["asr"].replicas
    assert target != expected_plan(10).stages["asr"].replicas  # the change shows in the Deployment
    wait_for(
        "the second replica reconciles the change",
        lambda: (
            get(kube, namespace, "deployment", "lab-asr")["spec"]["replicas"] == target and second.handled()
        ),
        timeout=lifetime / 2,
    )
    print(f"handover after a clean stop (SIGTERM leader -> standby reconciled devices 10 -> 100): "
          f"{time.monotonic() - stopped:.1f} s with a {lifetime} s peering lifetime")  # fmt: skip
