"""Running the simulated cloud: :class:`CloudSimulator`.

:class:`CloudSimulator` binds a loopback socket itself (so the port is known
before anything else happens, even with port 0), hands it to uvicorn in a
background thread and returns once the server accepts connections. Tests and
the demo use it as a context manager; :class:`bambulab.sim.live.Simulator`
builds the whole simulator on it, and :mod:`bambulab.sim.command` is the
``bambu sim`` command line.

The simulator listens on loopback only: it hands out tokens for well-known
demo passwords, and nothing else on the network should be able to use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import shlex
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

import uvicorn

from .cloud import create_app
from .config import ConfigError, SimConfig, validate
from .records import Account
from .world import World

log = logging.getLogger("bambulab.sim")

START_TIMEOUT = 10.0


class _Server(uvicorn.Server):
    """uvicorn's server, woken at once by :meth:`request_exit`.

    The stock main loop polls ``should_exit`` every 0.1 s; waiting on an event
    instead makes ``stop()`` that much faster, which adds up over a test suite
    that starts a simulator per test. If a future uvicorn stops calling
    ``main_loop``, ``should_exit`` still stops it, only less promptly.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        counter = 0
        # on_tick refreshes the Date header every tenth call and reports should_exit.
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    def request_exit(self) -> None:
        """Ask the server to stop (from any thread)."""
        self.should_exit = True
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                self._loop.call_soon_threadsafe(self._wake.set)


class CloudSimulator:
    """The simulated cloud on a loopback port, served from a background thread."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        validate(self.config)
        host = resolve_loopback(self.config.host)
        if host is None:
            raise ConfigError(f"the simulator only listens on loopback, not {self.config.host!r}")
        self._host = host
        self.world = World(self.config)
        self.app = create_app(self.world)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._port = 0
        self._failure: BaseException | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> CloudSimulator:
        """Listen and serve; returns once requests are accepted."""
        if self._thread is not None:
            raise RuntimeError("the simulator is already running")
        sock = _listen(self._host, self.config.port)
        self._socket = sock
        self._port = sock.getsockname()[1]
        server = _Server(
            uvicorn.Config(
                self.app,
                log_config=None,  # leave logging to the application
                access_log=self.config.access_log,
                lifespan="off",
                loop="asyncio",
                http="h11",
                timeout_graceful_shutdown=1,
            )
        )
        self._server = server
        self._failure = None
        self._thread = threading.Thread(
            target=self._serve, args=(server, sock), name="bambu-sim-cloud", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                failure = self._failure
                self.stop()
                raise RuntimeError("the cloud simulator did not start") from failure
            time.sleep(0.002)
        log.info(
            "cloud simulator on %s: demo account %s, %d devices (%d bindable)",
            self.url,
            self.world.demo_account.login,
            len(self.world.devices),
            sum(1 for d in self.world.devices.values() if d.owner is None),
        )
        return self

    def _serve(self, server: _Server, sock: socket.socket) -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to start() / logged; never silently lost
            self._failure = exc
            log.error("cloud simulator stopped unexpectedly: %s", exc)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and release the port (safe to call twice)."""
        if self._server is not None:
            self._server.request_exit()
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
        self.world.close()

    # --- the event loop, for other threads ----------------------------------------------

    def call_soon(self, function: Callable[[], object]) -> bool:
        """Run ``function`` on the server's event loop (the world's thread) soon; never waits.

        False when the server is not running (nothing is run).
        """
        loop = self._server._loop if self._server is not None else None
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(function)
        except RuntimeError:  # closed meanwhile
            return False
        return True

    def __enter__(self) -> CloudSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what tests and the demo use -----------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (0 before :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the API, e.g. ``http://127.0.0.1:8080``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def demo_account(self) -> Account:
        """The demo account (``.email``, ``.password``, ``.uid``, ``.phone``)."""
        return self.world.demo_account

    def issue_token(self, login: str) -> str:
        """A valid token for the account with this email or phone number."""
        account = self.world.find_account(login)
        if account is None:
            raise KeyError(f"no simulated account {login!r}")
        return self.world.issue_token(account)

    def advance_clock(self, seconds: float) -> None:
        """Move simulated time forward (codes, tokens, URLs, rate-limit windows)."""
        self.world.clock.advance(seconds)

    def export_lines(self) -> list[str]:
        """Shell lines pointing a client at this simulator as the demo account."""
        demo = self.demo_account
        values = (
            ("BAMBU_API_URL", self.url),
            ("BAMBU_TOKEN", self.world.issue_token(demo)),
            ("BAMBU_SIM_EMAIL", demo.login),
            ("BAMBU_SIM_PASSWORD", demo.password),
        )
        return [f"export {name}={shlex.quote(value)}" for name, value in values]


def resolve_loopback(host: str) -> str | None:
    """The loopback address to bind for ``host``, or None when it is not loopback."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return None
    return str(address) if address.is_loopback else None


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto is IPPROTO_TCP, and without it every answer waits ~40 ms for a
    # delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # Lets a restarted simulator reuse its port at once (TIME_WAIT), as uvicorn does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
