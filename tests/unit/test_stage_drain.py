"""The stage host's drain on SIGTERM, through uvicorn's public surface only (`serve`,
`handle_exit`, `should_exit`): the uvicorn in use must still call what `DrainingServer` overrides.
The server runs in a thread (uvicorn then installs no signal handlers in the test process) and the
SIGTERM is delivered by calling the handler uvicorn would have installed."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from websockets.sync.client import connect

from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import ServedStage
from voice_pipeline.stagehost.app import DrainingServer, create_stage_app
from voice_pipeline.stagehost.settings import ServiceSettings
from voice_pipeline.transport import wire
from voice_pipeline.transport.wire import Frame, Kind

from .test_conversation import FakeVad


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _wait(condition: object, what: str) -> None:
    for _ in range(1000):  # bounded: a broken drain fails here instead of hanging the suite
        if callable(condition) and condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigterm_drains_until_the_last_session_closes_then_uvicorn_exits() -> None:
    @asynccontextmanager
    async def build(_: Metrics) -> AsyncIterator[ServedStage]:
        yield FakeVad()

    app = create_stage_app("vad", ServiceSettings(), build, Metrics(serves_devices=False))
    draining = DrainingServer(app, "127.0.0.1", 0, drain_timeout_s=30, ws_max_size=1 << 20)
    server = draining.server
    thread = threading.Thread(target=draining.run, daemon=True)
    thread.start()
    _wait(lambda: server.started, "the server to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    assert _status(f"{base}/readyz") == 200
    with connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
        assert json.loads(wire.decode(ws.recv(timeout=10)).payload)["stage"] == "vad"  # HELLO
        ws.send(wire.encode(Frame(Kind.VAD_OPEN, 1, "s1")))
        assert wire.decode(ws.recv(timeout=10)).kind == Kind.OK  # a session open: the replica is not idle
        server.handle_exit(signal.SIGTERM, None)  # what uvicorn's signal handler calls
        assert wire.decode(ws.recv(timeout=10)).kind == Kind.DRAIN
        assert _status(f"{base}/readyz") == 503 and not server.should_exit  # draining, still serving
        ws.send(wire.encode(Frame(Kind.VAD_CLOSE, 2, "s1")))
        assert wire.decode(ws.recv(timeout=10)).kind == Kind.OK
        _wait(lambda: server.should_exit, "the drain to hand over to uvicorn")
    thread.join(10)
    assert not thread.is_alive()
