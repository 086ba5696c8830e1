"""The OpenAI-compatible streaming client against an in-memory transport (no network)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from voice_pipeline.common.errors import ConfigError, ProviderUnavailableError
from voice_pipeline.common.stages import ChatMessage
from voice_pipeline.llm.openai_client import (
    LlmStreamError,
    OpenAICompatibleProvider,
    iter_sse_data,
    read_api_key,
)

SECRET = "sk-very-secret"


def _sse(*events: object, done: bool = True) -> bytes:
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
    return (": keep-alive\n\n" + body + ("data: [DONE]\n\n" if done else "")).encode()


def _delta(text: str, finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"delta": {"content": text}, "finish_reason": finish}]}


def _provider(handler: httpx.MockTransport) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("test", "http://llm.test/v1", "m", api_key=SECRET, transport=handler)


async def _collect(provider: OpenAICompatibleProvider) -> list[str]:
    await provider.start()
    try:
        return [d async for d in provider.stream_chat([ChatMessage("user", "hi")])]
    finally:
        await provider.close()


async def test_streams_deltas_and_sends_the_key() -> None:
    seen: dict[str, object] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        seen["auth"] = request.headers["authorization"]
        seen["body"] = json.loads(request.content)
        return httpx.Response(200, content=_sse(_delta("Hel"), _delta("lo.", "stop"), {"choices": []}))

    assert await _collect(_provider(httpx.MockTransport(handle))) == ["Hel", "lo."]
    assert seen["auth"] == f"Bearer {SECRET}"
    assert seen["body"]["stream"] is True  # type: ignore[index]


async def test_http_error_is_provider_unavailable_without_the_key() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text=f"boom for key {SECRET}")

    with pytest.raises(ProviderUnavailableError) as info:
        await _collect(_provider(httpx.MockTransport(handle)))
    assert "HTTP 500" in str(info.value) and SECRET not in str(info.value)
    assert SECRET not in repr(_provider(httpx.MockTransport(handle)))


async def test_connection_error_before_first_token_is_provider_unavailable() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(ProviderUnavailableError, match="ConnectError"):
        await _collect(_provider(httpx.MockTransport(handle)))


async def test_malformed_event_after_first_token_is_a_stream_error() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=_sse(_delta("Hi"))[: -len(b"data: [DONE]\n\n")] + b"data: {broken\n\n"
        )

    with pytest.raises(LlmStreamError, match="malformed"):
        await _collect(_provider(httpx.MockTransport(handle)))


async def test_sse_parser_handles_split_and_multiline_events() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in ["data: a", "data: b", "", ": comment", "event: x", "data: c", ""]:
            yield line

    assert [d async for d in iter_sse_data(lines())] == ["a\nb", "c"]


def test_api_key_sources(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    key_file = tmp_path / "key"
    key_file.write_text(" from-file \n")
    assert read_api_key(str(key_file)) == "from-file"
    monkeypatch.setenv("MY_KEY", "from-env")
    assert read_api_key(key_env="MY_KEY") == "from-env"
    with pytest.raises(ConfigError, match="MISSING_KEY"):
        read_api_key(key_env="MISSING_KEY")
    with pytest.raises(ConfigError, match="cannot read"):
        read_api_key(str(tmp_path / "nope"))


async def test_stream_cut_short_without_finish_reason() -> None:
    """llama.cpp's server ends an interrupted stream with a bare [DONE]: not a complete reply."""

    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_sse({"choices": [{"delta": {"role": "assistant"}}]}))

    def truncated(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_sse(_delta("Hel")))

    with pytest.raises(ProviderUnavailableError, match="without a finish_reason"):
        await _collect(_provider(httpx.MockTransport(empty)))
    with pytest.raises(LlmStreamError, match="without a finish_reason"):
        await _collect(_provider(httpx.MockTransport(truncated)))


async def test_finish_reason_length_is_complete() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_sse(_delta("Hi"), _delta("", "length"), done=False))

    assert await _collect(_provider(httpx.MockTransport(handle))) == ["Hi"]
