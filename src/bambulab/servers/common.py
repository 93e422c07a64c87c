"""What every server of the package shares: who is calling, how often, and the audit line.

* :class:`Gate` turns a request into the :class:`~bambulab.servers.tokens.IssuedToken`
  that made it, or a refusal: 401 for a missing, malformed, unknown, expired
  or revoked token (``WWW-Authenticate: Bearer``), 403 for a scope or printer
  the token does not allow, 429 with ``Retry-After`` past its rate limit. A
  token is read **only** from ``Authorization: Bearer``: one in the query
  string (``?token=``, ``?access_token=``...) is refused, because query
  strings end up in logs, histories and ``Referer`` headers.
* :class:`RateLimiter` counts requests per token in fixed windows: the
  in-process :class:`MemoryRateLimiter` by default, a Redis one (shared by
  every worker and instance) when ``--redis`` is given.
* :class:`EventBus` carries the servers' event stream (state changes, print
  and HMS events) to Server-Sent-Events clients, with ids a client can resume
  from (``Last-Event-ID``): :class:`MemoryEventBus` in process, a Redis stream
  across instances.
* :class:`AuditLog` is ASGI middleware writing one line per request to the
  ``bambulab.servers.audit`` logger: method, path (no query string), status,
  milliseconds and the token **id** (never the token).

Errors are JSON ``{"detail": "<one line>"}`` (FastAPI's own shape), raised as
:class:`ApiError` anywhere and rendered by the handler :func:`install_errors`
registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from ..safetext import visible
from .tokens import IssuedToken, Scope, ServerTokenError, TokenStore

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

__all__ = [
    "ApiError",
    "AuditLog",
    "BodyLimit",
    "BusEvent",
    "EventBus",
    "Gate",
    "MemoryEventBus",
    "MemoryRateLimiter",
    "RateLimit",
    "RateLimiter",
    "install_errors",
    "parse_rate",
]

audit_log = logging.getLogger("bambulab.servers.audit")

# Query parameters that carry credentials in other APIs: refused, never read.
QUERY_TOKEN_NAMES = frozenset(
    {"token", "access_token", "accesstoken", "api_key", "apikey", "key", "auth", "bearer"}
)


class ApiError(Exception):
    """An HTTP refusal with a one-line ``detail`` (and optional headers)."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


def error_body(detail: str) -> bytes:
    return orjson.dumps({"detail": detail})


def install_errors(app: FastAPI) -> None:
    """Render :class:`ApiError` as ``{"detail": ...}`` with its status and headers."""
    from fastapi.responses import Response

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return Response(
            error_body(exc.detail),
            status_code=exc.status,
            media_type="application/json",
            headers={"cache-control": "no-store", **exc.headers},
        )

    app.add_exception_handler(ApiError, handler)


# --- rate limits ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``requests`` per ``per`` seconds (fixed windows)."""

    requests: int
    per: float

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(self.per)
        return f"{self.requests}/{unit}" if unit else f"{self.requests}/{self.per:g}s"


def parse_rate(text: str) -> RateLimit:
    """``120/min``, ``10/s``, ``1000/h``, ``5/30s`` -> :class:`RateLimit` (ValueError if not)."""
    from .tokens import parse_duration

    count, sep, unit = text.strip().partition("/")
    units = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
    try:
        requests = int(count)
        per = units.get(unit.strip().lower()) or parse_duration(unit) if sep else 0.0
    except (ValueError, TypeError):
        raise ValueError(f"not a rate: {text!r} (try 120/min)") from None
    if requests < 1 or per <= 0:
        raise ValueError(f"not a rate: {text!r} (try 120/min)")
    return RateLimit(requests, float(per))


class RateLimiter(Protocol):
    """Counts hits per key; says how long to wait once a key is over its limit."""

    async def hit(self, key: str, limit: RateLimit) -> float | None:
        """Count one request: ``None`` if allowed, else the seconds until it would be."""
        ...

    async def aclose(self) -> None: ...


