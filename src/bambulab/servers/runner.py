"""Run an ASGI app with uvicorn on its own thread and event loop.

Every server of the package (camera fan-out, proxy, compatibility API, live
API) is started the same way by the CLI, the simulator, the tests and the
benchmarks: :class:`AppServer` binds the socket first (so ``port=0`` gives a
free port the caller can read at once), serves on a daemon thread, and
:meth:`AppServer.call` runs a function on that thread's loop, where the
app's state lives, so other threads never touch it.

uvicorn's access log is always off: its lines carry the query string, where
a client may have put a token. The servers write their own audit line (see
:mod:`bambulab.servers.common`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigurationError

if TYPE_CHECKING:
    import uvicorn

__all__ = ["AppServer", "is_loopback", "listen", "one_line"]

log = logging.getLogger("bambulab.servers")

T = TypeVar("T")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (one clear error if it cannot be)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message's first line, else its type's name."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _quiet_protocol(base: type[Any], send_buffer: int) -> type[asyncio.Protocol]:
    """``base`` (uvicorn's h11 protocol) without the access log, the send buffer capped."""

    class Protocol(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # uvicorn turns its access log on whenever "uvicorn.access" has a handler
            # anywhere up the tree (any application's logging setup); its lines carry
            # the query string. Never for these servers.
            self.access_log = False

        def connection_made(self, transport: asyncio.Transport) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None and send_buffer > 0:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
            super().connection_made(transport)

    return Protocol


class AppServer:
    """An ASGI app served by uvicorn on its own thread and loop.

    ``on_start``/``on_stop``: coroutines run on the server's loop before it
    accepts requests and after it stops (open and close what the app holds:
    MQTT connections, upstream clients). ``send_buffer``: cap of the kernel
    send buffer per connection (0: the system's); a streaming server caps it
    so a client that stops reading fills it quickly and is dropped frames
    rather than pinning megabytes.
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "bambu-server",
        on_start: Callable[[], Awaitable[None]] | None = None,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        send_buffer: int = 0,
    ) -> None:
        self.app = app
        self.host = host
        self.name = name
        self._port = port
        self._on_start = on_start
        self._on_stop = on_stop
        self.send_buffer = send_buffer
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: BaseException | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"

    def start(self, timeout: float = 15.0) -> AppServer:
        """Listen and serve; returns once requests are accepted (raises if it cannot)."""
        import uvicorn
        from uvicorn.protocols.http.h11_impl import H11Protocol

        if self._thread is not None:
            raise RuntimeError(f"{self.name} is already running")
        sock = listen(self.host, self._port)
        self._socket = sock
        self._port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_config=None,
                access_log=False,
                lifespan="off",
                loop="asyncio",
                http=_quiet_protocol(H11Protocol, self.send_buffer),
                timeout_graceful_shutdown=1,
            )
        )
        self._server = server
        self._thread = threading.Thread(
            target=self._serve, args=(server, sock), name=self.name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                failure = self._failure
                self.stop()
                if isinstance(failure, ConfigurationError):
                    raise failure
                detail = f": {one_line(failure)}" if failure is not None else ""
                raise RuntimeError(f"{self.name} did not start{detail}") from failure
            time.sleep(0.005)
        return self

    def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            try:
                if self._on_start is not None:
                    await self._on_start()
                await server.serve(sockets=[sock])
            finally:
                if self._on_stop is not None:
                    await self._on_stop()

        try:
            asyncio.run(run())
        except BaseException as exc:  # reported to start(); never silently lost
            self._failure = exc
            log.error("%s stopped unexpectedly: %s", self.name, one_line(exc))

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The server's event loop (while it runs)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError(f"{self.name} is not running")
        return loop

    def call(self, function: Callable[[], T], timeout: float = 5.0) -> T:
        """Run ``function`` on the server's loop and return its result."""

        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def run(self, coroutine: Awaitable[T], timeout: float = 10.0) -> T:
        """Run a coroutine on the server's loop and return its result."""

        async def run() -> T:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def before_stop(self) -> None:
        """Hook for subclasses: end what keeps responses open (streams) before uvicorn stops."""

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and release the port (safe to call twice)."""
        loop = self._loop
        if loop is not None and not loop.is_closed() and self._thread is not None:
            with contextlib.suppress(Exception):
                self.before_stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None
        self._socket = None

    def serve_forever(self) -> None:
        """Block until the server stops (Ctrl-C stops it)."""
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the requested one before :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"
