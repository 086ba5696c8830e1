"""ASR settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from voice_pipeline.common.cpus import int8_products_exact, machine_cpu_flags

# Chosen by `make bench-asr` on the ASR test set (docs/benchmarks.md, "ASR accuracy and cost"),
# 190 English utterances under `auto`, whisper-base int8, 2026-11-29:
# - no repetition penalty, no n-gram ban: with penalty 1.1 and no-repeat 4-grams WER was 4.1%
#   against 2.2% for whisper's own decoding (the penalty drops a second "the": "lock back door and
#   set heating to 19 degrees for night"); without them, 10 s window, 2.4% against 2.2% for the
#   reference, within the 1-point budget, at 0.31-0.35 CPU s per utterance against 1.16-1.17 s for the
#   30 s window. Loops, which the penalty held back, are bounded by the duration cap instead.
# - 10 tokens per second: speech in the set needs at most 5.9 (p99 5.5); Chinese, 1-2 tokens
#   per character at ~5 characters per second, fits too.
# - fallback below 0.5: the right language got >= 0.77 on every test-set clip; noise and
#   reversed speech give the likeliest allowed language 0.06-0.1.
# - 5 s window (was 10): the encoder costs what the window costs, and most utterances are 1-3 s.
#   On the test set WER 2.9% against 2.4% with 10 s (reference 2.2%: within the 1-point budget),
#   CPU 0.27 against 0.35-0.39 s per utterance, wall p50 143 against 198-222 ms; what it costs: one
#   short command repeated ("Lock the front door." twice), one detected as zh, one 4.7 s question
#   lost two words. In the fleet at 48 devices on 2 cores (two runs each): p95 first audio
#   1953/2202 ms against 2296/2771, stt p50 154/206 against 386/430 ms, 1.01 against 1.17 cores.
# - 7.5 s window on CPUs without VNNI (2026-11-30, an AVX2-only EPYC): there int8 products saturate
#   (common/cpus.py) and the 5 s window gave WER 5.9% (3.6% once sentence loops were cut, see
#   decoding.loop_start) against 2.3% for the reference decoding on the same machine: outside the
#   1-point budget. 6 s: 3.2%, 7.5 s: 2.35%, 10 s: 2.2%; float32 at 5 s: 2.8%. Wall per utterance
#   (1 thread, 60 clips): 5 s 307-328 ms, 7.5 s 394, 10 s 499-539, float32 at 5 s 487.
MIN_WINDOW_S = 5.0
WIDE_WINDOW_S = 7.5
TOKENS_PER_SECOND = 10.0
REPETITION_PENALTY = 1.0
NO_REPEAT_NGRAM = 0
LANGUAGE_MIN_PROBABILITY = 0.5


def window_for_cpu(flags: list[str]) -> float:
    """The shortest encoder window that keeps WER within a point of the reference decoding on a
    CPU with these flags (see above)."""
    return MIN_WINDOW_S if int8_products_exact(flags) else WIDE_WINDOW_S


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
    # One thread per batch, two batches at once (`workers`): on batches of one (most of them), two
    # threads decode no faster than one (whisper-base, 5 s window, 40 test-set clips: 183 against
    # 178 ms wall) and spend 8% more CPU, and four model threads on two cores made every thread of
    # the server wait longer for a core. Fleet benchmark on 2 cores, 60 devices, interleaved twice
    # (2026-11-30): p95 first audio 1701 / 1909 ms with 1 thread, 2188 / 2185 ms with 2, the
    # server's threads waiting 0.71 against 1.16 s for a core per second on one.
    threads: int = Field(1, ge=1, description="CPU threads of each batch the ASR model decodes.")
    # A call alone may use more (whisper.Lanes). Measured on an AVX2-only EPYC (2026-11-30, fleet
    # benchmark, interleaved): one device, 16 turns, the ASR step of a turn (what the early
    # transcription could not hide) 230 -> 178 ms, first audio p50 531 -> 498 ms; at 24 devices
    # (this VM's knee) p95 first audio 1852 / 2011 ms against 2065 / 2197 / 2538 without it.
    solo_threads: int = Field(
        2,
        ge=0,
        le=16,
        description="CPU threads of a batch decoded while no other is (a second copy of the model, "
        "~110 MiB; used only if above `threads` and the process may use that many cores; 0 = off).",
    )
    beam_size: int = Field(1, ge=1, le=8, description="1 = greedy (fast); beam search costs linearly more.")
    max_decode_tokens: int = Field(
        96,
        ge=8,
        le=224,
        description="Absolute decode length cap per utterance (tokens; whisper's limit is 224).",
    )
    # Bad audio is where whisper loops (issue 14, item 3): the cap follows the utterance's length.
    tokens_per_second: float = Field(
        TOKENS_PER_SECOND,
        ge=0,
        description="Decode cap per second of audio, on top of cap_floor_tokens (0 = only max_decode_tokens).",
    )
    cap_floor_tokens: int = Field(8, ge=1, description="Tokens any utterance may decode, however short.")
    repetition_penalty: float = Field(
        REPETITION_PENALTY, ge=1.0, le=2.0, description="Whisper decoding repetition penalty (1 = none)."
    )
    no_repeat_ngram_size: int = Field(
        NO_REPEAT_NGRAM, ge=0, le=16, description="Forbid repeating n-grams of this size (0 = off)."
    )
    language_min_probability: float = Field(
        LANGUAGE_MIN_PROBABILITY,
        ge=0,
        le=1,
        description="Under `auto`, a detected language below this probability falls back to fallback_language.",
    )
    fallback_language: str = Field(
        "",
        description="Language of unconfident detections from devices that gave no language of their own "
        "(default: the first of `languages`).",
    )
    min_window_s: float = Field(
        0.0,
        ge=0,
        le=30,
        description="Shortest Whisper encoder window in seconds; shorter is faster but repeats itself. "
        "0 = by CPU: 5 where int8 products run on VNNI (AVX-512 VNNI, AVX-VNNI), 7.5 elsewhere.",
    )

    # Measured (2026-11-29, the `make bench-asr` test set, whisper-base, 5 s window): 0.3 s of
    # silence before an utterance (the gateway's pre-roll) took English WER from 3.0% to 12.0% (the
    # phrase said twice, words dropped). Turns cut as the gateway cuts them (Silero + segmenter,
    # 300 ms pre-roll): 14.0% WER at the end of the turn, 10.8% at the early-transcription pause;
    # with the edges evened to 0.2 s / 0.3 s: 6.3% both (whole clips 2.8%, Chinese CER unchanged).
    trim_edges: bool = Field(
        True,
        description="Even the quiet (below -40 dBFS) around the voiced part to 0.2 s before and 0.3 s after "
        "(cut or padded) before transcribing: Whisper repeats itself and drops words after long leading silence.",
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

    @property
    def encoder_window_s(self) -> float:
        """min_window_s, or the window chosen for this machine's CPU when it is 0."""
        return self.min_window_s or window_for_cpu(machine_cpu_flags())
