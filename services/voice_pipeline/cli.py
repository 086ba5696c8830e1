"""The `voice-pipeline` command. Each area registers its own subcommands.

Command modules import only the standard library at module level, so `--help` is instant and the
operator image works without model runtimes; heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import MutableMapping, Sequence

from voice_pipeline import __version__

# Each module exposes `register(subparsers)`, adding parsers whose default `func(args) -> int`.
COMMAND_MODULES = (
    "voice_pipeline.serve_commands",
    "voice_pipeline.models.commands",
    "voice_pipeline.simulator.commands",
    "voice_pipeline.emulators.commands",
    "voice_pipeline.bench.commands",
    "voice_pipeline.bench.soak",
    "voice_pipeline.devcluster.commands",
    "voice_operator.commands",
)


def single_threaded_blas(environ: MutableMapping[str, str]) -> None:
    """numpy's OpenBLAS keeps a thread per core and lets them spin after every product. Ours are
    tiny (Whisper's mel filter bank) and the model work runs on threads of its own (CTranslate2,
    onnxruntime), so the spinning only took cores from them: 0.1 CPU s per utterance in the ASR
    stage, a third of its CPU, with the same latency (docs/benchmarks.md). OpenBLAS reads this
    when numpy loads, which no command does before `main`; an explicit setting wins."""
    environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def passive_openmp(environ: MutableMapping[str, str]) -> None:
    """CTranslate2's OpenMP threads spin after each parallel region unless told to sleep. With two
    threads per ASR call that spinning took CPU the other threads needed: whisper-base on the ASR
    test set, 2 threads, 0.41 CPU s per utterance spinning against 0.37 passive, wall p50 235
    against 215 ms (one-thread calls have no team to spin). libgomp reads this when it loads."""
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-pipeline",
        description="Real-time voice assistants for fleets of xiaozhi-class devices.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    parser.add_argument("--log-format", choices=["text", "json"], default="text", help="log line format")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # an extra that is not installed: say so instead of failing
            logging.getLogger(__name__).debug("commands of %s unavailable: %s", name, exc)
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    single_threaded_blas(os.environ)
    passive_openmp(os.environ)
    parser = build_parser()
    args = parser.parse_args(argv)
    from voice_pipeline.common.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    from pydantic import ValidationError

    from voice_pipeline.common.errors import ConfigError, VoicePipelineError
    from voice_pipeline.common.settings import settings_error

    try:
        return int(func(args))
    except ConfigError as exc:  # a usage error: exit 2, like argparse, one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:  # settings built outside build_settings: same rule
        print(f"error: {settings_error(exc)}", file=sys.stderr)
        return 2
    except VoicePipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `voice-pipeline plan ... | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
