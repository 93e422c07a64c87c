"""Fault injection: make the next N matching requests fail the way real ones do.

Tests arm faults through ``POST /sim/faults``; the middleware here applies
them before (or, for ``truncated``, after) the real handler. Kinds mirror
what clients meet in the field: a Cloudflare block page, the CSRF gate's
``missing_cookie`` refusal, 5xx answers, 200s whose body is not JSON or is
cut in half, surprise 429s and slow answers; for the simulated S3
(path ``/sim-s3/``), ``expired`` refuses a pre-signed URL as expired (403
``AccessDenied``) and ``drop`` reads ``after_bytes`` of a request's body
and then drops the connection, storing nothing. The ``/sim/`` control paths are
never affected, so a test can always disarm what it armed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast, get_args

from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import SimError, rate_limited
from .s3 import S3Error

log = logging.getLogger("bambulab.sim")

FaultKind = Literal[
    "cloudflare", "csrf", "status", "garbage", "truncated", "ratelimit", "delay", "expired", "drop"
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
CONTROL_PREFIX = "/sim/"

CLOUDFLARE_PAGE = """<!DOCTYPE html>
<html lang="en-US"><head><title>Attention Required! | Cloudflare</title>
<meta charset="UTF-8"></head>
<body><div id="cf-wrapper"><div id="cf-error-details">
<h1>Sorry, you have been blocked</h1>
<h2>You are unable to access api.bambulab.com</h2>
<p>This website is using a security service to protect itself from online attacks.</p>
<p>Cloudflare Ray ID: <strong>8d2f4b1c9e0a7f35</strong> &bull; Performance &amp; security by
Cloudflare</p></div></div></body></html>
"""


@dataclass(slots=True)
class Fault:
    """One armed fault."""

    kind: FaultKind
    path: str = "/"
    count: int = 1
    status: int = 500
    retry_after: int | None = None
    seconds: float = 1.0
    after_bytes: int = 0


def parse_fault(body: Any) -> Fault:
    """Validate a ``POST /sim/faults`` body."""
    if not isinstance(body, dict):
        raise SimError(400, 400, "fault must be a JSON object")
    kind = body.get("kind")
    if kind not in FAULT_KINDS:
        raise SimError(400, 400, f"kind must be one of {', '.join(FAULT_KINDS)}")
    path = body.get("path", "/")
    count = body.get("count", 1)
    status = body.get("status", 503 if kind == "status" and "retry_after" in body else 500)
    retry_after = body.get("retry_after")
    seconds = body.get("seconds", 1.0)
    after_bytes = body.get("after_bytes", 0)
    if not isinstance(path, str) or not path.startswith("/"):
        raise SimError(400, 400, "path must be a path prefix starting with /")
    if not _is_int(count) or count < 1:
        raise SimError(400, 400, "count must be a positive integer")
    if not _is_int(status) or not 100 <= status <= 599:
        raise SimError(400, 400, "status must be an HTTP status")
    if retry_after is not None and (not _is_int(retry_after) or retry_after < 0):
        raise SimError(400, 400, "retry_after must be a non-negative integer")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise SimError(400, 400, "seconds must be a non-negative number")
    if not _is_int(after_bytes) or after_bytes < 0:
        raise SimError(400, 400, "after_bytes must be a non-negative integer")
    return Fault(
        kind=cast("FaultKind", kind),
        path=path,
        count=count,
        status=status,
        retry_after=retry_after,
        seconds=float(seconds),
        after_bytes=after_bytes,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class FaultBook:
    """Armed faults, first armed first served. Thread-safe: tests arm from outside."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def arm(self, fault: Fault) -> None:
        """Add a fault."""
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> int:
        """Disarm everything; returns how many were still armed."""
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
            return count

    def pending(self) -> list[dict[str, Any]]:
        """The armed faults as JSON-ready dicts."""
        with self._lock:
            return [asdict(fault) for fault in self._faults]

    def take(self, path: str) -> Fault | None:
        """Consume one use of the first fault whose prefix matches ``path``."""
        if path.startswith(CONTROL_PREFIX):
            return None
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None


class FaultMiddleware:
    """ASGI middleware applying :class:`FaultBook` faults to matching requests."""

    def __init__(self, app: ASGIApp, book: FaultBook) -> None:
        self.app = app
        self.book = book

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fault = self.book.take(str(scope.get("path", "")))
        if fault is None:
            await self.app(scope, receive, send)
            return
        log.info("fault: %s on %s %s", fault.kind, scope.get("method"), scope.get("path"))
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
            await self.app(scope, receive, send)
        elif fault.kind == "truncated":
            await self._truncated(scope, receive, send)
        elif fault.kind == "drop":
            await _drop(fault.after_bytes, receive, send)
        else:
            await _immediate(fault)(scope, receive, send)

    async def _truncated(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Run the real handler (its side effects happen, as when a proxy cuts
        # the connection after the server answered), then send half its body.
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        cut = body[: len(body) // 2]
        headers = [
            (name, value)
            for name, value in start.get("headers", [])
            if name.lower() != b"content-length"
        ]
        headers.append((b"content-length", str(len(cut)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": cut})


async def _drop(after_bytes: int, receive: Receive, send: Send) -> None:
    """Read ``after_bytes`` of the body, then cut the connection without an answer body.

    Starting an answer and returning without finishing it is how an ASGI app
    makes the server close the connection (uvicorn logs it as an error).
    """
    received = 0
    while received < after_bytes:
        message = await receive()
        if message["type"] != "http.request":
            return
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    log.info("fault: connection dropped after %d body bytes", received)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]}
    )


def _immediate(fault: Fault) -> Response:
    """The canned answer of every kind that does not involve the real handler."""
    if fault.kind == "cloudflare":
        return HTMLResponse(
            CLOUDFLARE_PAGE,
            status_code=403,
            headers={"server": "cloudflare", "cf-ray": "8d2f4b1c9e0a7f35-FRA"},
        )
    if fault.kind == "csrf":
        return JSONResponse(
            {
                "code": 403,
                "message": "Forbidden",
                "error": "CSRF verification failed: missing_cookie",
                "details": {"reason": "missing_cookie"},
            },
            status_code=403,
        )
    if fault.kind == "garbage":
        return Response(
            b"<html><body>upstream said: \x00\x01 not json {", media_type="application/json"
        )
    if fault.kind == "expired":
        refusal = S3Error(403, "AccessDenied", "Request has expired")
        return Response(
            refusal.xml(fault.path, "SIMFAULTEXPIRED0"),
            status_code=403,
            media_type="application/xml",
        )
    if fault.kind == "ratelimit":
        error = rate_limited(fault.retry_after if fault.retry_after is not None else 1)
        return JSONResponse(error.body(), status_code=429, headers=error.headers)
    # kind == "status"
    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
    message = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
    text = message.get(fault.status, "Simulated failure")
    body = json.dumps({"code": fault.status, "message": text, "error": text, "details": {}})
    return Response(body, status_code=fault.status, media_type="application/json", headers=headers)
