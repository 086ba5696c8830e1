"""A real Kubernetes API for e2e tests, in this order of preference:

1. an existing cluster: `VP_E2E_KUBECONFIG` (or `KUBECONFIG` with `VP_E2E_USE_KUBECONFIG=1`); its
   nodes must be able to pull the images (push them to a registry they reach, `IMAGE_REGISTRY=...`);
2. kind, when a Docker engine answers and `kind` is installed (`make e2e-kind`): the images built by
   `make images` are loaded into it;
3. the local cluster of `voice-pipeline cluster up` (services/voice_pipeline/devcluster): API server,
   controller manager, scheduler, kubelet on the local Docker engine, kube-proxy and a DNS, when a
   Docker engine answers and we are root: Pods really run, from the images `make images` built;
4. otherwise a local kube-apiserver + etcd + kube-controller-manager on free loopback ports (no
   kubelet: Pods stay Pending, everything else - schemas, status subresource, RBAC, owner-reference
   garbage collection - is real). The running-Pods tests skip there, or fail under
   `VP_E2E_REQUIRE_PODS=1` (what `make test` sets).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

VP_HOME = Path(os.environ.get("VP_HOME") or Path.home() / ".cache" / "voice-pipeline")
BIN = VP_HOME / "bin"
K8S_DIR = BIN / "kubernetes-1.20.2"
ADMIN_TOKEN = "voice-pipeline-e2e-admin"


@dataclass
class Cluster:
    kubeconfig: Path
    kind: str  # "existing" | "kind" | "local-node" (Pods run here) | "local" (API server only)
    server: str = ""
    token: str = ""
    workdir: Path | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True, text=True, check=check, input=input, timeout=60,
        )  # fmt: skip

    @property
    def runs_pods(self) -> bool:
        return self.kind != "local"


def kubectl_binary() -> str:
    local = BIN / "kubectl"
    if local.exists():
        return str(local)
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found: run `scripts/kube-local.sh tools` (or `make kube-bins`)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False).returncode == 0


def _wait_ready(
    url: str, token: str, timeout: float, processes: list[subprocess.Popen[bytes]], logs: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in processes:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[0]} exited with {p.returncode}; logs in {logs}")  # type: ignore[index]
        try:
            r = httpx.get(
                f"{url}/readyz", headers={"Authorization": f"Bearer {token}"}, verify=False, timeout=2
            )
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"kube-apiserver not ready after {timeout:.0f} s; logs in {logs}")


def _write_kubeconfig(path: Path, server: str, token: str) -> None:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {{server: "{server}", insecure-skip-tls-verify: true}}
users:
- name: admin
  user: {{token: "{token}"}}
contexts:
- name: local
  context: {{cluster: local, user: admin}}
current-context: local
"""
    )


