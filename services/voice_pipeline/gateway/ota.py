"""The OTA endpoint devices POST to at boot: it hands out the WebSocket URL (and a token)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from voice_pipeline.common.stages import spoken_language
from voice_pipeline.gateway.activation import Activations
from voice_pipeline.gateway.auth import AuthSettings, device_allowed, make_token


class OtaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    firmware_version: str = Field(
        "0.0.0", description="Advertised firmware version (devices upgrade if newer)."
    )
    firmware_url: str = Field("", description="Firmware download URL (empty = no upgrade).")
    timezone_offset_minutes: int = Field(480, description="Added to the device clock (480 = UTC+8).")
    binary_protocol_version: int = Field(1, ge=1, le=3, description="websocket.version handed to devices.")
    max_body_bytes: int = Field(
        65536, ge=1024, description="Largest OTA request body (a device sends ~1 kB); larger gets 413."
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="An OTA request body not received within this gets 408."
    )


def build_ota_response(
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    settings: OtaSettings,
    auth_settings: AuthSettings,
    websocket_url: str,
    now: float,
    activations: Activations | None = None,
) -> dict[str, Any]:
    """With auth on, a token goes only to an allowed device that has activated (proved its
    pre-shared secret; a provisioned device that has not is handed the activation challenge) or,
    with `open_enrollment`, to any allowed device: never to whoever merely names a Device-Id."""
    h = {k.lower(): v for k, v in headers.items()}
    device_id = (h.get("device-id") or "").strip().lower()
    client_id = (h.get("client-id") or "").strip()
    if not device_id or not client_id:
        return {"success": False, "message": "request error."}  # the reference server's exact answer
    token = ""
    activation: dict[str, Any] | None = None
    if auth_settings.enabled and auth_settings.key and device_allowed(device_id, auth_settings):
        serial = (h.get("serial-number") or "").strip()
        if activations is not None and activations.activated(device_id, client_id):
            token = make_token(auth_settings.key, client_id, device_id, now)
        elif activations is not None and activations.secret_for(serial, device_id) is not None:
            activation = activations.offer(device_id, client_id, now)
        elif auth_settings.open_enrollment:
            token = make_token(auth_settings.key, client_id, device_id, now)
    reply: dict[str, Any] = {
        "server_time": {"timestamp": int(now * 1000), "timezone_offset": settings.timezone_offset_minutes},
        "firmware": {"version": settings.firmware_version, "url": settings.firmware_url},
        "websocket": {
            "url": with_device_language(websocket_url, h, body),
            "token": token,
            "version": settings.binary_protocol_version,
        },
    }
    if activation is not None:
        reply["activation"] = activation
    return reply


def with_device_language(url: str, headers: Mapping[str, str], body: Mapping[str, Any]) -> str:
    """The WebSocket URL with `language=zh|en` when the firmware told us its language (the body's
    `language`, else Accept-Language): the session then knows it without any state on the server,
    whichever gateway replica the device connects to. Unchanged for other languages."""
    reported = body.get("language")
    language = spoken_language(reported if isinstance(reported, str) else headers.get("accept-language", ""))
    if not language:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "language"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("language", language)])))
