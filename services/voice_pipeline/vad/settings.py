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
    # Chosen by measurement (`make bench-asr`, docs/benchmarks.md "Endpointing"; one-device runs in
    # bench/analysis.md, 2026-11-30). The segmenter counts 32 ms windows: 160 waits 160 ms, 200
    # waits 224, 350 waits 352. Over 190 Piper sentences 160 ends 15 turns inside a comma pause (200:
    # 10, 350: 0), where a turn cut off would lose the rest of the sentence; but the gateway holds a
    # turn until its reply plays, and speech that resumes joins it (gateway/conversation.py), so
    # such a cut costs a wasted transcription and request, not words. One device, interleaved:
    # our share of the wait 324-338 ms with 160, 355-399 with 200 (both with early_quiet_ms), 400-406
    # with 200 before it. Near capacity the gateway waits longer anyway (busy_end_extra_ms).
    min_silence_ms: int = Field(
        160,
        ge=32,
        description="Silence that ends an utterance (a pause taken for the end is taken back when speech "
        "resumes before the reply plays).",
    )
    # Early transcription: at this much silence the gateway starts ASR on the utterance so far, and
    # if the turn then ends without more speech its transcript is (nearly) ready: the ASR time hides
    # inside the rest of the end-of-turn wait. Speech that resumes costs one wasted ASR run. Two
    # windows: Silero scores ~100 ms of a word's tail as voice, so the pause is reported ~190 ms
    # after the voice; where the room is quiet the gateway starts sooner, at 60 ms of quiet audio
    # (gateway.early_quiet_ms); whisper-base needs ~200-240 ms for the turn here.
    pause_ms: int = Field(
        64,
        ge=0,
        description="Silence at which a speech_pause event lets the gateway transcribe early (0 = off; "
        "must be below min_silence_ms).",
    )
    threads: int = Field(1, ge=1, description="onnxruntime intra-op threads (batching, not threads, scales).")
    batch_max_size: int = Field(64, ge=1, description="Most sessions advanced in one model call.")
    batch_max_wait_ms: float = Field(2.0, ge=0, description="Wait after the first request for more to batch.")
    queue_size: int = Field(1024, ge=1, description="Pending feeds beyond this are refused (overload).")
