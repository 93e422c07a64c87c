"""The simulated cloud's refusals, raised anywhere and rendered in one place.

Handlers raise :class:`SimError`; the app turns it into the cloud's error
envelope ``{"code","message","error","details"}`` with the HTTP status (and
``Retry-After`` for 429). The constructors below name the application codes
of PROTOCOL.md §1 once, so two endpoints cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Application codes (PROTOCOL.md §1, [seed]).
INVALID_TOKEN = 1001
TOKEN_EXPIRED = 1002
DEVICE_NOT_FOUND = 1003
DEVICE_OFFLINE = 1004
PRINT_FAILED = 1005
FILE_FAILED = 1006

# Login codes ([field]): 1 code expired, 2 code incorrect, 3 bad credentials.
CODE_EXPIRED = 1
CODE_INCORRECT = 2
BAD_CREDENTIALS = 3


class SimError(Exception):
    """An error answer: HTTP ``status`` plus the envelope's ``code`` and texts."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        error: str | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.error = error if error is not None else message
        self.details = dict(details or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The error envelope."""
        return {
            "code": self.code,
            "message": self.message,
            "error": self.error,
            "details": self.details,
        }


def bad_request(message: str, code: int = 400, **details: Any) -> SimError:
    """400 with a generic or specific code."""
    return SimError(400, code, message, details=details)


def not_found(message: str = "Not Found", code: int = 404) -> SimError:
    """404; devices use code 1003, files 1006."""
    return SimError(404, code, message)


def device_not_found() -> SimError:
    """The device does not exist or belongs to someone else (never say which)."""
    return SimError(404, DEVICE_NOT_FOUND, "Device not found")


def forbidden(message: str = "permission denied") -> SimError:
    """403 in the cloud's own words (not Cloudflare's)."""
    return SimError(403, 403, message)


def unauthorized(code: int, message: str) -> SimError:
    """401 for token problems (1001 invalid, 1002 expired)."""
    return SimError(401, code, message)


def rate_limited(retry_after: int) -> SimError:
    """429 with the wait in ``Retry-After`` and in the details."""
    return SimError(
        429,
        429,
        "Too many requests",
        error="Rate limit exceeded, retry later",
        details={"retry_after": retry_after},
        headers={"Retry-After": str(retry_after)},
    )
