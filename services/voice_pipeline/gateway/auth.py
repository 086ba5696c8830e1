"""Device authentication compatible with xiaozhi-esp32-server (HMAC-SHA256 tokens, allow-list).

token = base64url_nopad(HMAC_SHA256(key, f"{client_id}|{device_id}|{ts}")) + "." + str(ts)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_EXPIRY_S = 30 * 24 * 3600


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False, description="Require a device token (off by default, as in the reference server)."
    )
    key: str = Field("", description="HMAC key for device tokens (keep it in a Secret).")
    expire_seconds: int = Field(DEFAULT_EXPIRY_S, description="Token lifetime; <= 0 means 30 days.")
    allowed_devices: list[str] = Field(
        default_factory=list, description="Device ids (MACs) that skip the token check."
    )


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    client_id: str
    token: str
    protocol_version: int


@dataclass(frozen=True)
class Decision:
    ok: bool
    reason: str = ""


def _sign(key: str, client_id: str, device_id: str, ts: int) -> str:
    mac = hmac.new(key.encode(), f"{client_id}|{device_id}|{ts}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def make_token(key: str, client_id: str, device_id: str, now: float) -> str:
    ts = int(now)
    return f"{_sign(key, client_id, device_id, ts)}.{ts}"


def extract_identity(headers: Mapping[str, str], query: Mapping[str, str]) -> DeviceIdentity:
    """Headers first (lower-cased names), then the query-parameter fallback of the reference server."""
    h = {k.lower(): v for k, v in headers.items()}
    token = h.get("authorization") or query.get("authorization", "")
    if token.lower().startswith("bearer "):
        token = token[7:]
    try:
        version = int(h.get("protocol-version") or query.get("protocol-version") or 1)
    except ValueError:
        version = 1
    return DeviceIdentity(
        device_id=(h.get("device-id") or query.get("device-id", "")).strip().lower(),
        client_id=(h.get("client-id") or query.get("client-id", "")).strip(),
        token=token.strip(),
        protocol_version=version if version in (1, 2, 3) else 1,
    )


def authorize(identity: DeviceIdentity, settings: AuthSettings, now: float) -> Decision:
    if not settings.enabled:
        return Decision(True)
    allowed = {d.lower() for d in settings.allowed_devices}
    if identity.device_id and identity.device_id in allowed:
        return Decision(True)
    if not settings.key:
        return Decision(False, "authentication is enabled but no key is configured")
    if not identity.token:
        return Decision(False, "missing token")
    sig, _, ts_text = identity.token.rpartition(".")
    try:
        ts = int(ts_text)
    except ValueError:
        return Decision(False, "malformed token")
    expiry = settings.expire_seconds if settings.expire_seconds > 0 else DEFAULT_EXPIRY_S
    if now - ts > expiry:
        return Decision(False, "token expired")
    expected = _sign(settings.key, identity.client_id, identity.device_id, ts)
    if not hmac.compare_digest(sig, expected):
        return Decision(False, "bad token signature")
    return Decision(True)
