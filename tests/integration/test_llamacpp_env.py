"""A real llama.cpp server started with PORT and HOST in the environment still binds loopback on
the port it was given (it used to read them ahead of its flags: PORT=8000 made `serve` fail after
120 s, HOST=0.0.0.0 exposed it on every interface)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from voice_pipeline.llm.llamacpp import LlamaCppServer
from voice_pipeline.llm.settings import LlmSettings

pytestmark = pytest.mark.integration


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc shows them) listening on `port` over IPv4 and IPv6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


async def test_port_and_host_in_the_environment_do_not_hijack_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORT", "1")  # a port it could not bind: the old behaviour never got ready
    monkeypatch.setenv("HOST", "0.0.0.0")
    server = LlamaCppServer.from_settings(LlmSettings(local_threads=1, local_ctx=256))
    server.ready_timeout_s = 90
    async with server:
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(f"{server.base_url}/models")).status_code == 200
        assert _listening(server.port) == {"0100007F"}  # 127.0.0.1 only
