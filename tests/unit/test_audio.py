"""Opus framing and decoding, resampling and WAV round trips (libopus is a Debian package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voice_pipeline.common.audio import AudioError, OpusDecoder, OpusEncoder, read_wav, resample, write_wav


def _tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)


def test_encode_all_pads_to_whole_frames_and_decodes_back() -> None:
    pcm = _tone(24000, 1.0)
    packets = OpusEncoder(24000, 60).encode_all(pcm)
    assert len(packets) == 17  # ceil(24000 / 1440)
    decoder = OpusDecoder(24000, 60)
    out = np.concatenate([decoder.decode(p) for p in packets])
    assert len(out) == 17 * 1440
    assert np.abs(out[2000:20000]).mean() > 2000  # a tone survives the codec


def test_garbage_packets_raise_a_clear_error_and_the_decoder_survives() -> None:
    decoder = OpusDecoder(16000, 60)
    with pytest.raises(AudioError, match="Opus"):
        decoder.decode(b"\xff\xfe\xfd garbage")
    with pytest.raises(AudioError, match="out of range"):
        decoder.decode(b"")
    good = OpusEncoder(16000, 60).encode(np.zeros(960, np.int16))
    assert len(decoder.decode(good)) == 960


def test_encoder_refuses_wrong_frame_size() -> None:
    with pytest.raises(AudioError, match="960"):
        OpusEncoder(16000, 60).encode(np.zeros(100, np.int16))


def test_resample_changes_length_by_the_rate_ratio() -> None:
    out = resample(_tone(22050, 1.0), 22050, 24000)
    assert abs(len(out) - 24000) <= 2
    assert out.dtype == np.int16


def test_wav_round_trip(tmp_path: Path) -> None:
    pcm = _tone(16000, 0.5)
    write_wav(tmp_path / "a.wav", pcm, 16000)
    back, rate = read_wav(tmp_path / "a.wav")
    assert rate == 16000 and np.array_equal(back, pcm)


def test_unreadable_wav_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(AudioError, match="cannot read WAV"):
        read_wav(tmp_path / "bad.wav")
