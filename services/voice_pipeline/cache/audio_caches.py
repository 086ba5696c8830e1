"""`AsrStage` and `TtsStage` with exact-match caches.

ASR: the utterance's PCM content hash (+ language + model settings) -> transcript. Identical audio
recurs with replayed clips, scripted devices and load tests, and costs a whole model call otherwise.
TTS: (sentence, language, voice, engine chain, sample rate, frame length) -> the Opus packets, so a
frequent sentence ("Sorry, I didn't catch that.") is encoded once per hour, not once per device.

Both store only complete results: a failed call raises before the store, and a TTS stream the
caller abandoned (barge-in) or that failed half-way stores nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from voice_pipeline.cache import keys
from voice_pipeline.cache.guard import CacheUnavailable, GuardedBackend
from voice_pipeline.common.audio import Int16Array
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import (
    AsrStage,
    Language,
    SpeechAudio,
    SpeechRequest,
    Transcript,
    TtsStage,
    asr_language_tag,
)

log = logging.getLogger(__name__)


class _ExactCache:
    """get/put of one stage's values through the guard, with the look-up metric."""

    def __init__(self, stage: str, guard: GuardedBackend, metrics: Metrics, ttl_s: float) -> None:
        self.stage = stage
        self.guard = guard
        self.metrics = metrics
        self.ttl_s = ttl_s

    async def get(self, key: str, record: bool = True) -> bytes | None:
        try:
            value = await self.guard.call(lambda: self.guard.backend.get(key), "get")
        except CacheUnavailable as exc:
            if record:
                self.metrics.cache.labels(self.stage, exc.result).inc()
            return None
        if record:
            self.metrics.cache.labels(self.stage, "hit" if value is not None else "miss").inc()
        return value

    async def put(self, key: str, value: bytes) -> None:
        with contextlib.suppress(CacheUnavailable):  # warned once by the guard; result delivered
            await self.guard.call(lambda: self.guard.backend.set(key, value, self.ttl_s), "set")

    def decoded(self, key: str, value: bytes, decode: Callable[[bytes], object]) -> object | None:
        try:
            return decode(value)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable %s cache entry %s (%s): treated as a miss", self.stage, key, exc)
            return None


class CachedAsr:
    """Implements common.stages.AsrStage around `inner`."""

    def __init__(
        self,
        inner: AsrStage,
        guard: GuardedBackend,
        metrics: Metrics,
        prefix: str,
        model_id: str,
        ttl_s: float,
    ) -> None:
        self.inner = inner
        self.prefix = prefix
        self.model_id = model_id
        self._cache = _ExactCache("asr", guard, metrics, ttl_s)

    async def transcribe(self, pcm: Int16Array, language: Language, fallback: str = "") -> Transcript:
        key = keys.asr_key(self.prefix, self.model_id, asr_language_tag(language, fallback), pcm)
        data = await self._cache.get(key)
        if data is not None:
            cached = self._cache.decoded(key, data, keys.decode_transcript)
            if isinstance(cached, Transcript):
                return cached
        transcript = await self.inner.transcribe(pcm, language, fallback)
        await self._cache.put(key, keys.encode_transcript(transcript))
        return transcript


class CachedTts:
    """Implements common.stages.TtsStage around `inner`; `variant` names the engine settings in use
    for a language (keys.tts_variant)."""

    def __init__(
        self,
        inner: TtsStage,
        guard: GuardedBackend,
        metrics: Metrics,
        prefix: str,
        variant: Callable[[str], str],
        ttl_s: float,
    ) -> None:
        self.inner = inner
        self.prefix = prefix
        self.variant = variant
        self._cache = _ExactCache("tts", guard, metrics, ttl_s)

    def _key(self, request: SpeechRequest) -> str:
        return keys.tts_key(self.prefix, self.variant(request.language), request)

    async def synthesize(self, request: SpeechRequest) -> AsyncIterator[SpeechAudio]:
        if not request.text.strip():
            async for chunk in self.inner.synthesize(request):
                yield chunk
            return
        key = self._key(request)
        data = await self._cache.get(key)
        if data is not None:
            packets = self._cache.decoded(key, data, keys.decode_packets)
            if isinstance(packets, list) and packets:
                yield SpeechAudio(packets, request.sample_rate, request.frame_ms, "cache")
                return
        collected: list[bytes] = []
        async for chunk in self.inner.synthesize(request):
            collected.extend(chunk.packets)
            yield chunk
        # Reached only when the inner stream completed and the caller consumed all of it.
        if collected:
            await self._cache.put(key, keys.encode_packets(collected))

    async def warm(self, request: SpeechRequest) -> None:
        """Synthesize `request` into the cache unless it is there (start-up preload; no metrics)."""
        key = self._key(request)
        if await self._cache.get(key, record=False) is not None:
            return
        collected: list[bytes] = []
        async for chunk in self.inner.synthesize(request):
            collected.extend(chunk.packets)
        if collected:
            await self._cache.put(key, keys.encode_packets(collected))
