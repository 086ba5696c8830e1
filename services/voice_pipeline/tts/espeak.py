"""espeak-ng as a subprocess (GPL-3: kept out of our process). Robotic, instant, any language."""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import AsyncIterator

from voice_pipeline.common.audio import AudioError, read_wav
from voice_pipeline.common.errors import ProviderUnavailableError
from voice_pipeline.tts.engine import PcmChunk


class EspeakEngine:
    name = "espeak"
    languages: frozenset[str] = frozenset()  # speaks anything, badly: the last resort

    def __init__(self, voices: dict[str, str], rate: int = 165, timeout_s: float = 10.0) -> None:
        self.voices = voices
        self.rate = rate
        self.timeout_s = timeout_s

    async def start(self) -> None:
        if shutil.which("espeak-ng") is None:
            raise ProviderUnavailableError("espeak", "espeak-ng is not installed (apt-get install espeak-ng)")

    async def close(self) -> None:
        return None

    async def synthesize(self, text: str, language: str) -> AsyncIterator[PcmChunk]:
        voice = self.voices.get(language) or self.voices.get("en", "en-us")
        try:
            process = await asyncio.create_subprocess_exec(
                "espeak-ng", "-v", voice, "-s", str(self.rate), "--stdout", "--", text,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as exc:
            raise ProviderUnavailableError("espeak", f"cannot run espeak-ng: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(process.communicate(), self.timeout_s)
        except TimeoutError:
            process.kill()
            raise ProviderUnavailableError("espeak", f"no audio within {self.timeout_s:.0f} s") from None
        if process.returncode != 0:
            raise ProviderUnavailableError("espeak", err.decode(errors="replace").strip()[:200])
        try:
            pcm, rate = read_wav(io.BytesIO(out))  # type: ignore[arg-type]
        except AudioError as exc:
            raise ProviderUnavailableError("espeak", str(exc)) from exc
        yield PcmChunk(pcm, rate)
