"""VAD settings (defaults follow the reference server: 0.5 / 0.3 thresholds, 200 ms hangover)."""

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
    min_silence_ms: int = Field(
        400,
        ge=32,
        description="Silence that ends an utterance (the reference uses 200; comma pauses reach 320).",
    )
    threads: int = Field(1, ge=1, description="onnxruntime intra-op threads (batching, not threads, scales).")
    batch_max_size: int = Field(64, ge=1, description="Most sessions advanced in one model call.")
    batch_max_wait_ms: float = Field(2.0, ge=0, description="Wait after the first request for more to batch.")
    queue_size: int = Field(1024, ge=1, description="Pending feeds beyond this are refused (overload).")
