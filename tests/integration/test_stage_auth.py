"""A stage service with a shared secret: gateways presenting it get the stream, anyone else an
HTTP 403 at the upgrade, logged without the secret (real `serve vad` process on loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from voice_pipeline.common.errors import ProviderUnavailableError
from voice_pipeline.transport.client import StageConnection

from .services import Process, launch, stop, wait_ready

pytestmark = pytest.mark.integration
SECRET = "stage-secret-4b1d7e0c"


@pytest.fixture(scope="module")
def vad_with_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    tmp = tmp_path_factory.mktemp("stage-auth")
    token_file = tmp / "token"
    token_file.write_text(SECRET + "\n", encoding="utf-8")
    process = launch(tmp, "vad", {"VP_SERVICE__AUTH_TOKEN_FILE": str(token_file)})
    wait_ready([process])
    yield process
    stop(process)


async def test_a_client_without_the_token_gets_403(vad_with_token: Process) -> None:
    url = f"ws://{vad_with_token.host}:{vad_with_token.port}/v1/stream"
    for headers in (None, {"Authorization": "Bearer wrong-guess"}, {"Authorization": "wrong-guess"}):
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(url, additional_headers=headers):
                pass
        assert info.value.response.status_code == 403
    log = vad_with_token.log_path.read_text(errors="replace")
    assert "refused a /v1/stream client" in log and "wrong-guess" not in log and SECRET not in log


async def test_the_gateway_connection_with_the_token_is_served(vad_with_token: Process) -> None:
    good = StageConnection("vad", f"{vad_with_token.host}:{vad_with_token.port}", auth_token=SECRET)
    await good.start()  # the HELLO frame names the stage: the stream is open
    try:
        assert good.connected
    finally:
        await good.close()
    bad = StageConnection("vad", f"{vad_with_token.host}:{vad_with_token.port}", auth_token="nope")
    with pytest.raises(ProviderUnavailableError, match="403"):
        await bad.start()
