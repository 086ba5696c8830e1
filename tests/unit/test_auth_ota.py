"""Device tokens (compatible with xiaozhi-esp32-server) and the OTA answer."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from voice_pipeline.common.errors import ConfigError
from voice_pipeline.gateway.activation import Activations, load_device_secrets
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


def test_the_allow_list_is_checked_against_the_token_not_a_bare_header() -> None:
    settings = AuthSettings(enabled=True, key=KEY, allowed_devices=["AA:BB:CC:DD:EE:FF"])
    assert authorize(_identity(""), settings, NOW).reason == "missing token"  # used to let it in
    listed = make_token(KEY, "c1", "aa:bb:cc:dd:ee:ff", NOW)
    assert authorize(_identity(listed), settings, NOW).ok
    other = make_token(KEY, "c1", "11:22:33:44:55:66", NOW)
    decision = authorize(_identity(other, device="11:22:33:44:55:66"), settings, NOW)
    assert decision.reason == "device not on the allow-list"


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
    enrolling = AuthSettings(enabled=True, key=KEY, open_enrollment=True)
    secured = build_ota_response(headers, {}, OtaSettings(), enrolling, "ws://x/", NOW)
    token = secured["websocket"]["token"]
    assert authorize(_identity(token, client="c1"), AuthSettings(enabled=True, key=KEY), NOW).ok


def test_ota_without_ids_is_the_reference_error() -> None:
    assert build_ota_response({}, {}, OtaSettings(), AuthSettings(), "ws://x/", NOW) == {
        "success": False,
        "message": "request error.",
    }


def test_non_ascii_token_is_refused_not_a_type_error() -> None:
    settings = AuthSettings(enabled=True, key=KEY)
    for token in ("签名.1750000000", "sig\u00e9.1750000000", "é" * 43 + ".1750000000"):
        decision = authorize(_identity(token), settings, NOW)
        assert not decision.ok and decision.reason == "bad token signature"


def test_token_from_the_future_beyond_the_skew_is_refused() -> None:
    settings = AuthSettings(enabled=True, key=KEY, clock_skew_s=300)
    assert authorize(_identity(make_token(KEY, "c1", "aa:bb:cc:dd:ee:ff", NOW + 200)), settings, NOW).ok
    far = make_token(KEY, "c1", "aa:bb:cc:dd:ee:ff", NOW + 10 * 365 * 86400)
    assert authorize(_identity(far), settings, NOW).reason == "token from the future"


DEVICE = "aa:bb:cc:dd:ee:ff"
EFUSE_KEY = bytes(range(32))  # the 32-byte HMAC key a device keeps in eFuse


def _firmware_activation(challenge: str, key: bytes = EFUSE_KEY) -> dict[str, str]:
    """What the firmware POSTs to <ota_url>activate (HMAC-SHA256 of the challenge, hex)."""
    digest = hmac.new(key, challenge.encode(), hashlib.sha256).hexdigest()
    return {"algorithm": "hmac-sha256", "serial_number": "SN-1", "challenge": challenge, "hmac": digest}


def test_with_auth_on_ota_no_longer_hands_a_token_to_whoever_asks() -> None:
    settings = AuthSettings(enabled=True, key=KEY)
    for ids in (
        {"Device-Id": DEVICE, "Client-Id": "c1"},
        {"Device-Id": "11:22:33:44:55:66", "Client-Id": "x"},
    ):
        answer = build_ota_response(
            ids, {}, OtaSettings(), settings, "ws://x/", NOW, Activations(settings, {})
        )
        assert answer["websocket"]["token"] == "" and "activation" not in answer


def test_activation_with_the_pre_shared_secret_then_a_bound_token() -> None:
    settings = AuthSettings(enabled=True, key=KEY)
    activations = Activations(settings, {"SN-1": EFUSE_KEY})
    headers = {"Device-Id": DEVICE, "Client-Id": "c1", "Serial-Number": "SN-1", "Activation-Version": "2"}
    first = build_ota_response(headers, {}, OtaSettings(), settings, "ws://x/", NOW, activations)
    assert first["websocket"]["token"] == ""
    offer = first["activation"]
    assert set(offer) == {"message", "code", "challenge", "timeout_ms"} and len(offer["code"]) == 6
    # A stranger cannot answer it: wrong key, someone else's challenge, an expired one.
    wrong = _firmware_activation(offer["challenge"], key=b"guess" * 7)
    assert activations.verify(DEVICE, "c1", "SN-1", wrong, NOW)[0] == 403
    assert activations.verify(DEVICE, "c2", "SN-1", _firmware_activation(offer["challenge"]), NOW)[0] == 403
    late = NOW + settings.activation_timeout_s + 1
    assert activations.verify(DEVICE, "c1", "SN-1", _firmware_activation(offer["challenge"]), late)[0] == 403
    assert activations.verify(DEVICE, "c1", "SN-1", {"challenge": "签.1.x", "hmac": "é"}, NOW)[0] == 403
    assert activations.verify(DEVICE, "c1", "SN-1", [1], NOW)[0] == 400
    assert activations.verify(DEVICE, "c1", "SN-1", _firmware_activation(offer["challenge"]), NOW) == (
        200,
        "activated",
    )
    second = build_ota_response(headers, {}, OtaSettings(), settings, "ws://x/", NOW + 5, activations)
    token = second["websocket"]["token"]
    assert "activation" not in second
    assert authorize(_identity(token, client="c1"), settings, NOW + 5).ok
    assert authorize(_identity(token, client="other"), settings, NOW + 5).reason == "bad token signature"
    # Another client id under the same device id is not activated: it gets the challenge again.
    again = build_ota_response(
        {**headers, "Client-Id": "c9"}, {}, OtaSettings(), settings, "ws://x/", NOW, activations
    )
    assert again["websocket"]["token"] == "" and "activation" in again


def test_device_secrets_file(tmp_path: Path) -> None:
    good = tmp_path / "secrets.yaml"
    good.write_text(f"SN-1: {EFUSE_KEY.hex()}\n'AA:BB:CC:DD:EE:01': a text secret\n", encoding="utf-8")
    secrets = load_device_secrets(str(good))
    assert secrets["SN-1"] == EFUSE_KEY and secrets["aa:bb:cc:dd:ee:01"] == b"a text secret"
    bad = tmp_path / "bad.yaml"
    bad.write_text("- sk-not-a-mapping\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must map") as info:
        load_device_secrets(str(bad))
    assert "sk-not" not in str(info.value)
