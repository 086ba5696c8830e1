"""Busy seconds are CPU seconds: the autoscaler and the observed costs read them as cores used, so
waiting (a contended node, a replica at its CPU limit, I/O) must not count, and the compute of the
models' own worker threads must."""

from __future__ import annotations

import threading
import time

from voice_pipeline.common.metrics import Metrics


def busy(metrics: Metrics, stage: str) -> float:
    return float(metrics.busy.labels(stage)._value.get())


def test_waiting_is_not_busy_and_worker_threads_compute_is() -> None:
    metrics = Metrics(serves_devices=False)
    with metrics.busy_time("asr"):
        time.sleep(0.5)  # the section lasts, and costs (almost) nothing
    waited = busy(metrics, "asr")
    assert waited < 0.25, waited

    done = threading.Event()

    def work() -> None:  # like a model's intra-op pool: CPU spent outside the calling thread
        x = 0
        start = time.process_time()
        while time.process_time() - start < 0.5:
            x += 1
        done.set()

    with metrics.busy_time("asr"):
        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
    assert done.is_set() and busy(metrics, "asr") - waited >= 0.45
