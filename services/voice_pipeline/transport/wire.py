"""The binary frame codec of the gateway <-> stage transport. PURE: bytes in, frames out.

One WebSocket binary message carries one frame:

    offset  size  field
    0       2     magic b"VP"
    2       1     version (1)
    3       1     kind (see `Kind`)
    4       4     request id, big-endian: pairs replies with their request on a shared connection
    8       1     session id length n (0..255)
    9       n     session id, UTF-8 (VAD streams; empty otherwise)
    9+n     ...   payload (kind-specific, below)

Requests carry a request id chosen by the gateway, unique among its in-flight requests on that
connection; every reply frame repeats it, a stream of replies ends with END or ERROR. The WebSocket
already delimits messages, so the payload runs to the end of the message. Anything malformed raises
`WireError` with what was wrong: a bad frame costs its sender one error answer, never a process.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from voice_pipeline.common.audio import Int16Array
from voice_pipeline.common.errors import VoicePipelineError
from voice_pipeline.common.stages import SpeechAudio, VadEvent

MAGIC = b"VP"
VERSION = 1
_HEADER = struct.Struct(">2sBBIB")
MAX_REQUEST_ID = 0xFFFFFFFF


class WireError(VoicePipelineError):
    """A frame or payload that does not follow the codec."""


class Kind(IntEnum):
    # gateway -> stage
    VAD_OPEN = 1  # session: open a VAD stream
    VAD_FEED = 2  # session, payload: PCM -> VAD_EVENTS
    VAD_RESET = 3  # session -> OK
    VAD_CLOSE = 4  # session -> OK
    ASR_TRANSCRIBE = 10  # payload: language tag (zh, en, auto, auto/zh, auto/en) + PCM -> TRANSCRIPT
    LLM_CHAT = 20  # payload: JSON messages -> TEXT* END
    TTS_SYNTHESIZE = 30  # payload: JSON speech request -> AUDIO* END
    CANCEL = 40  # request: stop that request (barge-in); no answer
    # stage -> gateway
    OK = 100
    VAD_EVENTS = 101
    TRANSCRIPT = 102  # payload: JSON transcript
    TEXT = 103  # payload: UTF-8 text delta
    AUDIO = 104  # payload: Opus packets (see encode_audio)
    END = 105  # the stream of replies to this request is complete
    ERROR = 106  # payload: JSON {code, message, stage, queue_size}
    HELLO = 107  # request 0, payload: JSON {stage, draining}: first frame of every connection
    DRAIN = 108  # request 0: this replica is shutting down; open no new sessions on it


# The stage each request is for: a replica serves one stage and refuses the others' requests.
REQUEST_STAGE: dict[Kind, str] = {
    Kind.VAD_OPEN: "vad",
    Kind.VAD_FEED: "vad",
    Kind.VAD_RESET: "vad",
    Kind.VAD_CLOSE: "vad",
    Kind.ASR_TRANSCRIBE: "asr",
    Kind.LLM_CHAT: "llm",
    Kind.TTS_SYNTHESIZE: "tts",
}
REQUEST_KINDS = frozenset({*REQUEST_STAGE, Kind.CANCEL})

# ERROR codes
ERROR_OVERLOADED = "overloaded"  # a bounded queue is full: answered at once
ERROR_BAD_REQUEST = "bad_request"  # the frame or its payload was malformed
ERROR_FAILED = "failed"  # the stage could not serve it (engine/provider error)
ERROR_DRAINING = "draining"  # the replica refuses new sessions while it shuts down


@dataclass(frozen=True)
class Frame:
    kind: Kind
    request: int = 0
    session: str = ""
    payload: bytes = b""


def encode(frame: Frame) -> bytes:
    session = frame.session.encode("utf-8")
    if len(session) > 255:
        raise WireError(f"session id of {len(session)} bytes is longer than 255")
    if not 0 <= frame.request <= MAX_REQUEST_ID:
        raise WireError(f"request id {frame.request} out of range")
    return (
        _HEADER.pack(MAGIC, VERSION, int(frame.kind), frame.request, len(session)) + session + frame.payload
    )


def decode(data: bytes) -> Frame:
    if len(data) < _HEADER.size:
        raise WireError(f"frame of {len(data)} bytes is shorter than the {_HEADER.size}-byte header")
    magic, version, kind, request, session_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError(f"bad magic {magic!r} (expected {MAGIC!r}): not a voice-pipeline frame")
    if version != VERSION:
        raise WireError(f"unsupported frame version {version} (this side speaks {VERSION})")
    try:
        kind = Kind(kind)
    except ValueError:
        raise WireError(f"unknown frame kind {kind}") from None
    end = _HEADER.size + session_len
    if len(data) < end:
        raise WireError(f"session id runs past the end of the frame ({session_len} bytes announced)")
    try:
        session = data[_HEADER.size : end].decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("session id is not UTF-8") from None
    return Frame(kind, request, session, bytes(data[end:]))


def peek_request(data: bytes) -> int:
    """The request id of a frame that failed to decode, if its header got that far (else 0)."""
    if len(data) >= _HEADER.size and data[:2] == MAGIC:
        return int(_HEADER.unpack_from(data)[3])
    return 0


# --- payloads ------------------------------------------------------------------------------------


def encode_pcm(pcm: Int16Array) -> bytes:
    return np.asarray(pcm, dtype="<i2").tobytes()


def decode_pcm(payload: bytes) -> Int16Array:
    if len(payload) % 2:
        raise WireError(f"PCM payload of {len(payload)} bytes is not whole 16-bit samples")
    return np.frombuffer(payload, dtype="<i2").astype(np.int16)


_EVENT = struct.Struct(">BQ")
_EVENT_KINDS = ("speech_start", "speech_end", "speech_pause")  # append only: the index is the wire code


def encode_events(events: list[VadEvent]) -> bytes:
    return struct.pack(">H", len(events)) + b"".join(
        _EVENT.pack(_EVENT_KINDS.index(e.kind), e.sample) for e in events
    )


def decode_events(payload: bytes) -> list[VadEvent]:
    if len(payload) < 2:
        raise WireError("VAD events payload lacks its count")
    (count,) = struct.unpack_from(">H", payload)
    if len(payload) != 2 + count * _EVENT.size:
        raise WireError(f"VAD events payload of {len(payload)} bytes does not hold {count} events")
    events = []
    for i in range(count):
        kind, sample = _EVENT.unpack_from(payload, 2 + i * _EVENT.size)
        if kind >= len(_EVENT_KINDS):
            raise WireError(f"unknown VAD event kind {kind}")
        events.append(VadEvent(_EVENT_KINDS[kind], sample))  # type: ignore[arg-type]
    return events


def encode_asr_request(language: str, pcm: Int16Array) -> bytes:
    tag = language.encode("ascii")
    if len(tag) > 255:
        raise WireError("language tag too long")
    return bytes([len(tag)]) + tag + encode_pcm(pcm)


def decode_asr_request(payload: bytes) -> tuple[str, Int16Array]:
    if not payload:
        raise WireError("ASR request payload is empty")
    n = payload[0]
    if len(payload) < 1 + n:
        raise WireError("ASR request language tag runs past the payload")
    try:
        language = payload[1 : 1 + n].decode("ascii")
    except UnicodeDecodeError:
        raise WireError("ASR request language tag is not ASCII") from None
    return language, decode_pcm(payload[1 + n :])


def encode_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_json(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"payload is not UTF-8 JSON: {exc}") from None
    if not isinstance(value, dict):
        raise WireError(f"JSON payload must be an object, got {type(value).__name__}")
    return value


def decode_text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("text payload is not UTF-8") from None


_AUDIO = struct.Struct(">IHB")


def encode_audio(audio: SpeechAudio) -> bytes:
    engine = audio.engine.encode("utf-8")[:255]
    parts = [_AUDIO.pack(audio.sample_rate, audio.frame_ms, len(engine)), engine]
    for packet in audio.packets:
        if len(packet) > 0xFFFF:
            raise WireError(f"Opus packet of {len(packet)} bytes is too large")
        parts.append(struct.pack(">H", len(packet)))
        parts.append(packet)
    return b"".join(parts)


def decode_audio(payload: bytes) -> SpeechAudio:
    if len(payload) < _AUDIO.size:
        raise WireError("audio payload is shorter than its header")
    rate, frame_ms, engine_len = _AUDIO.unpack_from(payload)
    offset = _AUDIO.size + engine_len
    if len(payload) < offset:
        raise WireError("audio engine name runs past the payload")
    engine = payload[_AUDIO.size : offset].decode("utf-8", errors="replace")
    packets = []
    while offset < len(payload):
        if offset + 2 > len(payload):
            raise WireError("audio packet length is cut off")
        (size,) = struct.unpack_from(">H", payload, offset)
        offset += 2
        if offset + size > len(payload):
            raise WireError(f"audio packet of {size} bytes runs past the payload")
        packets.append(bytes(payload[offset : offset + size]))
        offset += size
    return SpeechAudio(packets, rate, frame_ms, engine)


def error_payload(code: str, message: str, stage: str = "", queue_size: int = 0) -> bytes:
    return encode_json({"code": code, "message": message, "stage": stage, "queue_size": queue_size})
