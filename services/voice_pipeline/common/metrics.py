"""Prometheus metrics of the contract (voice_pipeline.contract), one registry per process.

All stages in one process (all-in-one mode) share one `Metrics`, told apart by the `stage` label.
No per-session labels: cardinality stays fixed however many devices connect.

An all-in-one server of several worker processes (voice_pipeline.workers) sets
PROMETHEUS_MULTIPROC_DIR: every process writes its values there and any worker's /metrics reads
them all (counters and histograms add up; the gauges say how: `livesum`, the live workers' sum).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from voice_pipeline import contract as c

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set by voice_pipeline.workers for its processes
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


def cpu_seconds() -> float:
    """The process's CPU time, the clock of busy seconds. Not wall time: on a contended node (or
    a replica at its CPU limit) a section takes longer without costing more, and the autoscaler
    and the observed costs read busy seconds as cores used. Not this thread's time: the models
    compute in their own thread pools. A stage service runs one stage (and one batch at a time),
    so the process's CPU over a section is that section's; in all-in-one mode concurrent stages
    count into each other's (that mode has no autoscaler to mislead)."""
    return time.process_time()


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # Device-session metrics are exported only by processes that serve devices (the gateway and
    # all-in-one); a stage service keeps them unregistered so Prometheus sees one source.
    serves_devices: bool = True

    def __post_init__(self) -> None:
        r = self.registry
        stage = [c.LABEL_STAGE]
        self.requests = Counter(
            c.METRIC_REQUESTS, "Stage requests by outcome", [c.LABEL_STAGE, c.LABEL_OUTCOME], registry=r
        )
        self.latency = Histogram(
            c.METRIC_LATENCY,
            "Stage latency (queue wait included)",
            stage,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            c.METRIC_QUEUE_WAIT,
            "Time spent queued before compute",
            stage,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.busy = Counter(
            c.METRIC_BUSY, "Compute seconds spent (utilization = rate / cores)", stage, registry=r
        )
        self.inflight = Gauge(
            c.METRIC_INFLIGHT, "Requests in flight", stage, registry=r, multiprocess_mode="livesum"
        )
        self.max_concurrency = Gauge(
            c.METRIC_MAX_CONCURRENCY,
            "Configured concurrency limit",
            stage,
            registry=r,
            multiprocess_mode="livesum",  # several workers: slots of all of them
        )
        self.batch_size = Histogram(
            c.METRIC_BATCH_SIZE, "Items per model batch", stage, buckets=BATCH_BUCKETS, registry=r
        )
        self.cache = Counter(
            c.METRIC_CACHE, "Cache look-ups by result", [c.LABEL_STAGE, c.LABEL_RESULT], registry=r
        )
        self.provider = Counter(
            c.METRIC_PROVIDER,
            "Provider calls by outcome",
            [c.LABEL_STAGE, c.LABEL_PROVIDER, c.LABEL_OUTCOME],
            registry=r,
        )
        devices = r if self.serves_devices else None
        self.sessions = Gauge(
            c.METRIC_SESSIONS, "Connected device sessions", registry=devices, multiprocess_mode="livesum"
        )
        self.e2e_first_audio = Histogram(
            c.METRIC_E2E_FIRST_AUDIO,
            "Speech end to first audio frame sent",
            buckets=LATENCY_BUCKETS,
            registry=devices,
        )

        self.early_asr = Counter(
            c.METRIC_EARLY_ASR,
            (
                "Transcriptions started at a pause: used (the turn ended there), dropped (speech went"
                " on) or failed (used, but the run had failed: the turn was transcribed again)"
            ),
            [c.LABEL_RESULT],
            registry=devices,
        )
        self.turns_resumed = Counter(
            c.METRIC_TURNS_RESUMED,
            "Turns the VAD ended that speech resumed before their reply played: the end was a pause",
            registry=devices,
        )
        self.early_reply = Counter(
            c.METRIC_EARLY_REPLY,
            "Language-model replies started on an early transcript: used, or dropped (speech went on)",
            [c.LABEL_RESULT],
            registry=devices,
        )
        # Not only the gateway's: the TTS stage observes the `encode` part of its first audio.
        self.turn_step = Histogram(
            c.METRIC_TURN_STEP,
            "One step of a turn from the end of speech to the first audio frame sent",
            [c.LABEL_STEP],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    @contextmanager
    def busy_time(self, stage: str) -> Iterator[None]:
        """Count the CPU time of a compute section as busy seconds of `stage`: see `cpu_seconds`."""
        start = cpu_seconds()
        try:
            yield
        finally:
            self.busy.labels(stage).inc(cpu_seconds() - start)

    def _source(self) -> CollectorRegistry:
        """This process's registry, or with several worker processes all of theirs."""
        if not os.environ.get(MULTIPROC_ENV):
            return self.registry
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged

    def families(self) -> Iterable[Metric]:
        return self._source().collect()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self._source()), CONTENT_TYPE_LATEST
