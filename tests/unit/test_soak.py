"""The soak run's arithmetic: growth per hour and the summary of samples."""

from __future__ import annotations

import os

from voice_pipeline.bench.soak import process_sample, slope_per_hour, summarize_samples


def test_slope_per_hour_of_a_leak_and_of_noise() -> None:
    leak = [(t * 30.0, 200.0 + t * 0.5) for t in range(60)]  # +0.5 MiB per 30 s
    assert slope_per_hour(leak) == 60.0
    flat = [(t * 30.0, 200.0 + (t % 2)) for t in range(60)]
    slope = slope_per_hour(flat)
    assert slope is not None and abs(slope) < 1
    assert slope_per_hour(leak[:2]) is None


def test_summary_skips_the_ramp_and_counts_turns() -> None:
    samples = [
        {
            "t_s": t,
            "processes": {"server": {"rss_mib": 100.0 + t, "fds": 30, "threads": 12}},
            "turns": 2,
            "failed": 1 if t == 60 else 0,
            "first_audio_p95_ms": 900.0,
        }
        for t in (0, 30, 60, 90)
    ]
    summary = summarize_samples(samples, ramp_s=30)
    assert summary["server"]["rss_mib"]["first"] == 130.0 and summary["server"]["rss_mib"]["last"] == 190.0
    assert summary["server"]["fds"]["growth_per_hour"] == 0.0
    assert summary["turns"] == 8 and summary["failed_turns"] == 1


def test_process_sample_reads_this_process() -> None:
    sample = process_sample({"me": os.getpid()})["me"]
    assert sample["rss_mib"] > 0 and sample["fds"] > 0 and sample["threads"] >= 1
