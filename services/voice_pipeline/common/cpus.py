"""What this process's CPUs offer: how many cores it may use (its affinity mask, a cpuset, and
its cgroup's CPU quota, a Pod's CPU limit, not the machine's count) and which vector extensions
they have (the model runtimes dispatch on them)."""

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


# The vector extensions the model runtimes dispatch on: whisper's speed differs ~2.5x between
# machines of one class with and without AVX-512 (issue 14), so every record names them.
ISA_FLAGS = (
    "sse4_1", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx_vnni", "avx512_bf16", "amx_int8",
)  # fmt: skip


def cpu_flags(cpuinfo: str) -> list[str]:
    """The ISA_FLAGS the first CPU of a /proc/cpuinfo text has, in ISA_FLAGS order."""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            present = set(line.split(":", 1)[1].split())
            return [f for f in ISA_FLAGS if f in present]
    return []


def machine_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """cpu_flags of this machine ([] where /proc/cpuinfo cannot be read)."""
    try:
        return cpu_flags(cpuinfo.read_text())
    except OSError:
        return []


def int8_products_exact(flags: list[str]) -> bool:
    """Whether int8 matrix products run on VNNI instructions, which accumulate u8 x s8 products in
    32 bits. Without them (AVX2 only), CTranslate2's oneDNN kernels sum pairs of products into 16
    bits first (vpmaddubsw), which saturates: whisper-base int8 then decodes worse (issue 14,
    measured on an AVX2-only EPYC: docs/benchmarks.md)."""
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
