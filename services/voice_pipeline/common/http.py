"""What every HTTP provider client shares (the LLM chat providers, the HTTP TTS engines): one
pooled httpx client opened by `start()` (or the first call) and released by `close()`, the
subclass's auth headers, timeouts, and error details that never carry the API key."""

from __future__ import annotations

import httpx


class HttpClient:
    def __init__(
        self,
        api_key: str,
        timeout: httpx.Timeout,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        self._api_key = api_key
        self._timeout = timeout
        self._transport = transport
        # httpx's own default pool (its DEFAULT_LIMITS is private), unless the subclass sizes one.
        self._limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._client: httpx.AsyncClient | None = None

    def _headers(self) -> dict[str, str]:
        """The auth headers of every request (the subclass knows its provider's scheme)."""
        raise NotImplementedError

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            headers=self._headers(), timeout=self._timeout, transport=self._transport, limits=self._limits
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _connected(self) -> httpx.AsyncClient:
        if self._client is None:
            await self.start()
        assert self._client is not None
        return self._client

    def _redact(self, detail: str) -> str:
        return detail.replace(self._api_key, "***") if self._api_key else detail