@contextmanager
def local_cluster() -> Iterator[Cluster]:
    apiserver, controller = K8S_DIR / "kube-apiserver", K8S_DIR / "kube-controller-manager"
    etcd = shutil.which("etcd")
    if not apiserver.exists() or not controller.exists() or etcd is None:
        raise RuntimeError(
            "the local control plane is not installed: run `scripts/kube-local.sh all` (or `make kube-bins`) once"
        )
    work = Path(tempfile.mkdtemp(prefix="vp-kube-"))
    (work / "certs").mkdir()
    subprocess.run(
        ["openssl", "genrsa", "-out", str(work / "sa.key"), "2048"], check=True, capture_output=True
    )
    subprocess.run(
        ["openssl", "rsa", "-in", str(work / "sa.key"), "-pubout", "-out", str(work / "sa.pub")],
        check=True,
        capture_output=True,
    )
    (work / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n')
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    kubeconfig = work / "kubeconfig"
    _write_kubeconfig(kubeconfig, server, ADMIN_TOKEN)
    logs = work / "logs"
    logs.mkdir()

    def spawn(name: str, *args: str) -> subprocess.Popen[bytes]:
        out = (logs / f"{name}.log").open("wb")
        return subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT)

    processes = [
        spawn("etcd", etcd, "--data-dir", str(work / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
              "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}", "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
              "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}", "--initial-cluster", f"default=http://127.0.0.1:{peer_port}"),
    ]  # fmt: skip
    cluster = Cluster(kubeconfig, "local", server, ADMIN_TOKEN, work, processes)
    try:
        processes.append(
            spawn("kube-apiserver", str(apiserver), f"--etcd-servers=http://127.0.0.1:{etcd_port}", "--bind-address=127.0.0.1",
                  "--advertise-address=127.0.0.1", f"--secure-port={api_port}", "--insecure-port=0", f"--cert-dir={work / 'certs'}",
                  f"--token-auth-file={work / 'tokens.csv'}", "--authorization-mode=RBAC",
                  "--service-account-issuer=https://kubernetes.default.svc", f"--service-account-key-file={work / 'sa.pub'}",
                  f"--service-account-signing-key-file={work / 'sa.key'}", "--service-cluster-ip-range=10.0.0.0/24",
                  "--disable-admission-plugins=ServiceAccount")
        )  # fmt: skip
        _wait_ready(server, ADMIN_TOKEN, 90, processes, logs)
        processes.append(
            spawn("kube-controller-manager", str(controller), f"--kubeconfig={kubeconfig}", "--bind-address=127.0.0.1",
                  "--port=0", f"--secure-port={free_port()}", "--leader-elect=false",
                  f"--service-account-private-key-file={work / 'sa.key'}", "--use-service-account-credentials=false",
                  "--controllers=*,-csrsigning")
        )  # fmt: skip
        yield cluster
    finally:
        for p in reversed(processes):
            p.terminate()
        for p in processes:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if not os.environ.get("VP_E2E_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


# What `make images` builds (mk/images.mk); the running-Pods tests install the chart with them.
IMAGE_REGISTRY = os.environ.get("IMAGE_REGISTRY", "ghcr.io/voice-pipeline")
IMAGE_TAG = os.environ.get("IMAGE_TAG", "0.1.0")
IMAGES = {name: f"{IMAGE_REGISTRY}/{name}:{IMAGE_TAG}" for name in ("services", "operator", "redis")}


@contextmanager
def node_cluster() -> Iterator[Cluster]:
    from voice_pipeline.devcluster.cluster import down, up

    work = Path(tempfile.mkdtemp(prefix="vp-node-"))
    state = up(work)
    try:
        yield Cluster(Path(state.kubeconfig), "local-node", state.server, state.token, work)
    finally:
        down(work)


def node_cluster_possible() -> bool:
    from voice_pipeline.devcluster.cluster import binaries_dir

    return (
        os.geteuid() == 0
        and docker_available()
        and (binaries_dir() / "kubelet").exists()
        and shutil.which("dnsmasq") is not None
    )


@contextmanager
def kind_cluster() -> Iterator[Cluster]:
    name = f"vp-e2e-{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="vp-kind-"))
    kubeconfig = work / "kubeconfig"
    subprocess.run(
        ["kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig), "--wait", "120s"],
        check=True,
    )
    for image in IMAGES.values():  # kind nodes pull from no registry of ours: load what make images built
        subprocess.run(["kind", "load", "docker-image", "--name", name, image], check=False)
    try:
        yield Cluster(kubeconfig, "kind", workdir=work)
    finally:
        subprocess.run(["kind", "delete", "cluster", "--name", name], check=False)
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def cluster() -> Iterator[Cluster]:
    given = os.environ.get("VP_E2E_KUBECONFIG") or (
        os.environ.get("KUBECONFIG") if os.environ.get("VP_E2E_USE_KUBECONFIG") else None
    )
    if given:
        yield Cluster(Path(given), "existing")
    elif docker_available() and shutil.which("kind"):
        with kind_cluster() as c:
            yield c
    elif node_cluster_possible():
        with node_cluster() as n:
            yield n
    else:
        with local_cluster() as c:
            yield c