class MemoryRateLimiter:
    """Fixed windows in this process (the default; one worker, one instance)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    async def hit(self, key: str, limit: RateLimit) -> float | None:
        now = self._clock()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= limit.per:
            start, count = now, 0
        if count >= limit.requests:
            return start + limit.per - now
        self._windows[key] = (start, count + 1)
        if len(self._windows) > 100_000:  # forget expired windows now and then
            self._windows = {k: v for k, v in self._windows.items() if now - v[0] < limit.per}
        return None

    async def aclose(self) -> None:
        self._windows.clear()


# --- the gate -----------------------------------------------------------------------------


def bearer(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer`` header (``None``: no such header)."""
    for name, value in headers:
        if name.lower() == b"authorization":
            text = value.decode("latin-1").strip()
            scheme, _, rest = text.partition(" ")
            return rest.strip() if scheme.lower() == "bearer" else ""
    return None


# The farm dashboard's browser session: the token, in an HttpOnly SameSite=Strict
# cookie set by its login form (a browser's EventSource cannot send headers).
SESSION_COOKIE = "bambu_session"
# A change made with the cookie must carry this header: a page of another site
# cannot add it without a CORS preflight, which this server does not grant.
CSRF_HEADER = b"x-bambu-request"
SAFE_METHODS = frozenset({"GET", "HEAD"})


