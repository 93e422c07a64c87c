"""The simulated printers' cameras: the P1/A1 JPEG stream on TLS (PROTOCOL.md §4.1).

One :class:`CameraHost` serves every simulated camera: one thread runs one
asyncio loop with one listener per printer, bound to ``127.0.0.1`` (a real
printer listens on 6000; fixed ports can be asked for). What a client meets
is what the printers do:

* TLS from the first byte with the printer's own LAN certificate (CN =
  serial, from the simulator CA: the one its MQTT broker and FTPS server
  present), so clients verify exactly as for LAN MQTT;
  :meth:`CameraHost.set_certificate` swaps it for the wrong-certificate fault
  (new connections get the new one);
* an 80-byte auth packet within 5 s: user ``bblp`` and the printer's access
  code *now* (read through a callable). Anything else, or a malformed packet,
  and the connection is closed without a byte, as the printer does;
* at most ``max_clients`` viewers at once (2, like the printers): the next
  one is closed right after its auth packet; and at most 16 connections
  open at all, authenticated or not;
* then frames every ``interval`` seconds (1.0 by default, the printers'
  cadence; tests and benchmarks ask for more), each the 16-byte header and a
  1280x720 JPEG (:mod:`.camera_frames`), the header in a TLS record of its
  own, the JPEG in TLS records of at most
  4 KiB. A viewer that does not read is cut once its backlog passes a bound,
  so a stuck client never makes the simulator hold unbounded memory.

Pictures are rendered only while someone watches (or asks :meth:`frame`), at
most once per interval per printer, and off the loop: the printer's state is
read on the printer host's thread and drawn on a small render pool, so the
loop that owns the sockets never waits on either.

Faults: a stall (connections stay open, no frames), cutting every connection
now, not listening (connection refused; a printer that is off), and the
wrong certificate. Each is applied on the camera thread.

Other camera kinds slot in as another :class:`CameraEndpoint` (the RTSPS
server of the X1/P2/H2 families registers its endpoints with :meth:`add`);
:meth:`CameraHost.frame` / :meth:`CameraHost.latest` give them the same
pictures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..errors import ProtocolError
from ..protocol.camera import (
    AUTH_SIZE,
    CAMERA_PORT,
    HEADER_SIZE,
    frame_header,
    parse_auth_packet,
)
from .brokers import LAN_USER, LOOPBACK, Credential, close_loop
from .camera_frames import CameraView, render_frame
from .certs import CertFiles

if TYPE_CHECKING:
    from .printer import SimPrinter

log = logging.getLogger("bambulab.sim.camera")

T = TypeVar("T")

__all__ = [
    "CAMERA_PORT",
    "CameraEndpoint",
    "CameraHost",
    "JpegEndpoint",
    "camera_view",
]

DEFAULT_INTERVAL = 1.0  # seconds between frames, as the printers send them
DEFAULT_MAX_CLIENTS = 2  # viewers a printer serves at once
AUTH_TIMEOUT = 5.0  # seconds for the TLS handshake and again for the auth packet
RECORD_SIZE = 4096  # plaintext bytes per TLS record, as the printers write them
# Bytes a viewer may leave unread before it is cut: a few frames' worth.
MAX_BACKLOG = 2 * 1024 * 1024
# Connections (authenticated or not yet) one printer's camera holds open: a
# cap against a client that opens sockets and never sends its packet.
MAX_OPEN = 16
# The kernel's send buffer per viewer, fixed instead of autotuned (up to 4 MiB
# on Linux): a small device's, and it bounds what a stuck viewer holds there too.
SEND_BUFFER = 256 * 1024


def camera_view(printer: SimPrinter) -> CameraView:
    """What ``printer``'s camera shows now (printer host thread: it reads the state).

    Built from the same report body the printer publishes, so the picture
    agrees with the numbers a client reads over MQTT.
    """
    from .printer import report

    body = report.full_body(printer.state)
    chamber = body.get("chamber_temper")
    return CameraView(
        serial=printer.serial,
        name=printer.name,
        model=printer.profile.product,
        state=str(body.get("gcode_state", "")),
        job=str(body.get("subtask_name", "")),
        layer=int(body.get("layer_num", 0)),
        total_layers=int(body.get("total_layer_num", 0)),
        percent=int(body.get("mc_percent", 0)),
        remaining_minutes=int(body.get("mc_remaining_time", 0)),
        nozzle=float(body.get("nozzle_temper", 0.0)),
        nozzle_target=float(body.get("nozzle_target_temper", 0.0)),
        bed=float(body.get("bed_temper", 0.0)),
        bed_target=float(body.get("bed_target_temper", 0.0)),
        chamber=float(chamber) if printer.profile.chamber_sensor and chamber is not None else None,
        wall_time=time.time(),
    )


def server_context(cert: CertFiles) -> ssl.SSLContext:
    """A TLS server context presenting ``cert`` (TLS 1.2 or 1.3)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    return context


