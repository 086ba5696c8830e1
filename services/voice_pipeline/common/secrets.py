"""API keys from Secret-mounted files or environment variables, for every provider client.

A key is read once at start-up; callers keep it in a private attribute, send it only in the
request header the provider expects, and redact it from any error text (never logged, never in a
repr).
"""

from __future__ import annotations

import os
from pathlib import Path

from voice_pipeline.common.errors import ConfigError


def read_api_key(key_file: str = "", key_env: str = "") -> str:
    """The key from `key_file` (a mounted Secret) or else `key_env`; "" when neither is set."""
    if key_file:
        try:
            return Path(key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the API key file {key_file}: {exc.strerror}") from exc
    if key_env:
        value = os.environ.get(key_env, "")
        if not value:
            raise ConfigError(f"environment variable {key_env} (the API key) is empty or unset")
        return value
    return ""


def read_token_file(path: str, what: str) -> str:
    """A shared secret from a Secret-mounted file ("" when `path` is ""). A named file that is
    missing or empty is a start-up error: silently running without the secret would turn the
    check off (or lock every gateway out)."""
    if not path:
        return ""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {getattr(exc, 'strerror', exc)}") from exc
    if not token:
        raise ConfigError(f"the {what} file {path} is empty")
    return token


def token_matches(expected: str, presented: str) -> bool:
    """Constant-time comparison of a presented secret (any text a client sends) with ours."""
    import hmac

    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))
