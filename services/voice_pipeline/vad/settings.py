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
    # Chosen by measurement (`make bench-asr`, docs/benchmarks.md "Endpointing", 2026-11-29). The
    # segmenter counts 32 ms windows: 300 waits 320 ms, 350 waits 352, 400 waits 416. Over 190
    # Piper sentences 200 ended 10 turns inside a comma pause, 300 one, 400 none; 300 also split
    # the espeak Mandarin clip zh_hello (a fleet-workload clip) at its comma, 350 does not; each
    # step adds its wait to every turn's first audio.
    min_silence_ms: int = Field(
        350,
        ge=32,
        description="Silence that ends an utterance (measured: 200-300 end turns at comma pauses, 400 adds 64 ms).",
    )
    # Early transcription: at this much silence the gateway starts ASR on the utterance so far, and
    # if the turn then ends without more speech its transcript is (nearly) ready: the ASR time hides
    # inside the rest of the end-of-turn wait. Speech that resumes costs one wasted ASR run.
    pause_ms: int = Field(
        128,
        ge=0,
        description="Silence at which a speech_pause event lets the gateway transcribe early (0 = off; "
        "must be below min_silence_ms).",
    )
    threads: int = Field(1, ge=1, description="onnxruntime intra-op threads (batching, not threads, scales).")
    batch_max_size: int = Field(64, ge=1, description="Most sessions advanced in one model call.")
    batch_max_wait_ms: float = Field(2.0, ge=0, description="Wait after the first request for more to batch.")
    queue_size: int = Field(1024, ge=1, description="Pending feeds beyond this are refused (overload).")
