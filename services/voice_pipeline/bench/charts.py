"""PNG charts of benchmark records and plans (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        from voice_pipeline.common.errors import ConfigError

        raise ConfigError(
            "charts need matplotlib: `.venv/bin/pip install -e '.[bench]'` (or `make bench-deps`)"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _steps(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured fleet size once (the search may revisit a size to profile it)."""
    by_n: dict[int, dict[str, Any]] = {}
    for step in [record.get("floor"), *record.get("steps", [])]:
        if step:
            by_n.setdefault(step["devices"], step)
    return [by_n[n] for n in sorted(by_n)]


def latency_chart(record: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    steps = _steps(record)
    n = [s["devices"] for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4))
    for q, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        ax.plot(n, [s["first_audio_ms"][q] for s in steps], style, label=f"first audio {q}")
    ax.plot(n, [s["stt_ms"]["p95"] for s in steps], "x--", label="stt p95")
    ax.axhline(record.get("slo_ms", 2000), color="red", linestyle=":", label="SLO")
    if record.get("supported_devices"):
        ax.axvline(record["supported_devices"], color="green", linestyle=":", label="supported")
    ax.set_xlabel("devices")
    ax.set_ylabel("speech end -> ms")
    ax.set_title(f"{record['mode']}: latency vs devices ({record['date'][:10]})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def cpu_chart(record: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    steps = _steps(record)
    n = [s["devices"] for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(n, [s["system_cpu_cores"] for s in steps], "o-", label="system CPU (cores)")
    ax.plot(n, [s["emulator_cpu_cores"] for s in steps], "s--", label="provider emulators (cores)")
    ax.plot(n, [s["client"]["cpu_cores"] for s in steps], "^--", label="load generator (cores)")
    ax.axhline(record["machine"]["cores"], color="red", linestyle=":", label="machine cores")
    ax.set_xlabel("devices")
    ax.set_ylabel("cores")
    ax2 = ax.twinx()
    ax2.plot(n, [s["system_rss_mib"] for s in steps], "d-.", color="gray", label="system RSS (MiB)")
    ax2.set_ylabel("MiB")
    ax.set_title(f"{record['mode']}: CPU and memory vs devices")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def bar_chart(
    labels: Sequence[str], values: Sequence[float], title: str, ylabel: str, path: Path, highlight: str = ""
) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    colors = ["tab:red" if label == highlight else "tab:blue" for label in labels]
    bars = ax.bar(list(labels), list(values), color=colors)
    ax.bar_label(bars, fmt="%g", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
