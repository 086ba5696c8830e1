"""A one-node Kubernetes cluster whose Pods really run, from local processes: no cloud, no registry.

etcd (Debian), kube-apiserver, kube-controller-manager, kube-scheduler, kubelet (its built-in Docker
shim) and kube-proxy 1.20.2 (built from Debian's source package by scripts/kube-local.sh), on the
local Docker engine. Pods get addresses on the Docker bridge; the API server listens on the
bridge's host address so Pods reach it through the `kubernetes` Service; Service names resolve in
Pods through dnsmasq fed by `dns.sync_forever`. Everything lives under one directory (`state.json`
lists the processes), so `down` can stop what `up` started from another process.

Images are whatever the Docker engine holds (`make images`); kubelet never garbage-collects them
(there is no registry to pull them back from).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from voice_pipeline.common.errors import VoicePipelineError

K8S_VERSION = "1.20.2"
NODE_NAME = "vp-node"
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
POD_CIDR = "172.17.0.0/16"  # Docker's default bridge: Pods get their addresses from dockerd
PAUSE_IMAGE = "k8s.gcr.io/pause:3.2"
ADMIN_TOKEN_BYTES = 24


class ClusterError(VoicePipelineError):
    """The local cluster could not start (the message says what is missing)."""


def vp_home() -> Path:
    return Path(os.environ.get("VP_HOME") or Path.home() / ".cache" / "voice-pipeline")


def binaries_dir() -> Path:
    return vp_home() / "bin" / f"kubernetes-{K8S_VERSION}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def bridge_address() -> str:
    """The host's address on docker0: Pods reach the host (API server, DNS) there."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True, text=True, check=False
    ).stdout
    for word in out.split():
        if "/" in word and word[0].isdigit():
            return word.split("/")[0]
    raise ClusterError("no docker0 bridge: start a Docker engine first (make docker-engine)")


@dataclass
class ClusterState:
    workdir: str
    server: str
    token: str
    bridge: str
    kubeconfig: str
    pids: dict[str, int] = field(default_factory=dict)

    def save(self) -> None:
        Path(self.workdir, "state.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, workdir: Path) -> ClusterState:
        path = workdir / "state.json"
        if not path.exists():
            raise ClusterError(f"no cluster in {workdir} (nothing to stop)")
        return cls(**json.loads(path.read_text()))


def _run(*args: str, input: bytes | None = None) -> None:
    result = subprocess.run(list(args), capture_output=True, input=input, check=False)
    if result.returncode != 0:
        raise ClusterError(f"{' '.join(args[:3])} failed: {result.stderr.decode(errors='replace')[-400:]}")


def _pki(work: Path, bridge: str) -> None:
    """A CA, the API server's certificate (names Pods and the host use) and the token-signing key."""
    pki = work / "pki"
    pki.mkdir()
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=vp-local-ca",
         "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"))  # fmt: skip
    names = [
        "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local", "DNS:localhost",
        f"IP:{KUBERNETES_SERVICE_IP}", f"IP:{bridge}", "IP:127.0.0.1",
    ]  # fmt: skip
    (pki / "ext.cnf").write_text(f"subjectAltName={','.join(names)}\nextendedKeyUsage=serverAuth\n")
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
         "-keyout", str(pki / "apiserver.key"), "-out", str(pki / "apiserver.csr"))  # fmt: skip
    _run("openssl", "x509", "-req", "-in", str(pki / "apiserver.csr"), "-CA", str(pki / "ca.crt"),
         "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "3650", "-extfile", str(pki / "ext.cnf"),
         "-out", str(pki / "apiserver.crt"))  # fmt: skip
    _run("openssl", "genrsa", "-out", str(pki / "sa.key"), "2048")
    _run("openssl", "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))


def write_kubeconfig(path: Path, server: str, token: str, ca: Path | None = None) -> None:
    cluster = f'certificate-authority: "{ca}"' if ca else "insecure-skip-tls-verify: true"
    path.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n"
        f'- name: local\n  cluster: {{server: "{server}", {cluster}}}\n'
        f'users:\n- name: admin\n  user: {{token: "{token}"}}\n'
        "contexts:\n- name: local\n  context: {cluster: local, user: admin}\ncurrent-context: local\n"
    )


