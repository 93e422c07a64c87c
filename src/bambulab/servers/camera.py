"""The camera fan-out server: one upstream camera connection per printer, any number of viewers.

Printers accept one or two camera clients at a time (a third is refused or
knocks the first off), yet a farm has a wall display, a phone and a
dashboard all wanting the same picture. :class:`CameraHub` holds **one**
upstream frame source per printer and hands every frame to each viewer:

* the upstream opens on the first viewer (or snapshot) and closes ``linger``
  seconds after the last one leaves, so a page reload does not reconnect to
  the printer, and an unwatched printer is left alone;
* the latest frame is kept, for snapshots and for a new viewer's first picture;
* each viewer has a small queue (``queue_size`` frames, oldest dropped): a
  slow viewer loses frames, never grows memory and never delays the others,
  because publishing a frame never waits for a viewer;
* a source that ends or raises is reopened with exponential backoff while
  viewers remain (the camera clients reconnect on their own too; this covers
  a client that gives up);
* :meth:`CameraHub.stats` says per printer how many viewers there are,
  whether the upstream is open, frames in and frames dropped per viewer.

Everything in the hub runs on one event loop: there are no locks, and
:class:`~bambulab.models.camera.Frame` objects are immutable, so the same
object goes to every viewer.

:func:`create_camera_app` puts the hub behind HTTP (FastAPI): an index page
with a tile per printer, ``/camera/{serial}/stream.mjpg`` (MJPEG,
``multipart/x-mixed-replace``), ``/camera/{serial}/snapshot.jpg`` and
``/api/cameras``. Every route needs the token (``Authorization: Bearer``,
``?token=`` which also sets an HttpOnly cookie, or that cookie), compared in
constant time; uvicorn's access log is off so a ``?token=`` never reaches a
log. :class:`CameraServer` runs the app with uvicorn on its own thread and
loop (tests, the bench and ``bambu camera serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import inspect
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import quote

from ..errors import (
    BambuError,
    CameraAuthenticationError,
    CameraError,
    CameraStallError,
    CameraUnavailableError,
    ConfigurationError,
)
from ..models.camera import Frame
from .runner import AppServer, is_loopback, one_line

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.responses import Response

__all__ = [
    "AsyncFrameSource",
    "CameraHub",
    "CameraPrinter",
    "CameraServer",
    "CameraStats",
    "Viewer",
    "create_camera_app",
]

log = logging.getLogger("bambulab.servers.camera")

T = TypeVar("T")

DEFAULT_LINGER = 10.0
DEFAULT_QUEUE = 2
SNAPSHOT_TIMEOUT = 10.0
COOKIE = "bambu_camera_token"
# Kernel send buffer per HTTP connection (Linux doubles it): about two camera frames.
SEND_BUFFER = 128 * 1024
BOUNDARY = "bambuframe"


@runtime_checkable
class AsyncFrameSource(Protocol):
    """What the hub reads from: an async iterator of frames that can be closed.

    :class:`bambulab.local.camera.AsyncJPEGFrameStream` (and the RTSPS
    client) are such sources; tests use an in-memory one.
    """

    def __aiter__(self) -> AsyncIterator[Frame]: ...

    async def aclose(self) -> None: ...


Opener = Callable[[str], "AsyncFrameSource | Awaitable[AsyncFrameSource]"]


@dataclass(frozen=True, slots=True)
class CameraPrinter:
    """A printer the server shows: ``name`` and ``model`` are for people (escaped before HTML)."""

    serial: str
    name: str = ""
    model: str = ""


@dataclass(frozen=True, slots=True)
class CameraStats:
    """One printer's fan-out, at one moment (for tests, the bench and ``/api/cameras``).

    ``dropped`` and ``queued`` hold one number per current viewer, in the
    order the viewers joined; ``upstream_opens`` counts sources opened since
    the hub started (reconnects included).
    """

    serial: str
    viewers: int
    upstream_open: bool
    upstream_opens: int
    frames_in: int
    dropped: tuple[int, ...]
    queued: tuple[int, ...]
    last_frame_age: float | None
    last_error: str | None


class Viewer:
    """One watcher of a printer: a bounded queue of frames, read by :meth:`next` or ``async for``.

    Made by :meth:`CameraHub.viewer` (``async with``) or :meth:`CameraHub.join`;
    :meth:`close` leaves the hub (the upstream may then linger and close).
    """

    def __init__(self, hub: CameraHub, serial: str, size: int) -> None:
        self.serial = serial
        self._hub = hub
        self._queue: deque[Frame] = deque(maxlen=size)
        self._wake = asyncio.Event()
        self.delivered = 0
        self.dropped = 0
        self.closed = False

    def _push(self, frame: Frame) -> None:
        """Called by the hub on the loop: never waits, drops the oldest when full."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(frame)
        self._wake.set()

    @property
    def queued(self) -> int:
        """Frames waiting to be read (at most the queue size)."""
        return len(self._queue)

    async def next(self, timeout: float | None = None) -> Frame:
        """The oldest queued frame, waiting up to ``timeout`` (CameraStallError after that)."""
        while not self._queue:
            if self.closed:
                raise CameraUnavailableError("the viewer is closed", serial=self.serial)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                raise CameraStallError(
                    f"no camera frame within {timeout:g} s", serial=self.serial
                ) from None
        self.delivered += 1
        return self._queue.popleft()

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[Frame]:
        while not self.closed:
            try:
                yield await self.next()
            except CameraUnavailableError:
                return

    def close(self) -> None:
        """Leave the hub (safe to call twice)."""
        if not self.closed:
            self.closed = True
            self._wake.set()
            self._hub._leave(self)


