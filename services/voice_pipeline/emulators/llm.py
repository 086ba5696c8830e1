"""An OpenAI-compatible chat completions server with a fixed latency profile.

`POST /v1/chat/completions` with `stream: true` answers in server-sent events exactly as OpenAI
does (`chat.completion.chunk` objects, then `data: [DONE]`): nothing for `ttft_ms`, then one token
every 1/`tokens_per_s` seconds on an absolute schedule (a slow event loop never stretches the
profile silently). The reply is a short canned answer in the language of the last user message
(Chinese if it holds CJK characters), about `reply_chars` long, its first sentence short as a real
assistant's often is. `stream: false` returns one `chat.completion`. Bad requests get OpenAI's
error shape with status 400.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from voice_pipeline.emulators.profiles import LlmProfile

REPLIES = {
    "en": [
        "Good question! It should be sunny and mild today, with a light breeze in the afternoon.",
        "Happy to help. Here is a short one: why did the robot cross the road? It was programmed to.",
        "Of course. I am a small voice assistant, and I can answer questions, tell jokes and chat.",
        "Sure thing! Take a deep breath, drink some water, and try a short walk outside today.",
    ],
    "zh": [
        "好的！今天天气晴朗，气温适宜，下午会有一点微风，适合出门散步。",
        "没问题。从前有一只小狐狸，它每天都去河边看星星，后来交了很多朋友。",
        "你好！我是一个小小的语音助手，可以回答问题、讲故事，也可以陪你聊天。",
        "当然可以。记得多喝水，早点休息，明天又是美好的一天。",
    ],
}
_CJK = re.compile(r"[\u3400-\u9fff]")
_TOKEN = re.compile(
    r"\s*[A-Za-z'’]+[^\sA-Za-z'’]*|\s*[^\s\u3400-\u9fff]+|[\u3400-\u9fff]{1,2}[^\u3400-\u9fff\w]*"
)


def reply_language(messages: list[dict[str, Any]]) -> str:
    """zh when the last user message holds CJK text, else en (what the gateway's ASR heard)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return "zh" if _CJK.search(str(message.get("content", ""))) else "en"
    return "en"


def reply_tokens(messages: list[dict[str, Any]], max_tokens: int, repeat: int = 1) -> list[str]:
    """The canned reply for these messages as tokens (~1 word or 1-2 CJK characters each),
    `repeat` times over."""
    language = reply_language(messages)
    last = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
    pick = int(hashlib.sha1(last.encode()).hexdigest(), 16) % len(REPLIES[language])
    text = " ".join([REPLIES[language][pick]] * max(1, repeat))
    return _TOKEN.findall(text)[: max(1, max_tokens)]


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "code": None}}, status_code=status
    )


def _chunk(rid: str, model: str, created: int, delta: dict[str, str], finish: str | None) -> bytes:
    body = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


def create_llm_app(profile: LlmProfile) -> Starlette:
    async def completions(request: Request) -> Response:
        received = time.monotonic()
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error("request body is not valid JSON")
        if not isinstance(body, dict):
            return _error("request body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return _error("'messages' must be a non-empty list of message objects")
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 4096
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _error("'max_tokens' must be a positive integer")
        model = str(body.get("model") or "emulator")
        tokens = reply_tokens(messages, max_tokens, profile.reply_repeat)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        first_at = received + profile.ttft_ms / 1000
        interval = 1 / profile.tokens_per_s

        if not body.get("stream"):
            await _sleep_until(first_at + (len(tokens) - 1) * interval)
            text = "".join(tokens)
            return JSONResponse(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 0, "completion_tokens": len(tokens)},
                }
            )

        async def events() -> AsyncIterator[bytes]:
            yield _chunk(rid, model, created, {"role": "assistant", "content": ""}, None)
            for i, token in enumerate(tokens):
                await _sleep_until(first_at + i * interval)
                yield _chunk(rid, model, created, {"content": token}, None)
            yield _chunk(rid, model, created, {}, "stop" if len(tokens) < max_tokens else "length")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def models(_: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": "emulator", "object": "model", "owned_by": "voice-pipeline"}]}
        )

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "kind": "llm", "profile": profile.as_json()})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models),
            Route("/healthz", health),
        ]
    )


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
