"""py-spy at the supported load: where the system's CPU goes, summarized from raw stacks.

`py-spy record --format raw` writes collapsed stacks ("frame;frame;frame count"); the summary
counts self samples per function (the leaf, where the CPU is spent) and inclusive samples per
function of this package (which of our code paths the time is under).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")
_FILE = re.compile(r"\((?P<file>[^()]*?)(?::\d+)?\)$")
# Leaf frames that are a thread waiting, not working: the event loop in epoll (native frames are
# not shown, so its time lands on Runner.run), idle thread-pool workers, lock and queue waits.
IDLE_LEAVES = (
    "Runner.run (asyncio/runners.py)",
    "_worker (concurrent/futures/thread.py)",
    "wait (threading.py)",
    "select (selectors.py)",
    "_wait_for_tstate_lock (threading.py)",
)
# Frames every sample passes through on its way to real work: not a cost of their own.
ENTRY_FILES = ("voice_pipeline/cli.py", "voice_pipeline/serve_commands.py")


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, output: Path, rate: int = 50) -> subprocess.Popen[bytes] | None:
    """Start sampling `pid` (and its subprocesses) for `seconds`; None when py-spy is missing."""
    exe = py_spy()
    if exe is None:
        return None
    argv = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", str(rate)]
    argv += ["--format", "raw", "--output", str(output), "--subprocesses"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _function(frame: str) -> str:
    """'encode (opuslib/api/encoder.py:123)' -> 'encode (opuslib/api/encoder.py)'."""
    return _LINE.sub(")", frame.strip())


def area(frame: str) -> str:
    """Where a frame's code lives: this package's module folder, else the library's top package
    ('voice_pipeline/tts', 'opuslib', 'asyncio', 'onnxruntime', ...)."""
    match = _FILE.search(frame)
    if not match:
        return "?"
    parts = match.group("file").split("/")
    if parts[0] == "voice_pipeline" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py")


def summarize(collapsed: str, top: int = 10, package: str = "voice_pipeline/") -> dict[str, Any]:
    """Busy samples (idle waits dropped) by leaf function, by leaf area, and inclusive time under
    this package's functions."""
    self_counts: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = idle = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_function(f) for f in stack.split(";") if f.strip() and not f.startswith("process ")]
        if not frames:
            continue
        if frames[-1] in IDLE_LEAVES:
            idle += n
            continue
        total += n
        self_counts[frames[-1]] += n
        areas[area(frames[-1])] += n
        for name in set(frames):
            if package in name and not any(entry in name for entry in ENTRY_FILES):
                ours[name] += n

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "share": round(n / total, 3)}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "idle_samples": idle,
        "self": rows(self_counts),
        "areas": rows(areas),
        "inclusive_ours": rows(ours),
    }
