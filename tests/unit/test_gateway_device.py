"""The device loop (`gateway/app._serve_device`) in process with fake stages: a whole turn from
hello to the reply's audio, the idle timeout, and session slots refused and freed."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from typing import Any

import numpy as np
from starlette.testclient import TestClient

from voice_pipeline.common.audio import OpusEncoder
from voice_pipeline.gateway import protocol as proto

from .test_gateway_hostile import HELLO, WS, closed_with, hello, make_app, until_pong


def _packet(level: int) -> bytes:
    """60 ms of 16 kHz audio: a steady tone (the fake VAD hears speech). Decoded Opus silence is
    never all zeros, so the turn ends by `listen stop` (manual mode), not by the fake VAD."""
    t = np.arange(960) / 16000
    pcm = (np.sin(2 * np.pi * 440 * t) * level).astype(np.int16)
    return OpusEncoder(16000, 60).encode(pcm)


def test_a_turn_goes_from_speech_to_transcript_reply_and_audio() -> None:
    app, _ = make_app(max_connections_per_ip=0)
    with TestClient(app) as c, c.websocket_connect(WS) as ws:
        server_hello = hello(ws)
        assert server_hello["audio_params"]["sample_rate"] == 24000 and server_hello["session_id"]
        ws.send_text('{"type": "listen", "state": "start", "mode": "manual"}')
        for _ in range(8):
            ws.send_bytes(_packet(8000))
        ws.send_text('{"type": "listen", "state": "stop"}')
        texts: list[dict[str, Any]] = []
        audio = 0
        for _ in range(200):
            message = ws.receive()
            if message.get("bytes") is not None:
                audio += 1
                continue
            event = json.loads(message["text"])
            texts.append(event)
            if event["type"] == "tts" and event.get("state") == "stop":
                break
        kinds = [(m["type"], m.get("state") or m.get("text")) for m in texts]
        assert ("stt", "hello there") in kinds
        assert ("tts", "start") in kinds and ("tts", "sentence_start") in kinds
        assert kinds[-1] == ("tts", "stop")
        assert any(m["type"] == "llm" for m in texts)
        assert audio == 3  # FakeTts: one sentence of three packets


def test_a_session_without_voice_or_messages_is_closed_after_the_idle_timeout() -> None:
    app, _ = make_app(idle_timeout_s=0.1)
    with TestClient(app) as c, c.websocket_connect(WS) as ws:
        hello(ws)
        assert closed_with(ws) == proto.CLOSE_IDLE_TIMEOUT


def test_a_full_gateway_refuses_with_busy_and_a_freed_slot_takes_the_next_device() -> None:
    app, _ = make_app(max_sessions=1, max_connections_per_ip=0)
    with TestClient(app) as c, ExitStack() as stack:
        first = c.websocket_connect(WS)
        hello(stack.enter_context(first))
        over = stack.enter_context(c.websocket_connect(WS))
        over.send_text(HELLO)
        refusal = over.receive_json()
        assert (refusal["type"], refusal["code"]) == ("error", "busy")
        assert closed_with(over) == proto.CLOSE_TRY_AGAIN
        stack.close()  # the first device leaves; the server frees its slot on its own time
        for _ in range(1000):
            if c.get("/healthz").json()["sessions"] == 0:
                break
            time.sleep(0.005)
        with c.websocket_connect(WS) as next_device:
            hello(next_device)
            assert until_pong(next_device) == []
