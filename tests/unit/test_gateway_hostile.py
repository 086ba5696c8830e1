"""The gateway app against hostile clients, in process (Starlette's TestClient: no sockets) with
fake stages: nested JSON, non-ASCII tokens, silent sockets, floods, OTA bodies."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from voice_pipeline.common.audio import OpusEncoder
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.gateway import protocol as proto
from voice_pipeline.gateway.app import create_gateway_app
from voice_pipeline.gateway.auth import AuthSettings
from voice_pipeline.gateway.conversation import Stages
from voice_pipeline.gateway.ota import OtaSettings
from voice_pipeline.gateway.settings import GatewaySettings
from voice_pipeline.turn.history import ChatHistory

from .test_conversation import FakeAsr, FakeLlm, FakeTts, FakeVad

WS = "/xiaozhi/v1/"
HELLO = json.dumps({"type": "hello", "version": 1, "audio_params": {"format": "opus", "sample_rate": 16000}})


class Clock:
    """A hand-moved clock for the uplink budgets: no test depends on how fast it runs."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_app(
    clock: Clock | None = None,
    auth: AuthSettings | None = None,
    ota: OtaSettings | None = None,
    **gateway: Any,
) -> tuple[Any, FakeVad]:
    vad = FakeVad()

    @asynccontextmanager
    async def stages(_: Metrics) -> AsyncIterator[Stages]:
        yield Stages(vad=vad, asr=FakeAsr(), llm=FakeLlm(["Hi."]), tts=FakeTts())

    app = create_gateway_app(
        GatewaySettings(**gateway),
        auth or AuthSettings(),
        ota or OtaSettings(),
        stages,
        lambda: ChatHistory({"en": "prompt"}),
        Metrics(),
        clock=clock or Clock(),
    )
    return app, vad


@pytest.fixture
def client() -> Iterator[TestClient]:
    app, _ = make_app()
    with TestClient(app) as c:
        yield c


def hello(ws: Any) -> dict[str, Any]:
    ws.send_text(HELLO)
    reply: dict[str, Any] = ws.receive_json()
    assert reply["type"] == "hello"
    return reply


def until_pong(ws: Any) -> list[dict[str, Any]]:
    """Send a ping and collect everything the server sent before its pong."""
    ws.send_text('{"type": "ping"}')
    seen = []
    for _ in range(1000):
        message = ws.receive_json()
        if message["type"] == "pong":
            return seen
        seen.append(message)
    raise AssertionError("no pong")


def closed_with(ws: Any) -> int:
    with pytest.raises(WebSocketDisconnect) as info:
        for _ in range(100):
            ws.receive_json()
    return int(info.value.code)


# --- nested JSON (3) ------------------------------------------------------------------------


def test_deeply_nested_text_frames_get_bad_message_before_and_after_hello(client: TestClient) -> None:
    nested = "[" * 8000 + "]" * 8000
    with client.websocket_connect(WS) as ws:
        ws.send_text(nested)
        assert ws.receive_json()["code"] == "bad_message"  # used to drop the socket
        hello(ws)
        ws.send_text(nested)
        assert [m["code"] for m in until_pong(ws)] == ["bad_message"]  # the session goes on


def test_ota_body_nested_deep_is_answered_not_a_500(client: TestClient) -> None:
    headers = {"Device-Id": "aa:bb:cc:dd:ee:ff", "Client-Id": "c1"}
    deep = "[" * 30000 + "]" * 30000  # under the size limit, past the parser's recursion limit
    answer = client.post("/xiaozhi/ota/", content=deep, headers=headers)
    assert answer.status_code == 200 and "websocket" in answer.json()


def test_ota_body_over_the_limit_is_413_json(client: TestClient) -> None:
    headers = {"Device-Id": "aa:bb:cc:dd:ee:ff", "Client-Id": "c1"}
    answer = client.post("/xiaozhi/ota/", content="[" * 100000 + "]" * 100000, headers=headers)
    assert answer.status_code == 413 and answer.json()["success"] is False


def _ota_scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/xiaozhi/ota/",
        "raw_path": b"/xiaozhi/ota/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gw"), (b"device-id", b"aa:bb:cc:dd:ee:ff"), (b"client-id", b"c1")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


