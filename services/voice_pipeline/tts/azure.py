"""Azure AI Speech text to speech over REST (SSML in, raw PCM out).

POST https://{region}.tts.speech.microsoft.com/cognitiveservices/v1 with the SSML document as the
body and the headers `Ocp-Apim-Subscription-Key`, `Content-Type: application/ssml+xml`,
`X-Microsoft-OutputFormat: raw-24khz-16bit-mono-pcm` and a `User-Agent`; the answer is raw 24 kHz
s16le mono, streamed (chunked) as it is synthesized. The endpoint is configurable so tests and
sovereign clouds can point it elsewhere. The key never appears in a message or a log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from xml.sax.saxutils import escape, quoteattr

import httpx

from voice_pipeline.common.errors import ConfigError
from voice_pipeline.tts.engine import PcmChunk
from voice_pipeline.tts.http_engine import HttpTtsEngine
from voice_pipeline.tts.pcm import pcm_chunks

AZURE_FORMAT = "raw-24khz-16bit-mono-pcm"
AZURE_RATE = 24000


def azure_endpoint(region: str, endpoint: str = "") -> str:
    if endpoint:
        return endpoint
    if not region:
        raise ConfigError("Azure TTS needs tts.azure_region (or tts.azure_endpoint)")
    return f"https://{region}.tts.speech.microsoft.com/cognitiveservices/v1"


def voice_locale(voice: str) -> str:
    """`zh-CN-XiaoxiaoNeural` -> `zh-CN` (the SSML's xml:lang)."""
    parts = voice.split("-")
    return "-".join(parts[:2]) if len(parts) >= 3 else "en-US"


def ssml(text: str, voice: str) -> str:
    lang = quoteattr(voice_locale(voice))
    return (
        f"<speak version='1.0' xmlns='http://www.w3.org/2001/10/synthesis' xml:lang={lang}>"
        f"<voice name={quoteattr(voice)}>{escape(text)}</voice></speak>"
    )


class AzureEngine(HttpTtsEngine):
    name = "azure"

    def __init__(
        self,
        endpoint: str,
        voices: dict[str, str],
        api_key: str,
        connect_timeout_s: float = 2.0,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ConfigError("Azure TTS needs a key: tts.azure_key_file or tts.azure_key_env")
        super().__init__(api_key, connect_timeout_s, timeout_s, transport)
        self.endpoint = endpoint
        self.voices = voices
        self.languages = frozenset(voices)

    def __repr__(self) -> str:  # never show the key
        return f"AzureEngine(endpoint={self.endpoint!r})"

    def _headers(self) -> dict[str, str]:
        return {
            "Ocp-Apim-Subscription-Key": self._api_key,
            "Content-Type": "application/ssml+xml",
            "X-Microsoft-OutputFormat": AZURE_FORMAT,
            "User-Agent": "voice-pipeline",
        }

    async def synthesize(self, text: str, language: str) -> AsyncIterator[PcmChunk]:
        client = await self._connected()
        voice = self.voices.get(language) or next(iter(self.voices.values()), "en-US-AriaNeural")
        try:
            async with client.stream(
                "POST", self.endpoint, content=ssml(text, voice).encode("utf-8")
            ) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode("utf-8", "replace")[:300]
                    raise self._error(f"HTTP {response.status_code}: {detail}")
                produced = False
                async for chunk in pcm_chunks(response.aiter_bytes(), AZURE_RATE):
                    produced = True
                    yield chunk
                if not produced:
                    raise self._error("no audio received")
        except httpx.TimeoutException as exc:
            raise self._error(f"timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise self._error(f"{type(exc).__name__}: {exc}") from exc
