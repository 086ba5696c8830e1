"""The local llama.cpp server starts with a scrubbed environment (PORT/HOST cannot hijack it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from voice_pipeline.llm import llamacpp
from voice_pipeline.llm.llamacpp import LlamaCppServer, child_environment

HOSTILE = {
    "PATH": "/usr/bin",
    "HOME": "/root",
    "PORT": "8000",
    "HOST": "0.0.0.0",
    "API_KEY": "sk-leak",
    "MODEL": "/tmp/other.gguf",
    "N_CTX": "99999",
    "VP_LLM__API_KEY_ENV": "X",
    "OPENAI_API_KEY": "sk-other",
}


def test_child_environment_keeps_only_the_allow_list() -> None:
    env = child_environment(HOSTILE)
    assert env == {"PATH": "/usr/bin", "HOME": "/root"}


def test_no_allowed_variable_is_a_llama_server_setting() -> None:
    """Each name the child may inherit must not be one the server reads as a setting."""
    settings = pytest.importorskip("llama_cpp.server.settings")
    names = {n.lower() for cls in (settings.ServerSettings, settings.ModelSettings) for n in cls.model_fields}
    assert {"host", "port"} <= names  # what made PORT/HOST dangerous in the first place
    assert not names & {key.lower() for key in llamacpp.CHILD_ENV_ALLOWED}


async def test_start_passes_the_scrubbed_environment_and_loopback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in HOSTILE.items():
        monkeypatch.setenv(key, value)
    seen: dict[str, Any] = {}

    async def fake_exec(*cmd: str, **kwargs: Any) -> Any:
        seen["cmd"], seen["env"] = cmd, kwargs.get("env")
        raise OSError("not starting a server in a unit test")

    pytest.importorskip("llama_cpp")
    monkeypatch.setattr(asyncio, "create_subprocess_exec", fake_exec)
    server = LlamaCppServer(tmp_path / "model.gguf", port=12345)
    with pytest.raises(OSError, match="unit test"):
        await server.start()
    assert seen["env"] is not None and "PORT" not in seen["env"] and "HOST" not in seen["env"]
    assert "API_KEY" not in seen["env"]
    cmd = list(seen["cmd"])
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "12345"