def _kubelet_config(work: Path, bridge: str, port: int) -> Path:
    path = work / "kubelet.yaml"
    path.write_text(
        f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {bridge}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
cgroupDriver: cgroupfs
failSwapOn: false
authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}
authorization: {{mode: AlwaysAllow}}
clusterDNS: [{bridge}]
clusterDomain: cluster.local
# Never delete images: without a registry nothing could pull them back.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%}}
serializeImagePulls: false
maxPods: 110
"""
    )
    return path


def _pause_image() -> None:
    if (
        subprocess.run(
            ["docker", "image", "inspect", PAUSE_IMAGE], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return
    pause = binaries_dir() / "pause"
    if not pause.exists():
        raise ClusterError(f"{pause} is missing: run `make kube-bins`")
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copy(pause, Path(ctx) / "pause")
        Path(ctx, "Dockerfile").write_text('FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n')
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        result = subprocess.run(
            ["docker", "build", "-q", "-t", PAUSE_IMAGE, ctx], capture_output=True, env=env, check=False
        )
        if result.returncode != 0:
            raise ClusterError(
                f"building the pause image failed: {result.stderr.decode(errors='replace')[-300:]}"
            )


def _upstream_dns() -> str:
    for line in Path("/etc/resolv.conf").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            return parts[1]
    return ""


def _check_prerequisites() -> None:
    missing = [b for b in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
               if not (binaries_dir() / b).exists()]  # fmt: skip
    if missing:
        raise ClusterError(f"{', '.join(missing)} not built: run `make kube-bins` (once, ~12 min)")
    for tool, package in (("etcd", "etcd-server"), ("dnsmasq", "dnsmasq-base"), ("openssl", "openssl"),
                          ("iptables", "iptables"), ("docker", "docker.io")):  # fmt: skip
        if shutil.which(tool) is None:
            raise ClusterError(
                f"{tool} not found: apt-get install {package} (or `make cluster-up`, which installs it)"
            )
    if os.geteuid() != 0:
        raise ClusterError("kubelet and kube-proxy need root")
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        raise ClusterError("no Docker engine answers: `make docker-engine` starts one")
    if subprocess.run(["pgrep", "-x", "kubelet"], capture_output=True, check=False).returncode == 0:
        raise ClusterError(
            "a kubelet already runs on this machine (one node per Docker engine): `make cluster-down` first"
        )


def _wait(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    processes: dict[str, subprocess.Popen[bytes]],
    logs: Path,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, p in processes.items():
            if p.poll() is not None:
                lines = (logs / f"{name}.log").read_text(errors="replace").splitlines()
                # Go's fatal errors come with every goroutine's stack: keep the log lines, not those.
                tail = "\n".join(line for line in lines if line[:1] in "IWEF" and line[1:2].isdigit())[-1500:]
                raise ClusterError(f"{name} exited with {p.returncode} while waiting for {what}:\n{tail}")
        if check():
            return
        time.sleep(0.5)
    raise ClusterError(f"{what} not ready within {timeout:.0f} s; logs in {logs}")


def up(workdir: Path | None = None, progress: Callable[[str], None] | None = None) -> ClusterState:
    """Start every component; return once the node is Ready. Raises ClusterError with what to do."""
    say = progress or (lambda _msg: None)
    _check_prerequisites()
    bridge = bridge_address()
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="vp-cluster-"))
    if (work / "state.json").exists():
        raise ClusterError(f"a cluster already uses {work}: `voice-pipeline cluster down --dir {work}` first")
    work.mkdir(parents=True, exist_ok=True)
    # Traversable, not listable: dnsmasq (which drops to user nobody) reads dns/ inside it; the
    # token and kubeconfig files stay private (0600).
    work.chmod(0o711)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    say("certificates")
    _pki(work, bridge)
    pki = work / "pki"
    token = os.urandom(ADMIN_TOKEN_BYTES).hex()
    (work / "tokens.csv").write_text(f'{token},admin,admin-uid,"system:masters"\n')
    (work / "tokens.csv").chmod(0o600)
    api_port = free_port(bridge)
    server = f"https://{bridge}:{api_port}"
    kubeconfig = work / "kubeconfig"
    write_kubeconfig(kubeconfig, server, token, pki / "ca.crt")
    kubeconfig.chmod(0o600)
    bins = binaries_dir()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    state = ClusterState(str(work), server, token, bridge, str(kubeconfig))

    def spawn(name: str, *args: str) -> None:
        out = (logs / f"{name}.log").open("wb")
        # A session of its own: `down` (maybe another process) stops it by pid, Ctrl-C here does not.
        processes[name] = subprocess.Popen(
            list(args), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        state.pids[name] = processes[name].pid
        state.save()

    try:
        say("etcd and kube-apiserver")
        etcd_port, peer_port = free_port(), free_port()
        spawn("etcd", "etcd", "--data-dir", str(work / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
              "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}", "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
              "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
              "--initial-cluster", f"default=http://127.0.0.1:{peer_port}")  # fmt: skip
        spawn("kube-apiserver", str(bins / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
              f"--bind-address={bridge}", f"--advertise-address={bridge}", f"--secure-port={api_port}", "--insecure-port=0",
              f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
              f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={work / 'tokens.csv'}", "--authorization-mode=RBAC",
              "--service-account-issuer=https://kubernetes.default.svc", f"--service-account-key-file={pki / 'sa.pub'}",
              f"--service-account-signing-key-file={pki / 'sa.key'}", f"--service-cluster-ip-range={SERVICE_CIDR}",
              "--kubelet-preferred-address-types=InternalIP", "--enable-admission-plugins=NodeRestriction")  # fmt: skip
        _wait("kube-apiserver", lambda: _api_ready(server, token), 90, processes, logs)
        say("controller manager, scheduler, DNS")
        spawn("kube-controller-manager", str(bins / "kube-controller-manager"), f"--kubeconfig={kubeconfig}",
              "--bind-address=127.0.0.1", "--port=0", f"--secure-port={free_port()}", "--leader-elect=false",
              f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
              "--use-service-account-credentials=false", "--controllers=*,-csrsigning")  # fmt: skip
        spawn("kube-scheduler", str(bins / "kube-scheduler"), f"--kubeconfig={kubeconfig}", "--leader-elect=false",
              "--port=0", f"--secure-port={free_port()}", "--bind-address=127.0.0.1")  # fmt: skip
        hosts = work / "dns"
        hosts.mkdir(mode=0o755)
        (hosts / "services").write_text("")
        spawn("dns-sync", sys.executable, "-m", "voice_pipeline.cli", "cluster", "dns-sync",
              "--kubeconfig", str(kubeconfig), "--hosts-file", str(hosts / "services"))  # fmt: skip
        upstream = _upstream_dns()
        spawn("dnsmasq", "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", f"--hostsdir={hosts}",
              f"--listen-address={bridge}", "--bind-interfaces", "--local=/cluster.local/", "--local-ttl=1",
              "--pid-file=", "--log-facility=-", *([f"--server={upstream}"] if upstream else []))  # fmt: skip
        say("kubelet and kube-proxy")
        _pause_image()
        kubelet_root = work / "kubelet"
        kubelet_root.mkdir()
        spawn("kubelet", str(bins / "kubelet"), f"--kubeconfig={kubeconfig}",
              f"--config={_kubelet_config(work, bridge, free_port(bridge))}", "--container-runtime=docker",
              "--network-plugin=", f"--root-dir={kubelet_root}", f"--cert-dir={work / 'kubelet-pki'}",
              f"--hostname-override={NODE_NAME}", f"--node-ip={bridge}", f"--pod-infra-container-image={PAUSE_IMAGE}",
              "--v=1")  # fmt: skip
        spawn("kube-proxy", str(bins / "kube-proxy"), f"--kubeconfig={kubeconfig}", "--proxy-mode=iptables",
              f"--cluster-cidr={POD_CIDR}", f"--hostname-override={NODE_NAME}", "--bind-address=127.0.0.1",
              f"--healthz-bind-address=127.0.0.1:{free_port()}", f"--metrics-bind-address=127.0.0.1:{free_port()}",
              "--conntrack-max-per-core=0")  # fmt: skip
        say("waiting for the node to be Ready")
        _wait("node Ready", lambda: _node_ready(server, token), 120, processes, logs)
        _wait("the default ServiceAccount", lambda: _default_sa(server, token), 60, processes, logs)
    except BaseException:
        down(work, keep=True)
        raise
    return state


def _get(server: str, token: str, path: str) -> object:
    import httpx

    try:
        r = httpx.get(
            f"{server}{path}", headers={"Authorization": f"Bearer {token}"}, verify=False, timeout=3
        )
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def _api_ready(server: str, token: str) -> bool:
    import httpx

    with contextlib.suppress(httpx.HTTPError):
        r = httpx.get(
            f"{server}/readyz", headers={"Authorization": f"Bearer {token}"}, verify=False, timeout=2
        )
        return r.status_code == 200
    return False


def _node_ready(server: str, token: str) -> bool:
    node = _get(server, token, f"/api/v1/nodes/{NODE_NAME}")
    if not isinstance(node, dict):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _default_sa(server: str, token: str) -> bool:
    sa = _get(server, token, "/api/v1/namespaces/default/serviceaccounts/default")
    return isinstance(sa, dict) and bool(sa.get("secrets"))


def _stop_pid(pid: int, timeout: float = 15) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)


def down(workdir: Path, keep: bool = False) -> None:
    """Stop what `up` started in `workdir`: Pods' containers, iptables rules, mounts, processes."""
    work = Path(workdir)
    try:
        state = ClusterState.load(work)
    except ClusterError:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        raise
    pids = dict(state.pids)
    # kubelet first, so it does not restart the containers removed next.
    if "kubelet" in pids:
        _stop_pid(pids.pop("kubelet"))
    containers = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=io.kubernetes.pod.name"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if containers:
        subprocess.run(["docker", "rm", "-f", *containers], capture_output=True, check=False)
    for name in (
        "kube-proxy",
        "dnsmasq",
        "dns-sync",
        "kube-scheduler",
        "kube-controller-manager",
        "kube-apiserver",
        "etcd",
    ):
        if name in pids:
            _stop_pid(pids.pop(name))
    proxy = binaries_dir() / "kube-proxy"
    if proxy.exists():  # its iptables chains would keep redirecting Service addresses
        subprocess.run([str(proxy), "--cleanup"], capture_output=True, check=False)
    _unmount_under(work)
    (work / "state.json").unlink(missing_ok=True)
    if not keep and not os.environ.get("VP_E2E_KEEP"):
        shutil.rmtree(work, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    """kubelet leaves tmpfs mounts (Secrets, tokens) under its root dir; deleting it needs them gone."""
    prefix = str(root.resolve()) + "/"
    mounts = [
        line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if len(line.split()) > 1
    ]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
