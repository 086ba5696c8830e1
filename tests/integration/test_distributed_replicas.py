"""Two real VAD replicas: sessions spread over both, a draining one is left at the next listen turn,
and malformed frames get error answers while the connection and the process carry on.

The two replicas listen on the same port of 127.0.0.2 and 127.0.0.3, as two pods behind a headless
Service would; the only stand-in is the name lookup (no cluster DNS here), injected into the pool.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets

from voice_pipeline.transport import wire
from voice_pipeline.transport.pool import ReplicaPool
from voice_pipeline.transport.remote import RemoteVad
from voice_pipeline.transport.wire import Frame, Kind

from .conftest import free_port
from .helpers import clip
from .services import Process, launch, stop, wait_ready

pytestmark = pytest.mark.integration


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[Process, Process]]:
    port = free_port()
    env = {"VP_SERVICE__DRAIN_TIMEOUT_S": "120"}  # exits early only if the gateway really moves away
    a = launch(tmp_path, "vad", env, host="127.0.0.2", port=port)
    b = launch(tmp_path, "vad", env, host="127.0.0.3", port=port)
    try:
        wait_ready([a, b])
        yield a, b
    finally:
        stop(a, timeout=5)
        stop(b, timeout=5)


async def _wait_for(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_sessions_spread_and_leave_a_draining_replica_at_the_next_turn(
    replicas: tuple[Process, Process],
) -> None:
    a, b = replicas
    addr_a, addr_b = f"{a.host}:{a.port}", f"{b.host}:{b.port}"

    async def headless_service(host: str, port: int) -> list[str]:
        return [addr_a, addr_b]

    pool = ReplicaPool(
        "vad", f"http://vad-headless:{a.port}", resolve_interval_s=0.5, resolver=headless_service
    )
    await pool.start()
    vad = RemoteVad(pool)
    silence = np.zeros(16000, np.int16)
    try:
        for i in range(6):
            await vad.open(f"s{i}")
        assert {addr: c.sessions for addr, c in pool.connections.items()} == {addr_a: 3, addr_b: 3}
        for i in range(6):
            assert await vad.feed(f"s{i}", silence) == []

        a.process.send_signal(signal.SIGTERM)
        await _wait_for(lambda: pool.connections[addr_a].draining)
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"{a.http}/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["draining"] is True
        # Mid-turn sessions stay where they are (their speech state lives there)...
        for i in range(6):
            assert await vad.feed(f"s{i}", silence) == []
        # ...new sessions go elsewhere...
        await vad.open("late")
        assert pool.connections[addr_b].sessions == 4
        # ...and the next listen turn moves the rest.
        for i in range(6):
            await vad.reset(f"s{i}")
        assert pool.connections[addr_a].sessions == 0 and pool.connections[addr_b].sessions == 7

        # The moved sessions keep their sample numbering: 2 s fed before this speech.
        events = await vad.feed("s0", np.concatenate([clip("en_weather"), silence]))
        assert [e.kind for e in events if e.kind != "speech_pause"][:2] == ["speech_start", "speech_end"], (
            events
        )
        assert events[0].sample > 2 * 16000, events

        # With nothing left on it, the draining replica exits long before its 120 s drain timeout.
        code = await asyncio.to_thread(a.process.wait, 60)
        assert "drained (idle)" in a.log_tail(), a.log_tail()
        assert code in (0, -signal.SIGTERM)
        await vad.open("after")  # the pool carries on with the remaining replica
        assert pool.connections[addr_b].sessions == 8
    finally:
        await pool.stop()


async def _answer(ws: websockets.ClientConnection) -> Frame:
    return wire.decode(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[arg-type]


async def test_malformed_frames_get_error_answers_and_the_connection_carries_on(
    replicas: tuple[Process, Process],
) -> None:
    a, _ = replicas
    async with websockets.connect(f"ws://{a.host}:{a.port}/v1/stream") as ws:
        hello = await _answer(ws)
        assert hello.kind == Kind.HELLO and wire.decode_json(hello.payload) == {
            "stage": "vad",
            "draining": False,
        }

        async def error_for(data: bytes | str) -> dict[str, object]:
            await ws.send(data)
            answer = await _answer(ws)
            assert answer.kind == Kind.ERROR, answer
            return wire.decode_json(answer.payload)

        assert "shorter than" in str((await error_for(b"garbage"))["message"])
        assert "binary" in str((await error_for("a text message"))["message"])
        assert "bad magic" in str((await error_for(b"XXXXXXXXXXXX"))["message"])
        wrong_stage = await error_for(wire.encode(Frame(Kind.ASR_TRANSCRIBE, 5, payload=b"\x02en")))
        assert wrong_stage["code"] == "bad_request" and "serves vad, not asr" in str(wrong_stage["message"])
        not_open = await error_for(wire.encode(Frame(Kind.VAD_FEED, 6, "nope", b"\x00\x00")))
        assert "not open" in str(not_open["message"])

        await ws.send(wire.encode(Frame(Kind.VAD_OPEN, 7, "s")))
        assert (await _answer(ws)).kind == Kind.OK
        odd = await error_for(wire.encode(Frame(Kind.VAD_FEED, 8, "s", b"\x00\x01\x02")))
        assert "16-bit" in str(odd["message"])
        # After all that, the same connection still serves real audio.
        await ws.send(wire.encode(Frame(Kind.VAD_FEED, 9, "s", wire.encode_pcm(clip("en_weather")))))
        answer = await _answer(ws)
        assert answer.kind == Kind.VAD_EVENTS and answer.request == 9
        assert wire.decode_events(answer.payload)[0].kind == "speech_start"
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{a.http}/readyz", timeout=5)).status_code == 200


async def test_sessions_on_a_killed_replica_carry_on_elsewhere(replicas: tuple[Process, Process]) -> None:
    a, b = replicas
    addr_a, addr_b = f"{a.host}:{a.port}", f"{b.host}:{b.port}"

    async def headless_service(host: str, port: int) -> list[str]:
        return [addr_a, addr_b]

    pool = ReplicaPool(
        "vad", f"http://vad-headless:{a.port}", resolve_interval_s=0.5, resolver=headless_service
    )
    await pool.start()
    vad = RemoteVad(pool)
    try:
        for i in range(4):
            await vad.open(f"s{i}")
        assert pool.connections[addr_a].sessions == 2
        a.process.kill()  # no drain, no goodbye: a crashed pod
        a.process.wait(10)
        speech = np.concatenate([clip("en_hello"), np.zeros(16000, np.int16)])
        for i in range(4):
            events = await vad.feed(f"s{i}", speech)  # re-opened on the survivor when needed
            boundaries = [e.kind for e in events if e.kind != "speech_pause"]
            assert boundaries[:2] == ["speech_start", "speech_end"], (i, events)
        assert pool.connections[addr_b].sessions == 4
    finally:
        await pool.stop()