@dataclass(eq=False)
class _Feed:
    """The hub's state for one printer; touched only on the hub's loop."""

    serial: str
    viewers: list[Viewer] = field(default_factory=list)
    latest: Frame | None = None
    latest_at: float = 0.0  # monotonic arrival of ``latest``
    pump: asyncio.Task[None] | None = None
    linger: asyncio.TimerHandle | None = None
    upstream_open: bool = False
    upstream_opens: int = 0
    frames_in: int = 0
    last_error: str | None = None
    refused: bool = False  # the last session ended with the access code refused


class CameraHub:
    """One upstream per printer, fanned out to bounded per-viewer queues (see the module docstring).

    ``opener(serial)`` returns an :class:`AsyncFrameSource` (or an awaitable
    of one) for that printer; ``serials`` limits the printers the hub knows
    (any serial when None). Use it from one event loop; :meth:`aclose` when done.
    """

    def __init__(
        self,
        opener: Opener,
        *,
        serials: Iterable[str] | None = None,
        linger: float = DEFAULT_LINGER,
        queue_size: int = DEFAULT_QUEUE,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
    ) -> None:
        if queue_size < 1:
            raise ConfigurationError("a viewer's queue holds at least one frame")
        if linger < 0 or backoff <= 0 or max_backoff < backoff:
            raise ConfigurationError("linger must be >= 0 and 0 < backoff <= max_backoff")
        self._opener = opener
        self._serials = frozenset(serials) if serials is not None else None
        self.linger = linger
        self.queue_size = queue_size
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._feeds: dict[str, _Feed] = {}
        self._closed = False

    # --- viewers ------------------------------------------------------------------------

    def knows(self, serial: str) -> bool:
        """Whether ``serial`` is one of the hub's printers."""
        return self._serials is None or serial in self._serials

    def join(self, serial: str) -> Viewer:
        """A new viewer of ``serial`` (opens the upstream if needed); the latest frame first."""
        if self._closed:
            raise CameraUnavailableError("the camera hub is closed", serial=serial)
        if not self.knows(serial):
            raise CameraUnavailableError("no such printer on this camera server", serial=serial)
        feed = self._feed(serial)
        viewer = Viewer(self, serial, self.queue_size)
        feed.viewers.append(viewer)
        if feed.linger is not None:
            feed.linger.cancel()
            feed.linger = None
        if feed.latest is not None and feed.upstream_open:
            viewer._push(feed.latest)
        self._ensure_pump(feed)
        return viewer

    @contextlib.asynccontextmanager
    async def viewer(self, serial: str) -> AsyncIterator[Viewer]:
        """``async with hub.viewer(serial) as v: async for frame in v: ...``"""
        viewer = self.join(serial)
        try:
            yield viewer
        finally:
            viewer.close()

    async def snapshot(self, serial: str, timeout: float = SNAPSHOT_TIMEOUT) -> Frame:
        """The latest frame while the upstream is open; else open it and wait up to ``timeout``.

        A frame cached from an upstream that has since closed is not returned:
        it may be hours old. Raises :class:`CameraError` (the upstream's own
        error when one is known) when no frame comes in time.
        """
        feed = self._feed(serial) if self.knows(serial) else None
        if feed is not None and feed.latest is not None and feed.upstream_open:
            return feed.latest
        viewer = self.join(serial)
        try:
            return await viewer.next(timeout)
        except CameraStallError:
            reason = self._feeds[serial].last_error
            if reason:
                raise CameraUnavailableError(
                    f"no camera frame within {timeout:g} s: {reason}", serial=serial
                ) from None
            raise
        finally:
            viewer.close()

    def _leave(self, viewer: Viewer) -> None:
        feed = self._feeds.get(viewer.serial)
        if feed is None or viewer not in feed.viewers:
            return
        feed.viewers.remove(viewer)
        if not feed.viewers and feed.pump is not None and feed.linger is None:
            loop = asyncio.get_running_loop()
            feed.linger = loop.call_later(self.linger, self._linger_over, feed)

    def _linger_over(self, feed: _Feed) -> None:
        feed.linger = None
        if not feed.viewers and feed.pump is not None:
            log.info("camera %s: no viewer for %g s, upstream closed", feed.serial, self.linger)
            feed.pump.cancel()

    # --- the upstream -----------------------------------------------------------------

    def _feed(self, serial: str) -> _Feed:
        feed = self._feeds.get(serial)
        if feed is None:
            feed = self._feeds[serial] = _Feed(serial)
        return feed

    def _ensure_pump(self, feed: _Feed) -> None:
        if feed.pump is None or feed.pump.done():
            feed.pump = asyncio.get_running_loop().create_task(
                self._pump(feed), name=f"camera-hub-{feed.serial}"
            )

    async def _pump(self, feed: _Feed) -> None:
        """Read the printer's frames while anyone watches; reopen with backoff on failure."""
        delay = self.backoff
        try:
            while True:
                feed.refused = False
                got_frame = await self._read_once(feed)
                if got_frame:
                    delay = self.backoff
                if feed.refused:
                    delay = self.max_backoff
                if not feed.viewers or self._closed:
                    return  # nobody to reconnect for: the next viewer starts a new pump
                log.info("camera %s: upstream reconnect in %.1f s", feed.serial, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        finally:
            if feed.pump is asyncio.current_task():
                feed.pump = None
            if feed.linger is not None:
                feed.linger.cancel()
                feed.linger = None
            if feed.viewers and not self._closed:
                # A viewer came while this upstream was closing (after the linger):
                # it found a pump not yet done and started none, so start it here.
                self._ensure_pump(feed)

    async def _read_once(self, feed: _Feed) -> bool:
        """One upstream session: open, publish frames until it ends; whether any frame came."""
        source: AsyncFrameSource | None = None
        got = False
        try:
            opened = self._opener(feed.serial)
            source = await opened if inspect.isawaitable(opened) else opened
            feed.upstream_open = True
            feed.upstream_opens += 1
            async for frame in source:
                got = True
                feed.last_error = None
                self._publish(feed, frame)
            feed.last_error = "the camera stream ended"
        except asyncio.CancelledError:
            raise
        except CameraAuthenticationError as exc:
            # Retried at the slowest pace (the code may be fixed at the printer),
            # and said once, not every retry.
            if feed.last_error != str(exc):
                log.warning("camera %s: %s", feed.serial, exc)
            feed.last_error = str(exc)
            feed.refused = True
        except (BambuError, OSError, ValueError) as exc:
            feed.last_error = one_line(exc)
            log.info("camera %s: upstream failed: %s", feed.serial, feed.last_error)
        except Exception as exc:  # a source's bug must not kill every viewer's stream
            feed.last_error = one_line(exc)
            log.warning("camera %s: upstream raised %s", feed.serial, feed.last_error)
        finally:
            feed.upstream_open = False
            if source is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(_close(source))
        return got

    def _publish(self, feed: _Feed, frame: Frame) -> None:
        feed.latest = frame
        feed.latest_at = time.monotonic()
        feed.frames_in += 1
        for viewer in feed.viewers:
            viewer._push(frame)

    # --- what tests, the bench and the API read ----------------------------------------

    def stats(self, serial: str) -> CameraStats:
        """The fan-out of ``serial`` now."""
        feed = self._feeds.get(serial) or _Feed(serial)
        age = time.monotonic() - feed.latest_at if feed.latest is not None else None
        return CameraStats(
            serial=serial,
            viewers=len(feed.viewers),
            upstream_open=feed.upstream_open,
            upstream_opens=feed.upstream_opens,
            frames_in=feed.frames_in,
            dropped=tuple(v.dropped for v in feed.viewers),
            queued=tuple(v.queued for v in feed.viewers),
            last_frame_age=age,
            last_error=feed.last_error,
        )

    async def aclose(self) -> None:
        """Close every viewer and upstream."""
        self._closed = True
        pumps = []
        for feed in self._feeds.values():
            for viewer in list(feed.viewers):
                viewer.close()
            if feed.pump is not None:
                feed.pump.cancel()
                pumps.append(feed.pump)
        if pumps:
            await asyncio.gather(*pumps, return_exceptions=True)


async def _close(source: AsyncFrameSource) -> None:
    await asyncio.wait_for(source.aclose(), 5.0)


# --- HTTP ---------------------------------------------------------------------------------


def mjpeg_response(hub: CameraHub, serial: str) -> Response:
    """A new viewer of ``serial`` as an MJPEG response (503 when the hub is closing)."""
    from fastapi.responses import JSONResponse
    from starlette.responses import StreamingResponse

    try:
        viewer = hub.join(serial)
    except CameraError as exc:  # the server is stopping
        return JSONResponse({"detail": one_line(exc)}, status_code=503)

    async def parts() -> AsyncIterator[bytes]:
        try:
            async for frame in viewer:
                # Header and JPEG go as two chunks: no per-viewer copy of the picture.
                yield _part_header(frame)
                yield frame.jpeg
                yield b"\r\n"
        finally:
            viewer.close()

    return StreamingResponse(
        parts(),
        media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _part_header(frame: Frame) -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {frame.size}\r\n\r\n"
    ).encode("ascii")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Printer cameras</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem; background: #111; color: #eee; }}
h1 {{ font-size: 1.2rem; font-weight: 600; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 1rem; }}
.tile {{ background: #222; border-radius: 6px; padding: .5rem; }}
.tile img {{ width: 100%; aspect-ratio: 16 / 9; object-fit: contain; background: #000;
  display: block; }}
.tile h2 {{ font-size: 1rem; margin: .3rem 0; overflow-wrap: anywhere; }}
.meta {{ font-size: .8rem; color: #aaa; }}
.meta a {{ color: #8cf; }}
</style></head>
<body><h1>Printer cameras</h1>
<div class="grid">
{tiles}
</div></body></html>
"""

_TILE = """<section class="tile" data-serial="{serial}">
<h2>{name}</h2>
<img src="/camera/{path}/stream.mjpg" alt="camera of {name}">
<div class="meta">{model} &middot; {serial} &middot;
<a href="/camera/{path}/snapshot.jpg">snapshot</a></div>
</section>"""


def render_index(printers: Sequence[CameraPrinter]) -> str:
    """The index page: one tile per printer; every string from elsewhere escaped."""
    tiles = "\n".join(
        _TILE.format(
            serial=html.escape(p.serial),
            name=html.escape(p.name or p.serial),
            model=html.escape(p.model or "printer"),
            path=html.escape(quote(p.serial, safe="")),
        )
        for p in printers
    )
    return _PAGE.format(tiles=tiles or "<p>No printers.</p>")


def create_camera_app(
    hub: CameraHub,
    printers: Sequence[CameraPrinter],
    token: str,
    *,
    snapshot_timeout: float = SNAPSHOT_TIMEOUT,
    secure_cookie: bool = False,
) -> FastAPI:
    """The HTTP face of ``hub`` for ``printers``, all routes behind ``token``.

    ``secure_cookie`` marks the cookie Secure (when served behind HTTPS).
    """
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    if not token:
        raise ConfigurationError("the camera server needs a token")
    by_serial = {p.serial: p for p in printers}
    app = FastAPI(title="bambulab camera server", docs_url=None, redoc_url=None, openapi_url=None)

    def printer(serial: str) -> CameraPrinter | None:
        return by_serial.get(serial)

    def unknown() -> JSONResponse:
        # The serial is not echoed: it came from the requester and may be anything.
        return JSONResponse({"detail": "no such printer on this camera server"}, status_code=404)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(render_index(printers), headers={"Cache-Control": "no-store"})

    @app.get("/camera/{serial}/stream.mjpg", response_model=None)
    async def stream(serial: str) -> Response:
        if printer(serial) is None:
            return unknown()
        return mjpeg_response(hub, serial)

    @app.get("/camera/{serial}/snapshot.jpg", response_model=None)
    async def snapshot(serial: str) -> Response:
        if printer(serial) is None:
            return unknown()
        try:
            frame = await hub.snapshot(serial, snapshot_timeout)
        except CameraError as exc:
            return JSONResponse(
                {"detail": f"no camera picture from this printer: {one_line(exc)}"},
                status_code=503,
            )
        return Response(frame.jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/cameras")
    async def cameras() -> JSONResponse:
        listing: list[dict[str, Any]] = []
        for p in printers:
            stats = hub.stats(p.serial)
            listing.append(
                {
                    "serial": p.serial,
                    "name": p.name,
                    "model": p.model,
                    "viewers": stats.viewers,
                    "upstream_open": stats.upstream_open,
                    "frames_in": stats.frames_in,
                    "last_frame_age": (
                        None if stats.last_frame_age is None else round(stats.last_frame_age, 3)
                    ),
                    "last_error": stats.last_error,
                }
            )
        return JSONResponse(listing, headers={"Cache-Control": "no-store"})

    app.add_middleware(
        _TokenGate,
        token=token,
        secure_cookie=secure_cookie,
    )
    return app


class _TokenGate:
    """Pure ASGI middleware: every request needs the token, compared in constant time.

    Not Starlette's ``BaseHTTPMiddleware``: that runs the endpoint behind a
    memory stream whose ``receive`` never reports the client leaving, so an
    MJPEG stream whose viewer has gone would stay in the hub forever.

    The token may come as ``Authorization: Bearer``, ``?token=`` (which also
    sets an HttpOnly, SameSite=Strict cookie; on the index page it redirects
    to ``/`` so the token leaves the address bar) or that cookie.
    """

    def __init__(self, app: Any, token: str, secure_cookie: bool = False) -> None:
        self.app = app
        self._expected = token.encode("utf-8")
        attributes = "; HttpOnly; SameSite=Strict; Path=/" + ("; Secure" if secure_cookie else "")
        self._cookie = f"{COOKIE}={token}{attributes}".encode("latin-1")

    def _check(self, scope: dict[str, Any]) -> tuple[bool, bool]:
        """(allowed, came in the query)."""
        from http.cookies import CookieError, SimpleCookie
        from urllib.parse import parse_qs

        candidates: list[tuple[str, bool]] = []
        query = scope.get("query_string", b"").decode("latin-1")
        for value in parse_qs(query).get("token", [])[:1]:
            candidates.append((value, True))  # first: it decides the cookie and redirect
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                text = value.decode("latin-1")
                if text[:7].lower() == "bearer ":
                    candidates.append((text[7:].strip(), False))
            elif name == b"cookie":
                with contextlib.suppress(CookieError):
                    jar: SimpleCookie = SimpleCookie(value.decode("latin-1"))
                    if COOKIE in jar:
                        candidates.append((jar[COOKIE].value, False))
        for value, from_query in candidates:
            if hmac.compare_digest(value.encode("utf-8", "replace"), self._expected):
                return True, from_query
        return False, False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allowed, from_query = self._check(scope)
        if not allowed:
            body = json.dumps(
                {"detail": "a valid token is needed (Authorization: Bearer, ?token= or cookie)"}
            ).encode()
            await _reply(send, 401, body, b"application/json", [(b"www-authenticate", b"Bearer")])
            return
        if not from_query:
            await self.app(scope, receive, send)
            return
        if scope.get("path") == "/":
            # Out of the address bar and history: the cookie carries it from here on.
            await _reply(send, 303, b"", b"text/plain", [(b"location", b"/"), self._set_cookie])
            return

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self._set_cookie]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    @property
    def _set_cookie(self) -> tuple[bytes, bytes]:
        return (b"set-cookie", self._cookie)


async def _reply(
    send: Any, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --- running it ---------------------------------------------------------------------------


class CameraServer(AppServer):
    """The camera app served by uvicorn on its own thread and event loop.

    The hub lives on that loop; :meth:`call` runs a function there (e.g.
    ``server.call(lambda: server.hub.stats(serial))``) so other threads never
    touch it directly. ``token`` is generated (``secrets.token_urlsafe``) when
    not given; ``url`` has no token, ``login_url`` has it. The kernel send
    buffer per viewer is capped (``send_buffer``): a viewer that stops reading
    fills it after a couple of frames and its queue in the hub then drops the
    oldest, instead of pinning megabytes and seeing pictures seconds old.
    """

    def __init__(
        self,
        opener: Opener,
        printers: Sequence[CameraPrinter],
        *,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        linger: float = DEFAULT_LINGER,
        queue_size: int = DEFAULT_QUEUE,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        snapshot_timeout: float = SNAPSHOT_TIMEOUT,
        send_buffer: int = SEND_BUFFER,
    ) -> None:
        self.printers = list(printers)
        self.token = token or secrets.token_urlsafe(24)
        self.hub = CameraHub(
            opener,
            serials=[p.serial for p in self.printers],
            linger=linger,
            queue_size=queue_size,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        super().__init__(
            create_camera_app(
                self.hub, self.printers, self.token, snapshot_timeout=snapshot_timeout
            ),
            host=host,
            port=port,
            name="bambu-camera-server",
            on_stop=self.hub.aclose,
            send_buffer=send_buffer,
        )

    def __repr__(self) -> str:  # the token stays out of reprs
        return f"CameraServer(url={self.url!r}, printers={len(self.printers)})"

    def start(self, timeout: float = 10.0) -> CameraServer:
        """Listen and serve; returns once requests are accepted."""
        if not is_loopback(self.host):
            log.warning(
                "camera server listening on %s, not loopback: anyone who can reach it "
                "and has the token sees the cameras",
                self.host,
            )
        super().start(timeout)
        return self

    def before_stop(self) -> None:
        # Viewers first: their streams end, so uvicorn need not wait out open responses.
        self.run(self.hub.aclose(), 5.0)

    def stats(self, serial: str) -> CameraStats:
        """:meth:`CameraHub.stats`, from any thread."""
        return self.call(lambda: self.hub.stats(serial))

    def __enter__(self) -> CameraServer:
        return self.start()

    @property
    def login_url(self) -> str:
        """The index URL with ``?token=``: opening it once sets the cookie."""
        return f"{self.url}/?token={quote(self.token, safe='')}"
