"""e2e fixtures: one real API server per session, a fresh namespace per test, the operator running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import Cluster, cluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kube() -> Iterator[Cluster]:
    with cluster() as c:
        c.kubectl("apply", "-f", str(ROOT / "crds" / "voicepipeline.yaml"))
        # kopf's peering CRDs: leader election (test_leader_election) and the chart's KopfPeering.
        c.kubectl("apply", "-f", str(ROOT / "crds" / "kopf-peering.yaml"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (
                c.kubectl(
                    "get",
                    "crd",
                    "voicepipelines.voice.pipeline.dev",
                    "-o",
                    "jsonpath={.status.acceptedNames.kind}",
                ).stdout
                == "VoicePipeline"
            ):
                break
            time.sleep(0.3)
        c.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/kopfpeerings.kopf.dev")
        yield c


@pytest.fixture
def namespace(kube: Cluster) -> Iterator[str]:
    """A namespace for tests about API objects: a quota of zero Pods keeps the stage Pods of the
    VoicePipelines they create from starting (five model servers per test would swamp a small
    node), so objects behave as on an API server without a node, on every kind of cluster."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("-n", name, "create", "quota", "no-pods", "--hard=pods=0")
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def pods_namespace(kube: Cluster) -> Iterator[str]:
    """A namespace whose Pods run (the running-Pods tier); needs a cluster with a node."""
    if not kube.runs_pods:
        if os.environ.get("VP_E2E_REQUIRE_PODS"):
            pytest.fail(
                "VP_E2E_REQUIRE_PODS is set but the cluster has no node (need root, Docker and `make kube-bins`)"
            )
        pytest.skip("no node in this cluster (the local API server only): Pods cannot run")
    name = f"pods-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator(kube: Cluster, namespace: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`voice-pipeline operator` as a real process, watching the test namespace, 2 s resync."""
    log = (tmp_path / "operator.log").open("wb")
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "VP_OPERATOR_RESYNC_SECONDS": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "voice_pipeline.cli", "operator", "--namespace", namespace, "--standalone",
         "--liveness", f"http://127.0.0.1:{_free_port()}/healthz"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
    )  # fmt: skip
    time.sleep(1.0)
    yield process
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
    print((tmp_path / "operator.log").read_text(errors="replace")[-4000:])


def _free_port() -> int:
    from .cluster import free_port

    return free_port()
