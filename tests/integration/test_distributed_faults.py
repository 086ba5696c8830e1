"""The distributed gateway with its stages down: the device is told, never dropped.

A real `serve gateway` process on loopback whose four stage URLs point at ports nobody listens
on (the VAD stage down when a device connects). It used to end the session with a bare close
(1006) after an unhandled ProviderUnavailableError; now the device gets `vad_failed`, the session
stays open (ping answered), and a turn that cannot be served ends with an error and `tts stop`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets

from .conftest import free_port
from .services import Process, launch, stop

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lonely_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    dead = {
        f"VP_STAGES__{stage}_URL": f"http://127.0.0.1:{free_port()}" for stage in ("VAD", "ASR", "LLM", "TTS")
    }
    process = launch(
        tmp_path_factory.mktemp("faults"), "gateway", {**dead, "VP_STAGES__CONNECT_TIMEOUT_S": "0.5"}
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # /readyz stays 503 (no stage reachable): wait for /healthz
        assert process.process.poll() is None, process.log_tail()
        try:
            if httpx.get(f"{process.http}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    yield process
    stop(process)


async def test_vad_down_at_connect_is_an_error_not_a_dropped_session(lonely_gateway: Process) -> None:
    async with websockets.connect(lonely_gateway.ws) as ws:
        await ws.send(json.dumps({"type": "hello", "version": 1, "audio_params": {"format": "opus"}}))
        seen = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]
        assert {m["type"] for m in seen} == {"hello", "error"}
        assert next(m for m in seen if m["type"] == "error")["code"] == "vad_failed"
        # The session goes on: a typed question cannot be answered (LLM down) but ends its turn.
        await ws.send(json.dumps({"type": "listen", "state": "detect", "text": "hello"}))
        kinds = []
        while "tts:stop" not in kinds:
            body = json.loads(await asyncio.wait_for(ws.recv(), 20))
            kinds.append(f"{body['type']}:{body.get('state', body.get('code', ''))}")
        # No audio: the device never enters `speaking` (`tts start` goes with the first frame).
        assert kinds == ["stt:", "error:reply_failed", "tts:stop"], kinds
        await ws.send('{"type": "ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "pong"
    log = lonely_gateway.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
