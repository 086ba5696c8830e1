"""What the HTTP TTS engines (Azure, OpenAI-compatible speech) share: a connection pool opened by
`start()` and released by `close()`, timeouts, and errors that never carry the API key."""

from __future__ import annotations

import httpx

from voice_pipeline.common.errors import ProviderUnavailableError


class HttpTtsEngine:
    name = "http"

    def __init__(
        self,
        api_key: str,
        connect_timeout_s: float,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self._api_key = api_key
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            headers=self._headers(), timeout=self._timeout, transport=self._transport
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

    def _error(self, detail: str) -> ProviderUnavailableError:
        return ProviderUnavailableError(
            self.name, detail.replace(self._api_key, "***") if self._api_key else detail
        )
