"""Microsoft Edge TTS through the `edge-tts` library (online); MP3 decoded with PyAV.

Offline, edge-tts fails at once with a DNS error; every connection problem or timeout becomes
ProviderUnavailableError so the router moves to the next engine within milliseconds (and its
breaker skips Edge for a while after that).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from voice_pipeline.common.errors import ProviderUnavailableError
from voice_pipeline.tts.engine import PcmChunk

EDGE_RATE = 24000  # edge-tts streams audio-24khz-48kbitrate-mono-mp3


def decode_mp3(data: bytes) -> PcmChunk:
    import io

    import av

    try:
        with av.open(io.BytesIO(data), mode="r", format="mp3") as container:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=EDGE_RATE)
            frames = []
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    frames.append(out.to_ndarray().reshape(-1))
    except (av.error.FFmpegError, ValueError) as exc:  # type: ignore[attr-defined]
        raise ProviderUnavailableError("edge", f"undecodable audio from Edge TTS: {exc}") from exc
    pcm = np.concatenate(frames).astype(np.int16) if frames else np.zeros(0, np.int16)
    return PcmChunk(pcm, EDGE_RATE)


class EdgeEngine:
    name = "edge"
    languages = frozenset({"zh", "en"})

    def __init__(
        self, voices: dict[str, str], connect_timeout_s: float = 2.0, timeout_s: float = 10.0
    ) -> None:
        self.voices = voices
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _fetch(self, text: str, voice: str) -> bytes:
        import edge_tts

        communicate = edge_tts.Communicate(
            text,
            voice,
            connect_timeout=max(1, round(self.connect_timeout_s)),
            receive_timeout=round(self.timeout_s),
        )
        audio = bytearray()
        async for message in communicate.stream():
            if message.get("type") == "audio":
                audio += message.get("data", b"")
        return bytes(audio)

    async def synthesize(self, text: str, language: str) -> AsyncIterator[PcmChunk]:
        voice = self.voices.get(language) or self.voices.get("en", "en-US-AriaNeural")
        try:
            data = await asyncio.wait_for(self._fetch(text, voice), self.timeout_s)
        except TimeoutError:
            raise ProviderUnavailableError("edge", f"no audio within {self.timeout_s:.0f} s") from None
        except (OSError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise ProviderUnavailableError("edge", f"{type(exc).__name__}: {exc}") from exc
        except (
            Exception
        ) as exc:  # edge_tts raises its own exception types (NoAudioReceived, WebSocketError...)
            raise ProviderUnavailableError("edge", f"{type(exc).__name__}: {exc}") from exc
        if not data:
            raise ProviderUnavailableError("edge", "no audio received")
        yield await asyncio.to_thread(decode_mp3, data)
