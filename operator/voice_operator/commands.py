"""`voice-pipeline plan | calibrate | operator`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from voice_pipeline.common.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="size a pipeline: replicas, limits and batch sizes per stage for N devices",
        description="Runs the capacity model on the measured cost profile. The JSON output has the shape of "
        "a VoicePipeline's status.plan.",
    )
    p.add_argument("--devices", type=int, required=True, help="target concurrent devices")
    p.add_argument("--node-size", choices=["4c8g", "4c16g", "4c32g"], default="4c8g", help="node size")
    p.add_argument("--max-nodes", type=int, default=1, help="nodes the plan may use")
    p.add_argument("--output", choices=["table", "json"], default="table", help="output format")
    p.add_argument("--compare", action="store_true", help="show all three node sizes side by side")
    p.add_argument("--profile", help="cost profile JSON (default: the shipped, measured one)")
    p.set_defaults(func=_plan)

    c = sub.add_parser(
        "calibrate",
        help="measure each stage engine's CPU and memory cost on this machine",
        description="Runs the real VAD, ASR, TTS engines and an LLM provider round trip on the test clips and "
        "writes a cost profile (CPU-seconds per unit of work per batch size, memory per replica and stream).",
    )
    c.add_argument("--output", default="cost-profile.json", help="where to write the profile")
    c.set_defaults(func=_calibrate)

    o = sub.add_parser(
        "operator",
        help="run the Kubernetes operator (kopf) for VoicePipeline resources",
        description="Watches VoicePipeline resources and keeps their stage Deployments, Services, ConfigMaps "
        "and PodDisruptionBudgets at the plan. Uses the in-cluster config or KUBECONFIG.",
    )
    scope = o.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", help="namespace(s) to watch")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    o.add_argument(
        "--standalone",
        action="store_true",
        help="no leader election: run exactly one operator for the watched namespaces (needs no peering objects)",
    )
    o.add_argument(
        "--peering",
        default="voice-pipeline",
        help="leader election: name of the KopfPeering object (ClusterKopfPeering with -A) that every replica "
        "of this operator shares; it must exist (crds/kopf-peering.yaml, the Helm chart creates it)",
    )
    o.add_argument(
        "--priority",
        type=int,
        default=None,
        help="this replica's peering priority: the live replica with the highest one works, the others stand "
        "by (default: minus the start time in microseconds, so the oldest replica leads and none tie)",
    )
    o.add_argument(
        "--peering-lifetime",
        type=int,
        default=None,
        metavar="SECONDS",
        help="seconds a replica's keep-alive stays valid, i.e. how long a crashed leader blocks the standby "
        "(env VP_OPERATOR_PEERING_LIFETIME, default 60; a cleanly stopped leader hands over at once)",
    )
    o.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="health endpoint URL to serve")
    o.add_argument(
        "--prometheus-url",
        default=None,
        help="Prometheus the autoscaler reads stage metrics from (env VP_OPERATOR_PROMETHEUS_URL; "
        "spec.autoscaling.prometheusUrl overrides it per pipeline; none: plan only)",
    )
    o.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port of the operator's own /metrics (autoscaler decisions; env VP_OPERATOR_METRICS_PORT, "
        "default 8081, 0 = off)",
    )
    o.set_defaults(func=_operator)

    from voice_operator.cleanup import register as register_cleanup

    register_cleanup(sub)  # `voice-pipeline cleanup`: the chart's pre-delete hook


def _plan(args: argparse.Namespace) -> int:
    from voice_operator.capacity import make_plan
    from voice_operator.profiles import load_profile
    from voice_operator.report import compare_table, plan_table
    from voice_operator.spec import parse_spec

    profile = load_profile(args.profile)
    sizes = ["4c8g", "4c16g", "4c32g"] if args.compare else [args.node_size]
    plans = {
        size: make_plan(
            parse_spec({"devices": args.devices, "nodeSize": size, "maxNodes": args.max_nodes}), profile
        )
        for size in sizes
    }
    if args.output == "json":
        body = (
            {s: p.as_status() for s, p in plans.items()}
            if args.compare
            else plans[args.node_size].as_status()
        )
        print(json.dumps(body, indent=2))
    elif args.compare:
        print(compare_table(plans, profile))
    else:
        print(plan_table(plans[args.node_size], profile))
    return 0 if all(p.fits for p in plans.values()) or args.compare else 1


def _calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from voice_operator.calibrate import calibrate

    calibrate(Path(args.output))
    return 0


def _operator(args: argparse.Namespace) -> int:
    import os

    from voice_operator.run import run_operator

    # Environment, so that the chart can set them either way; the flags win.
    if args.prometheus_url is not None:
        os.environ["VP_OPERATOR_PROMETHEUS_URL"] = args.prometheus_url
    if args.metrics_port is not None:
        os.environ["VP_OPERATOR_METRICS_PORT"] = str(args.metrics_port)

    lifetime = args.peering_lifetime
    if lifetime is None:
        lifetime = _int_env("VP_OPERATOR_PEERING_LIFETIME", 60)
    if lifetime < 1:
        raise ConfigError(f"--peering-lifetime must be at least 1 second, got {lifetime}")
    return run_operator(
        namespaces=args.namespace or [],
        all_namespaces=args.all_namespaces,
        standalone=args.standalone,
        peering=args.peering,
        liveness=args.liveness,
        priority=args.priority,
        peering_lifetime=lifetime,
    )


def _int_env(name: str, default: int) -> int:
    import os

    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be a whole number of seconds, got {raw!r}") from None


_ = sys
