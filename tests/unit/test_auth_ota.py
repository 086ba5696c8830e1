"""Device tokens (compatible with xiaozhi-esp32-server) and the OTA answer."""

from __future__ import annotations

from voice_pipeline.gateway.auth import AuthSettings, DeviceIdentity, authorize, extract_identity, make_token
from voice_pipeline.gateway.ota import OtaSettings, build_ota_response

KEY = "k"
NOW = 1_750_000_000.0


def _identity(token: str, device: str = "aa:bb:cc:dd:ee:ff", client: str = "c1") -> DeviceIdentity:
    return DeviceIdentity(device, client, token, 1)


def test_auth_off_lets_everyone_in() -> None:
    assert authorize(_identity(""), AuthSettings(), NOW).ok


def test_valid_token_passes_and_tampering_fails() -> None:
    settings = AuthSettings(enabled=True, key=KEY)
    token = make_token(KEY, "c1", "aa:bb:cc:dd:ee:ff", NOW)
    assert authorize(_identity(token), settings, NOW + 10).ok
    assert authorize(_identity(token, client="other"), settings, NOW).reason == "bad token signature"
    assert (
        authorize(_identity(token), AuthSettings(enabled=True, key="other"), NOW).reason
        == "bad token signature"
    )
    assert authorize(_identity("garbage"), settings, NOW).reason == "malformed token"
    assert authorize(_identity(""), settings, NOW).reason == "missing token"


def test_expiry_defaults_to_30_days() -> None:
    token = make_token(KEY, "c1", "aa:bb:cc:dd:ee:ff", NOW)
    settings = AuthSettings(enabled=True, key=KEY, expire_seconds=0)
    assert authorize(_identity(token), settings, NOW + 29 * 86400).ok
    assert authorize(_identity(token), settings, NOW + 31 * 86400).reason == "token expired"


def test_allow_list_skips_the_token_check() -> None:
    settings = AuthSettings(enabled=True, key=KEY, allowed_devices=["AA:BB:CC:DD:EE:FF"])
    assert authorize(_identity(""), settings, NOW).ok


def test_identity_from_headers_then_query() -> None:
    ident = extract_identity(
        {
            "Authorization": "Bearer tok.1",
            "Device-Id": "AA:BB:CC:DD:EE:FF",
            "Client-Id": "c",
            "Protocol-Version": "3",
        },
        {},
    )
    assert ident == DeviceIdentity("aa:bb:cc:dd:ee:ff", "c", "tok.1", 3)
    from_query = extract_identity(
        {}, {"device-id": "11:22:33:44:55:66", "client-id": "q", "authorization": "t.2"}
    )
    assert from_query.device_id == "11:22:33:44:55:66" and from_query.token == "t.2"
    assert extract_identity({"Protocol-Version": "9"}, {}).protocol_version == 1


def test_ota_answer_and_token() -> None:
    headers = {"Device-Id": "aa:bb:cc:dd:ee:ff", "Client-Id": "c1"}
    plain = build_ota_response(headers, {}, OtaSettings(), AuthSettings(), "ws://h:8000/xiaozhi/v1/", NOW)
    assert plain["websocket"] == {"url": "ws://h:8000/xiaozhi/v1/", "token": "", "version": 1}
    assert plain["server_time"] == {"timestamp": int(NOW * 1000), "timezone_offset": 480}
    secured = build_ota_response(
        headers, {}, OtaSettings(), AuthSettings(enabled=True, key=KEY), "ws://x/", NOW
    )
    token = secured["websocket"]["token"]
    assert authorize(_identity(token, client="c1"), AuthSettings(enabled=True, key=KEY), NOW).ok


def test_ota_without_ids_is_the_reference_error() -> None:
    assert build_ota_response({}, {}, OtaSettings(), AuthSettings(), "ws://x/", NOW) == {
        "success": False,
        "message": "request error.",
    }
