"""Access tokens: RS256 JWTs signed with a key made when the simulator starts.

Real tokens are RS256 JWTs carrying the user id (PROTOCOL.md §1.1); clients
decode the payload to find ``uid``/``username`` without verifying, so the
simulator issues the same shape. The key lives only in memory: tokens from an
earlier run are rejected as invalid, as if the account had been logged out.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .clock import SimClock

_HEADER = {"alg": "RS256", "typ": "JWT"}


class TokenError(Exception):
    """A token was refused; ``code`` is the cloud's application code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class InvalidToken(TokenError):
    """Malformed, wrongly signed or for an unknown account (code 1001)."""

    def __init__(self, reason: str = "Invalid token") -> None:
        super().__init__(1001, reason)


class ExpiredToken(TokenError):
    """Well-formed and genuine, but past ``exp`` on the simulated clock (code 1002)."""

    def __init__(self) -> None:
        super().__init__(1002, "Token expired")


@dataclass(frozen=True, slots=True)
class Claims:
    """The payload fields the simulator relies on."""

    uid: int
    issued_at: int
    expires_at: int


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Signs and checks tokens on the simulated clock."""

    def __init__(self, clock: SimClock, ttl: int, region: str = "global") -> None:
        self._clock = clock
        self._ttl = ttl
        self._region = region
        # 2048 bits like the real issuer; generation takes ~50 ms, well inside
        # the start-up budget.
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public = self._key.public_key()

    @property
    def ttl(self) -> int:
        """Lifetime of new tokens in seconds."""
        return self._ttl

    def issue(self, uid: int) -> str:
        """A fresh token for ``uid``, valid for the configured lifetime."""
        now = int(self._clock.now())
        payload = {
            "uid": str(uid),
            "username": f"u_{uid}",
            "region": self._region,
            "iat": now,
            "exp": now + self._ttl,
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (_HEADER, payload)
        )
        signature = self._key.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{_b64url(signature)}"

    def verify(self, token: str) -> Claims:
        """The token's claims; raises :class:`InvalidToken` or :class:`ExpiredToken`."""
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken()
        try:
            header = json.loads(_b64url_decode(parts[0]))
            signature = _b64url_decode(parts[2])
        except (ValueError, UnicodeDecodeError):
            raise InvalidToken() from None
        if not isinstance(header, dict) or header.get("alg") != "RS256":
            raise InvalidToken()
        try:
            self._public.verify(
                signature,
                f"{parts[0]}.{parts[1]}".encode("ascii"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, UnicodeEncodeError):
            raise InvalidToken() from None
        claims = _claims(json.loads(_b64url_decode(parts[1])))
        if claims.expires_at <= self._clock.now():
            raise ExpiredToken()
        return claims


def _claims(payload: Any) -> Claims:
    # Only reached with a genuine signature, so a bad shape is our own bug;
    # still refuse it as invalid rather than crash the request.
    try:
        return Claims(
            uid=int(payload["uid"]),
            issued_at=int(payload["iat"]),
            expires_at=int(payload["exp"]),
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidToken() from None
