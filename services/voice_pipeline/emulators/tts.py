"""An OpenAI `/v1/audio/speech` server with a fixed latency profile.

`POST /v1/audio/speech` with JSON `{model, input, voice, response_format: "pcm"}` streams raw
s16le mono 24 kHz (OpenAI's "pcm"; "wav" adds a streaming WAV header): the first chunk after
`first_audio_ms`, then chunks of `chunk_ms` audio at `speed_factor` x real time on an absolute
schedule. The audio lasts as long as the text takes to say (speaking rates in the profile), so the
pipeline encodes and paces as much audio as a real voice would give it. The content is a
speech-like harmonic tone with a syllable envelope, rendered once at start-up (or a WAV file given
with `voice_wav`), then sliced per request: the emulator spends next to no CPU per request.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from voice_pipeline.emulators.profiles import TtsProfile

FORMATS = {"pcm": "audio/pcm", "wav": "audio/wav"}
MAX_INPUT_CHARS = 4096  # OpenAI's limit
LOOP_SECONDS = 20.0
_CJK = re.compile(r"[\u3400-\u9fff]")


def speech_seconds(text: str, profile: TtsProfile, speed: float = 1.0) -> float:
    """How long a voice takes to say `text` at the profile's speaking rates."""
    cjk = len(_CJK.findall(text))
    other = len(re.sub(r"\s+", " ", text).strip()) - cjk
    seconds = cjk / profile.chars_per_s_cjk + max(0, other) / profile.chars_per_s_latin
    return max(0.3, seconds / speed)


def render_voice(sample_rate: int, seconds: float = LOOP_SECONDS) -> bytes:
    """A speech-like signal: harmonics of a wandering 120-180 Hz pitch under a ~4 Hz syllable
    envelope with short pauses; s16le mono. Rendered once."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    pitch = 150 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 0.5 * (np.sin(2 * np.pi * 0.45 * t) > -0.8)
    signal = voice * envelope
    signal = 0.3 * signal / max(1e-9, float(np.max(np.abs(signal))))
    return bytes((signal * 32767).astype("<i2").tobytes())


def load_voice(path: str, sample_rate: int) -> bytes:
    from voice_pipeline.common.audio import read_wav, resample

    pcm, rate = read_wav(path)
    return bytes(resample(pcm, rate, sample_rate).astype("<i2").tobytes())


def wav_header(sample_rate: int) -> bytes:
    """A WAV header for a stream of unknown length (sizes set to the maximum, as OpenAI does)."""
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "code": None}}, status_code=status
    )


def create_tts_app(profile: TtsProfile, voice_wav: str | Path | None = None) -> Starlette:
    voice = (
        load_voice(str(voice_wav), profile.sample_rate) if voice_wav else render_voice(profile.sample_rate)
    )
    chunk_bytes = profile.sample_rate * profile.chunk_ms // 1000 * 2

    async def speech(request: Request) -> Response:
        received = time.monotonic()
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error("request body is not valid JSON")
        if not isinstance(body, dict):
            return _error("request body must be a JSON object")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            return _error("'input' must be a non-empty string")
        if len(text) > MAX_INPUT_CHARS:
            return _error(f"'input' is longer than {MAX_INPUT_CHARS} characters")
        fmt = body.get("response_format", "mp3")
        if fmt not in FORMATS:
            return _error(f"response_format {fmt!r} is not supported by the emulator (use 'pcm' or 'wav')")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            return _error("'speed' must be a number from 0.25 to 4.0")
        total = int(speech_seconds(text, profile, float(speed)) * profile.sample_rate) * 2
        start = hash(text) % (len(voice) // 2) * 2

        async def audio() -> AsyncIterator[bytes]:
            first_at = received + profile.first_audio_ms / 1000
            chunk_s = profile.chunk_ms / 1000 / profile.speed_factor
            if fmt == "wav":
                yield wav_header(profile.sample_rate)
            for i, offset in enumerate(range(0, total, chunk_bytes)):
                await _sleep_until(first_at + i * chunk_s)
                size = min(chunk_bytes, total - offset)
                at = (start + offset) % len(voice)
                piece = voice[at : at + size]
                if len(piece) < size:  # wrap around the loop
                    piece += voice[: size - len(piece)]
                yield piece

        return StreamingResponse(audio(), media_type=FORMATS[fmt])

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "kind": "tts", "profile": profile.as_json()})

    return Starlette(routes=[Route("/v1/audio/speech", speech, methods=["POST"]), Route("/healthz", health)])


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
