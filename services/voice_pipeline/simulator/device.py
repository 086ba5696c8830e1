"""A simulated xiaozhi device: the standard workload of docs/benchmark-workload.md, one device.

It speaks the protocol exactly as the firmware does: handshake headers, hello, `listen start`,
the clip as 60 ms Opus frames paced in real time on a monotonic clock, then silence frames until
the reply starts (`tts start`: the firmware's microphone closes in `speaking`) or 3 s pass. Reply
audio is decoded and "played" in real time: a turn ends at max(tts stop, first audio + audio
duration).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from voice_pipeline.common.audio import Int16Array, OpusDecoder, OpusEncoder
from voice_pipeline.gateway.protocol import decode_audio_frame, encode_audio_frame
from voice_pipeline.turn.sentences import join_sentences

FRAME_MS = 60
UPLINK_RATE = 16000
# The xiaozhi firmware's encoder (OpusEncoder::Configure): VOIP, complexity 5, DTX on. We encode
# the same way so the server hears what a device sends, the 1-byte packets of DTX included.
# Complexity 5 against libopus's default 9 costs whisper-base accuracy on the ASR test set
# (docs/benchmarks.md, "The device's Opus uplink").
UPLINK_COMPLEXITY = 5
UPLINK_DTX = True
SILENCE_AFTER_S = 3.0
TAIL_FRAMES = int(SILENCE_AFTER_S * 1000) // FRAME_MS + 2  # silence packets after a clip, encoded once
REPLY_STALL_S = 10.0  # a reply that stops sending audio this long past its playback has stalled
HELLO_TIMEOUT_S = 10.0


@dataclass
class TurnResult:
    transcript: str = ""
    reply: str = ""
    audio_seconds: float = 0.0
    stt_ms: int | None = None
    first_token_ms: int | None = None
    first_audio_ms: int | None = None
    error: str = ""
    close_code: int | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error and self.audio_seconds > 0 and bool(self.transcript)

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body.pop("errors")
        return body


@dataclass(frozen=True)
class EncodedClip:
    """A clip as the Opus packets a device sends, encoded once: a fleet replays the same clips
    thousands of times, and encoding them per turn would make the load generator the bottleneck."""

    frames: list[bytes]
    # The silence after the clip as the same encoder goes on: with DTX, full packets for ~200 ms,
    # then mostly 1-byte ones. Sent one per frame until the server ends the turn (at most 3 s).
    tail: list[bytes]
    seconds: float
    name: str = ""
    language: str = ""


def encode_clip(pcm: Int16Array, name: str = "", language: str = "") -> EncodedClip:
    encoder = OpusEncoder(UPLINK_RATE, FRAME_MS, complexity=UPLINK_COMPLEXITY, dtx=UPLINK_DTX)
    frames = encoder.encode_all(pcm)
    zeros = np.zeros(encoder.frame_size, np.int16)
    tail = [encoder.encode(zeros) for _ in range(TAIL_FRAMES)]
    return EncodedClip(frames, tail, len(frames) * FRAME_MS / 1000, name, language)


# Opus TOC byte (RFC 6716 section 3.1): frame duration in ms by configuration number.
_SILK_MS = (10.0, 20.0, 40.0, 60.0)
_HYBRID_MS = (10.0, 20.0)
_CELT_MS = (2.5, 5.0, 10.0, 20.0)


def opus_packet_samples(packet: bytes, sample_rate: int) -> int:
    """Samples a packet decodes to, read from its TOC byte without decoding (RFC 6716 3.1)."""
    if not packet:
        return 0
    config, code = packet[0] >> 3, packet[0] & 3
    if config < 12:
        frame_ms = _SILK_MS[config % 4]
    elif config < 16:
        frame_ms = _HYBRID_MS[config % 2]
    else:
        frame_ms = _CELT_MS[config % 4]
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        count = packet[1] & 0x3F if len(packet) > 1 else 0
    return int(count * frame_ms * sample_rate / 1000)


@dataclass
class Received:
    messages: list[dict[str, Any]] = field(default_factory=list)
    audio: list[Int16Array] = field(default_factory=list)


class SimulatedDevice:
    def __init__(
        self,
        url: str,
        device_id: str = "",
        client_id: str = "",
        token: str = "",
        protocol_version: int = 1,
        mode: str = "auto",
        decode_audio: bool = True,
    ) -> None:
        """`decode_audio=False` counts reply audio from the Opus packet headers instead of decoding
        it (fleet runs: the load generator must stay cheap); `reply_audio` then stays empty."""
        self.url = url
        self.device_id = device_id or "02:00:00:{:02x}:{:02x}:{:02x}".format(*tuple(uuid.uuid4().bytes[:3]))
        self.client_id = client_id or str(uuid.uuid4())
        self.token = token
        self.protocol_version = protocol_version
        self.mode = mode
        self.session_id = ""
        self.downlink_rate = 24000
        self._ws: Any = None
        self._decoder: OpusDecoder | None = None
        self._inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.reply_audio: list[Int16Array] = []
        self.decode_audio = decode_audio

    async def connect(self) -> None:
        import websockets

        headers = {
            "Device-Id": self.device_id,
            "Client-Id": self.client_id,
            "Protocol-Version": str(self.protocol_version),
        }
        if self.token:
            headers["Authorization"] = self.token if " " in self.token else f"Bearer {self.token}"
        # compression=None: the firmware's esp_websocket_client never negotiates permessage-deflate,
        # and a simulator that did would make the server deflate incompressible Opus frames (the
        # fleet profile showed it as a top cost).
        self._ws = await websockets.connect(
            self.url, additional_headers=headers, max_size=2**20, open_timeout=10, compression=None
        )
        self._reader = asyncio.create_task(self._read())
        await self.send_json(
            {
                "type": "hello",
                "version": self.protocol_version,
                "features": {"mcp": True},
                "transport": "websocket",
                "audio_params": {
                    "format": "opus",
                    "sample_rate": UPLINK_RATE,
                    "channels": 1,
                    "frame_duration": FRAME_MS,
                },
            }
        )
        deadline = time.monotonic() + HELLO_TIMEOUT_S
        while True:
            item = await asyncio.wait_for(self._inbox.get(), max(0.01, deadline - time.monotonic()))
            if item is None:
                raise ConnectionError(f"server closed before hello (code {self.close_code})")
            if isinstance(item, str):
                message = json.loads(item)
                if message.get("type") == "hello":
                    self.session_id = message.get("session_id", "")
                    params = message.get("audio_params") or {}
                    self.downlink_rate = int(params.get("sample_rate", 24000))
                    self._decoder = OpusDecoder(
                        self.downlink_rate, int(params.get("frame_duration", FRAME_MS))
                    )
                    return

    async def _read(self) -> None:
        import websockets

        try:
            async for data in self._ws:
                await self._inbox.put(data)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self._ws.close_code
            await self._inbox.put(None)

    async def send_json(self, body: dict[str, Any]) -> None:
        if self.session_id:
            body = {"session_id": self.session_id, **body}
        await self._ws.send(json.dumps(body, ensure_ascii=False))

    async def send_raw(self, data: str | bytes) -> None:
        await self._ws.send(data)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def next_message(self, timeout: float) -> dict[str, Any] | bytes | None:
        """The next JSON message or binary frame (None when closed); TimeoutError after `timeout`."""
        item = await asyncio.wait_for(self._inbox.get(), timeout)
        if item is None or isinstance(item, bytes):
            return item
        parsed: dict[str, Any] = json.loads(item) if item.startswith("{") else {"type": "text", "text": item}
        return parsed

    async def _stream_clip(self, clip: Int16Array | EncodedClip, stop_when: asyncio.Event) -> float:
        """Send the clip paced in real time, then silence until `stop_when` or 3 s. Returns the
        monotonic time the last clip frame left (speech end, as the workload defines it)."""
        encoded = clip if isinstance(clip, EncodedClip) else encode_clip(clip)
        start = time.monotonic()
        speech_end = start
        for i, packet in enumerate(encoded.frames):
            await _sleep_until(start + i * FRAME_MS / 1000)
            await self._send_audio(packet)
            speech_end = time.monotonic()
        n = len(encoded.frames)
        for packet in encoded.tail:
            if stop_when.is_set() or time.monotonic() - speech_end >= SILENCE_AFTER_S:
                break
            await _sleep_until(start + n * FRAME_MS / 1000)
            await self._send_audio(packet)
            n += 1
        return speech_end

    async def _send_audio(self, packet: bytes) -> None:
        await self._ws.send(encode_audio_frame(packet, self.protocol_version))

    async def turn(
        self, pcm: Int16Array | EncodedClip, timeout: float = 60.0, abort_after_audio_s: float | None = None
    ) -> TurnResult:
        """One conversation turn; with `abort_after_audio_s`, barge in after that much reply audio.
        `timeout` bounds the wait for a complete reply, extended by the reply audio received (it
        plays in real time) while it keeps coming."""
        result = TurnResult()
        stt_seen = asyncio.Event()
        # The firmware's microphone stays open until `tts start` (state `speaking`), not `stt`:
        # the server may take a turn's end back while its reply is being prepared.
        speaking = asyncio.Event()
        await self.send_json({"type": "listen", "state": "start", "mode": self.mode})
        sender = asyncio.create_task(self._stream_clip(pcm, speaking))
        speech_end: float | None = None
        first_audio: float | None = None
        seen: dict[str, float] = {}  # event -> monotonic time; made relative to speech end at the end
        audio_samples = 0
        sentences: list[str] = []
        deadline = time.monotonic() + timeout
        self.reply_audio = []
        try:
            while True:
                if sender.done() and speech_end is None:
                    speech_end = sender.result()
                    if self.mode == "manual":
                        await self.send_json({"type": "listen", "state": "stop"})
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    result.error = f"no complete reply within {timeout:.0f} s"
                    break
                try:
                    # Poll briskly only while the clip is streaming (to see it end); after that
                    # every message wakes us anyway, and a fleet of idle pollers costs CPU.
                    item = await self.next_message(min(remaining, 0.05 if speech_end is None else 0.5))
                except TimeoutError:
                    silent_for = time.monotonic() - speech_end if speech_end is not None else 0.0
                    if not stt_seen.is_set() and silent_for > SILENCE_AFTER_S + 15:
                        result.error = "server never answered (no stt)"
                        break
                    continue
                now = time.monotonic()
                if item is None:
                    result.close_code = self.close_code
                    result.error = result.error or f"connection closed (code {self.close_code})"
                    break
                if isinstance(item, bytes):
                    packet = decode_audio_frame(item, self.protocol_version)
                    if self.decode_audio:
                        assert self._decoder is not None
                        pcm_out = self._decoder.decode(packet)
                        self.reply_audio.append(pcm_out)
                        audio_samples += len(pcm_out)
                    else:
                        audio_samples += opus_packet_samples(packet, self.downlink_rate)
                    if first_audio is None:
                        first_audio = seen["first_audio"] = now
                    # A reply being spoken is not late: the server paces audio in real time, so a
                    # long reply (a story) needs its playback time beyond `timeout`, which bounds
                    # the wait for an answer and any stall inside it.
                    deadline = max(deadline, first_audio + audio_samples / self.downlink_rate + REPLY_STALL_S)
                    if (
                        abort_after_audio_s is not None
                        and audio_samples / self.downlink_rate >= abort_after_audio_s
                    ):
                        break
                    continue
                kind = item.get("type")
                if kind == "stt":
                    result.transcript = str(item.get("text", ""))
                    seen.setdefault("stt", now)
                    stt_seen.set()
                elif kind == "llm":
                    seen.setdefault("first_token", now)
                elif kind == "tts" and item.get("state") == "start":
                    speaking.set()
                elif kind == "tts" and item.get("state") == "sentence_start":
                    sentences.append(str(item.get("text", "")))
                    seen.setdefault("first_token", now)
                elif kind == "tts" and item.get("state") == "stop":
                    break
                elif kind == "error":
                    result.errors.append(item)
                    if item.get("code") in ("overloaded", "reply_failed", "asr_failed", "reply_timeout"):
                        result.error = f"{item.get('code')}: {item.get('message')}"
        finally:
            speaking.set()
            if not sender.done():
                await sender
            speech_end = sender.result() if speech_end is None and not sender.cancelled() else speech_end
        if speech_end is not None:
            # May be negative: a server can detect the end of speech before the clip's trailing
            # padding has been sent.
            result.stt_ms = _ms(seen.get("stt"), speech_end)
            result.first_token_ms = _ms(seen.get("first_token"), speech_end)
            result.first_audio_ms = _ms(seen.get("first_audio"), speech_end)
        result.reply = join_sentences(sentences)
        result.audio_seconds = audio_samples / self.downlink_rate
        if first_audio is not None and abort_after_audio_s is None:
            # The device plays in real time: the turn ends when playback does.
            await _sleep_until(first_audio + result.audio_seconds)
        return result

    async def abort(self, timeout: float = 5.0) -> tuple[float, int]:
        """Send abort; return (seconds until `tts stop`, audio frames that arrived after the abort)."""
        sent = time.monotonic()
        await self.send_json({"type": "abort"})
        late_frames = 0
        while time.monotonic() - sent < timeout:
            item = await self.next_message(timeout)
            if isinstance(item, bytes):
                late_frames += 1
            elif item is None or (item.get("type") == "tts" and item.get("state") == "stop"):
                return time.monotonic() - sent, late_frames
        raise TimeoutError("no tts stop after abort")

    async def drain(self, quiet_s: float = 0.3) -> list[Any]:
        """Collect whatever arrives until the line has been quiet for `quiet_s`."""
        items: list[Any] = []
        while True:
            try:
                item = await self.next_message(quiet_s)
            except TimeoutError:
                return items
            items.append(item)
            if item is None:
                return items


def _ms(t: float | None, since: float) -> int | None:
    return None if t is None else round((t - since) * 1000)


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
