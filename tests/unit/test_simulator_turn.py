"""The simulated device's turn against a scripted server on loopback: a long reply that keeps coming
is not a timeout (it plays in real time); a reply that stops coming is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import pytest
import websockets

from voice_pipeline.common.audio import OpusEncoder
from voice_pipeline.simulator import device as device_module
from voice_pipeline.simulator.device import SimulatedDevice, TurnResult

RATE, FRAME_MS = 24000, 60


@asynccontextmanager
async def scripted_server(reply_frames: int, stall_after: int | None = None) -> AsyncIterator[str]:
    """Answers hello; after the first audio frame from the device: stt, tts start, `reply_frames`
    frames of reply paced in real time (or only `stall_after` of them, then silence), tts stop."""
    encoder = OpusEncoder(RATE, FRAME_MS)
    packet = encoder.encode(np.zeros(RATE * FRAME_MS // 1000, np.int16))

    async def handler(ws: websockets.ServerConnection) -> None:
        await ws.recv()  # hello
        hello = {
            "type": "hello",
            "session_id": "s",
            "audio_params": {"sample_rate": RATE, "frame_duration": FRAME_MS},
        }
        await ws.send(json.dumps(hello))
        async for message in ws:
            if isinstance(message, bytes):
                break
        await ws.send(json.dumps({"type": "stt", "text": "tell me a story"}))
        await ws.send(json.dumps({"type": "tts", "state": "start"}))
        await ws.send(json.dumps({"type": "tts", "state": "sentence_start", "text": "Once upon a time."}))
        for i in range(reply_frames):
            if stall_after is not None and i >= stall_after:
                await ws.wait_closed()  # stalled until the device gives up
                return
            await ws.send(packet)
            await asyncio.sleep(FRAME_MS / 1000)
        await ws.send(json.dumps({"type": "tts", "state": "stop"}))
        await ws.wait_closed()

    async with websockets.serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


async def one_turn(reply_frames: int, stall_after: int | None = None) -> TurnResult:
    """A 0.2 s question (the scripted server answers its first frame) with a 1.5 s turn limit."""
    async with scripted_server(reply_frames, stall_after) as url:
        device = SimulatedDevice(url)
        await device.connect()
        try:
            return await device.turn(np.zeros(16000 // 5, np.int16), timeout=1.5)
        finally:
            await device.close()


async def test_a_reply_longer_than_the_timeout_completes_while_its_audio_keeps_coming() -> None:
    result = await one_turn(reply_frames=40)  # 2.4 s of audio
    assert result.error == "", result.error
    assert abs(result.audio_seconds - 2.4) < 0.01


async def test_a_reply_that_stops_coming_is_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "REPLY_STALL_S", 0.5)
    result = await one_turn(reply_frames=40, stall_after=5)
    assert result.error.startswith("no complete reply"), result.error
    assert abs(result.audio_seconds - 0.3) < 0.01
