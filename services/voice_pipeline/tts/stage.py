"""In-process TTS stage: clean text -> engine router -> resample -> 60 ms Opus packets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import TracebackType

import numpy as np

from voice_pipeline.common.admission import StageAdmission
from voice_pipeline.common.audio import Int16Array, OpusEncoder, resample
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.secrets import read_api_key
from voice_pipeline.common.stages import SpeechAudio, SpeechRequest
from voice_pipeline.contract import TURN_STEP_ENCODE
from voice_pipeline.tts.engine import TtsEngine
from voice_pipeline.tts.router import TtsRouter
from voice_pipeline.tts.settings import TtsSettings
from voice_pipeline.tts.text import clean_for_speech, guess_language

STAGE = "tts"


def _encode_chunk(
    encoder: OpusEncoder, carry: Int16Array, pcm: Int16Array, rate: int, out_rate: int
) -> tuple[list[bytes], Int16Array, float]:
    """(packets, the samples left for the next chunk, CPU seconds): one engine chunk resampled
    and cut into Opus frames. Runs in a worker thread; its own CPU clock times it (the work is
    all on this thread, and summing every thread of the process per chunk was itself a cost)."""
    started = time.thread_time()
    joined = np.concatenate([carry, resample(pcm, rate, out_rate)])
    whole = len(joined) // encoder.frame_size * encoder.frame_size
    packets = [
        encoder.encode(joined[i : i + encoder.frame_size]) for i in range(0, whole, encoder.frame_size)
    ]
    return packets, joined[whole:], time.thread_time() - started


def build_engines(settings: TtsSettings) -> dict[str, TtsEngine]:
    from voice_pipeline.tts.edge import EdgeEngine
    from voice_pipeline.tts.espeak import EspeakEngine
    from voice_pipeline.tts.piper import PiperEngine

    wanted = {name for names in settings.engines.values() for name in names}
    engines: dict[str, TtsEngine] = {}
    if "edge" in wanted and settings.edge_enabled:
        engines["edge"] = EdgeEngine(
            settings.edge_voices, settings.edge_connect_timeout_s, settings.timeout_s
        )
    if "azure" in wanted:
        from voice_pipeline.tts.azure import AzureEngine, azure_endpoint

        engines["azure"] = AzureEngine(
            azure_endpoint(settings.azure_region, settings.azure_endpoint),
            settings.azure_voices,
            read_api_key(settings.azure_key_file, settings.azure_key_env),
            settings.cloud_connect_timeout_s,
            settings.timeout_s,
        )
    if "iflytek" in wanted:
        from voice_pipeline.tts.iflytek import IflytekEngine

        engines["iflytek"] = IflytekEngine(
            settings.iflytek_app_id,
            read_api_key(settings.iflytek_api_key_file, settings.iflytek_api_key_env),
            read_api_key(settings.iflytek_api_secret_file, settings.iflytek_api_secret_env),
            settings.iflytek_voices,
            settings.iflytek_url,
            settings.cloud_connect_timeout_s,
            settings.timeout_s,
        )
    if "openai" in wanted:
        from voice_pipeline.tts.openai_speech import OpenAISpeechEngine

        engines["openai"] = OpenAISpeechEngine(
            settings.openai_base_url,
            settings.openai_model,
            settings.openai_voices,
            read_api_key(settings.openai_key_file, settings.openai_key_env),
            settings.cloud_connect_timeout_s,
            settings.timeout_s,
            sample_rate=settings.openai_sample_rate,
        )
    if "piper" in wanted:
        engines["piper"] = PiperEngine(settings.piper_model)
    if "espeak" in wanted:
        engines["espeak"] = EspeakEngine(settings.espeak_voices, settings.espeak_rate, settings.timeout_s)
    return engines


class InProcessTts:
    """Implements common.stages.TtsStage; use as an async context manager (loads the voices)."""

    def __init__(
        self, settings: TtsSettings, metrics: Metrics, engines: dict[str, TtsEngine] | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._engines = engines if engines is not None else build_engines(settings)
        self.router = TtsRouter(
            self._engines, settings.engines, metrics, settings.breaker_failures, settings.breaker_cooldown_s
        )
        self.admission = StageAdmission(STAGE, settings.max_concurrency, settings.queue_size, metrics)

    async def __aenter__(self) -> InProcessTts:
        for engine in self._engines.values():
            await engine.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for engine in self._engines.values():
            await engine.close()

    async def synthesize(self, request: SpeechRequest) -> AsyncIterator[SpeechAudio]:
        text = clean_for_speech(request.text)
        if not text:
            return
        language = request.language if request.language in ("zh", "en") else guess_language(text)
        async with self.admission.admit() as ticket:
            encoder = OpusEncoder(
                request.sample_rate,
                request.frame_ms,
                application="audio",
                complexity=self.settings.opus_complexity,
            )
            carry = np.zeros(0, np.int16)
            first = True
            async for chunk in self.router.synthesize(text, language):
                # Off the event loop: libopus and numpy release the GIL, so the devices' frames
                # keep flowing while a chunk encodes (at 47 devices on 2 cores, Opus encoding was
                # the largest cost on the loop and TTS latency grew 150-300 ms over the provider's).
                encode_started = time.perf_counter()
                packets, carry, cpu = await asyncio.to_thread(
                    _encode_chunk, encoder, carry, chunk.pcm, chunk.sample_rate, request.sample_rate
                )
                self.metrics.busy.labels(STAGE).inc(cpu)
                if packets:
                    if first:
                        done = time.perf_counter()
                        self.metrics.latency.labels(STAGE).observe(done - ticket.arrived)
                        # The encode share of the turn's first audio (turn.timeline).
                        self.metrics.turn_step.labels(TURN_STEP_ENCODE).observe(done - encode_started)
                        first = False
                    yield SpeechAudio(packets, request.sample_rate, request.frame_ms, "tts")
            if len(carry):
                yield SpeechAudio(encoder.encode_all(carry), request.sample_rate, request.frame_ms, "tts")
