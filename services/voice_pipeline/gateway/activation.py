"""OTA activation: a device proves its pre-shared secret before the OTA endpoint gives it a token.

The exchange is the firmware's own (docs/xiaozhi-protocol.md §1, `activation`): the OTA answer
carries `{"message", "code", "challenge", "timeout_ms"}`; the device shows the code and POSTs
`{"algorithm": "hmac-sha256", "serial_number", "challenge", "hmac"}` to `<ota_url>activate`, where
`hmac` is the hex HMAC-SHA256 of the challenge under the key in its eFuse. 200 = activated, 202 =
pending (the device retries in 3 s), anything else = failed (it retries later). Firmware then asks
OTA again, and this time gets its token.

The operator provisions each device's secret (`auth.device_secrets_file`: serial number or device
id -> the hex eFuse key, or any text). Challenges are stateless (signed with `auth.key`, bound to
device id, client id and an expiry), so a challenge from one gateway replica can be answered at
another; *activated* pairs are remembered in this process (bounded), which is what the next OTA
request checks. The worker processes of one all-in-one server also share them through a directory
(`shared_dir`: a file per pair, named by a keyed hash; only a valid HMAC under a provisioned secret
creates one). Several gateway *replicas* need OTA affinity, or the device simply activates again at
the replica it reaches (its secret has not changed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from pathlib import Path
from typing import Any

import yaml

from voice_pipeline.common.errors import ConfigError
from voice_pipeline.gateway.auth import AuthSettings

MAX_ACTIVATED = 100_000  # remembered (device, client) pairs; the oldest is forgotten first


def load_device_secrets(path: str) -> dict[str, bytes]:
    """{identifier: secret bytes} from a YAML mapping; hex strings are keys in hex (eFuse keys)."""
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the device secrets file {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise ConfigError(f"the device secrets file {path} is not valid YAML") from None  # no snippet
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigError(f"the device secrets file {path} must map a serial number or device id to a secret")
    out: dict[str, bytes] = {}
    for name, value in data.items():
        value = value.strip()
        if not value:
            raise ConfigError(f"the device secrets file {path} has an empty secret for {name}")
        try:
            secret = bytes.fromhex(value) if len(value) % 2 == 0 and len(value) >= 32 else value.encode()
        except ValueError:
            secret = value.encode()
        out[name.strip()] = secret
        out[name.strip().lower()] = secret
    return out


class Activations:
    def __init__(
        self, settings: AuthSettings, device_secrets: dict[str, bytes], shared_dir: Path | None = None
    ) -> None:
        self.settings = settings
        self._secrets = device_secrets
        self._activated: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._shared_dir = shared_dir

    def secret_for(self, serial_number: str, device_id: str) -> bytes | None:
        serial = serial_number.strip()
        return self._secrets.get(serial) if serial else self._secrets.get(device_id.lower())

    def activated(self, device_id: str, client_id: str) -> bool:
        if (device_id, client_id) in self._activated:
            return True
        return self._shared_dir is not None and self._shared_mark(device_id, client_id).exists()

    def _shared_mark(self, device_id: str, client_id: str) -> Path:
        assert self._shared_dir is not None
        text = f"activated|{device_id}|{client_id}"
        return (
            self._shared_dir / hmac.new(self.settings.key.encode(), text.encode(), hashlib.sha256).hexdigest()
        )

    def _sign(self, device_id: str, client_id: str, nonce: str, expires: int) -> str:
        text = f"activation|{device_id}|{client_id}|{nonce}|{expires}"
        return hmac.new(self.settings.key.encode(), text.encode(), hashlib.sha256).hexdigest()[:32]

    def offer(self, device_id: str, client_id: str, now: float) -> dict[str, Any]:
        """The OTA answer's `activation` object for a device that has a provisioned secret."""
        nonce = secrets.token_hex(8)
        expires = int(now) + self.settings.activation_timeout_s
        challenge = f"{nonce}.{expires}.{self._sign(device_id, client_id, nonce, expires)}"
        code = f"{int(hashlib.sha256(challenge.encode()).hexdigest(), 16) % 1_000_000:06d}"
        return {
            "message": f"Activating {code}",
            "code": code,
            "challenge": challenge,
            "timeout_ms": self.settings.activation_timeout_s * 1000,
        }

    def verify(
        self, device_id: str, client_id: str, serial_header: str, body: Any, now: float
    ) -> tuple[int, str]:
        """(HTTP status, message) for an activation POST; 200 marks the pair activated."""
        if not device_id or not client_id or not isinstance(body, dict):
            return 400, "request error."
        challenge, digest = body.get("challenge"), body.get("hmac")
        serial = body.get("serial_number") or serial_header
        if not isinstance(challenge, str) or not isinstance(digest, str) or not isinstance(serial, str):
            return 400, "activation needs challenge, hmac and serial_number strings"
        if body.get("algorithm", "hmac-sha256") != "hmac-sha256":
            return 400, "only hmac-sha256 is supported"
        nonce, _, rest = challenge.partition(".")
        expires_text, _, signature = rest.partition(".")
        if not expires_text.isdigit() or not hmac.compare_digest(
            signature.encode("utf-8", "surrogatepass"),
            self._sign(device_id, client_id, nonce, int(expires_text)).encode(),
        ):
            return 403, "unknown challenge"
        if now > int(expires_text):
            return 403, "challenge expired; ask the OTA endpoint again"
        secret = self.secret_for(serial, device_id)
        if secret is None:
            return 403, "device not provisioned"
        expected = hmac.new(secret, challenge.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(
            digest.strip().lower().encode("utf-8", "surrogatepass"), expected.encode()
        ):
            return 403, "activation failed"
        self._activated[(device_id, client_id)] = now
        self._activated.move_to_end((device_id, client_id))
        while len(self._activated) > MAX_ACTIVATED:
            self._activated.popitem(last=False)
        if self._shared_dir is not None:
            self._shared_mark(device_id, client_id).touch()
        return 200, "activated"
