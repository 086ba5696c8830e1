"""The OTA endpoint devices POST to at boot: it hands out the WebSocket URL (and a token)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from voice_pipeline.gateway.auth import AuthSettings, make_token


class OtaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    firmware_version: str = Field(
        "0.0.0", description="Advertised firmware version (devices upgrade if newer)."
    )
    firmware_url: str = Field("", description="Firmware download URL (empty = no upgrade).")
    timezone_offset_minutes: int = Field(480, description="Added to the device clock (480 = UTC+8).")
    binary_protocol_version: int = Field(1, ge=1, le=3, description="websocket.version handed to devices.")


def build_ota_response(
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    settings: OtaSettings,
    auth_settings: AuthSettings,
    websocket_url: str,
    now: float,
) -> dict[str, Any]:
    h = {k.lower(): v for k, v in headers.items()}
    device_id = (h.get("device-id") or "").strip().lower()
    client_id = (h.get("client-id") or "").strip()
    if not device_id or not client_id:
        return {"success": False, "message": "request error."}  # the reference server's exact answer
    token = ""
    allowed = {d.lower() for d in auth_settings.allowed_devices}
    if auth_settings.enabled and auth_settings.key and device_id not in allowed:
        token = make_token(auth_settings.key, client_id, device_id, now)
    return {
        "server_time": {"timestamp": int(now * 1000), "timezone_offset": settings.timezone_offset_minutes},
        "firmware": {"version": settings.firmware_version, "url": settings.firmware_url},
        "websocket": {"url": websocket_url, "token": token, "version": settings.binary_protocol_version},
    }
