"""Remote ASR through an OpenAI-compatible /v1/audio/transcriptions endpoint.

OpenAI, Groq, and self-hosted servers (faster-whisper-server, speaches, vLLM, LocalAI...) accept
the same multipart upload: `file` (a WAV here: 16 kHz mono s16le), `model`, optional `language`
and `response_format=json`; the answer is {"text": "..."}.

The batcher hands this back end a batch of utterances from many sessions; they are uploaded
concurrently (one request each: the API takes one file per request), so a batch costs the
slowest request, not the sum. An utterance whose request fails is retried once; if it still
fails the batch fails with ProviderUnavailableError (the callers get a clear error, the
process stays up). The key never appears in a message or a log.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from voice_pipeline.asr.engine import SAMPLE_RATE, AsrItem, clean_text
from voice_pipeline.common.audio import float_to_int16
from voice_pipeline.common.errors import ProviderUnavailableError
from voice_pipeline.common.stages import Transcript

ATTEMPTS = 2


def wav_bytes(pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:  # type: ignore[type-arg]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.ascontiguousarray(float_to_int16(pcm), dtype=np.int16).tobytes())
    return buffer.getvalue()


def detected_language(text: str, requested: str, allowed: Sequence[str]) -> str:
    """The JSON answer carries no language: a forced one stays, `auto` is judged by the script."""
    if requested != "auto":
        return requested
    han = sum("\u3400" <= ch <= "\u9fff" for ch in text)
    guess = "zh" if han and han * 4 >= len(text.replace(" ", "")) else "en"  # a quarter Han: Chinese
    return guess if not allowed or guess in allowed else allowed[0]


class OpenAITranscriptionEngine:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        languages: Sequence[str] = ("zh", "en"),
        timeout_s: float = 15.0,
        connect_timeout_s: float = 3.0,
        max_parallel: int = 8,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.languages = list(languages)
        self._api_key = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=transport,
            limits=httpx.Limits(max_connections=max_parallel, max_keepalive_connections=max_parallel),
        )
        self._pool = ThreadPoolExecutor(max_parallel, thread_name_prefix="asr-remote")

    def __repr__(self) -> str:  # never show the key
        return f"OpenAITranscriptionEngine(base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _error(self, detail: str) -> ProviderUnavailableError:
        return ProviderUnavailableError(
            "asr-openai", detail.replace(self._api_key, "***") if self._api_key else detail
        )

    def _transcribe_once(self, item: AsrItem) -> Transcript:
        data = {"model": self.model, "response_format": "json"}
        if item.language != "auto":
            data["language"] = item.language
        files = {"file": ("audio.wav", wav_bytes(item.pcm), "audio/wav")}
        try:
            response = self._client.post(f"{self.base_url}/audio/transcriptions", data=data, files=files)
        except httpx.HTTPError as exc:
            raise self._error(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise self._error(f"HTTP {response.status_code}: {response.text[:300]}")
        try:
            body = response.json()
            text = body["text"]
        except (ValueError, KeyError, TypeError) as exc:
            raise self._error(f"unexpected answer: {response.text[:120]!r}") from exc
        if not isinstance(text, str):
            raise self._error("unexpected answer: `text` is not a string")
        text = clean_text(text)
        return Transcript(text, detected_language(text, item.language, self.languages), item.seconds)

    def _transcribe(self, item: AsrItem) -> Transcript:
        for attempt in range(ATTEMPTS):
            try:
                return self._transcribe_once(item)
            except ProviderUnavailableError:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def transcribe_batch(self, items: Sequence[AsrItem]) -> list[Transcript]:
        """Blocking (the batcher calls it from a worker thread); results in the order of `items`."""
        if len(items) == 1:
            return [self._transcribe(items[0])]
        return list(self._pool.map(self._transcribe, items))
