"""Device authentication compatible with xiaozhi-esp32-server (HMAC-SHA256 tokens).

token = base64url_nopad(HMAC_SHA256(key, f"{client_id}|{device_id}|{ts}")) + "." + str(ts)

A token binds a device id and a client id (both signed), is valid for `expire_seconds` and is
refused when dated beyond `clock_skew_s` in the future. The allow-list is checked against the
device id the token proved, never against a header alone. Who gets a token at all is decided by
the OTA endpoint (`ota.py`, `activation.py`): with auth on, only a device that proved its
pre-shared secret in the activation exchange, unless `open_enrollment` is set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from voice_pipeline.common.stages import spoken_language

DEFAULT_EXPIRY_S = 30 * 24 * 3600


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False, description="Require a device token (off by default, as in the reference server)."
    )
    key: str = Field("", description="HMAC key for device tokens (keep it in a Secret).")
    expire_seconds: int = Field(DEFAULT_EXPIRY_S, description="Token lifetime; <= 0 means 30 days.")
    clock_skew_s: int = Field(
        300, ge=0, description="Tokens dated further than this in the future are refused (clock skew)."
    )
    allowed_devices: list[str] = Field(
        default_factory=list,
        description="With auth on, only these device ids (MACs) get tokens and sessions (empty = any).",
    )
    device_secrets_file: str = Field(
        "",
        description=(
            "YAML {serial number or device id: secret} (hex of the eFuse HMAC key, or text; a mounted "
            "Secret). A listed device gets its token after the OTA activation exchange proves the secret."
        ),
    )
    open_enrollment: bool = Field(
        False,
        description=(
            "With auth on, OTA hands a token to any device that asks (the reference server's way; "
            "a trusted network only). Off: only activated devices get one."
        ),
    )
    activation_timeout_s: int = Field(
        300, ge=10, description="Lifetime of an activation challenge handed out by the OTA endpoint."
    )


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    client_id: str
    token: str
    protocol_version: int
    # The device's own language (zh, en or ''): a preference, not a credential. Our OTA answer puts
    # the language the firmware reported into the WebSocket URL (`?language=zh`); a browser sends
    # Accept-Language. ASR decodes in it when it cannot confidently tell the language.
    language: str = ""


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
        language=spoken_language(query.get("language") or h.get("accept-language", "")),
    )


def device_allowed(device_id: str, settings: AuthSettings) -> bool:
    return not settings.allowed_devices or device_id in {d.lower() for d in settings.allowed_devices}


def authorize(identity: DeviceIdentity, settings: AuthSettings, now: float) -> Decision:
    if not settings.enabled:
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
    if ts - now > settings.clock_skew_s:
        # Otherwise a token minted (or leaked) with a far-future timestamp would never expire.
        return Decision(False, "token from the future")
    expected = _sign(settings.key, identity.client_id, identity.device_id, ts)
    # Bytes, not str: compare_digest raises TypeError on a str with non-ASCII characters, and the
    # token is whatever the client sent.
    if not hmac.compare_digest(sig.encode("utf-8", "surrogatepass"), expected.encode()):
        return Decision(False, "bad token signature")
    if not device_allowed(identity.device_id, settings):  # the id the token proved, not a header
        return Decision(False, "device not on the allow-list")
    return Decision(True)