def session_cookie(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token in the :data:`SESSION_COOKIE` cookie (``None``: no such cookie)."""
    from http.cookies import CookieError, SimpleCookie

    for name, value in headers:
        if name.lower() != b"cookie":
            continue
        jar: SimpleCookie = SimpleCookie()
        with contextlib.suppress(CookieError):
            jar.load(value.decode("latin-1"))
        if SESSION_COOKIE in jar:
            return jar[SESSION_COOKIE].value
    return None


def query_names(query: bytes) -> set[str]:
    from urllib.parse import parse_qsl

    return {k.lower() for k, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)}


class Gate:
    """Checks each request's token (see the module) and counts it against its rate limit."""

    def __init__(
        self,
        store: TokenStore,
        *,
        limiter: RateLimiter | None = None,
        limit: RateLimit | None = None,
    ) -> None:
        self.store = store
        self.limiter = limiter or MemoryRateLimiter()
        self.limit = limit

    async def check(
        self,
        request: Request,
        scope: Scope = "read",
        printer: str | None = None,
        *,
        cookie: bool = False,
    ) -> IssuedToken:
        """The request's token, if it allows ``scope`` (on ``printer``); else :class:`ApiError`.

        ``cookie``: the dashboard's routes also take the token from the session
        cookie when no ``Authorization`` header is sent (a change then needs
        the :data:`CSRF_HEADER` its page sends).
        """
        if query_names(request.scope.get("query_string", b"")) & QUERY_TOKEN_NAMES:
            raise ApiError(
                401,
                "tokens go in the Authorization header (Bearer), never in the address",
                {"www-authenticate": "Bearer"},
            )
        headers = request.scope.get("headers", [])
        secret = bearer(headers)
        if secret is None and cookie:
            secret = session_cookie(headers)
            if (
                secret
                and request.scope.get("method") not in SAFE_METHODS
                and not any(name.lower() == CSRF_HEADER for name, _ in headers)
            ):
                raise ApiError(403, "a change made from the dashboard's session needs its page")
        if not secret:
            raise ApiError(
                401,
                "a token is needed: Authorization: Bearer <token> (bambu serve token create)",
                {"www-authenticate": "Bearer"},
            )
        try:
            token = self.store.verify(secret)
        except ServerTokenError as exc:
            raise ApiError(
                401, str(exc), {"www-authenticate": 'Bearer error="invalid_token"'}
            ) from None
        request.scope.setdefault("state", {})["token_id"] = token.id
        self.authorize(token, scope, printer)
        if self.limit is not None:
            wait = await self.limiter.hit(f"token:{token.id}", self.limit)
            if wait is not None:
                seconds = max(1, math.ceil(wait))
                raise ApiError(
                    429,
                    f"rate limit of {self.limit} for this token reached: retry in {seconds} s",
                    {"retry-after": str(seconds)},
                )
        return token

    @staticmethod
    def authorize(token: IssuedToken, scope: Scope = "read", printer: str | None = None) -> None:
        """403 unless ``token`` allows ``scope`` (on ``printer``)."""
        if not token.allows(scope):
            raise ApiError(403, f"this token's scope is {token.scope}; this needs {scope}")
        if printer is not None and not token.allows(scope, printer):
            raise ApiError(403, "this token does not allow that printer")


# --- the event stream ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One event of the stream: ``id`` (resumable), ``type``, JSON ``data``, its printer.

    ``frame`` is the event as one Server-Sent-Events frame, encoded once when
    the event is made: every client of the stream writes the same bytes.
    """

    id: str
    type: str
    data: bytes
    serial: str | None = None
    frame: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.frame:
            object.__setattr__(self, "frame", sse_frame(self.id, self.type, self.data))


def _sse_field(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode()


def sse_frame(event_id: str, event_type: str, data: bytes) -> bytes:
    """One ``text/event-stream`` frame; a line break never forges another field."""
    head = b"id: %s\nevent: %s\n" % (_sse_field(event_id), _sse_field(event_type))
    if b"\n" not in data and b"\r" not in data:  # orjson's JSON: always one line
        return head + b"data: " + data + b"\n\n"
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


class EventBus(Protocol):
    """The servers' event stream, resumable by id.

    ``publish`` appends (``dedupe``: a key that makes a second publish of the
    same event by another instance a no-op, returning ``None``). ``subscribe``
    yields the events after ``after`` (``None``: only new ones) and then the
    live ones, forever; when ``after`` is older than what is kept it first
    yields one event of type ``reset`` (the client should re-read the state).
    """

    async def publish(
        self,
        type: str,
        data: Mapping[str, Any],
        serial: str | None = None,
        dedupe: str | None = None,
    ) -> str | None: ...

    def subscribe(self, after: str | None = None) -> AsyncIterator[BusEvent]: ...

    def batches(self, after: str | None = None) -> AsyncIterator[Sequence[BusEvent]]:
        """As :meth:`subscribe`, but every event available at once in one list.

        A stream with many clients reads this way: one wake-up per client per
        batch, not per event.
        """
        ...

    async def aclose(self) -> None: ...


async def flatten(batches: AsyncIterator[Sequence[BusEvent]]) -> AsyncIterator[BusEvent]:
    """The events of ``batches`` one by one (a bus's :meth:`EventBus.subscribe`)."""
    async for batch in batches:
        for event in batch:
            yield event


@dataclass
class MemoryEventBus:
    """The event stream in this process: a ring of the last ``keep`` events.

    Subscribers read the shared ring at their own pace (no queue per
    subscriber): one that falls more than ``keep`` events behind gets a
    ``reset`` and continues from the newest. Ids are decimal integers.
    """

    keep: int = 10_000
    _ring: deque[BusEvent] = field(default_factory=deque, init=False)
    _next: int = field(default=1, init=False)
    _wake: asyncio.Event | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)
    _seen: dict[str, float] = field(default_factory=dict, init=False)

    def _signal(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake

    async def publish(
        self,
        type: str,
        data: Mapping[str, Any],
        serial: str | None = None,
        dedupe: str | None = None,
    ) -> str | None:
        if dedupe is not None:
            if dedupe in self._seen:
                return None
            self._seen[dedupe] = time.monotonic()
            if len(self._seen) > 4 * self.keep:
                oldest = sorted(self._seen.values())[len(self._seen) // 2]
                self._seen = {k: t for k, t in self._seen.items() if t > oldest}
        event = BusEvent(str(self._next), type, orjson.dumps(data), serial)
        self._next += 1
        self._ring.append(event)
        if len(self._ring) > self.keep:
            self._ring.popleft()
        wake = self._signal()
        self._wake = asyncio.Event()  # the next waiters wait on a fresh one
        wake.set()
        return event.id

    def _first_after(self, after: int) -> int | None:
        """Index in the ring of the first event after id ``after`` (None: a gap)."""
        if not self._ring:
            return 0
        oldest = int(self._ring[0].id)
        if after < oldest - 1:
            return None
        return min(after - oldest + 1, len(self._ring))

    def subscribe(self, after: str | None = None) -> AsyncIterator[BusEvent]:
        return flatten(self.batches(after))

    async def batches(self, after: str | None = None) -> AsyncIterator[Sequence[BusEvent]]:
        position = self._next - 1 if after is None else _int_id(after)
        if position > self._next - 1:  # an id from the future (another server's): start now
            position = self._next - 1
        while not self._closed:
            index = self._first_after(position)
            if index is None:
                yield [BusEvent(str(position), "reset", b"{}")]
                position = int(self._ring[0].id) - 1
                continue
            if index < len(self._ring):
                # The newest events are at the right: take them from there (a deque
                # walked from the left would cost the whole ring per batch).
                pending = list(itertools.islice(reversed(self._ring), len(self._ring) - index))
                pending.reverse()
                position = int(pending[-1].id)
                yield pending
            else:
                await self._signal().wait()

    async def aclose(self) -> None:
        self._closed = True
        self._signal().set()


def _int_id(text: str) -> int:
    try:
        return max(0, int(text.strip()))
    except ValueError:
        return 0


# --- the audit line -----------------------------------------------------------------------


class AuditLog:
    """Pure ASGI middleware: one ``bambulab.servers.audit`` line per request.

    ``GET /v1/iot-service/api/user/bind 200 3.1ms token=0a1b2c3d4e5f``: the
    path without its query string (neutralised: it came from the client),
    the token id set by :class:`Gate` (``-`` when none was accepted). A
    streaming response is logged when it starts.
    """

    def __init__(self, app: Any, logger: logging.Logger = audit_log) -> None:
        self.app = app
        self.log = logger

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        logged = False

        async def send_logged(message: dict[str, Any]) -> None:
            nonlocal logged
            if message["type"] == "http.response.start" and not logged:
                logged = True
                self._line(scope, message["status"], started)
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            if not logged:  # the app failed before answering (or the client left)
                self._line(scope, 500, started)

    def _line(self, scope: dict[str, Any], status: int, started: float) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        token = scope.get("state", {}).get("token_id") or "-"
        path = visible(scope.get("path", ""))[:300]
        self.log.info(
            "%s %s %d %.1fms token=%s",
            scope.get("method", "?"),
            path,
            status,
            (time.perf_counter() - started) * 1000,
            token,
        )


# --- the body cap -------------------------------------------------------------------------

MAX_BODY = 1024 * 1024  # bytes: JSON commands and API calls; files go straight to storage


class BodyLimit:
    """Pure ASGI middleware: a request body over ``limit`` bytes is refused with 413.

    Checked on ``Content-Length`` first, then counted as it arrives (a chunked
    body declares no length), so no route ever buffers more than the cap.
    """

    def __init__(
        self, app: Any, limit: int = MAX_BODY, larger: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.limit = limit
        self.larger = dict(larger or {})  # exact paths that take more (a 3MF upload)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.limit)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await _too_large(send, limit)
                return
        seen = 0
        started = replied = False

        async def counted() -> dict[str, Any]:
            nonlocal seen, replied
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Answered here and now: the framework turns errors met while
                    # reading a body into its own 400, which must not get out.
                    if not started and not replied:
                        replied = True
                        await _too_large(send, limit)
                    raise _BodyTooLarge
            return message

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            if replied:
                return  # the 413 went out already
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counted, tracked)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Any, limit: int) -> None:
    body = error_body(f"the request body is over {limit // 1024} KiB")
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
