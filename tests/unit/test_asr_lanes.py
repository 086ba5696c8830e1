"""Which copy of the ASR model a call runs on (whisper.Lanes), and how many cores a process may
use (common.cpus): the solo copy's extra threads go only to a call that has the cores alone; and
which encoder window the CPU's int8 products allow."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from voice_pipeline.asr.whisper import Lanes
from voice_pipeline.common.cpus import cpu_budget, parse_cpu_max, usable_cpus


def test_a_call_alone_runs_on_the_solo_copy_and_a_concurrent_one_on_the_shared() -> None:
    lanes = Lanes(shared="shared", solo="solo", idle_s=0.0)
    with lanes.take() as first:
        assert first == "solo"
        with lanes.take() as second:
            assert second == "shared"
        with lanes.take() as third:  # the solo copy is still busy with the first call
            assert third == "shared"
    with lanes.take() as again:
        assert again == "solo"


def test_without_a_solo_copy_every_call_is_shared() -> None:
    lanes = Lanes(shared="shared", solo=None, idle_s=0.0)
    with lanes.take() as first, lanes.take() as second:
        assert (first, second) == ("shared", "shared")


def test_lanes_count_calls_from_many_threads() -> None:
    """The batcher's workers call from their own threads: never two calls on the solo copy."""
    lanes = Lanes(shared="shared", solo="solo", idle_s=0.0)
    on_solo = 0
    most_on_solo = 0
    guard = threading.Lock()
    start = threading.Barrier(8)

    def call() -> None:
        nonlocal on_solo, most_on_solo
        start.wait()
        for _ in range(200):
            with lanes.take() as model:
                if model == "solo":
                    with guard:
                        on_solo += 1
                        most_on_solo = max(most_on_solo, on_solo)
                    time.sleep(0)  # let the others run while this call holds the solo copy
                    with guard:
                        on_solo -= 1

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most_on_solo == 1
    with lanes.take() as model:
        assert model == "solo"  # every call was counted out again


def test_a_call_right_after_another_runs_on_the_shared_copy() -> None:
    """Calls back to back are load: the solo copy waits for ASR to have been idle a while."""
    lanes = Lanes(shared="shared", solo="solo", idle_s=0.2)
    with lanes.take() as first:
        assert first == "solo"
    with lanes.take() as soon_after:
        assert soon_after == "shared"
    time.sleep(0.25)
    with lanes.take() as later:
        assert later == "solo"


def test_cgroup_cpu_max_is_read_as_cores() -> None:
    assert parse_cpu_max("200000 100000\n") == 2.0
    assert parse_cpu_max("50000 100000") == 0.5
    assert parse_cpu_max("max 100000") is None
    assert parse_cpu_max("") is None
    assert parse_cpu_max("garbage here") is None


def test_cpu_budget_is_capped_by_the_cgroup_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("50000 100000\n")  # a Pod limited to 500m
    assert cpu_budget(cpu_max) == min(0.5, usable_cpus())
    cpu_max.write_text("max 100000\n")
    assert cpu_budget(cpu_max) == usable_cpus()
    assert cpu_budget(tmp_path / "missing") == usable_cpus()  # no cgroup v2 file: the affinity mask


def test_the_encoder_window_is_wider_where_int8_products_saturate() -> None:
    from voice_pipeline.asr.settings import MIN_WINDOW_S, WIDE_WINDOW_S, AsrSettings, window_for_cpu

    assert window_for_cpu(["avx2", "avx512f", "avx512_vnni"]) == MIN_WINDOW_S
    assert window_for_cpu(["avx2", "avx_vnni"]) == MIN_WINDOW_S
    assert window_for_cpu(["sse4_1", "avx", "avx2", "fma"]) == WIDE_WINDOW_S  # AVX2 only
    assert window_for_cpu([]) == WIDE_WINDOW_S  # unknown CPU: the safe window
    assert WIDE_WINDOW_S > MIN_WINDOW_S
    assert AsrSettings(min_window_s=10).encoder_window_s == 10  # an operator's choice wins
    assert AsrSettings().encoder_window_s in (MIN_WINDOW_S, WIDE_WINDOW_S)


def test_machine_cpu_flags_reads_cpuinfo_and_survives_its_absence(tmp_path: Path) -> None:
    from voice_pipeline.common.cpus import machine_cpu_flags

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx avx2 avx512_vnni\n")
    assert machine_cpu_flags(cpuinfo) == ["avx", "avx2", "avx512_vnni"]
    assert machine_cpu_flags(tmp_path / "missing") == []
