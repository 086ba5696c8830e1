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


def test_quiet_edges_are_evened_around_the_voiced_part() -> None:
    from voice_pipeline.common.audio import even_quiet_edges

    voiced = np.full(8000, 0.1, np.float32)  # 0.5 s at -20 dBFS
    long_quiet = np.concatenate([np.zeros(4800, np.float32), voiced, np.zeros(8000, np.float32)])
    out = even_quiet_edges(long_quiet, lead_s=0.2, tail_s=0.3)
    assert len(out) == 3200 + 8000 + 4800  # 0.3 s lead cut to 0.2, 0.5 s tail cut to 0.3
    assert np.array_equal(out[3200:11200], voiced)
    short_tail = np.concatenate([np.zeros(4800, np.float32), voiced, np.zeros(1600, np.float32)])
    padded = even_quiet_edges(short_tail, lead_s=0.2, tail_s=0.3)
    assert len(padded) == 3200 + 8000 + 4800 and not padded[11200:].any()  # 0.1 s tail padded to 0.3
    quiet = np.zeros(16000, np.float32)
    assert even_quiet_edges(quiet, 0.2, 0.3) is quiet  # nothing voiced: left to the model


def test_the_int16_voice_end_matches_the_float_one() -> None:
    from voice_pipeline.common.audio import int16_to_float, last_voiced_int16, last_voiced_sample

    rng = np.random.default_rng(7)
    for level in (0, 100, 300, 330, 340, 400, 3000):  # the mark (-40 dBFS) is ~328 RMS in int16
        pcm = (rng.standard_normal(960 + 77) * level).astype(np.int16)
        pcm[rng.integers(0, 900) :] //= 8  # a quieter tail, so the end moves
        assert last_voiced_int16(pcm) == last_voiced_sample(int16_to_float(pcm)), level
    assert last_voiced_int16(np.zeros(100, np.int16)) == 0
