"""What a benchmark figure was measured on: machine, load, commit (recorded with every row)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from voice_pipeline.common.cpus import machine_cpu_flags


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def git_commit(root: Path | None = None) -> str:
    """Short commit hash, with `+dirty` when tracked files differ from it."""
    cwd = root or Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "services", "operator"], cwd=cwd, check=False
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


_CT2_LINES = {
    "cpu": re.compile(r"\[info\] CPU: (.+)$"),
    "selected_isa": re.compile(r"Selected ISA: (\S+)"),
    "intel_mkl": re.compile(r"Use Intel MKL: (\S+)"),
    "sgemm_backend": re.compile(r"SGEMM backend: (.+)$"),
    "gemm_s8_backend": re.compile(r"GEMM_S8 backend: (.+)$"),
    "compute_type": re.compile(r"Selected compute type: (\S+)"),
}


def parse_ct2_log(text: str) -> dict[str, str]:
    """What CTranslate2's verbose start-up log says it dispatches to (ISA, GEMM backends)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        for key, pattern in _CT2_LINES.items():
            m = pattern.search(line)
            if m and key not in found:
                found[key] = m.group(1).strip()
    return found


def ctranslate2_info() -> dict[str, Any]:
    """CTranslate2's version and what it dispatches to here (ISA, GEMM backends, compute type).
    It says so only in its verbose log, written when a model loads, so a child process with
    CT2_VERBOSE=1 loads the installed whisper model (the CT2_FORCE_CPU_ISA of this environment, if
    any, applies to it too)."""
    try:
        from voice_pipeline.asr.settings import AsrSettings
        from voice_pipeline.models.registry import require_model

        model = require_model(AsrSettings().whisper_model)
    except Exception as exc:  # no model installed: the version alone is still worth recording
        model, note = None, f"model not loaded: {exc}"[:200]
    code = (
        "import sys, ctranslate2; print(ctranslate2.__version__, flush=True); "
        "len(sys.argv) > 1 and ctranslate2.models.Whisper(sys.argv[1], device='cpu', compute_type='int8')"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, *([str(model)] if model else [])],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "CT2_VERBOSE": "1"},
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)[:200]}
    info: dict[str, Any] = {"version": out.stdout.strip().splitlines()[0] if out.stdout.strip() else "?"}
    info.update(parse_ct2_log(out.stderr))
    if model is None:
        info["note"] = note
    if os.environ.get("CT2_FORCE_CPU_ISA"):
        info["forced_isa"] = os.environ["CT2_FORCE_CPU_ISA"]
    return info


def onnxruntime_info() -> dict[str, Any]:
    """onnxruntime's version and providers. Our sessions (Silero VAD, SenseVoice) ask for the CPU
    provider; its kernels (MLAS) dispatch on the CPU flags recorded beside this."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"error": "onnxruntime not installed"}
    return {
        "version": ort.__version__,
        "device": ort.get_device(),
        "available_providers": list(ort.get_available_providers()),
        "provider_in_use": "CPUExecutionProvider",
    }


def runtimes_info() -> dict[str, Any]:
    return {"ctranslate2": ctranslate2_info(), "onnxruntime": onnxruntime_info()}


def machine_info() -> dict[str, Any]:
    flags = machine_cpu_flags()
    return {
        "cores": os.cpu_count() or 0,
        "memory_gib": memory_gib(),
        "cpu": cpu_model(),
        "cpu_flags": flags,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "runtimes": runtimes_info(),
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
