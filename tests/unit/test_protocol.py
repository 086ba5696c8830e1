"""The xiaozhi wire format: parsing device messages, building server messages, binary frames."""

from __future__ import annotations

import json

import pytest

from voice_pipeline.common.errors import ProtocolError
from voice_pipeline.gateway import protocol as p

HELLO = {
    "type": "hello",
    "version": 1,
    "features": {"mcp": True},
    "transport": "websocket",
    "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60},
}


def test_firmware_hello_parses() -> None:
    hello = p.parse_text(json.dumps(HELLO))
    assert isinstance(hello, p.Hello)
    assert hello.audio_params == p.AudioParams("opus", 16000, 1, 60)
    assert hello.features == {"mcp": True} and hello.error == ""


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"format": "pcm"}, "use opus"),
        ({"channels": 2}, "mono"),
        ({"sample_rate": 44100}, "Opus rate"),
        ({"frame_duration": 7}, "frame_duration"),
    ],
)
def test_unsupported_audio_is_named(params: dict[str, object], fragment: str) -> None:
    body = {**HELLO, "audio_params": {**HELLO["audio_params"], **params}}  # type: ignore[dict-item]
    hello = p.parse_text(json.dumps(body))
    assert isinstance(hello, p.Hello) and fragment in hello.error


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        ("{oops", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"state": "start"}', "no 'type'"),
        ('{"type": "listen", "state": "dance"}', "listen 'state'"),
        ('{"type": "listen", "state": "start", "mode": "turbo"}', "listen 'mode'"),
        ('{"type": "mcp", "payload": 3}', "payload"),
        ('{"type": "hello", "audio_params": {"sample_rate": "fast"}}', "integer"),
        ("x" * (p.MAX_TEXT_BYTES + 1), "over"),
    ],
)
def test_malformed_messages_raise_clear_errors(frame: str, fragment: str) -> None:
    with pytest.raises(ProtocolError, match=fragment):
        p.parse_text(frame)


def test_device_messages() -> None:
    assert p.parse_text('{"type":"listen","state":"start","mode":"manual"}') == p.Listen("start", "manual")
    assert p.parse_text('{"type":"listen","state":"detect","text":"你好小智"}') == p.Listen(
        "detect", "", "你好小智"
    )
    assert p.parse_text('{"type":"abort","reason":"wake_word_detected"}') == p.Abort("wake_word_detected")
    assert p.parse_text('{"type":"ping"}') == p.Ping()
    assert isinstance(p.parse_text('{"type":"mcp","payload":{"jsonrpc":"2.0"}}'), p.Mcp)
    unknown = p.parse_text('{"type":"teleport","to":"mars"}')
    assert isinstance(unknown, p.UnknownMessage) and unknown.type == "teleport"


@pytest.mark.parametrize("version", [1, 2, 3])
def test_binary_frames_round_trip(version: int) -> None:
    packet = bytes(range(50))
    assert p.decode_audio_frame(p.encode_audio_frame(packet, version, 1234), version) == packet


def test_binary_frame_headers_match_the_firmware_layout() -> None:
    v2 = p.encode_audio_frame(b"abc", 2, timestamp_ms=7)
    assert v2[:2] == b"\x00\x02" and v2[8:12] == b"\x00\x00\x00\x07" and v2[12:16] == b"\x00\x00\x00\x03"
    assert p.encode_audio_frame(b"abc", 3) == b"\x00\x00\x00\x03abc"
    assert p.encode_audio_frame(b"abc", 1) == b"abc"


@pytest.mark.parametrize(
    ("data", "version", "fragment"),
    [(b"\x00\x02", 2, "shorter"), (b"\x00\x00\x00\x09abc", 3, "says 9"), (b"\x00", 3, "shorter")],
)
def test_broken_binary_frames(data: bytes, version: int, fragment: str) -> None:
    with pytest.raises(ProtocolError, match=fragment):
        p.decode_audio_frame(data, version)


def test_server_messages_carry_the_session() -> None:
    assert p.server_hello("s", 24000, 60)["audio_params"]["sample_rate"] == 24000
    assert p.stt("s", "hi") == {"session_id": "s", "type": "stt", "text": "hi"}
    assert p.tts_start("s")["state"] == "start" and p.tts_stop("s")["state"] == "stop"
    assert p.tts_sentence_start("s", "Hello.")["text"] == "Hello."
    assert p.llm_emotion("s", "happy")["emotion"] == "happy"
    assert p.error("bad_audio", "why", "s") == {
        "type": "error",
        "code": "bad_audio",
        "message": "why",
        "session_id": "s",
    }


@pytest.mark.parametrize("frame", ["[" * 8000 + "]" * 8000, '{"type": "mcp", "payload": ' + "{" * 5000])
def test_deeply_nested_json_is_a_protocol_error_not_a_recursion_error(frame: str) -> None:
    with pytest.raises(ProtocolError):
        p.parse_text(frame)
