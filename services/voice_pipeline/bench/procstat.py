"""CPU and RSS of process trees from /proc, sampled while a fleet runs.

CPU counts user + system time of every live process in the tree plus the children it has
reaped (cutime/cstime: short-lived engine subprocesses such as espeak-ng), so nothing the
system spends on a request escapes the figure. RSS is the sum over the live tree.

Two more figures say whether the CPU is the limit (issue 14, item 1): how busy the whole machine
was (/proc/stat: the load generator and emulators share it), and how long the tree's threads
were runnable but waited for a core (schedstat), per second they ran. A machine can be 70% busy
on average while latency-critical threads wait 0.8 s for a core per second of work: demand comes
in bursts, and every stage of a turn is on its critical path.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_KIB = (os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096) // 1024


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own cpu seconds, reaped children's cpu seconds) of one process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


def _rss_mib(pid: int) -> float:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * PAGE_KIB / 1024


def tree(root: int) -> list[int]:
    """`root` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_seconds(root: int) -> float | None:
    """CPU seconds used so far by `root`'s tree (None once `root` has exited: its counters are
    gone, and 0 would read as the tree giving CPU back); descendants that exited before we saw
    them are covered by their parent's reaped-children counters."""
    total = 0.0
    for i, pid in enumerate(tree(root)):
        st = _stat(pid)
        if st is None:
            if i == 0:
                return None
            continue
        total += st[1] + st[2] if i == 0 else st[1]
    return total


def tree_sched_seconds(root: int) -> tuple[float, float]:
    """(seconds on a core, seconds runnable but waiting for one) summed over the threads of
    `root`'s live tree (/proc/<pid>/task/<tid>/schedstat; zeros where the kernel has none). A
    thread that ends between two readings drops out of the second: the system's threads live as
    long as it does, so its figure holds; a tree that exited reads (0, 0)."""
    ran = waited = 0.0
    for pid in tree(root):
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                run_ns, wait_ns = (int(x) for x in (task / "schedstat").read_text().split()[:2])
            except (OSError, ValueError):
                continue
            ran += run_ns / 1e9
            waited += wait_ns / 1e9
    return ran, waited


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat; idle and iowait
    are not busy)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0
    total = sum(fields[:8])  # guest time is already inside user
    return (total - fields[3] - fields[4]) / CLOCK_TICKS, total / CLOCK_TICKS


def machine_busy(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """Share of the machine's CPU time that was busy between two `machine_cpu_seconds`."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total > 0 else None


def wait_per_run(on_cpu_s: float, waited_s: float) -> float | None:
    """Seconds waited for a core per second on one."""
    return round(waited_s / on_cpu_s, 3) if on_cpu_s > 0 else None


def tree_rss_mib(root: int) -> float:
    return sum(_rss_mib(pid) for pid in tree(root))


@dataclass
class _Track:
    cpu0: float
    t0: float
    cpu1: float = 0.0
    t1: float = 0.0
    rss: list[float] = field(default_factory=list)
    sched0: tuple[float, float] = (0.0, 0.0)


class TreeSampler:
    """Samples named process trees every `interval` seconds on a thread (the bench process does
    nothing else meanwhile); `stop()` returns CPU cores used and RSS per name."""

    def __init__(self, roots: dict[str, int], interval: float = 1.0) -> None:
        self.roots = roots
        self.interval = interval
        self._tracks: dict[str, _Track] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._machine0 = (0.0, 0.0)
        self.machine_busy_share: float | None = None  # set by stop()

    def start(self) -> TreeSampler:
        now = time.monotonic()
        self._tracks = {}
        self._machine0 = machine_cpu_seconds()
        for name, pid in self.roots.items():
            cpu = tree_cpu_seconds(pid) or 0.0
            self._tracks[name] = _Track(cpu, now, cpu, now, sched0=tree_sched_seconds(pid))
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        now = time.monotonic()
        for name, pid in self.roots.items():
            cpu = tree_cpu_seconds(pid)
            if cpu is None:
                # Exited (also between a check and the reading: the test that found this failed
                # 1 run in ~10): keep its last reading.
                continue
            track = self._tracks[name]
            track.cpu1, track.t1 = cpu, now
            track.rss.append(tree_rss_mib(pid))

    def stop(self) -> dict[str, dict[str, Any]]:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.machine_busy_share = machine_busy(self._machine0, machine_cpu_seconds())
        out: dict[str, dict[str, Any]] = {}
        for name, pid in self.roots.items():
            track = self._tracks[name]
            rss = track.rss or [0.0]
            sched1 = tree_sched_seconds(pid)
            on_cpu, waited = (max(0.0, sched1[i] - track.sched0[i]) for i in (0, 1))
            wall = max(1e-9, track.t1 - track.t0)
            out[name] = {
                "pid": pid,
                "cpu_seconds": round(track.cpu1 - track.cpu0, 2),
                "cpu_cores": round((track.cpu1 - track.cpu0) / wall, 3),
                "rss_mib_peak": round(max(rss), 1),
                "rss_mib_mean": round(sum(rss) / len(rss), 1),
                "on_cpu_seconds": round(on_cpu, 2),
                "runnable_wait_seconds": round(waited, 2),
                "cpu_wait_per_run": wait_per_run(on_cpu, waited),
            }
        return out
