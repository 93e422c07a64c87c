"""Sans-IO core of the cloud HTTP API: requests as data, answers interpreted.

The sync and async clients only move bytes; everything that decides what a
response *means* lives here, once: the two success envelopes, the error
envelope, HTTP status and application codes mapped to the error tree,
Cloudflare and CSRF blocks recognised, the retry policy, and the limits an
answer must respect (:class:`AnswerBody`: size cap, truncation; nesting depth).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from ..errors import (
    APIError,
    BadRequestError,
    BambuError,
    CloudflareBlockedError,
    CSRFBlockedError,
    ForbiddenError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    TokenExpiredError,
    TokenInvalidError,
    TransportError,
)
from .json_limits import MAX_DEPTH, nesting_exceeds

T = TypeVar("T")

# No API answer comes near this; a bigger one is a broken or hostile server,
# and reading it whole would cost memory several times its size.
MAX_ANSWER_BYTES = 8 * 1024 * 1024

Host = Literal["api", "web"]
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

# Application codes of the error envelope (PROTOCOL.md §1).
CODE_TOKEN_INVALID = 1001
CODE_TOKEN_EXPIRED = 1002
CODE_DEVICE_NOT_FOUND = 1003
CODE_DEVICE_OFFLINE = 1004
CODE_PRINT_FAILED = 1005
CODE_UPLOAD_FAILED = 1006

_CODE_TEXT = {
    CODE_TOKEN_INVALID: "token invalid",
    CODE_TOKEN_EXPIRED: "token expired",
    CODE_DEVICE_NOT_FOUND: "device not found",
    CODE_DEVICE_OFFLINE: "device offline",
    CODE_PRINT_FAILED: "print job failed",
    CODE_UPLOAD_FAILED: "file upload failed",
}


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One HTTP request to the cloud, before any I/O."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    json: Any = None
    host: Host = "api"
    auth: bool = True

    @property
    def idempotent(self) -> bool:
        """Whether repeating the request is harmless (so it may be retried)."""
        return self.method.upper() in IDEMPOTENT_METHODS


@dataclass(frozen=True, slots=True)
class HttpReply:
    """What came back: status, headers (as pairs, repeats kept) and body bytes."""

    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (``Set-Cookie`` repeats)."""
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]


@dataclass(frozen=True, slots=True)
class ApiCall(Generic[T]):
    """A request plus the function that turns its unwrapped payload into a result."""

    request: ApiRequest
    parse: Callable[[Any], T]


