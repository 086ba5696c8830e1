"""Device tokens: a wrong token is refused the way the reference server does it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from voice_pipeline.gateway.auth import make_token
from voice_pipeline.simulator.device import SimulatedDevice

from .conftest import Server, start_server, stop_server
from .helpers import clip

pytestmark = pytest.mark.integration
KEY = "integration-test-key"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "VP_AUTH__ENABLED": "true",
        "VP_AUTH__KEY": KEY,
        "VP_AUTH__ALLOWED_DEVICES": '["11:22:33:44:55:66", "aa:bb:cc:dd:ee:02"]',
    }
    server = start_server(Path(tmp_path_factory.mktemp("secured")), env)
    yield server
    stop_server(server)


async def test_wrong_token_gets_auth_failed_and_close_4001(secured: Server) -> None:
    ws = await websockets.connect(
        secured.url,
        additional_headers={
            "Device-Id": "aa:bb:cc:dd:ee:01",
            "Client-Id": "c",
            "Authorization": "Bearer nope.1",
        },
    )
    assert await asyncio.wait_for(ws.recv(), 5) == "认证失败"
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


async def test_valid_token_and_allow_listed_device_are_served(secured: Server) -> None:
    token = make_token(KEY, "client-1", "aa:bb:cc:dd:ee:02", time.time())
    device = SimulatedDevice(secured.url, device_id="aa:bb:cc:dd:ee:02", client_id="client-1", token=token)
    await device.connect()
    result = await device.turn(clip("en_weather"), timeout=90)
    await device.close()
    assert not result.error and result.audio_seconds > 0, result


async def test_an_allow_listed_device_id_without_a_token_is_refused(secured: Server) -> None:
    """The allow-list is checked against the identity a token proves, never a bare header."""
    ws = await websockets.connect(secured.url, additional_headers={"Device-Id": "11:22:33:44:55:66"})
    assert await asyncio.wait_for(ws.recv(), 5) == "认证失败"
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