class _Frames:
    """One printer's latest picture, rendered at most once per interval (camera loop only)."""

    def __init__(self, serial: str) -> None:
        self.serial = serial
        self.jpeg: bytes | None = None
        self.taken = -1e18  # loop time of the last render
        self.lock = asyncio.Lock()


class CameraEndpoint:
    """One printer's camera service: certificate, code, port, listener, faults, counters.

    A kind of camera subclasses it and implements :meth:`listen`,
    :meth:`unlisten` and :meth:`drop`, all called on the camera thread.
    Counters and the stall are read and written on the camera thread only.
    """

    kind: ClassVar[str] = ""

    def __init__(
        self,
        serial: str,
        access_code: Callable[[], str],
        cert: CertFiles,
        *,
        port: int = 0,
    ) -> None:
        self.serial = serial
        self.access_code = access_code
        self.cert = cert
        self.port = port
        self.listening = True
        self.stall_until = 0.0  # time.monotonic() until which no frame is sent
        self.total = 0  # viewers admitted since the start
        self.host: CameraHost | None = None
        self._context: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        """The TLS context, made on first use (a big fleet starts without making any)."""
        if self._context is None:
            self._context = server_context(self.cert)
        return self._context

    def set_certificate(self, cert: CertFiles) -> None:
        """Present ``cert`` to the next connections (the open ones keep theirs).

        The listener keeps its context: loading the new pair into it changes
        what the next handshakes present, without listening again.
        """
        self.cert = cert
        if self._context is not None:
            self._context.load_cert_chain(str(cert.cert_file), str(cert.key_file))

    def stalled(self) -> bool:
        """Whether the stall fault holds frames back now."""
        return time.monotonic() < self.stall_until

    def authorised(self, user: str, code: str) -> bool:
        """``bblp`` and the printer's current access code (constant time)."""
        return Credential(LAN_USER, self.access_code()).matches(user, code)

    @property
    def connections(self) -> int:
        """Viewers connected and authenticated now."""
        raise NotImplementedError

    async def listen(self) -> None:
        """Start listening (on ``self.port``; 0 picks one and stores it)."""
        raise NotImplementedError

    def unlisten(self) -> None:
        """Stop listening; open connections are left alone."""
        raise NotImplementedError

    def drop(self) -> int:
        """Cut every connection now; returns how many there were."""
        raise NotImplementedError

    async def close(self) -> None:
        """Stop listening and cut every connection (the host is stopping)."""
        self.unlisten()
        self.drop()


