"""OpenAI-compatible speech synthesis: POST {base}/audio/speech, raw PCM streamed back.

The same request serves OpenAI and the many self-hosted servers that speak its API (and the
project's TTS emulator): JSON {model, input, voice, response_format: "pcm"}; the answer is a
stream of raw signed 16-bit little-endian mono samples at 24 kHz (OpenAI's "pcm" format; a
self-hosted server with another rate is configured with `tts.openai_sample_rate`), played as it
arrives. The API key goes in `Authorization: Bearer` and never into a message or a log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from voice_pipeline.tts.engine import PcmChunk
from voice_pipeline.tts.http_engine import HttpTtsEngine
from voice_pipeline.tts.pcm import pcm_chunks

OPENAI_PCM_RATE = 24000


class OpenAISpeechEngine(HttpTtsEngine):
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        voices: dict[str, str],
        api_key: str = "",
        connect_timeout_s: float = 2.0,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sample_rate: int = OPENAI_PCM_RATE,
    ) -> None:
        super().__init__(api_key, connect_timeout_s, timeout_s, transport)
        self.base_url = base_url.rstrip("/")
        self.sample_rate = sample_rate
        self.model = model
        self.voices = voices
        self.languages = frozenset(voices)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAISpeechEngine(base_url={self.base_url!r}, model={self.model!r})"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def synthesize(self, text: str, language: str) -> AsyncIterator[PcmChunk]:
        client = await self._connected()
        voice = self.voices.get(language) or next(iter(self.voices.values()), "alloy")
        body = {"model": self.model, "input": text, "voice": voice, "response_format": "pcm"}
        try:
            async with client.stream("POST", f"{self.base_url}/audio/speech", json=body) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode("utf-8", "replace")[:300]
                    raise self._error(f"HTTP {response.status_code}: {detail}")
                kind = response.headers.get("content-type", "")
                if kind.startswith(("application/json", "text/")):
                    raise self._error(f"expected raw PCM, got {kind}")
                produced = False
                async for chunk in pcm_chunks(response.aiter_bytes(), self.sample_rate):
                    produced = True
                    yield chunk
                if not produced:
                    raise self._error("no audio received")
        except httpx.TimeoutException as exc:
            raise self._error(f"timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise self._error(f"{type(exc).__name__}: {exc}") from exc
