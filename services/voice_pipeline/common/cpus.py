"""How many cores this process may use: its affinity mask (a cpuset) and its cgroup's CPU quota
(a Pod's CPU limit), not the machine's count."""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def parse_cpu_max(text: str) -> float | None:
    """Cores a cgroup v2 `cpu.max` allows ("200000 100000" -> 2.0), None without a quota."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cpu_budget(cpu_max: Path = CGROUP_CPU_MAX) -> float:
    """Cores this process can keep busy: the affinity mask, capped by the cgroup quota if any."""
    try:
        quota = parse_cpu_max(cpu_max.read_text())
    except OSError:
        quota = None
    cpus = float(usable_cpus())
    return cpus if quota is None else min(cpus, quota)