class _Viewer:
    """One authenticated connection of the JPEG stream (camera thread only)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def backlog(self) -> int:
        """Bytes written and not yet taken by the kernel: TLS's own buffer and the TCP one's."""
        transport = self.writer.transport
        assert isinstance(transport, asyncio.WriteTransport)
        size = transport.get_write_buffer_size()
        # asyncio's TLS transport counts what waits for encryption; the TCP
        # transport under it holds the encrypted bytes the kernel refused.
        protocol = getattr(transport, "_ssl_protocol", None)
        raw = getattr(protocol, "_transport", None)
        if isinstance(raw, asyncio.WriteTransport):
            size += raw.get_write_buffer_size()
        return size

    def send(self, data: bytes) -> None:
        """One frame: its 16-byte header in a TLS record of its own, the JPEG in 4 KiB records.

        The printers deliver the header by itself (clients such as pybambu's
        chamber image thread and bambulabs_api take a 16-byte read as the
        header and drop the connection on any other first read).
        """
        transport = self.writer.transport
        assert isinstance(transport, asyncio.WriteTransport)
        view = memoryview(data)
        body = view[HEADER_SIZE:]
        records = [body[i : i + RECORD_SIZE] for i in range(0, len(body), RECORD_SIZE)]
        transport.writelines([view[:HEADER_SIZE], *records])

    def abort(self) -> None:
        self.writer.transport.abort()


class JpegEndpoint(CameraEndpoint):
    """The P1/A1 camera: TLS, an auth packet, then JPEG frames (PROTOCOL.md §4.1)."""

    kind = "jpeg"

    def __init__(
        self,
        serial: str,
        access_code: Callable[[], str],
        cert: CertFiles,
        *,
        port: int = 0,
    ) -> None:
        super().__init__(serial, access_code, cert, port=port)
        self.viewers: set[_Viewer] = set()
        self._open: set[asyncio.StreamWriter] = set()  # every connection, before auth too
        self._server: asyncio.Server | None = None
        self._pump: asyncio.Task[None] | None = None

    @property
    def connections(self) -> int:
        return len(self.viewers)

    @property
    def open_connections(self) -> int:
        """Connections open now, authenticated or not (camera thread)."""
        return len(self._open)

    async def listen(self) -> None:
        if self._server is not None:
            return
        host = self.host
        assert host is not None
        # TLS by the listener itself: a client's hello may arrive with the
        # connection, before any handler could start TLS on it.
        server = await asyncio.start_server(
            self._serve,
            LOOPBACK,
            self.port,
            reuse_address=True,
            ssl=self.context(),
            ssl_handshake_timeout=host.auth_timeout,
        )
        self._server = server
        self.port = int(server.sockets[0].getsockname()[1])

    def unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def drop(self) -> int:
        connections = list(self._open)
        for writer in connections:
            writer.transport.abort()
        self._open.clear()
        self.viewers.clear()
        return len(connections)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host = self.host
        assert host is not None
        if len(self._open) >= MAX_OPEN:
            log.info("camera %s: refused a connection over %d open ones", self.serial, MAX_OPEN)
            writer.close()
            return
        self._open.add(writer)
        viewer: _Viewer | None = None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        try:
            packet = await asyncio.wait_for(reader.readexactly(AUTH_SIZE), host.auth_timeout)
            user, code = parse_auth_packet(packet)
            if not self.authorised(user, code):
                log.info("camera %s: refused a wrong access code", self.serial)
                return
            if len(self.viewers) >= host.max_clients:
                log.info("camera %s: refused a viewer over the limit", self.serial)
                return
            if writer not in self._open:
                return  # cut by a fault while authenticating
            viewer = _Viewer(writer)
            self.viewers.add(viewer)
            self.total += 1
            self._start_pump()
            # Nothing more is expected from the client; read (and drop) until it goes.
            while await reader.read(RECORD_SIZE):
                pass
        except (
            OSError,
            EOFError,
            TimeoutError,
            ssl.SSLError,
            ProtocolError,
            asyncio.IncompleteReadError,
        ):
            pass
        finally:
            if viewer is not None:
                self.viewers.discard(viewer)
            if writer in self._open:
                self._open.discard(writer)
                writer.close()

    async def close(self) -> None:
        await super().close()
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    def _start_pump(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run_pump())

    async def _run_pump(self) -> None:
        """Send a frame to every viewer each interval while there are viewers."""
        host = self.host
        assert host is not None
        loop = asyncio.get_running_loop()
        while self.viewers:
            started = loop.time()
            if not self.stalled():
                try:
                    jpeg = await host.latest(self.serial)
                except Exception:  # a printer host that is stopping: try again next time
                    log.debug("camera %s: no picture", self.serial, exc_info=True)
                else:
                    self._broadcast(frame_header(len(jpeg)) + jpeg, host.max_backlog)
            await asyncio.sleep(max(0.0, host.interval - (loop.time() - started)))

    def _broadcast(self, data: bytes, max_backlog: int) -> None:
        for viewer in list(self.viewers):
            if viewer.backlog() > max_backlog:
                log.info("camera %s: cut a viewer that stopped reading", self.serial)
                self.viewers.discard(viewer)
                self._open.discard(viewer.writer)
                viewer.abort()
                continue
            viewer.send(data)


class CameraHost:
    """Every simulated printer's camera, on one thread and one asyncio loop.

    ``view(serial)`` returns what a printer's camera shows; it is called on a
    small render pool (it may block on the printer host's thread), never on
    the loop. ``interval`` is the time between frames, ``max_clients`` the
    viewers a printer serves at once, ``max_backlog`` the unread bytes after
    which a viewer is cut.
    """

    def __init__(
        self,
        view: Callable[[str], CameraView],
        *,
        interval: float = DEFAULT_INTERVAL,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        auth_timeout: float = AUTH_TIMEOUT,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        if interval <= 0:
            raise ValueError("the camera interval must be positive")
        if max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        self.view = view
        self.interval = interval
        self.max_clients = max_clients
        self.auth_timeout = auth_timeout
        self.max_backlog = max_backlog
        self.endpoints: dict[str, CameraEndpoint] = {}
        self._frames: dict[str, _Frames] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # --- set-up

    def add(self, endpoint: CameraEndpoint) -> CameraEndpoint:
        """Register a printer's camera endpoint (any kind; before :meth:`start`)."""
        if self._thread is not None:
            raise RuntimeError("add cameras before starting the camera host")
        endpoint.host = self
        self.endpoints[endpoint.serial] = endpoint
        return endpoint

    def add_jpeg(
        self, serial: str, access_code: Callable[[], str], cert: CertFiles, *, port: int = 0
    ) -> JpegEndpoint:
        """Register a P1/A1 printer's JPEG stream."""
        endpoint = JpegEndpoint(serial, access_code, cert, port=port)
        self.add(endpoint)
        return endpoint

    def start(self) -> None:
        """Start the thread and listen for every camera; returns once all listen."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bambu-sim-camera-draw")
        self._thread = threading.Thread(target=loop.run_forever, name="bambu-sim-camera")
        self._thread.daemon = True
        self._thread.start()
        try:
            self.run(self._listen_all())
        except BaseException:
            self.stop()
            raise

    async def _listen_all(self) -> None:
        for endpoint in self.endpoints.values():
            if endpoint.listening:
                await endpoint.listen()

    def stop(self) -> None:
        """Close every listener and connection and end the thread (safe twice)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            with contextlib.suppress(Exception):
                self.run(self._close_all(), timeout=5.0)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5.0)
            if not thread.is_alive():
                close_loop(loop)
        self._loop = None
        self._thread = None
        if self._pool is not None:
            # Wait for a picture being drawn: it may be reading a printer,
            # whose host stops next.
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def _close_all(self) -> None:
        for endpoint in self.endpoints.values():
            await endpoint.close()
        # Connection handlers end by themselves once their sockets are cut
        # (asyncio reports a cancelled one as an error); cancel only stragglers.
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coroutine`` on the camera loop from another thread; its result."""
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise RuntimeError("the camera host is not running")
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("CameraHost.run called on the camera thread (await instead)")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    def call(self, function: Callable[[], T], timeout: float = 10.0) -> T:
        """``function()`` on the camera thread; its result."""

        async def apply() -> T:
            return function()

        return self.run(apply(), timeout)

    # --- pictures

    async def latest(self, serial: str) -> bytes:
        """The printer's current JPEG (camera loop): rendered if older than the interval."""
        frames = self._frames.get(serial)
        if frames is None:
            if serial not in self.endpoints:
                raise KeyError(f"no simulated camera {serial!r}")
            frames = self._frames[serial] = _Frames(serial)
        loop = asyncio.get_running_loop()
        async with frames.lock:
            # Slightly early counts as fresh: a pump ticking every interval
            # must not miss a render because of timer jitter.
            if frames.jpeg is not None and loop.time() - frames.taken < self.interval * 0.9:
                return frames.jpeg
            pool = self._pool
            view = await loop.run_in_executor(pool, self.view, serial)
            jpeg = await loop.run_in_executor(pool, render_frame, view)
            frames.jpeg, frames.taken = jpeg, loop.time()
            return jpeg

    def frame(self, serial: str, timeout: float = 10.0) -> bytes:
        """The printer's current JPEG from any other thread (for the RTSPS server, tests)."""
        return self.run(self.latest(serial), timeout)

    # --- per printer, from any thread

    def _endpoint(self, serial: str) -> CameraEndpoint:
        endpoint = self.endpoints.get(serial)
        if endpoint is None:
            raise KeyError(f"no simulated camera {serial!r}")
        return endpoint

    def address(self, serial: str) -> tuple[str, int]:
        """``(host, port)`` of a printer's camera (the port is kept while it is off)."""
        return LOOPBACK, self._endpoint(serial).port

    def set_listening(self, serial: str, listening: bool) -> None:
        """Listen (on the same port as before) or stop, cutting every connection."""
        endpoint = self._endpoint(serial)

        async def apply() -> None:
            endpoint.listening = listening
            if listening:
                await endpoint.listen()
            else:
                endpoint.unlisten()
                endpoint.drop()

        self.run(apply())

    def set_certificate(self, serial: str, cert: CertFiles) -> None:
        """Present ``cert`` to new connections (the open ones keep theirs)."""
        endpoint = self._endpoint(serial)
        self.call(lambda: endpoint.set_certificate(cert))

    def drop_connections(self, serial: str) -> int:
        """Cut every connection of a printer's camera now; it keeps listening."""
        endpoint = self._endpoint(serial)
        return self.call(endpoint.drop)

    def stall(self, serial: str, seconds: float) -> None:
        """Send no frames for ``seconds`` (connections stay open); 0 ends a stall."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        endpoint = self._endpoint(serial)

        def apply() -> None:
            endpoint.stall_until = time.monotonic() + seconds if seconds else 0.0

        self.call(apply)

    def clear_faults(self) -> None:
        """End every stall (listening follows the printers' power, not this)."""
        for serial in self.endpoints:
            self.stall(serial, 0.0)

    def connections(self, serial: str) -> int:
        """Viewers connected and authenticated now."""
        endpoint = self._endpoint(serial)
        return self.call(lambda: endpoint.connections)

    def total_connections(self, serial: str) -> int:
        """Viewers admitted (past the auth packet and the limit) since the start."""
        endpoint = self._endpoint(serial)
        return self.call(lambda: endpoint.total)
