"""`voice-pipeline cluster up|down|status`: the local cluster with a node (see cluster.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _default_dir() -> Path:
    from voice_pipeline.devcluster.cluster import vp_home

    return vp_home() / "cluster" / "local"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "cluster",
        help="a local one-node Kubernetes cluster whose Pods run (for trying the chart; needs root and Docker)",
        description="etcd, API server, controller manager, scheduler, kubelet on the local Docker engine, "
        "kube-proxy and a cluster DNS, as local processes (binaries from `make kube-bins`, images from "
        "`make images`). `make cluster-up` / `make cluster-down` wrap these.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text, func in (
        ("up", "start the cluster and print its KUBECONFIG", _up),
        ("down", "stop the cluster and remove its Pods, rules and files", _down),
        ("status", "say whether the cluster in --dir runs", _status),
    ):
        a = actions.add_parser(name, help=help_text, description=help_text)
        a.add_argument(
            "--dir", type=Path, default=None, help="state directory (default $VP_HOME/cluster/local)"
        )
        a.set_defaults(func=func)
    sync = actions.add_parser(
        "dns-sync",
        help="(used by `up`) keep the DNS hosts file in step with Services and Endpoints",
        description="Polls the API server of --kubeconfig and rewrites --hosts-file for dnsmasq.",
    )
    sync.add_argument("--kubeconfig", type=Path, required=True, help="the cluster's kubeconfig")
    sync.add_argument("--hosts-file", type=Path, required=True, help="file dnsmasq reads names from")
    sync.set_defaults(func=_dns_sync)


def _up(args: argparse.Namespace) -> int:
    from voice_pipeline.devcluster.cluster import up

    workdir = args.dir or _default_dir()
    state = up(workdir, progress=lambda msg: print(f">> {msg}", file=sys.stderr, flush=True))
    print(f"cluster up: node Ready, API server {state.server}", file=sys.stderr)
    print(f"export KUBECONFIG={state.kubeconfig}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from voice_pipeline.devcluster.cluster import down

    down(args.dir or _default_dir())
    print("cluster down", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    from voice_pipeline.devcluster.cluster import ClusterError, ClusterState

    try:
        state = ClusterState.load(args.dir or _default_dir())
    except ClusterError:
        print("stopped")
        return 1
    alive = {name: _alive(pid) for name, pid in state.pids.items()}
    print(
        "running" if all(alive.values()) else "degraded: " + ", ".join(n for n, ok in alive.items() if not ok)
    )
    print(f"export KUBECONFIG={state.kubeconfig}")
    return 0 if all(alive.values()) else 1


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _dns_sync(args: argparse.Namespace) -> int:
    import yaml

    from voice_pipeline.devcluster.dns import sync_forever

    config = yaml.safe_load(args.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    token = config["users"][0]["user"]["token"]
    sync_forever(server, token, args.hosts_file)
    return 0
