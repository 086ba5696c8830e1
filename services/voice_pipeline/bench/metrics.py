"""Per-stage figures of a fleet step from the system's own /metrics (deltas over the step)."""

from __future__ import annotations

from typing import Any

import httpx

from voice_pipeline import contract as c

Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(urls: dict[str, str]) -> Sample:
    """All counter/histogram samples of the contract metrics, summed over the processes."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Sample = {}
    for url in urls.values():
        try:
            text = httpx.get(url, timeout=5).text
        except httpx.HTTPError:
            continue
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name.startswith(("voice_stage_", "voice_e2e_", "voice_turn_", "voice_gateway_early_")):
                    key = (s.name, tuple(sorted(s.labels.items())))
                    out[key] = out.get(key, 0.0) + s.value
    return out


def _total(sample: Sample, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in sample.items() if n == name and want <= set(ls))


def _delta(before: Sample, after: Sample, name: str, **labels: str) -> float:
    """How much a counter (or a histogram's _count/_sum) grew over the step."""
    return _total(after, name, **labels) - _total(before, name, **labels)


def stage_deltas(before: Sample, after: Sample, seconds: float) -> dict[str, dict[str, Any]]:
    """Per stage: requests, busy seconds and their share of the step, mean batch size."""
    out: dict[str, dict[str, Any]] = {}
    for stage in ("vad", "asr", "llm", "tts"):

        def delta(name: str, stage: str = stage) -> float:
            return _delta(before, after, name, stage=stage)

        requests = delta(c.METRIC_REQUESTS)
        busy = delta(c.METRIC_BUSY)
        batches = delta(c.METRIC_BATCH_SIZE + "_count")
        items = delta(c.METRIC_BATCH_SIZE + "_sum")
        latency_n = delta(c.METRIC_LATENCY + "_count")
        latency_s = delta(c.METRIC_LATENCY + "_sum")
        out[stage] = {
            "requests": round(requests),
            "busy_seconds": round(busy, 2),
            "busy_share": round(busy / seconds, 3) if seconds > 0 else 0.0,
            "mean_batch": round(items / batches, 2) if batches else None,
            "mean_latency_ms": round(latency_s / latency_n * 1000, 1) if latency_n else None,
        }
    return out


def early_work(before: Sample, after: Sample) -> dict[str, dict[str, int]]:
    """Work begun at pauses (gateway.early) over the step: transcriptions and language-model
    replies, used by the turn that ended there or dropped because speech went on."""
    return {
        work: {result: round(_delta(before, after, name, result=result)) for result in ("used", "dropped")}
        for work, name in (("asr", c.METRIC_EARLY_ASR), ("reply", c.METRIC_EARLY_REPLY))
    }


def turn_steps(before: Sample, after: Sample) -> dict[str, dict[str, Any]]:
    """Per step of a turn (turn.timeline): how many were observed over the step and their mean.
    Means, not percentiles, because means add up: the steps' means sum to the mean time from the
    last voiced frame to the first audio frame sent (`encode` is a part of tts_first_audio)."""
    out: dict[str, dict[str, Any]] = {}
    for step in (*c.TURN_STEPS, c.TURN_STEP_ENCODE):
        n = _delta(before, after, c.METRIC_TURN_STEP + "_count", step=step)
        total = _delta(before, after, c.METRIC_TURN_STEP + "_sum", step=step)
        out[step] = {"count": round(n), "mean_ms": round(total / n * 1000, 1) if n else None}
    return out
