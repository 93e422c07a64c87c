"""RFC 6238 TOTP (6 digits, 30 s steps, HMAC-SHA1) for the simulated authenticator.

The simulated cloud checks the authenticator codes of ``tfa`` accounts with
this, and the outbox endpoint shows the current code so tests and the demo
can play the user holding the phone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

STEP = 30
DIGITS = 6


def _secret_bytes(secret: str) -> bytes:
    cleaned = secret.replace(" ", "").upper()
    return base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))


def hotp(secret: str, counter: int, digits: int = DIGITS) -> str:
    """RFC 4226 HOTP value for ``counter``."""
    mac = hmac.new(_secret_bytes(secret), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def totp(secret: str, now: float) -> str:
    """The code an authenticator app shows at Unix time ``now``."""
    return hotp(secret, int(now // STEP))


def step_bounds(now: float) -> tuple[float, float]:
    """Start and end of the 30-second step containing ``now``."""
    start = (now // STEP) * STEP
    return start, start + STEP


def verify(secret: str, code: str, now: float, window: int = 1) -> bool:
    """True when ``code`` matches the current step or one of ``window`` steps around it.

    Real servers accept a neighbouring step to absorb clock skew and typing
    time; so does the simulator.
    """
    counter = int(now // STEP)
    candidate = code.strip()
    return any(
        hmac.compare_digest(hotp(secret, counter + delta), candidate)
        for delta in range(-window, window + 1)
    )
