"""Cache keys and value codecs (pure functions).

A key holds everything that changes the cached result and nothing else: the same audio with
another language setting, or the same sentence at another sample rate, must not collide, and
settings that only change speed (threads, batch sizes) must not split the cache. Keys are
`<prefix>:v1:<kind>:<sha256>`, so a format change bumps `v1` instead of reading old bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np

from voice_pipeline.asr.settings import AsrSettings
from voice_pipeline.common.audio import Int16Array
from voice_pipeline.common.stages import SpeechRequest, Transcript
from voice_pipeline.tts.settings import TtsSettings

VERSION = "v1"


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))  # length-prefixed: ("ab","c") != ("a","bc")
        h.update(data)
    return h.hexdigest()


def asr_model_id(settings: AsrSettings) -> str:
    """The ASR settings that can change a transcript: every setting but those about speed, load,
    time and credentials (so a new back-end option splits the cache rather than reusing text)."""
    fields = {
        name: value
        for name, value in settings.model_dump().items()
        if not name.endswith(_NOT_RESULT_SUFFIXES) and name not in _ASR_NOT_RESULT
    }
    return json.dumps(fields, sort_keys=True)


_ASR_NOT_RESULT = {"threads", "batch_max_size", "batch_max_wait_ms", "queue_size"}
_NOT_RESULT_SUFFIXES = ("timeout_s", "_file", "_env")


def asr_key(prefix: str, model_id: str, language: str, pcm: Int16Array) -> str:
    audio = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
    return f"{prefix}:{VERSION}:asr:{_digest(model_id, language, audio)}"


def encode_transcript(t: Transcript) -> bytes:
    return json.dumps({"text": t.text, "language": t.language, "audio_seconds": t.audio_seconds}).encode()


def decode_transcript(data: bytes) -> Transcript:
    obj = json.loads(data)
    return Transcript(str(obj["text"]), str(obj["language"]), float(obj["audio_seconds"]))


def tts_variant(settings: TtsSettings, language: str) -> str:
    """The TTS settings that can change a sentence's audio for `language`: every setting but those
    about time, load and credentials (so a new engine option splits the cache rather than serving
    stale audio), with the engine chain of this language only."""
    fields = {
        name: value
        for name, value in settings.model_dump().items()
        if not name.endswith(_NOT_RESULT_SUFFIXES) and name not in _TTS_NOT_AUDIO
    }
    engines = settings.engines.get(language)
    fields["engines"] = engines if engines is not None else settings.engines
    return json.dumps(fields, sort_keys=True)


_TTS_NOT_AUDIO = {"max_concurrency", "queue_size", "breaker_failures", "breaker_cooldown_s"}


def tts_key(prefix: str, variant: str, request: SpeechRequest) -> str:
    digest = _digest(
        variant,
        request.text,
        request.language,
        request.voice,
        str(request.sample_rate),
        str(request.frame_ms),
    )
    return f"{prefix}:{VERSION}:tts:{digest}"


def encode_packets(packets: list[bytes]) -> bytes:
    """Opus packets, each prefixed by its length (packets are < 64 KiB by the Opus spec)."""
    out = bytearray(struct.pack("<I", len(packets)))
    for packet in packets:
        out += struct.pack("<H", len(packet))
        out += packet
    return bytes(out)


def decode_packets(data: bytes) -> list[bytes]:
    (count,) = struct.unpack_from("<I", data, 0)
    offset, packets = 4, []
    for _ in range(count):
        (size,) = struct.unpack_from("<H", data, offset)
        offset += 2
        if offset + size > len(data):
            raise ValueError("truncated packet list")
        packets.append(data[offset : offset + size])
        offset += size
    if offset != len(data):
        raise ValueError("trailing bytes after packet list")
    return packets


def llm_namespace(model: str, system_prompt: str) -> str:
    """Replies are reused only under the same model and system prompt (which carries the language)."""
    return _digest(model, system_prompt)[:24]


def llm_log_key(prefix: str, namespace: str) -> str:
    return f"{prefix}:{VERSION}:llm:log:{namespace}"


def llm_reply_key(prefix: str, namespace: str, entry_id: str) -> str:
    return f"{prefix}:{VERSION}:llm:reply:{namespace}:{entry_id}"


def encode_reply(question: str, deltas: list[str]) -> bytes:
    """The reply as the deltas the provider streamed, so a hit replays them exactly: the gateway's
    sentence splitter then cuts the same sentences, and those find their audio in the TTS cache."""
    return json.dumps({"q": question, "d": deltas}, ensure_ascii=False).encode()


def decode_reply(data: bytes) -> tuple[str, list[str]]:
    obj = json.loads(data)
    deltas = obj["d"]
    if not isinstance(deltas, list) or not all(isinstance(d, str) for d in deltas):
        raise ValueError("reply deltas must be a list of strings")
    return str(obj["q"]), deltas
