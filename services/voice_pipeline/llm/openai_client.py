"""A streaming client for OpenAI-compatible chat completions (OpenAI, Qwen/DashScope compatible
mode, DeepSeek, Baichuan, llama.cpp, vLLM...).

Errors before the first token become ProviderUnavailableError (the router may try another
provider); errors after it become LlmStreamError (the reply is already being spoken). The API key
never appears in a message, a log line or a repr.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from voice_pipeline.common.errors import ProviderUnavailableError, VoicePipelineError
from voice_pipeline.common.http import HttpClient
from voice_pipeline.common.secrets import read_api_key
from voice_pipeline.common.stages import ChatMessage

log = logging.getLogger(__name__)
__all__ = [
    "HttpChatProvider",
    "LlmStreamError",
    "OpenAICompatibleProvider",
    "delta_text",
    "iter_sse_data",
    "read_api_key",
]


class LlmStreamError(VoicePipelineError):
    """The provider failed after it started answering."""


async def iter_sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The `data:` payloads of a server-sent event stream (comments and other fields skipped)."""
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue  # keep-alive comment
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def delta_text(event: dict[str, Any]) -> str:
    choices = event.get("choices") or []
    if not choices:
        return ""
    delta = choices[0].get("delta") or {}
    content = delta.get("content")
    return content if isinstance(content, str) else ""


def finish_reason(event: dict[str, Any]) -> str | None:
    choices = event.get("choices") or []
    reason = choices[0].get("finish_reason") if choices and isinstance(choices[0], dict) else None
    return reason if isinstance(reason, str) else None


class HttpChatProvider(HttpClient):
    """What every streaming HTTP chat provider shares beyond `common.http`: a repr without the key
    and the error mapping (before the first token: ProviderUnavailableError, so the router fails
    over; after it: LlmStreamError). Subclasses supply `_headers()` and `stream_chat`."""

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        api_key: str = "",
        max_tokens: int = 96,
        temperature: float = 0.5,
        connect_timeout_s: float = 3.0,
        first_token_timeout_s: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            api_key,
            httpx.Timeout(first_token_timeout_s, connect=connect_timeout_s),
            transport,
            httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"

    def _error(self, started: bool, detail: str) -> VoicePipelineError:
        detail = self._redact(detail)
        if started:
            return LlmStreamError(f"provider '{self.name}' failed mid-reply: {detail}")
        return ProviderUnavailableError(self.name, detail)


class OpenAICompatibleProvider(HttpChatProvider):
    """One OpenAI-compatible endpoint (`{base}/chat/completions`, Bearer key)."""

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        client = await self._connected()
        body = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        started = finished = False
        try:
            async with client.stream("POST", f"{self.base_url}/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode("utf-8", "replace")[:300]
                    raise self._error(False, f"HTTP {response.status_code}: {detail}")
                async for payload in iter_sse_data(response.aiter_lines()):
                    if payload.strip() == "[DONE]":
                        break
                    try:
                        event = json.loads(payload)
                    except json.JSONDecodeError as exc:
                        raise self._error(started, f"malformed stream event: {payload[:80]!r}") from exc
                    if isinstance(event, dict) and event.get("error"):
                        raise self._error(started, f"provider error: {str(event['error'])[:200]}")
                    text = delta_text(event) if isinstance(event, dict) else ""
                    finished = finished or (isinstance(event, dict) and finish_reason(event) is not None)
                    if text:
                        started = True
                        yield text
                if not finished:
                    # A complete answer names why it stopped ("stop", "length"). Without it the
                    # stream was cut short: llama.cpp's server, for one, ends a running stream with
                    # a bare [DONE] when another request arrives (interrupt_requests).
                    raise self._error(started, "stream ended without a finish_reason (cut short)")
        except httpx.TimeoutException as exc:
            raise self._error(started, f"timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise self._error(started, f"{type(exc).__name__}: {exc}") from exc
