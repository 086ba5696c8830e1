"""In-process ASR stage: utterances from all sessions batched into one model call."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from voice_pipeline.asr.engine import AsrEngine, AsrItem
from voice_pipeline.asr.settings import AsrSettings
from voice_pipeline.common.audio import Float32Array, Int16Array, even_quiet_edges, int16_to_float
from voice_pipeline.common.batching import BatchConfig, MicroBatcher
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.paths import models_dir
from voice_pipeline.common.stages import Language, Transcript
from voice_pipeline.models.registry import require_model

log = logging.getLogger(__name__)


def build_engine(settings: AsrSettings) -> AsrEngine:
    if settings.backend == "openai":
        from voice_pipeline.asr.openai_remote import OpenAITranscriptionEngine
        from voice_pipeline.common.secrets import read_api_key

        return OpenAITranscriptionEngine(
            settings.openai_base_url,
            settings.openai_model,
            read_api_key(settings.openai_key_file, settings.openai_key_env),
            settings.languages,
            settings.openai_timeout_s,
            max_parallel=settings.batch_max_size,
        )
    if settings.backend == "sensevoice":
        from voice_pipeline.asr.sensevoice import SenseVoiceEngine

        model_dir = (
            Path(settings.sensevoice_dir) if settings.sensevoice_dir else models_dir() / "sensevoice-small"
        )
        return SenseVoiceEngine(
            model_dir, settings.threads, settings.sensevoice_quantized, settings.batch_max_size
        )
    from voice_pipeline.asr.whisper import WhisperEngine

    window = settings.encoder_window_s
    log.info(
        "ASR: whisper encoder window of at least %g s%s", window, "" if settings.min_window_s else " (by CPU)"
    )
    return WhisperEngine(
        require_model(settings.whisper_model),
        threads=settings.threads,
        solo_threads=settings.solo_threads,
        beam_size=settings.beam_size,
        max_decode_tokens=settings.max_decode_tokens,
        languages=settings.languages,
        min_window_s=window,
        workers=settings.workers,
        repetition_penalty=settings.repetition_penalty,
        no_repeat_ngram_size=settings.no_repeat_ngram_size,
        tokens_per_second=settings.tokens_per_second,
        cap_floor_tokens=settings.cap_floor_tokens,
        language_min_probability=settings.language_min_probability,
        fallback_language=settings.fallback_language,
    )


TRIM_LEAD_S = 0.2  # quiet kept before the first voiced frame (see AsrSettings.trim_edges)
TRIM_TAIL_S = 0.3  # and after the last: Whisper ends sentences better with a little quiet


def prepare_utterance(audio: Float32Array, settings: AsrSettings) -> Float32Array:
    """The audio the model gets for an utterance: even quiet edges (AsrSettings.trim_edges).
    The ASR benchmark transcribes through this too, so it measures what ships."""
    return even_quiet_edges(audio, TRIM_LEAD_S, TRIM_TAIL_S) if settings.trim_edges else audio


class InProcessAsr:
    """Implements common.stages.AsrStage; use as an async context manager (loads the model)."""

    def __init__(self, settings: AsrSettings, metrics: Metrics, engine: AsrEngine | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self._engine = engine
        self._batcher: MicroBatcher[AsrItem, Transcript] | None = None

    async def __aenter__(self) -> InProcessAsr:
        import asyncio

        if self._engine is None:
            self._engine = await asyncio.to_thread(build_engine, self.settings)
        config = BatchConfig(
            self.settings.batch_max_size,
            self.settings.batch_max_wait_ms / 1000,
            self.settings.queue_size,
            workers=self.settings.workers,
        )
        self._batcher = MicroBatcher("asr", self._process, config, self.metrics)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._batcher is not None:
            await self._batcher.stop()
        close = getattr(self._engine, "close", None)  # remote back ends hold connections
        if callable(close):
            close()

    def _process(self, items: Sequence[AsrItem]) -> list[Transcript]:
        assert self._engine is not None
        return self._engine.transcribe_batch(items)

    async def transcribe(self, pcm: Int16Array, language: Language, fallback: str = "") -> Transcript:
        assert self._batcher is not None, "use InProcessAsr as an async context manager"
        return await self._batcher.submit(
            AsrItem(prepare_utterance(int16_to_float(pcm), self.settings), language, fallback)
        )
