"""The xiaozhi device protocol on the wire: parse what devices send, build what they expect.

Pure: no I/O. Reference: docs/xiaozhi-protocol.md (firmware 78/xiaozhi-esp32, server
xinnan-tech/xiaozhi-esp32-server).

Errors to devices. Firmware ignores message types it does not know, so problems are reported as
`{"type": "error", "code": "...", "message": "...", "session_id": "..."}`: harmless to a real
device, readable by tools and the simulator. Codes (`ERROR_CODES`): hello_required,
unsupported_audio, bad_message, unknown_type, bad_audio, audio_too_fast, rate_limited, overloaded,
vad_failed, asr_failed, reply_failed, reply_timeout, busy, too_many_connections. Problems that
repeat with every frame (bad_audio, audio_too_fast, rate_limited, vad_failed) are reported once
per burst, not once per frame.

Close codes (WebSocket):
  1000 normal (exit command)            1001 going away (server shutdown / session ended)
  1008 policy violation (message rate far over the limit)
  1009 message too big (> max_message_bytes, sent by the server library)
  1013 try again later (server at capacity, too many connections waiting for hello or from
       one address)
  4000 protocol error (unsupported hello)  4001 authentication failed (after the text "认证失败")
  4002 no hello within the timeout         4003 idle timeout
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from voice_pipeline.common.errors import ProtocolError
from voice_pipeline.common.opus import FRAME_DURATIONS, OPUS_RATES

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
CLOSE_PROTOCOL_ERROR = 4000
CLOSE_AUTH_FAILED = 4001
CLOSE_HELLO_TIMEOUT = 4002
CLOSE_IDLE_TIMEOUT = 4003
AUTH_FAILED_TEXT = "认证失败"  # what the reference server sends before closing

ERROR_CODES = frozenset(
    {
        "hello_required",
        "unsupported_audio",
        "bad_message",
        "unknown_type",
        "bad_audio",
        "audio_too_fast",
        "rate_limited",
        "overloaded",
        "vad_failed",
        "asr_failed",
        "reply_failed",
        "reply_timeout",
        "busy",
        "too_many_connections",
    }
)
CLOSE_CODES = frozenset({1000, 1001, 1008, 1009, 1013, 4000, 4001, 4002, 4003})

MAX_TEXT_BYTES = 16384
LISTEN_STATES = ("start", "stop", "detect")
LISTEN_MODES = ("auto", "manual", "realtime")


@dataclass(frozen=True)
class AudioParams:
    format: str = "opus"
    sample_rate: int = 16000
    channels: int = 1
    frame_duration: int = 60

    def problem(self) -> str:
        """Why the gateway cannot take this audio, or '' if it can."""
        if self.format != "opus":
            return f"audio format '{self.format}' is not supported; use opus"
        if self.channels != 1:
            return f"{self.channels} channels are not supported; use 1 (mono)"
        if self.sample_rate not in OPUS_RATES:
            return f"sample_rate {self.sample_rate} is not an Opus rate {OPUS_RATES}"
        if self.frame_duration not in FRAME_DURATIONS:
            return f"frame_duration {self.frame_duration} ms is not one of {FRAME_DURATIONS}"
        return ""


@dataclass(frozen=True)
class Hello:
    version: int = 1
    transport: str = "websocket"
    features: dict[str, Any] = field(default_factory=dict)
    audio_params: AudioParams = field(default_factory=AudioParams)
    error: str = ""  # set when the hello is well-formed but asks for audio we cannot serve
    type: str = "hello"


@dataclass(frozen=True)
class Listen:
    state: str
    mode: str = ""
    text: str = ""
    type: str = "listen"


@dataclass(frozen=True)
class Abort:
    reason: str = ""
    type: str = "abort"


@dataclass(frozen=True)
class Mcp:
    payload: dict[str, Any]
    type: str = "mcp"


@dataclass(frozen=True)
class Ping:
    type: str = "ping"


@dataclass(frozen=True)
class Goodbye:
    type: str = "goodbye"


@dataclass(frozen=True)
class Iot:
    body: dict[str, Any]
    type: str = "iot"


@dataclass(frozen=True)
class UnknownMessage:
    type: str
    body: dict[str, Any]


DeviceMessage = Hello | Listen | Abort | Mcp | Ping | Goodbye | Iot | UnknownMessage


def _int(body: dict[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"'{key}' must be an integer, got {value!r}")
    return value


def _parse_hello(body: dict[str, Any]) -> Hello:
    raw = body.get("audio_params") or {}
    if not isinstance(raw, dict):
        raise ProtocolError("hello 'audio_params' must be an object")
    params = AudioParams(
        format=str(raw.get("format", "opus")),
        sample_rate=_int(raw, "sample_rate", 16000),
        channels=_int(raw, "channels", 1),
        frame_duration=_int(raw, "frame_duration", 60),
    )
    features = body.get("features") or {}
    return Hello(
        version=_int(body, "version", 1),
        transport=str(body.get("transport", "websocket")),
        features=features if isinstance(features, dict) else {},
        audio_params=params,
        error=params.problem(),
    )


def parse_text(frame: str) -> DeviceMessage:
    """Parse one text frame from a device; ProtocolError says what is wrong with it."""
    if len(frame.encode("utf-8", "replace")) > MAX_TEXT_BYTES:
        raise ProtocolError(f"text message over {MAX_TEXT_BYTES} bytes")
    try:
        body = json.loads(frame)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"message is not valid JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        # '[' * 8000 fits in 16 KiB and exhausts the JSON decoder's recursion limit.
        raise ProtocolError("message is nested too deeply") from None
    if not isinstance(body, dict):
        raise ProtocolError("message must be a JSON object with a 'type'")
    kind = body.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError("message has no 'type' string")
    if kind == "hello":
        return _parse_hello(body)
    if kind == "listen":
        state = body.get("state")
        if state not in LISTEN_STATES:
            raise ProtocolError(f"listen 'state' must be one of {LISTEN_STATES}, got {state!r}")
        mode = body.get("mode", "")
        if mode and mode not in LISTEN_MODES:
            raise ProtocolError(f"listen 'mode' must be one of {LISTEN_MODES}, got {mode!r}")
        text = body.get("text", "")
        return Listen(state=state, mode=mode or "", text=text if isinstance(text, str) else "")
    if kind == "abort":
        reason = body.get("reason", "")
        return Abort(reason=reason if isinstance(reason, str) else "")
    if kind == "mcp":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            raise ProtocolError("mcp 'payload' must be an object")
        return Mcp(payload)
    if kind == "ping":
        return Ping()
    if kind == "goodbye":
        return Goodbye()
    if kind == "iot":
        return Iot(body)
    return UnknownMessage(kind, body)


# --- binary audio frames (protocol versions 1, 2, 3) -------------------------------------------
V2_HEADER = struct.Struct(">HHIII")  # version, type, reserved, timestamp, payload_size
V3_HEADER = struct.Struct(">BBH")  # type, reserved, payload_size


def decode_audio_frame(data: bytes, version: int) -> bytes:
    """The Opus packet inside one binary WebSocket message."""
    if version == 2:
        if len(data) < V2_HEADER.size:
            raise ProtocolError(f"binary frame of {len(data)} bytes is shorter than the v2 header")
        _, _, _, _, size = V2_HEADER.unpack_from(data)
        payload = data[V2_HEADER.size :]
    elif version == 3:
        if len(data) < V3_HEADER.size:
            raise ProtocolError(f"binary frame of {len(data)} bytes is shorter than the v3 header")
        _, _, size = V3_HEADER.unpack_from(data)
        payload = data[V3_HEADER.size :]
    else:
        return data
    if size != len(payload):
        raise ProtocolError(f"binary frame says {size} payload bytes but carries {len(payload)}")
    return payload


def encode_audio_frame(packet: bytes, version: int, timestamp_ms: int = 0) -> bytes:
    if version == 2:
        return V2_HEADER.pack(2, 0, 0, timestamp_ms & 0xFFFFFFFF, len(packet)) + packet
    if version == 3:
        return V3_HEADER.pack(0, 0, len(packet)) + packet
    return packet


# --- server -> device -------------------------------------------------------------------------
def server_hello(session_id: str, sample_rate: int, frame_duration: int) -> dict[str, Any]:
    return {
        "type": "hello",
        "transport": "websocket",
        "session_id": session_id,
        "audio_params": {
            "format": "opus",
            "sample_rate": sample_rate,
            "channels": 1,
            "frame_duration": frame_duration,
        },
    }


def stt(session_id: str, text: str) -> dict[str, Any]:
    return {"session_id": session_id, "type": "stt", "text": text}


def llm_emotion(session_id: str, emotion: str, text: str = "🙂") -> dict[str, Any]:
    return {"session_id": session_id, "type": "llm", "text": text, "emotion": emotion}


def tts_start(session_id: str) -> dict[str, Any]:
    return {"session_id": session_id, "type": "tts", "state": "start"}


def tts_sentence_start(session_id: str, text: str) -> dict[str, Any]:
    return {"session_id": session_id, "type": "tts", "state": "sentence_start", "text": text}


def tts_stop(session_id: str) -> dict[str, Any]:
    return {"session_id": session_id, "type": "tts", "state": "stop"}


def error(code: str, message: str, session_id: str = "") -> dict[str, Any]:
    assert code in ERROR_CODES, code  # every code a device can get is documented above
    body: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if session_id:
        body["session_id"] = session_id
    return body


def pong() -> dict[str, Any]:
    return {"type": "pong", "timestamp": str(int(time.time() * 1000))}