def decode_json(reply: HttpReply, path: str) -> Any:
    """The JSON body, or :class:`ProtocolError` naming what was wrong with it."""
    if not reply.body.strip():
        return None
    if nesting_exceeds(reply.body):
        raise ProtocolError(
            f"the server's answer to {path} nests deeper than {MAX_DEPTH} levels "
            f"(HTTP {reply.status}, {len(reply.body)} bytes)"
        )
    try:
        return json.loads(reply.body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        kind = "truncated" if _looks_truncated(reply.body) else "not JSON"
        raise ProtocolError(
            f"the server's answer to {path} was {kind} (HTTP {reply.status}, "
            f"{len(reply.body)} bytes)"
        ) from exc


def _looks_truncated(body: bytes) -> bool:
    head = body.lstrip()[:1]
    return head in (b"{", b"[") and not body.rstrip().endswith((b"}", b"]"))


def size_text(size: int) -> str:
    """``8 MiB``, ``512 KiB``, ``300 bytes``: a cap as a person reads it."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


class AnswerBody:
    """Collects an answer's body chunk by chunk, within its limits.

    ``origin`` names the server in messages; ``declared`` is the raw
    ``Content-Length`` header (``None`` if absent); ``cap`` the most bytes
    accepted (``None``: only the declared size bounds it, for downloads). A
    declared size over the cap is refused before a byte of body is read, and
    the cap is checked on every chunk, so nothing over it is ever held.
    ``keep=False`` counts without keeping (a download hands chunks on).
    """

    def __init__(
        self, origin: str, declared: str | None, cap: int | None, *, keep: bool = True
    ) -> None:
        self.origin = origin
        self.cap = cap
        self.received = 0
        self._keep = keep
        self._chunks: list[bytes] = []
        self.declared: int | None = None
        if declared is not None:
            try:
                self.declared = int(declared.strip())
            except ValueError:
                raise ProtocolError(
                    f"answer from {origin} has a malformed Content-Length"
                ) from None
        if cap is not None and self.declared is not None and self.declared > cap:
            raise self.too_large()
        if cap is None and self.declared is None:
            raise ProtocolError(
                f"answer from {origin} declares no size and no limit was given for it"
            )

    def too_large(self) -> ProtocolError:
        limit = size_text(self.cap) if self.cap is not None else "its declared size"
        declared = f" (declares {self.declared} bytes)" if self.declared is not None else ""
        return ProtocolError(f"answer from {self.origin} larger than {limit}{declared}")

    def feed(self, chunk: bytes) -> None:
        """Take one chunk of the (decoded) body; :class:`ProtocolError` past the cap."""
        self.received += len(chunk)
        if self.cap is not None and self.received > self.cap:
            self._chunks.clear()
            raise self.too_large()
        if self._keep and chunk:
            self._chunks.append(chunk)

    def truncated(self, raw_received: int) -> ProtocolError:
        """The error for a connection that ended before the body did."""
        if self.declared is not None:
            return ProtocolError(
                f"answer from {self.origin} truncated: got {raw_received} of {self.declared} bytes"
            )
        return ProtocolError(
            f"answer from {self.origin} truncated after {raw_received} bytes "
            "(the connection closed mid-body)"
        )

    def content(self) -> bytes:
        """The whole body (only with ``keep=True``)."""
        return b"".join(self._chunks)


def unwrap(payload: Any) -> Any:
    """The payload inside either success envelope (or the bare object itself).

    * newer endpoints: ``{"code": 0, "message": "Success", "data": {...}}``;
    * iot-service: ``{"message": "success", "code": null, "error": null, ...}``;
    * some user-service endpoints: the bare object.
    """
    if not isinstance(payload, dict):
        return payload
    if "data" in payload and payload.get("code") in (0, None) and "message" in payload:
        return payload["data"]
    if "message" in payload and "code" in payload and payload.get("code") is None:
        return {k: v for k, v in payload.items() if k not in ("message", "code", "error")}
    return payload


def _envelope_error(payload: Any) -> tuple[int | None, str | None]:
    """The application code and message of an error envelope, if it is one."""
    if not isinstance(payload, dict):
        return None, None
    code = payload.get("code")
    code_int = code if isinstance(code, int) and not isinstance(code, bool) else None
    text = payload.get("error") or payload.get("message") or payload.get("msg")
    return code_int, (str(text)[:200] if text else None)


def _retry_after(reply: HttpReply) -> float | None:
    value = reply.header("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare, and a backoff is as good


def interpret(reply: HttpReply, path: str) -> Any:
    """Turn an HTTP reply into its unwrapped payload, or raise the matching error.

    Also catches 200 answers whose envelope carries an application error code.
    """
    status = reply.status
    if 200 <= status < 300:
        payload = decode_json(reply, path)
        code, text = _envelope_error(payload)
        if (
            code in _CODE_TEXT
            and isinstance(payload, dict)
            and "data" not in payload
            and payload.get("message") != "success"
        ):
            raise _api_error(status, code, text, path, reply)
        return unwrap(payload)
    raise error_for(reply, path)


def error_for(reply: HttpReply, path: str) -> BambuError:
    """The error for a non-2xx reply."""
    status = reply.status
    text_body = reply.body[:4096].decode("utf-8", "replace")
    low = text_body.lower()
    try:
        deep = nesting_exceeds(reply.body)
        payload = json.loads(reply.body) if reply.body.strip() and not deep else None
    except (ValueError, RecursionError):
        payload = None
    code, text = _envelope_error(payload)
    if status == 403 and "cloudflare" in low:
        return CloudflareBlockedError(
            f"blocked by Cloudflare's bot protection on {path} (HTTP 403): "
            "wait a while, or log in from the same network as the Bambu app",
            http_status=403,
            path=path,
        )
    if status == 403 and "missing_cookie" in low:
        return CSRFBlockedError(
            f"refused by the web host's CSRF gate on {path} (HTTP 403 missing_cookie): "
            "this endpoint needs a browser session; use the API host instead",
            http_status=403,
            path=path,
            code=code,
        )
    if payload is None and text_body.strip() and status < 500 and status not in (401, 403, 429):
        text = text_body.strip().splitlines()[0][:120]
    return _api_error(status, code, text, path, reply)


def _api_error(
    status: int, code: int | None, text: str | None, path: str, reply: HttpReply
) -> APIError:
    detail = f": {text}" if text else ""
    where = f" ({path})"
    kw: dict[str, Any] = {"http_status": status, "code": code, "server_message": text, "path": path}
    if code == CODE_TOKEN_EXPIRED:
        return TokenExpiredError("the access token has expired: log in again (bambu login)", **kw)
    if status == 401 or code == CODE_TOKEN_INVALID:
        return TokenInvalidError(
            "the access token was refused (invalid or expired): log in again (bambu login)", **kw
        )
    if status == 429:
        after = _retry_after(reply)
        hint = f", retry after {after:g} s" if after is not None else ""
        return RateLimitError(f"rate limited by the server{hint}{where}", retry_after=after, **kw)
    if code == CODE_DEVICE_NOT_FOUND or status == 404:
        what = "device not found" if code == CODE_DEVICE_NOT_FOUND else (text or "not found")
        return NotFoundError(f"{what}{where}", **kw)
    if status == 403:
        return ForbiddenError(f"forbidden{detail}{where}", **kw)
    if status >= 500:
        return ServerError(f"the server failed with HTTP {status}{detail}{where}", **kw)
    if code in _CODE_TEXT:
        return BadRequestError(f"{_CODE_TEXT[code]}{detail}{where}", **kw)
    if status == 400:
        return BadRequestError(f"bad request{detail}{where}", **kw)
    return APIError(f"HTTP {status}{detail}{where}", **kw)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter.

    Retries 429 and 5xx (only for idempotent requests) and failed connects,
    honouring ``Retry-After`` when the server gives one, never beyond
    ``max_attempts`` tries or ``max_elapsed`` seconds in all.
    """

    max_attempts: int = 4
    max_elapsed: float = 30.0
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.25
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(
        self, attempt: int, error: BambuError, request: ApiRequest, elapsed: float
    ) -> float | None:
        """Seconds to wait before try ``attempt + 1``, or ``None`` to give up and raise."""
        if attempt >= self.max_attempts or not self._retryable(error, request):
            return None
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        backoff *= 1 + self.jitter * (self.rng.random() * 2 - 1)
        after = error.retry_after if isinstance(error, RateLimitError) else None
        if after is not None:
            backoff = max(backoff, after)
        if elapsed + backoff > self.max_elapsed:
            return None
        return backoff

    @staticmethod
    def _retryable(error: BambuError, request: ApiRequest) -> bool:
        # A POST may have been acted on before the answer was lost or refused,
        # so only idempotent requests are ever repeated.
        if isinstance(error, (TransportError, RateLimitError, ServerError)):
            return request.idempotent
        return False


NO_RETRY = RetryPolicy(max_attempts=1)

__all__ = [
    "MAX_ANSWER_BYTES",
    "NO_RETRY",
    "AnswerBody",
    "ApiCall",
    "ApiRequest",
    "HttpReply",
    "RetryPolicy",
    "decode_json",
    "error_for",
    "interpret",
    "size_text",
    "unwrap",
]
