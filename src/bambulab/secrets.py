"""One place that knows which values are secret and how they are shown.

Tokens, access codes, passwords, verification codes and camera keys never
reach a log line, an error message or a repr: everything that prints a wire
dict or a model goes through :func:`redact`.
"""

from __future__ import annotations

from typing import Any

SECRET_KEYS = frozenset(
    {
        "accesstoken",
        "access_token",
        "refreshtoken",
        "refresh_token",
        "token",
        "password",
        "passwd",
        "dev_access_code",
        "access_code",
        "authkey",
        "ttcode",
        "stream_key",
        "stream_salt",
        "tfacode",
        "tfakey",
        "bind_code",
        "code_value",
        "authorization",
        "sign_string",
    }
)

MASK = "***"


def is_secret_key(key: str) -> bool:
    """Whether a wire key names a secret value."""
    return key.lower() in SECRET_KEYS


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with every secret value replaced by ``***``."""
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and is_secret_key(k) and v else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def mask(secret: str | None, keep: int = 0) -> str:
    """``***`` for a secret, optionally keeping its last ``keep`` characters as a hint."""
    if not secret:
        return ""
    if keep and len(secret) > keep * 3:
        return MASK + secret[-keep:]
    return MASK
