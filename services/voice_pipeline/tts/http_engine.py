"""What the HTTP TTS engines (Azure, OpenAI-compatible speech) share beyond `common.http`: their
errors are ProviderUnavailableError (the router fails over to the next engine)."""

from __future__ import annotations

import httpx

from voice_pipeline.common.errors import ProviderUnavailableError
from voice_pipeline.common.http import HttpClient


class HttpTtsEngine(HttpClient):
    name = "http"

    def __init__(
        self,
        api_key: str,
        connect_timeout_s: float,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        super().__init__(api_key, httpx.Timeout(timeout_s, connect=connect_timeout_s), transport)

    def _error(self, detail: str) -> ProviderUnavailableError:
        return ProviderUnavailableError(self.name, self._redact(detail))
