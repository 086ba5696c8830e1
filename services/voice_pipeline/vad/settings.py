"""VAD settings (thresholds follow the reference server: 0.5 / 0.3; the end-of-turn silence is measured)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class VadSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, gt=0, lt=1, description="Window probability at or above which it is voice.")
    neg_threshold: float = Field(0.3, gt=0, lt=1, description="Probability at or below which it is silence.")
    start_windows: int = Field(
        3, ge=1, description="Voiced windows among the last `window_history` to start speech."
    )
    window_history: int = Field(5, ge=1, description="Windows considered for the speech start vote.")
    # Chosen by measurement (`make bench-asr`, docs/benchmarks.md "Endpointing", 2026-11-29): over
    # 190 Piper sentences, 200 ms ended 10 turns inside a comma pause, 300 ms one (a comma in an
    # 18-word sentence), 400 ms none; each 100 ms more adds ~96 ms to every turn (turn end p50 320 /
    # 416 / 512 ms after speech). Two sentences with a 300-450 ms breath between them are split 5
    # times in 11 at 300 ms, never at 400: the price of the faster turn.
    min_silence_ms: int = Field(
        300,
        ge=32,
        description="Silence that ends an utterance (measured: 200 cuts comma pauses, 400 adds 100 ms per turn).",
    )
    threads: int = Field(1, ge=1, description="onnxruntime intra-op threads (batching, not threads, scales).")
    batch_max_size: int = Field(64, ge=1, description="Most sessions advanced in one model call.")
    batch_max_wait_ms: float = Field(2.0, ge=0, description="Wait after the first request for more to batch.")
    queue_size: int = Field(1024, ge=1, description="Pending feeds beyond this are refused (overload).")
