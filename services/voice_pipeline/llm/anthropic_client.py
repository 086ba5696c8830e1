"""A streaming client for Anthropic's Messages API (Claude).

Wire format (https://docs.anthropic.com/en/api/messages-streaming): POST {base}/messages with the
headers `x-api-key` and `anthropic-version`, body {model, max_tokens, system, messages, stream:
true}; the answer is a server-sent event stream of `message_start`, `content_block_start`,
`ping`, `content_block_delta` (text in `delta.text` when `delta.type` is `text_delta`),
`content_block_stop`, `message_delta`, `message_stop`, and `error` events (for instance
`overloaded_error` in the middle of a stream). Each event's data is JSON carrying its own `type`.

The system prompt is a top-level field, not a message, and the messages must alternate user /
assistant starting with a user turn: `to_anthropic` folds our history into that shape.

Errors before the first token become ProviderUnavailableError (the router fails over), after it
LlmStreamError. The key never appears in a message, a log line or a repr.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from voice_pipeline.common.stages import ChatMessage
from voice_pipeline.llm.openai_client import HttpChatProvider, iter_sse_data

log = logging.getLogger(__name__)
ANTHROPIC_VERSION = "2023-06-01"


def to_anthropic(messages: list[ChatMessage]) -> tuple[str, list[dict[str, str]]]:
    """(system prompt, alternating user/assistant turns starting with the user)."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    turns: list[dict[str, str]] = []
    for m in messages:
        if m.role == "system" or not m.content:
            continue
        if not turns and m.role == "assistant":
            continue  # the API rejects a conversation that opens with the assistant
        if turns and turns[-1]["role"] == m.role:
            turns[-1]["content"] += "\n" + m.content
        else:
            turns.append({"role": m.role, "content": m.content})
    return system, turns


class AnthropicProvider(HttpChatProvider):
    """One Anthropic Messages endpoint (`{base}/messages`, `x-api-key`)."""

    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def request_body(self, messages: list[ChatMessage]) -> dict[str, Any]:
        system, turns = to_anthropic(messages)
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": min(self.temperature, 1.0),  # the Messages API accepts 0..1
            "messages": turns,
            "stream": True,
        }
        if system:
            body["system"] = system
        return body

    async def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        client = await self._connected()
        started = False
        try:
            async with client.stream(
                "POST", f"{self.base_url}/messages", json=self.request_body(messages)
            ) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode("utf-8", "replace")[:300]
                    raise self._error(False, f"HTTP {response.status_code}: {detail}")
                async for payload in iter_sse_data(response.aiter_lines()):
                    try:
                        event = json.loads(payload)
                    except json.JSONDecodeError as exc:
                        raise self._error(started, f"malformed stream event: {payload[:80]!r}") from exc
                    if not isinstance(event, dict):
                        continue
                    kind = event.get("type")
                    if kind == "error":
                        error = event.get("error") or {}
                        detail = f"{error.get('type', 'error')}: {str(error.get('message', ''))[:200]}"
                        raise self._error(started, detail)
                    if kind == "message_stop":
                        return
                    if kind == "content_block_delta":
                        delta = event.get("delta") or {}
                        text = delta.get("text") if delta.get("type") == "text_delta" else None
                        if isinstance(text, str) and text:
                            started = True
                            yield text
                # The stream ended without message_stop: the reply was cut off.
                raise self._error(started, "stream ended before message_stop")
        except httpx.TimeoutException as exc:
            raise self._error(started, f"timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise self._error(started, f"{type(exc).__name__}: {exc}") from exc
