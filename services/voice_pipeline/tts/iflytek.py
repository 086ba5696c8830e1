"""iFlytek (讯飞) online TTS over its WebSocket API (wss://tts-api.xfyun.cn/v2/tts).

Authentication is a signed URL: the client signs "host: H\\ndate: D\\nGET /v2/tts HTTP/1.1" with
HMAC-SHA256 under the API secret and passes `authorization` (base64 of api_key, algorithm,
headers and signature), `date` and `host` as query parameters; the server recomputes the
signature and refuses a mismatch or a stale date. One JSON frame asks for the sentence
(`common.app_id`, `business` voice and format, `data.text` base64, `data.status` 2); the server
answers with JSON frames carrying base64 audio in `data.audio` until `data.status` is 2 (last).
A `code` other than 0 is an error. We ask for raw 16 kHz s16le (`aue: raw`). The API serves one
text per connection, so each sentence opens its own (signed) connection.

The API secret never leaves this process; the signed URL (which names the API key) is kept out of
messages and logs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np

from voice_pipeline.common.errors import ConfigError, ProviderUnavailableError
from voice_pipeline.tts.engine import PcmChunk

IFLYTEK_URL = "wss://tts-api.xfyun.cn/v2/tts"
IFLYTEK_RATE = 16000
log = logging.getLogger(__name__)
# websockets logs the request line (the signed URL) at DEBUG: keep its logger above that.
_WS_LOG = logging.getLogger(__name__ + ".websocket")
_WS_LOG.setLevel(logging.INFO)


def signature_origin(host: str, date: str, path: str) -> str:
    return f"host: {host}\ndate: {date}\nGET {path} HTTP/1.1"


def sign(api_secret: str, host: str, date: str, path: str) -> str:
    digest = hmac.new(
        api_secret.encode(), signature_origin(host, date, path).encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def signed_url(url: str, api_key: str, api_secret: str, date: str | None = None) -> str:
    """The request URL with iFlytek's `authorization`, `date` and `host` query parameters."""
    parts = urlsplit(url)
    host, path = parts.netloc, parts.path or "/"
    date = date or formatdate(usegmt=True)
    signature = sign(api_secret, host, date, path)
    authorization = base64.b64encode(
        f'api_key="{api_key}", algorithm="hmac-sha256", headers="host date request-line", '
        f'signature="{signature}"'.encode()
    ).decode()
    return f"{url}?{urlencode({'authorization': authorization, 'date': date, 'host': host})}"


def request_frame(app_id: str, voice: str, text: str) -> dict[str, Any]:
    return {
        "common": {"app_id": app_id},
        "business": {"aue": "raw", "auf": f"audio/L16;rate={IFLYTEK_RATE}", "vcn": voice, "tte": "UTF8"},
        "data": {"status": 2, "text": base64.b64encode(text.encode("utf-8")).decode()},
    }


class IflytekEngine:
    name = "iflytek"

    def __init__(
        self,
        app_id: str,
        api_key: str,
        api_secret: str,
        voices: dict[str, str],
        url: str = IFLYTEK_URL,
        connect_timeout_s: float = 2.0,
        timeout_s: float = 10.0,
    ) -> None:
        if not (app_id and api_key and api_secret):
            raise ConfigError(
                "iFlytek TTS needs tts.iflytek_app_id, an API key and an API secret "
                "(tts.iflytek_api_key_file/_env, tts.iflytek_api_secret_file/_env)"
            )
        self.app_id = app_id
        self.url = url
        self.voices = voices
        self.languages = frozenset(voices)
        self._api_key = api_key
        self._api_secret = api_secret
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s

    def __repr__(self) -> str:  # never show the credentials
        return f"IflytekEngine(url={self.url!r}, app_id={self.app_id!r})"

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _error(self, detail: str) -> ProviderUnavailableError:
        for secret in (self._api_secret, self._api_key):
            detail = detail.replace(secret, "***")
        if "authorization=" in detail:  # a URL slipped into an exception text
            detail = detail.split("?", 1)[0] + "?<signed query hidden>"
        return ProviderUnavailableError(self.name, detail)

    async def synthesize(self, text: str, language: str) -> AsyncIterator[PcmChunk]:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

        voice = self.voices.get(language) or next(iter(self.voices.values()), "xiaoyan")
        url = signed_url(self.url, self._api_key, self._api_secret)
        produced = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        try:
            async with connect(
                url, open_timeout=self.connect_timeout_s, max_size=2**22, logger=_WS_LOG, compression=None
            ) as ws:
                await ws.send(json.dumps(request_frame(self.app_id, voice, text)))
                while True:
                    # A deadline per receive, not around the yields: the consumer's time is its own.
                    raw = await asyncio.wait_for(ws.recv(), max(0.001, deadline - loop.time()))
                    frame = json.loads(raw)
                    if frame.get("code", 0) != 0:
                        raise self._error(f"error {frame.get('code')}: {str(frame.get('message', ''))[:200]}")
                    data = frame.get("data") or {}
                    audio = base64.b64decode(data.get("audio") or "")
                    if len(audio) >= 2:
                        produced = True
                        pcm = np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2").astype(np.int16)
                        yield PcmChunk(pcm, IFLYTEK_RATE)
                    if data.get("status") == 2:
                        break
        except ProviderUnavailableError:
            raise
        except TimeoutError:
            raise self._error(f"no complete answer within {self.timeout_s:g} s") from None
        except ConnectionClosed as exc:
            raise self._error(f"connection closed before the last frame ({exc})") from None
        except InvalidStatus as exc:
            raise self._error(f"handshake refused: HTTP {exc.response.status_code}") from None
        except (OSError, WebSocketException, json.JSONDecodeError, ValueError) as exc:
            raise self._error(f"{type(exc).__name__}: {exc}") from None
        if not produced:
            raise self._error("no audio received")
