"""ASR settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AsrSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["whisper", "sensevoice", "openai"] = Field(
        "whisper",
        description="whisper (faster-whisper, offline default), sensevoice (FunASR, production) or "
        "openai (a remote OpenAI-compatible /audio/transcriptions).",
    )
    openai_base_url: str = Field(
        "https://api.openai.com/v1", description="Base of the remote /audio/transcriptions (backend openai)."
    )
    openai_model: str = Field("whisper-1", description="Model name sent to the remote ASR.")
    openai_key_file: str = Field("", description="File holding the remote ASR API key. Never logged.")
    openai_key_env: str = Field("", description="Environment variable holding that key.")
    openai_timeout_s: float = Field(15.0, gt=0, description="Timeout of one remote transcription.")
    whisper_model: str = Field("whisper-base", description="Installed model name (see `models list`).")
    sensevoice_dir: str = Field(
        "",
        description="Directory of an exported SenseVoiceSmall ONNX model (default: $VP_HOME/models/sensevoice-small).",
    )
    sensevoice_quantized: bool = Field(True, description="Use model_quant.onnx (int8) instead of model.onnx.")
    languages: list[str] = Field(
        default_factory=lambda: ["zh", "en"],
        description="Languages `auto` chooses among (whisper base mistakes synthetic Mandarin for Thai otherwise).",
    )
    threads: int = Field(2, ge=1, description="CPU threads of the ASR model.")
    beam_size: int = Field(1, ge=1, le=8, description="1 = greedy (fast); beam search costs linearly more.")
    max_decode_tokens: int = Field(96, ge=8, le=440, description="Decode length cap per utterance.")
    min_window_s: float = Field(
        10.0,
        ge=1,
        le=30,
        description="Shortest Whisper encoder window; shorter is faster but repeats itself.",
    )
    batch_max_size: int = Field(8, ge=1, description="Most utterances decoded in one model call.")
    # Two batches in flight: whisper's decoder is sequential and leaves cores idle while one batch
    # decodes. Measured with the fleet benchmark on 2 cores: speech end -> stt p95 at 41-46 devices
    # 1350 ms with 1 worker, 760-860 ms with 2; the single-device floor is unchanged with 2 threads.
    workers: int = Field(
        2,
        ge=1,
        le=8,
        description="Batches decoded at once, each on `threads` threads (whisper's decoder leaves cores idle).",
    )
    batch_max_wait_ms: float = Field(
        20.0, ge=0, description="Wait after the first utterance for more to batch."
    )
    queue_size: int = Field(64, ge=1, description="Waiting utterances beyond this are refused (overload).")
