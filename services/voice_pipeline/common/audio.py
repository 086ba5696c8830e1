"""Audio plumbing shared by every stage: Opus frames, resampling, WAV files, sample formats.

PCM inside the pipeline is mono int16 (wire and codecs) or float32 in [-1, 1] (models).
Opus runs through libopus (Debian `libopus0`) via opuslib's ctypes binding.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from voice_pipeline.common.errors import VoicePipelineError

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]

# Opus allows 2.5-60 ms frames; the xiaozhi protocol uses 60 ms both ways.
DEFAULT_FRAME_MS = 60
MAX_OPUS_PACKET = 4000  # bytes; a 60 ms mono packet is far smaller (RFC 6716 caps 1275 per frame)


class AudioError(VoicePipelineError):
    """Audio that cannot be decoded, encoded or read."""


def _opuslib() -> Any:
    try:
        import opuslib
    except Exception as exc:  # opuslib raises a bare Exception when libopus is missing
        raise AudioError(
            f"libopus is not available ({exc}); install it with `apt-get install libopus0`"
        ) from exc
    return opuslib


def frame_samples(sample_rate: int, frame_ms: int = DEFAULT_FRAME_MS) -> int:
    return sample_rate * frame_ms // 1000


class OpusEncoder:
    """Encodes mono int16 PCM into Opus packets of `frame_ms` each."""

    def __init__(
        self,
        sample_rate: int,
        frame_ms: int = DEFAULT_FRAME_MS,
        application: str = "voip",
        complexity: int | None = None,
        dtx: bool = False,
    ) -> None:
        """`complexity` 0-10 trades CPU for quality (None: libopus's default, 10). `dtx`:
        discontinuous transmission, as the xiaozhi firmware sets it: after ~200 ms of silence most
        packets shrink to their 1-byte header (a receiver decodes them as lost: concealment fading
        to quiet), with a full packet every ~400 ms to refresh the comfort noise."""
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_size = frame_samples(sample_rate, frame_ms)
        opuslib = _opuslib()
        self._encoder = opuslib.Encoder(sample_rate, 1, application)
        if complexity is not None:
            self._encoder.complexity = complexity
        if dtx:
            # Through the ctl itself: opuslib 3.0.1's `Encoder.dtx` setter sends the *get* request.
            opuslib.api.encoder.encoder_ctl(self._encoder.encoder_state, opuslib.api.ctl.set_dtx, 1)

    def encode(self, frame: Int16Array) -> bytes:
        if frame.shape != (self.frame_size,):
            raise AudioError(f"Opus frame must hold {self.frame_size} samples, got {frame.shape}")
        return bytes(
            self._encoder.encode(np.ascontiguousarray(frame, dtype=np.int16).tobytes(), self.frame_size)
        )

    def encode_all(self, pcm: Int16Array) -> list[bytes]:
        """Encode a whole buffer, zero-padding the last frame."""
        n = self.frame_size
        padded = np.zeros(-(-len(pcm) // n) * n, dtype=np.int16)
        padded[: len(pcm)] = pcm
        return [self.encode(padded[i : i + n]) for i in range(0, len(padded), n)]


class OpusDecoder:
    """Decodes Opus packets into mono int16 PCM; garbage raises AudioError, state survives."""

    def __init__(self, sample_rate: int, frame_ms: int = DEFAULT_FRAME_MS) -> None:
        self.sample_rate = sample_rate
        # Room for the longest legal packet (120 ms) whatever frame size the peer announced.
        self._max_frame = frame_samples(sample_rate, max(frame_ms, 120))
        self._decoder = _opuslib().Decoder(sample_rate, 1)

    def decode(self, packet: bytes) -> Int16Array:
        if not packet or len(packet) > MAX_OPUS_PACKET:
            raise AudioError(f"Opus packet of {len(packet)} bytes is out of range (1..{MAX_OPUS_PACKET})")
        try:
            raw = self._decoder.decode(packet, self._max_frame)
        except Exception as exc:  # opuslib.OpusError: corrupted stream, invalid packet...
            raise AudioError(f"undecodable Opus packet ({exc})") from exc
        return np.frombuffer(raw, dtype=np.int16).copy()


def resample(pcm: Int16Array, src_rate: int, dst_rate: int) -> Int16Array:
    if src_rate == dst_rate or len(pcm) == 0:
        return pcm.astype(np.int16, copy=False)
    import soxr

    out = soxr.resample(pcm.astype(np.float32) / 32768.0, src_rate, dst_rate, quality="HQ")
    return float_to_int16(np.asarray(out, dtype=np.float32))


def int16_to_float(pcm: Int16Array) -> Float32Array:
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def float_to_int16(pcm: Float32Array) -> Int16Array:
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16)


def read_wav(path: str | Path | BinaryIO) -> tuple[Int16Array, int]:
    """Read a PCM WAV file as mono int16 (channels averaged)."""
    try:
        with wave.open(path if hasattr(path, "read") else str(path), "rb") as w:  # type: ignore[arg-type]
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        raise AudioError(f"cannot read WAV file {path}: {exc}") from exc
    if width != 2:
        raise AudioError(f"{path}: only 16-bit PCM WAV is supported (sample width {width} bytes)")
    pcm = np.frombuffer(raw, dtype=np.int16)
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return pcm.copy(), rate


def write_wav(path: str | Path, pcm: Int16Array, sample_rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.ascontiguousarray(pcm, dtype=np.int16).tobytes())


VOICED_DBFS = -40.0  # the mark of "voiced" everywhere: endpointing bench, turn timing, talk page
VOICED_FRAME = 160  # 10 ms at 16 kHz


def voiced_span(pcm: Float32Array, dbfs: float = VOICED_DBFS) -> tuple[int, int]:
    """[start of the first, end of the last) 10 ms frame whose RMS is above `dbfs`; (0, 0) if none."""
    n = len(pcm) // VOICED_FRAME
    if n == 0:
        return 0, 0
    frames = pcm[: n * VOICED_FRAME].astype(np.float32).reshape(n, VOICED_FRAME)
    voiced = np.nonzero(np.sqrt(np.mean(frames**2, axis=1)) > 10 ** (dbfs / 20))[0]
    if not len(voiced):
        return 0, 0
    return int(voiced[0]) * VOICED_FRAME, (int(voiced[-1]) + 1) * VOICED_FRAME


def last_voiced_sample(pcm: Float32Array, dbfs: float = VOICED_DBFS) -> int:
    """End of the last 10 ms frame whose RMS is above `dbfs` (0 if none): where speech really
    ends, whatever the VAD thought."""
    return voiced_span(pcm, dbfs)[1]


def last_voiced_int16(pcm: Int16Array, dbfs: float = VOICED_DBFS) -> int:
    """`last_voiced_sample` of 16-bit audio without converting it: the gateway asks it of every
    uplink chunk of every session (~17 a second each), so it is kept to a few array operations."""
    n = len(pcm) // VOICED_FRAME
    if n == 0:
        return 0
    frames = pcm[: n * VOICED_FRAME].reshape(n, VOICED_FRAME).astype(np.float32)
    # RMS above the mark <=> the frame's sum of squares above VOICED_FRAME * (mark in int16 units)^2.
    threshold = VOICED_FRAME * (10 ** (dbfs / 20) * 32768.0) ** 2
    voiced = np.flatnonzero(np.einsum("ij,ij->i", frames, frames) > threshold)
    return (int(voiced[-1]) + 1) * VOICED_FRAME if len(voiced) else 0


def even_quiet_edges(
    pcm: Float32Array, lead_s: float, tail_s: float, dbfs: float = VOICED_DBFS
) -> Float32Array:
    """The utterance with `lead_s` of quiet before its first voiced 10 ms frame and `tail_s` after
    its last: longer quiet is cut, shorter quiet at the end is padded with silence (an utterance cut
    early in its pause gets the same ending as one cut at the end of the turn). Unchanged if
    nothing in it is voiced (noise above the mark, or all quiet: ASR decides)."""
    first, last = voiced_span(pcm, dbfs)
    if last == 0:
        return pcm
    start = max(0, first - int(lead_s * 16000))
    stop = last + int(tail_s * 16000)
    kept = pcm[start : min(len(pcm), stop)]
    if stop > len(pcm):
        kept = np.concatenate([kept, np.zeros(stop - len(pcm), np.float32)])
    return kept
