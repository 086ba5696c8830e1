"""`voice-pipeline plan | calibrate | operator`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from voice_pipeline.common.errors import ConfigError
from voice_pipeline.contract import ASR_ENGINES, TTS_ENGINES

# What `plan --llm cloud` stands for: any provider with a base URL (only its presence is planned).
CLOUD_PROVIDER = {"name": "cloud", "type": "openai", "baseUrl": "https://llm.example/v1"}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="size a pipeline: replicas, limits and batch sizes per stage for N devices",
        description="Runs the capacity model on the measured cost profile. The JSON output has the shape of "
        "a VoicePipeline's status.plan.",
    )
    p.add_argument("--devices", type=int, help="target concurrent devices (1-10000; required without --spec)")
    p.add_argument("--node-size", choices=["4c8g", "4c16g", "4c32g"], help="node size (default 4c8g)")
    p.add_argument("--max-nodes", type=int, help="nodes the plan may use (1-100, default 1)")
    p.add_argument(
        "--spec",
        help="a VoicePipeline manifest (YAML) whose spec to plan; the other options override its fields",
    )
    p.add_argument("--asr-engine", choices=ASR_ENGINES, help="stages.asr.engine (default whisper)")
    p.add_argument("--tts-engine", choices=TTS_ENGINES, help="stages.tts.engine (default edge)")
    p.add_argument(
        "--llm",
        choices=["local", "cloud"],
        help="local: no stages.llm.providers, the llm stage runs a llama.cpp server (the spec's default); "
        "cloud: a remote OpenAI-compatible provider",
    )
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
    c.add_argument(
        "--only",
        default="",
        help="comma-separated entries to measure (e.g. llm:llamacpp,asr:sensevoice); the others already in "
        "--output are kept",
    )
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


def plan_spec(args: argparse.Namespace, node_size: str | None = None) -> dict[str, Any]:
    """The spec `plan` sizes: --spec's, with the options laid over it."""
    import yaml

    spec: dict[str, Any] = {}
    if args.spec:
        from pathlib import Path

        try:
            doc = yaml.safe_load(Path(args.spec).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--spec {args.spec}: {exc}".splitlines()[0]) from None
        spec = dict((doc or {}).get("spec", doc) or {}) if isinstance(doc, dict) else {}
    elif args.devices is None:
        raise ConfigError("--devices is required (or --spec)")
    stages = {k: dict(v or {}) for k, v in (spec.get("stages") or {}).items()}
    if args.devices is not None:
        spec["devices"] = args.devices
    if node_size or args.node_size or not (spec.get("nodeSize") or spec.get("nodeResources")):
        spec["nodeSize"] = node_size or args.node_size or "4c8g"
        spec.pop("nodeResources", None)
    if args.max_nodes is not None:
        spec["maxNodes"] = args.max_nodes
    if args.asr_engine:
        stages.setdefault("asr", {})["engine"] = args.asr_engine
    if args.tts_engine:
        stages.setdefault("tts", {})["engine"] = args.tts_engine
    if args.llm:
        stages.setdefault("llm", {})["providers"] = [] if args.llm == "local" else [CLOUD_PROVIDER]
    spec["stages"] = stages
    return spec


def _plan(args: argparse.Namespace) -> int:
    from voice_operator.capacity import NoMeasuredCost, make_plan
    from voice_operator.profiles import load_profile
    from voice_operator.report import compare_table, plan_table
    from voice_operator.spec import SpecError, parse_spec

    profile = load_profile(args.profile)
    sizes: list[str | None] = ["4c8g", "4c16g", "4c32g"] if args.compare else [None]
    try:
        plans = {size: make_plan(parse_spec(plan_spec(args, size)), profile) for size in sizes}
    except (SpecError, NoMeasuredCost, ConfigError) as exc:
        # Input the schema would refuse, or an engine without a measured cost: one line, exit 2.
        print(f"voice-pipeline plan: error: {exc}", file=sys.stderr)
        return 2
    if args.output == "json":
        body = (
            {p.node.name: p.as_status() for p in plans.values()}
            if args.compare
            else next(iter(plans.values())).as_status()
        )
        print(json.dumps(body, indent=2))
    elif args.compare:
        print(compare_table({p.node.name: p for p in plans.values()}, profile))
    else:
        print(plan_table(next(iter(plans.values())), profile))
    return 0 if all(p.fits for p in plans.values()) or args.compare else 1


def _calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from voice_operator.calibrate import calibrate

    calibrate(Path(args.output), tuple(k.strip() for k in args.only.split(",") if k.strip()))
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