async def _call(app: Any, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        import asyncio

        await asyncio.Event().wait()  # a client that never sends the rest
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(_ota_scope(), receive, send)
    return sent


async def test_ota_client_leaving_mid_body_logs_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = make_app()
    caplog.set_level(logging.DEBUG)
    body = {"type": "http.request", "body": b'{"version": 2, "mac', "more_body": True}
    await _call(app, [body, {"type": "http.disconnect"}])
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_ota_body_that_never_finishes_gets_408() -> None:
    app, _ = make_app(ota=OtaSettings(body_timeout_s=0.05))
    sent = await _call(app, [{"type": "http.request", "body": b"{", "more_body": True}])
    assert sent[0]["status"] == 408


# --- non-ASCII token (4) --------------------------------------------------------------------


@pytest.mark.parametrize("query", ["authorization=签名.1750000000", "authorization=Bearer%20caf%C3%A9.1"])
def test_non_ascii_token_gets_auth_failed_and_4001(query: str) -> None:
    app, _ = make_app(auth=AuthSettings(enabled=True, key="k"))
    with TestClient(app) as c, c.websocket_connect(f"{WS}?device-id=aa:bb:cc:dd:ee:ff&{query}") as ws:
        assert ws.receive_text() == proto.AUTH_FAILED_TEXT
        assert closed_with(ws) == proto.CLOSE_AUTH_FAILED


# --- silent sockets and per-address limits (5) ----------------------------------------------


def test_silent_sockets_do_not_hold_the_session_cap() -> None:
    app, _ = make_app(max_sessions=1, max_pending_hello=3, max_connections_per_ip=0)
    with TestClient(app) as c, ExitStack() as stack:
        for _ in range(2):  # connected, never say hello
            stack.enter_context(c.websocket_connect(WS))
        device = stack.enter_context(c.websocket_connect(WS))
        hello(device)  # used to be refused with 1013: the silent ones held both "sessions"
        assert until_pong(device) == []
        late = stack.enter_context(c.websocket_connect(WS))
        late.send_text(HELLO)  # the one session is taken now: refused after its hello
        assert late.receive_json()["code"] == "busy"
        assert closed_with(late) == proto.CLOSE_TRY_AGAIN


def test_sockets_waiting_for_hello_are_capped() -> None:
    app, _ = make_app(max_pending_hello=2, max_connections_per_ip=0)
    with TestClient(app) as c, ExitStack() as stack:
        for _ in range(2):
            stack.enter_context(c.websocket_connect(WS))
        over = stack.enter_context(c.websocket_connect(WS))
        assert over.receive_json()["code"] == "busy"
        assert closed_with(over) == proto.CLOSE_TRY_AGAIN


def test_connections_per_address_are_limited() -> None:
    app, _ = make_app(max_connections_per_ip=2)
    with TestClient(app) as c, ExitStack() as stack:
        for _ in range(2):
            hello(stack.enter_context(c.websocket_connect(WS)))
        over = stack.enter_context(c.websocket_connect(WS))
        assert over.receive_json()["code"] == "too_many_connections"
        assert closed_with(over) == proto.CLOSE_TRY_AGAIN


def test_a_socket_without_hello_is_closed_after_the_hello_timeout() -> None:
    app, _ = make_app(hello_timeout_s=0.05)
    with TestClient(app) as c, c.websocket_connect(WS) as ws:
        assert closed_with(ws) == proto.CLOSE_HELLO_TIMEOUT


# --- uplink floods (8) ----------------------------------------------------------------------


def _silence_packet() -> bytes:
    return OpusEncoder(16000, 60).encode(np.zeros(960, np.int16))


def test_audio_faster_than_real_time_is_dropped_and_told_once() -> None:
    clock = Clock()
    app, vad = make_app(clock, uplink_burst_s=2.0, uplink_realtime_factor=1.5, message_burst=1000)
    packet = _silence_packet()
    with TestClient(app) as c, c.websocket_connect(WS) as ws:
        hello(ws)
        ws.send_text('{"type": "listen", "state": "start", "mode": "auto"}')
        for _ in range(300):  # 18 s of audio at one instant of the clock
            ws.send_bytes(packet)
        codes = [m["code"] for m in until_pong(ws)]
        assert codes == ["audio_too_fast"]
        assert vad.fed == 33 * 960  # the 2 s burst allowance, not 18 s of decoding and VAD
        clock.now += 10  # ten seconds later the device speaks in real time again
        for _ in range(20):
            ws.send_bytes(packet)
            clock.now += 0.06
        assert until_pong(ws) == []
        assert vad.fed == 53 * 960


def test_message_flood_is_dropped_told_once_and_closed_when_it_goes_on() -> None:
    clock = Clock()
    app, _ = make_app(clock, max_messages_per_s=10, message_burst=20)
    with TestClient(app) as c, c.websocket_connect(WS) as ws:
        hello(ws)
        for _ in range(25):
            ws.send_text('{"type": "listen", "state": "detect", "text": ""}')
        clock.now += 100
        assert [m["code"] for m in until_pong(ws)] == ["rate_limited"]
        for _ in range(60):
            ws.send_text('{"type": "abort"}')
        assert closed_with(ws) == proto.CLOSE_POLICY


def test_bad_audio_is_reported_once_per_burst() -> None:
    clock = Clock()
    app, _ = make_app(clock)
    with TestClient(app) as c, c.websocket_connect(WS) as ws:
        hello(ws)
        for _ in range(30):
            ws.send_bytes(b"")
            clock.now += 0.06
        ws.send_bytes(_silence_packet())  # a good frame ends the burst
        clock.now += 0.06
        ws.send_bytes(b"")
        assert [m["code"] for m in until_pong(ws)] == ["bad_audio", "bad_audio"]


def test_a_flood_sent_over_time_is_still_one_burst() -> None:
    """Frames let through by the refill in the middle of a flood do not earn it a second notice."""
    clock = Clock()
    app, _ = make_app(clock, uplink_burst_s=2.0, uplink_realtime_factor=1.5, message_burst=100000)
    packet = _silence_packet()
    with TestClient(app) as c, c.websocket_connect(WS) as ws:
        hello(ws)
        for _ in range(2000):  # 120 s of audio in 2 s of wall time
            ws.send_bytes(packet)
            clock.now += 0.001
        assert [m["code"] for m in until_pong(ws)] == ["audio_too_fast"]


# --- device identity (11) ---------------------------------------------------------------------


def test_activation_over_http_then_the_token_opens_a_session(tmp_path: Any) -> None:
    import hashlib
    import hmac
    from pathlib import Path

    key = bytes(range(32))
    secrets_file = Path(str(tmp_path)) / "devices.yaml"
    secrets_file.write_text(f"SN-7: {key.hex()}\n", encoding="utf-8")
    auth = AuthSettings(enabled=True, key="server-key", device_secrets_file=str(secrets_file))
    app, _ = make_app(auth=auth)
    headers = {"Device-Id": "aa:bb:cc:dd:ee:07", "Client-Id": "uuid-7", "Serial-Number": "SN-7"}
    with TestClient(app) as c:
        unknown = {"Device-Id": "aa:bb:cc:dd:ee:08", "Client-Id": "uuid-8"}  # not provisioned
        stranger = c.post("/xiaozhi/ota/", json={}, headers=unknown)
        assert stranger.json()["websocket"]["token"] == "" and "activation" not in stranger.json()
        first = c.post("/xiaozhi/ota/", json={}, headers=headers).json()
        challenge = first["activation"]["challenge"]
        digest = hmac.new(key, challenge.encode(), hashlib.sha256).hexdigest()
        body = {"algorithm": "hmac-sha256", "serial_number": "SN-7", "challenge": challenge, "hmac": digest}
        forged = c.post("/xiaozhi/ota/activate", json={**body, "hmac": "0" * 64}, headers=headers)
        assert forged.status_code == 403 and forged.json()["success"] is False
        assert c.post("/xiaozhi/ota/activate", json=body, headers=headers).status_code == 200
        token = c.post("/xiaozhi/ota/", json={}, headers=headers).json()["websocket"]["token"]
        assert token
        ws_headers = {
            "Device-Id": headers["Device-Id"],
            "Client-Id": "uuid-7",
            "Authorization": f"Bearer {token}",
        }
        with c.websocket_connect(WS, headers=ws_headers) as ws:
            hello(ws)
        with c.websocket_connect(WS, headers={**ws_headers, "Client-Id": "someone-else"}) as ws:
            assert ws.receive_text() == proto.AUTH_FAILED_TEXT
            assert closed_with(ws) == proto.CLOSE_AUTH_FAILED
