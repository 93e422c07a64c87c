"""Reading (never verifying) the claims of a Bambu access token.

Tokens are JWTs whose payload carries the user id and the expiry. Only the
server can verify the signature; the client reads the claims to know the
MQTT user name and to warn before the token expires. Opaque tokens are
allowed: then every claim is simply unknown.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What the token says about itself (all optional)."""

    uid: str | None = None
    expires_at: float | None = None
    issued_at: float | None = None
    region: str | None = None

    def seconds_left(self, now: float | None = None) -> float | None:
        """Seconds until expiry (negative once expired), or ``None`` if unknown."""
        if self.expires_at is None:
            return None
        return self.expires_at - (time.time() if now is None else now)

    def expired(self, now: float | None = None) -> bool:
        """Whether the token is known to have expired."""
        left = self.seconds_left(now)
        return left is not None and left <= 0

    @property
    def mqtt_username(self) -> str | None:
        """The cloud MQTT user name ``u_<uid>``, when the token names the user."""
        return f"u_{self.uid}" if self.uid else None


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.isdigit():
        return float(value)
    return None


def decode_claims(token: str | None) -> TokenClaims:
    """The claims of a JWT-shaped token; empty claims for anything else."""
    if not token or token.count(".") != 2:
        return TokenClaims()
    try:
        payload = json.loads(_b64(token.split(".")[1]))
    except (ValueError, UnicodeDecodeError):
        return TokenClaims()
    if not isinstance(payload, dict):
        return TokenClaims()
    uid: str | None = None
    for key in ("uid", "user_id", "userId"):
        value = payload.get(key)
        if isinstance(value, (int, str)) and not isinstance(value, bool) and str(value).strip():
            uid = str(value).strip()
            break
    if uid is None:
        # Older tokens carry the MQTT user name itself: "u_<uid>".
        for key in ("username", "sub"):
            value = payload.get(key)
            if isinstance(value, str) and value.startswith("u_") and value[2:].isdigit():
                uid = value[2:]
                break
    region = payload.get("region")
    return TokenClaims(
        uid=uid,
        expires_at=_number(payload.get("exp")),
        issued_at=_number(payload.get("iat")),
        region=region if isinstance(region, str) else None,
    )
