"""The transport frame codec: round trips, and every malformed input is a clear WireError."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import pytest

from voice_pipeline.common.stages import SpeechAudio, VadEvent
from voice_pipeline.transport import wire
from voice_pipeline.transport.wire import Frame, Kind, WireError


def test_frame_round_trip_keeps_every_field() -> None:
    frame = Frame(Kind.VAD_FEED, 4_000_000_000, "2845d053-会话", b"\x00\x01payload")
    assert wire.decode(wire.encode(frame)) == frame
    empty = Frame(Kind.END, 7)
    assert wire.decode(wire.encode(empty)) == empty
    assert len(wire.encode(empty)) == 9  # the whole overhead of a frame without session or payload


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than"),
        (b"VP\x01", "shorter than"),
        (b"XX\x01\x02\x00\x00\x00\x01\x00", "bad magic"),
        (b"VP\x09\x02\x00\x00\x00\x01\x00", "unsupported frame version 9"),
        (b"VP\x01\xee\x00\x00\x00\x01\x00", "unknown frame kind 238"),
        (b"VP\x01\x02\x00\x00\x00\x01\x05ab", "session id runs past"),
        (b"VP\x01\x02\x00\x00\x00\x01\x02\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_frames_raise_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        wire.decode(data)


def test_random_bytes_never_raise_anything_but_wire_error() -> None:
    rng = random.Random(7)
    valid = wire.encode(Frame(Kind.TTS_SYNTHESIZE, 3, "s", wire.encode_json({"text": "hi"})))
    for _ in range(3000):
        data = bytearray(valid if rng.random() < 0.5 else rng.randbytes(rng.randrange(0, 40)))
        for _ in range(rng.randrange(0, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randrange(0, len(data) + 1)]
        try:
            frame = wire.decode(bytes(data))
        except WireError:
            continue
        for decoder in (wire.decode_json, wire.decode_audio, wire.decode_events, wire.decode_asr_request):
            with contextlib.suppress(WireError):
                decoder(frame.payload)


def test_peek_request_recovers_the_id_of_a_bad_frame_for_its_error_answer() -> None:
    assert wire.peek_request(b"VP\x01\xee\x00\x00\x01\x00\x00") == 256
    assert wire.peek_request(b"garbage") == 0


def test_encode_refuses_what_cannot_be_framed() -> None:
    with pytest.raises(WireError, match="longer than 255"):
        wire.encode(Frame(Kind.VAD_OPEN, 1, "x" * 256))
    with pytest.raises(WireError, match="out of range"):
        wire.encode(Frame(Kind.VAD_OPEN, -1))


def test_pcm_round_trip_and_odd_length() -> None:
    pcm = np.array([0, 1, -1, 32767, -32768], np.int16)
    assert np.array_equal(wire.decode_pcm(wire.encode_pcm(pcm)), pcm)
    with pytest.raises(WireError, match="whole 16-bit samples"):
        wire.decode_pcm(b"\x00\x01\x02")


def test_vad_events_round_trip_and_truncation() -> None:
    events = [VadEvent("speech_start", 4608), VadEvent("speech_pause", 9000), VadEvent("speech_end", 2**40)]
    assert wire.decode_events(wire.encode_events(events)) == events
    assert wire.decode_events(wire.encode_events([])) == []
    payload = wire.encode_events(events)
    with pytest.raises(WireError, match="does not hold 3 events"):
        wire.decode_events(payload[:-1])
    with pytest.raises(WireError, match="unknown VAD event kind"):
        wire.decode_events(b"\x00\x01\x07" + b"\x00" * 8)


def test_asr_request_round_trip() -> None:
    pcm = np.arange(-50, 50, dtype=np.int16)
    language, decoded = wire.decode_asr_request(wire.encode_asr_request("zh", pcm))
    assert language == "zh" and np.array_equal(decoded, pcm)
    with pytest.raises(WireError, match="empty"):
        wire.decode_asr_request(b"")
    with pytest.raises(WireError, match="runs past"):
        wire.decode_asr_request(b"\x09en")


def test_audio_round_trip_and_cut_packets() -> None:
    audio = SpeechAudio([b"\x01" * 120, b"", b"\x02" * 300], 24000, 60, "piper")
    decoded = wire.decode_audio(wire.encode_audio(audio))
    assert (decoded.packets, decoded.sample_rate, decoded.frame_ms, decoded.engine) == (
        audio.packets,
        24000,
        60,
        "piper",
    )
    payload = wire.encode_audio(audio)
    with pytest.raises(WireError, match="runs past the payload"):
        wire.decode_audio(payload[:-5])
    with pytest.raises(WireError, match="cut off"):
        wire.decode_audio(payload[: len(payload) - 301])


def test_json_payload_must_be_an_object() -> None:
    assert wire.decode_json(wire.encode_json({"text": "你好"})) == {"text": "你好"}
    with pytest.raises(WireError, match="must be an object"):
        wire.decode_json(b"[1, 2]")
    with pytest.raises(WireError, match="not UTF-8 JSON"):
        wire.decode_json(b"{nope")
