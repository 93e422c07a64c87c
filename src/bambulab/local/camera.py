"""The P1/A1 camera on TLS port 6000: :class:`JPEGFrameStream` and its asyncio twin.

What the printers do (PROTOCOL.md §4.1) and how these clients meet it:

* TLS verified exactly as for the printer's MQTT broker and FTPS server
  (:func:`bambulab.mqtt.tls.lan_context`: a CA file, or the certificate
  pinned on first use, and CN = serial); a refused pinned handshake is
  explained by :func:`~bambulab.mqtt.tls.pin_diagnosis`.
* One 80-byte auth packet, then frames (a 16-byte header and a JPEG) cut into
  small TLS records: :class:`~bambulab.protocol.camera.FrameDecoder` takes any
  split and caps the size a header may announce.
* A wrong access code is not answered: the printer closes without a frame.
  The camera's viewer limit looks the same. On the first connection that is
  a :class:`~bambulab.errors.CameraAuthenticationError` at once (never
  retried forever); after frames have come, such a close is a drop, retried,
  and only a run of frameless closes turns into the same error.
* Every read has a deadline: ``timeout`` for connecting, ``stall_timeout``
  for the next frame. A stall or a drop reconnects with bounded, jittered
  backoff (``reconnect=True``), or raises (:class:`CameraStallError`,
  :class:`CameraError`); ``index`` keeps counting across reconnects.

The sync face reads on the caller's thread (whoever iterates owns the
socket); the async face uses asyncio streams and runs the blocking bits (the
first-use pin fetch, the pin diagnosis) in an executor, so the loop never
waits on them. Frames are immutable :class:`~bambulab.models.camera.Frame`
objects. The access code never appears in an error, a log line or a repr.

For the seed library's callers, ``JPEGFrameStream(printer_ip, access_code)``
with ``connect()``, ``get_frame()`` (JPEG bytes), ``stream_frames()`` and
``disconnect()`` still work; :func:`open_camera` picks the JPEG stream or the
RTSPS one (:mod:`bambulab.local.rtsp`) by printer model.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

from ..errors import (
    CameraAuthenticationError,
    CameraError,
    CameraStallError,
    CameraUnavailableError,
    CertificateError,
    ConfigurationError,
    ProtocolError,
    TransportError,
)
from ..models.camera import Frame
from ..models.printer import PrinterModel, detect_model, model_named
from ..mqtt.tls import PinStore, lan_context, pin_diagnosis
from ..protocol.camera import CAMERA_PORT, MAX_FRAME, FrameDecoder, auth_packet


class CameraStream(Protocol):
    """What every camera client offers (JPEG stream or RTSPS): frames, a snapshot, close."""

    def next_frame(self, timeout: float | None = None) -> Frame: ...
    def snapshot(self, timeout: float | None = None) -> Frame: ...
    def frames(self, limit: int | None = None) -> Iterator[Frame]: ...
    def __iter__(self) -> Iterator[Frame]: ...
    def close(self) -> None: ...


class AsyncCameraStream(Protocol):
    """The asyncio face of :class:`CameraStream`."""

    async def next_frame(self, timeout: float | None = None) -> Frame: ...
    async def snapshot(self, timeout: float | None = None) -> Frame: ...
    def frames(self, limit: int | None = None) -> AsyncIterator[Frame]: ...
    def __aiter__(self) -> AsyncIterator[Frame]: ...
    async def aclose(self) -> None: ...


log = logging.getLogger("bambulab.camera")

__all__ = [
    "AsyncJPEGFrameStream",
    "JPEGFrameStream",
    "open_async_camera",
    "open_camera",
]

DEFAULT_TIMEOUT = 10.0  # seconds to connect (TCP + TLS)
# The printers send a frame every 1-2 s; 10 s without one is a stall.
DEFAULT_STALL_TIMEOUT = 10.0
DEFAULT_MAX_RECONNECTS = 5  # consecutive attempts without a frame before giving up
DEFAULT_BACKOFF = 0.5  # seconds before the first reconnect, doubled each time
DEFAULT_MAX_BACKOFF = 10.0
# Frameless closes in a row, after earlier success, that mean the code is refused now.
FRAMELESS_LIMIT = 3
READ_SIZE = 16 * 1024  # the largest TLS record

LIVEVIEW_OFF = (
    "printer {serial}'s LAN liveview is off (rtsp_url is 'disable'): switch it on at the "
    "printer (Settings > Network > LAN Only Liveview) and try again"
)


class _Policy:
    """What a stall, a drop or a failed connect means now: sans-IO, shared by both faces.

    It counts frames (``index`` across reconnects), attempts without a frame
    and frameless closes, and says whether to reconnect and after how long,
    or which error ends the stream.
    """

    def __init__(
        self,
        label: str,
        serial: str,
        *,
        reconnect: bool,
        max_reconnects: int,
        backoff: float,
        max_backoff: float,
    ) -> None:
        self.label = label
        self.serial = serial
        self.reconnect = reconnect
        self.max_reconnects = max_reconnects
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.index = 0  # frames so far, all connections
        self.connects = 0  # connections that got past TLS and the auth packet
        self.failures = 0  # attempts in a row without a frame
        self.frameless = 0  # closes in a row without a frame
        self.conn_frames = 0  # frames on the current connection

    def connected(self) -> None:
        self.connects += 1
        self.conn_frames = 0

    def frame(self, jpeg: bytes) -> Frame:
        self.index += 1
        self.conn_frames += 1
        self.failures = 0
        self.frameless = 0
        return Frame(
            jpeg=jpeg,
            timestamp=time.time(),
            index=self.index,
            monotonic=time.monotonic(),
            serial=self.serial,
        )

    def refused_code(self) -> CameraAuthenticationError:
        return CameraAuthenticationError(
            f"the camera of printer {self.serial} at {self.label} closed the connection "
            "without a frame: the access code was refused, or the camera's connection "
            "limit is reached (check the code on the printer's screen; share one stream "
            "with `bambu camera serve`)",
            serial=self.serial,
        )

    def closed(self) -> float:
        """The connection ended: seconds to wait before reconnecting, or an error (raised)."""
        if self.conn_frames == 0:
            self.frameless += 1
            if self.index == 0 or self.frameless >= FRAMELESS_LIMIT:
                raise self.refused_code()
        self.failures += 1
        return self._after(
            CameraError(
                f"the camera of printer {self.serial} at {self.label} closed the connection",
                serial=self.serial,
            )
        )

    def stalled(self, seconds: float) -> float:
        """No frame for ``seconds``: wait before reconnecting, or CameraStallError (raised)."""
        self.failures += 1
        return self._after(
            CameraStallError(
                f"no frame from the camera of printer {self.serial} at {self.label} "
                f"for {seconds:g} s",
                serial=self.serial,
            )
        )

    def unreachable(self, error: CameraError) -> float:
        """A connect failed: on the first connection at once, later like a drop."""
        if self.connects == 0:
            raise error
        self.failures += 1
        return self._after(error)

    def _after(self, error: CameraError) -> float:
        if not self.reconnect:
            raise error
        if self.failures > self.max_reconnects:
            raise type(error)(
                f"{error} (gave up after {self.max_reconnects} reconnects)", serial=self.serial
            )
        delay: float = min(self.max_backoff, self.backoff * 2.0 ** max(0, self.failures - 1))
        return delay * random.uniform(0.5, 1.0)  # jitter: viewers of one printer spread out


def _check_options(
    host: str, access_code: str, serial: str, timeout: float, stall_timeout: float
) -> str:
    if not host:
        raise ConfigurationError("the printer's address (host) is needed for its camera")
    code = (access_code or "").strip()
    if not code:
        raise ConfigurationError("the LAN access code is needed for the camera")
    if not serial:
        raise ConfigurationError(
            "the printer's serial is needed to verify its camera's certificate (CN = serial)"
        )
    if timeout <= 0 or stall_timeout <= 0:
        raise ConfigurationError("camera timeouts must be positive")
    auth_packet(code)  # a code over 32 bytes is refused here, before any connection
    return code


class _Base:
    """What both faces share: options, labels, the TLS context, repr."""

    def __init__(
        self,
        host: str = "",
        access_code: str = "",
        serial: str = "",
        *,
        printer_ip: str | None = None,
        port: int = CAMERA_PORT,
        timeout: float = DEFAULT_TIMEOUT,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        reconnect: bool = True,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        ca_file: str | os.PathLike[str] | None = None,
        pin_file: str | os.PathLike[str] | None = None,
        insecure: bool = False,
        max_frame: int = MAX_FRAME,
    ) -> None:
        host = host or printer_ip or ""
        self._code = _check_options(host, access_code, serial, timeout, stall_timeout)
        self.host = host
        self.port = port
        self.serial = serial
        self.timeout = timeout
        self.stall_timeout = stall_timeout
        self.max_frame = max_frame
        self._ca_file = ca_file
        self._pin_file = pin_file
        self._insecure = insecure
        self._context: ssl.SSLContext | None = None
        self._closed = False
        self._policy = _Policy(
            self.label,
            serial,
            reconnect=reconnect,
            max_reconnects=max_reconnects,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        self._decoder = FrameDecoder(max_frame)
        self._last = 0.0  # monotonic time of the last frame or connect
        self._ready: list[bytes] = []  # frames a read completed beyond the one returned
        self._init_io(timeout, stall_timeout)

    def _init_io(self, timeout: float, stall_timeout: float) -> None:
        """The face's own connection state (called at the end of ``__init__``)."""
        raise NotImplementedError

    # Seed names: the printer's address and code as attributes.
    @property
    def printer_ip(self) -> str:
        """The printer's address (the seed library's name for ``host``)."""
        return self.host

    @property
    def label(self) -> str:
        """``host:port`` (what errors name)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def frames_received(self) -> int:
        """Frames so far on this stream (the last ``index``)."""
        return self._policy.index

    @property
    def connects(self) -> int:
        """Connections that got as far as sending the auth packet."""
        return self._policy.connects

    def _state(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.label}, serial={self.serial!r}, {self._state()}, "
            f"frames={self._policy.index})"
        )

    def _read_limit(self, deadline: float | None, now: float) -> float | None:
        """When a read started ``now`` must end: at the stall or the caller's deadline.

        ``None`` when the caller's deadline has passed; :class:`_Waited` (drop
        and reconnect) when the stall timeout has.
        """
        stall_at = self._last + self.stall_timeout
        if deadline is not None and deadline <= now and deadline < stall_at:
            return None
        if stall_at <= now:
            raise _Waited(self._policy.stalled(self.stall_timeout))
        return stall_at if deadline is None else min(stall_at, deadline)

    def _ended(self) -> Exception:
        """What a connection that ended means: closed by us, or a drop to reconnect after."""
        if self._closed:
            return CameraError(
                f"the camera stream of printer {self.serial} is closed", serial=self.serial
            )
        self._drop()
        return _Waited(self._policy.closed())

    def _drop(self) -> None:
        raise NotImplementedError

    def _make_context(self) -> ssl.SSLContext:
        """The TLS context (may block: a first-use pin fetches the certificate)."""
        try:
            return lan_context(
                self.serial,
                self.host,
                self.port,
                ca_file=self._ca_file,
                pin_store=PinStore(self._pin_file),
                insecure=self._insecure,
            )
        except TransportError as exc:
            raise self._unreachable_error(exc.__cause__ or exc) from exc

    def _unreachable_error(self, exc: BaseException) -> CameraError:
        where = f"the camera of printer {self.serial} at {self.label}"
        if isinstance(exc, ConnectionRefusedError):
            return CameraUnavailableError(
                f"{where} refused the connection: is the printer on, and is this its address?",
                serial=self.serial,
            )
        if isinstance(exc, TimeoutError):
            return CameraError(
                f"{where} did not answer within {self.timeout:g} s", serial=self.serial
            )
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return CameraError(f"cannot reach {where}: {reason}", serial=self.serial)

    def _certificate_error(self, exc: ssl.SSLCertVerificationError) -> CertificateError:
        return CertificateError(
            f"TLS certificate of printer {self.serial}'s camera at {self.label} refused: "
            f"{exc.verify_message}",
            serial=self.serial,
        )

    def _tls_error(self, exc: BaseException) -> CameraError:
        return CameraError(
            f"TLS handshake with the camera of printer {self.serial} at {self.label} failed: "
            f"{getattr(exc, 'reason', None) or exc.__class__.__name__}",
            serial=self.serial,
        )

    def _protocol_error(self, exc: ProtocolError) -> CameraError:
        return CameraError(
            f"the camera of printer {self.serial} at {self.label} sent a bad stream: {exc}",
            serial=self.serial,
        )


class JPEGFrameStream(_Base):
    """A P1/A1 printer's camera: iterate :class:`~bambulab.models.camera.Frame`\\ s (blocking).

    ``JPEGFrameStream(host, access_code, serial)`` (the seed library's
    ``JPEGFrameStream(printer_ip, access_code)`` plus the serial the
    certificate is checked against); ``port`` (6000), ``ca_file`` /
    ``pin_file`` / ``insecure`` as for LAN MQTT, ``timeout`` (connect),
    ``stall_timeout`` (seconds without a frame), ``reconnect`` with
    ``max_reconnects`` attempts in a row and ``backoff``..``max_backoff``
    seconds between them, ``max_frame`` (the size cap).

    ``for frame in stream``, :meth:`frames`, :meth:`next_frame` and
    :meth:`snapshot` read on the calling thread: one thread reads one stream.
    Connects on first use; ``close()`` or ``with`` ends it.
    """

    def _init_io(self, timeout: float, stall_timeout: float) -> None:
        self._sock: ssl.SSLSocket | None = None
        self._recv_timeout = timeout  # the socket's timeout now
        # How far past its limit a read may end: re-arming the socket's timeout
        # before every 4 KiB record costs more than the rest of the read.
        self._slack = min(0.5, stall_timeout / 10)
        # One TLS record per read (at most 16 KiB): into a buffer kept for the stream.
        self._chunk = bytearray(READ_SIZE)
        self._chunk_view = memoryview(self._chunk)

    def _state(self) -> str:
        if self._closed:
            return "closed"
        return "connected" if self._sock is not None else "not connected"

    # --- connection ------------------------------------------------------------------

    def connect(self) -> JPEGFrameStream:
        """Open TLS and send the auth packet (done by every read when needed)."""
        if self._closed:
            raise CameraError(f"the camera stream of printer {self.serial} is closed")
        if self._sock is not None:
            return self
        if self._context is None:
            self._context = self._make_context()
        ctx = self._context
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise self._unreachable_error(exc) from exc
        try:
            raw.settimeout(self.timeout)
            try:
                sock = ctx.wrap_socket(raw, server_hostname=self.serial)
            except ssl.SSLCertVerificationError as exc:
                diagnose = pin_diagnosis(ctx, self.host, self.port)
                explained = diagnose() if diagnose is not None else None
                raise explained or self._certificate_error(exc) from exc
            except TimeoutError as exc:
                raise self._unreachable_error(exc) from exc
            except ssl.SSLError as exc:
                raise self._tls_error(exc) from exc
            except OSError as exc:
                raise self._unreachable_error(exc) from exc
            # Closed at once? The read that follows sees the EOF and decides.
            with contextlib.suppress(OSError):
                sock.sendall(auth_packet(self._code))
        except BaseException:
            with contextlib.suppress(OSError):
                raw.close()
            raise
        self._sock = sock
        self._recv_timeout = self.timeout
        self._decoder = FrameDecoder(self.max_frame)
        self._last = time.monotonic()
        self._policy.connected()
        log.debug("camera %s: connected to %s", self.serial, self.label)
        return self

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        """Close the connection; the stream cannot be read again. Safe to call twice."""
        self._closed = True
        sock = self._sock
        if sock is not None:
            # Wakes a reader blocked in recv on another thread; it closes the socket.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._drop()

    def disconnect(self) -> None:
        """The seed library's name for :meth:`close`."""
        self.close()

    def __enter__(self) -> JPEGFrameStream:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- frames ----------------------------------------------------------------------

    def next_frame(self, timeout: float | None = None) -> Frame:
        """The next frame; waits at most ``timeout`` seconds in all (CameraStallError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise CameraError(f"the camera stream of printer {self.serial} is closed")
            if self._ready:
                return self._policy.frame(self._ready.pop(0))
            try:
                self._reconnect_or_raise()
                got = self._read_until(deadline)
            except _Waited as waited:
                self._drop()
                self._sleep(waited.delay, deadline)
                continue
            if got:
                return self._policy.frame(got)
            raise CameraStallError(
                f"no frame from the camera of printer {self.serial} at {self.label} "
                f"within {timeout:g} s",
                serial=self.serial,
            )

    def _reconnect_or_raise(self) -> None:
        if self._sock is not None:
            return
        try:
            self.connect()
        except CameraError as exc:
            if self._closed:
                raise
            raise _Waited(self._policy.unreachable(exc)) from exc

    def _sleep(self, delay: float, deadline: float | None) -> None:
        if deadline is not None and time.monotonic() + delay >= deadline:
            raise CameraStallError(
                f"no frame from the camera of printer {self.serial} at {self.label} in time "
                "(reconnecting)",
                serial=self.serial,
            )
        log.info("camera %s: reconnecting in %.2f s", self.serial, delay)
        time.sleep(delay)

    def _read_until(self, deadline: float | None) -> bytes | None:
        """The next JPEG of this connection, or None at ``deadline``; _Waited to reconnect."""
        sock = self._sock
        assert sock is not None
        while True:
            now = time.monotonic()
            limit = self._read_limit(deadline, now)
            if limit is None:
                return None
            # settimeout is a system call: change it only when a recv started now
            # could end more than ``slack`` past the limit, or far before it.
            ends = now + self._recv_timeout
            if ends > limit + self._slack or ends < limit - self._slack:
                self._recv_timeout = max(0.001, limit - now)
                sock.settimeout(self._recv_timeout)
            try:
                count = sock.recv_into(self._chunk)
            except TimeoutError:
                continue
            except ssl.SSLWantReadError:
                continue
            except (OSError, ssl.SSLError):
                count = 0
            if not count:
                raise self._ended()
            try:
                done = self._decoder.feed(self._chunk_view[:count])
            except ProtocolError as exc:
                self._drop()
                raise self._protocol_error(exc) from exc
            if done:
                self._last = time.monotonic()
                self._ready.extend(done[1:])
                return done[0]

    def snapshot(self, timeout: float | None = None) -> Frame:
        """One fresh frame (connecting if needed), within ``timeout`` seconds."""
        return self.next_frame(
            timeout if timeout is not None else self.timeout + self.stall_timeout
        )

    def frames(self, limit: int | None = None) -> Iterator[Frame]:
        """Frames as they come; ``limit`` of them, or until closed or an error."""
        count = 0
        while limit is None or count < limit:
            if self._closed:
                return
            try:
                yield self.next_frame()
            except CameraError:
                if self._closed:
                    return
                raise
            count += 1

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    # Seed names: JPEG bytes instead of Frames.
    def get_frame(self) -> bytes:
        """The next frame's JPEG bytes (the seed library's call)."""
        return self.next_frame().jpeg

    def stream_frames(self) -> Iterator[bytes]:
        """JPEG bytes as they come (the seed library's generator)."""
        for frame in self.frames():
            yield frame.jpeg


class _Waited(Exception):
    """Internal: the connection ended or stalled; reconnect after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class AsyncJPEGFrameStream(_Base):
    """The asyncio face of :class:`JPEGFrameStream` (same arguments): asyncio streams.

    ``async for frame in stream``, :meth:`frames`, :meth:`next_frame`,
    :meth:`snapshot`; ``async with`` or :meth:`aclose`. One task reads one
    stream. The blocking steps (a first-use pin fetch, the pin diagnosis)
    run in the default executor.
    """

    def _init_io(self, timeout: float, stall_timeout: float) -> None:
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def _state(self) -> str:
        if self._closed:
            return "closed"
        return "connected" if self._writer is not None else "not connected"

    async def connect(self) -> AsyncJPEGFrameStream:
        """Open TLS and send the auth packet (done by every read when needed)."""
        if self._closed:
            raise CameraError(f"the camera stream of printer {self.serial} is closed")
        if self._writer is not None:
            return self
        loop = asyncio.get_running_loop()
        if self._context is None:
            self._context = await loop.run_in_executor(None, self._make_context)
        ctx = self._context
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=ctx,
                    server_hostname=self.serial,
                    ssl_handshake_timeout=self.timeout,
                ),
                self.timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            diagnose = pin_diagnosis(ctx, self.host, self.port)
            explained = await loop.run_in_executor(None, diagnose) if diagnose else None
            raise explained or self._certificate_error(exc) from exc
        except ssl.SSLError as exc:
            raise self._tls_error(exc) from exc
        except (OSError, TimeoutError) as exc:
            raise self._unreachable_error(exc) from exc
        try:
            writer.write(auth_packet(self._code))
            await asyncio.wait_for(writer.drain(), self.timeout)
        except (OSError, TimeoutError):
            pass  # closed at once: the read that follows sees the EOF and decides
        self._reader, self._writer = reader, writer
        self._decoder = FrameDecoder(self.max_frame)
        self._last = time.monotonic()
        self._policy.connected()
        log.debug("camera %s: connected to %s", self.serial, self.label)
        return self

    def _drop(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            # abort, not close: a half-read TLS stream has nothing to say goodbye to.
            writer.transport.abort()

    async def aclose(self) -> None:
        """Close the connection; the stream cannot be read again. Safe to call twice."""
        self._closed = True
        self._drop()

    async def close(self) -> None:
        """Same as :meth:`aclose`."""
        await self.aclose()

    async def __aenter__(self) -> AsyncJPEGFrameStream:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def next_frame(self, timeout: float | None = None) -> Frame:
        """The next frame; waits at most ``timeout`` seconds in all (CameraStallError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise CameraError(f"the camera stream of printer {self.serial} is closed")
            if self._ready:
                return self._policy.frame(self._ready.pop(0))
            try:
                await self._reconnect_or_raise()
                got = await self._read_until(deadline)
            except _Waited as waited:
                self._drop()
                await self._sleep(waited.delay, deadline)
                continue
            if got:
                return self._policy.frame(got)
            raise CameraStallError(
                f"no frame from the camera of printer {self.serial} at {self.label} "
                f"within {timeout:g} s",
                serial=self.serial,
            )

    async def _reconnect_or_raise(self) -> None:
        if self._writer is not None:
            return
        try:
            await self.connect()
        except CameraError as exc:
            if self._closed:
                raise
            raise _Waited(self._policy.unreachable(exc)) from exc

    async def _sleep(self, delay: float, deadline: float | None) -> None:
        if deadline is not None and time.monotonic() + delay >= deadline:
            raise CameraStallError(
                f"no frame from the camera of printer {self.serial} at {self.label} in time "
                "(reconnecting)",
                serial=self.serial,
            )
        log.info("camera %s: reconnecting in %.2f s", self.serial, delay)
        await asyncio.sleep(delay)

    async def _read_until(self, deadline: float | None) -> bytes | None:
        reader = self._reader
        assert reader is not None
        while True:
            now = time.monotonic()
            limit = self._read_limit(deadline, now)
            if limit is None:
                return None
            try:
                # One timer for the whole frame (about ten reads), not one per read.
                async with asyncio.timeout(max(0.001, limit - now)):
                    while True:
                        data = await reader.read(READ_SIZE)
                        if not data:
                            break
                        done = self._decoder.feed(data)
                        if done:
                            self._last = time.monotonic()
                            self._ready.extend(done[1:])
                            return done[0]
            except TimeoutError:
                continue
            except ProtocolError as exc:
                self._drop()
                raise self._protocol_error(exc) from exc
            except (OSError, ssl.SSLError):
                pass  # a reset: the same as a close
            raise self._ended()

    async def snapshot(self, timeout: float | None = None) -> Frame:
        """One fresh frame (connecting if needed), within ``timeout`` seconds."""
        return await self.next_frame(
            timeout if timeout is not None else self.timeout + self.stall_timeout
        )

    async def frames(self, limit: int | None = None) -> AsyncIterator[Frame]:
        """Frames as they come; ``limit`` of them, or until closed or an error."""
        count = 0
        while limit is None or count < limit:
            if self._closed:
                return
            try:
                frame = await self.next_frame()
            except CameraError:
                if self._closed:
                    return
                raise
            yield frame
            count += 1

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self.frames()


# --- the factory --------------------------------------------------------------------


def _camera_model(model: str | PrinterModel | None, serial: str) -> PrinterModel:
    if isinstance(model, PrinterModel):
        return model
    if model:
        found = model_named(model)
        if found is None:
            raise ConfigurationError(f"unknown printer model {model!r}")
        return found
    return detect_model(serial)


def _rtsps(model: PrinterModel, rtsp_url: str | None, serial: str) -> bool:
    if rtsp_url is not None and rtsp_url.strip().lower() == "disable":
        raise CameraUnavailableError(LIVEVIEW_OFF.format(serial=serial), serial=serial)
    if rtsp_url:
        return True
    return model.known and model.camera == "rtsps"


def _rtsp_module() -> Any:
    """:mod:`bambulab.local.rtsp`, imported only when an RTSPS camera is opened (PyAV)."""
    return importlib.import_module("bambulab.local.rtsp")


def open_camera(
    host: str,
    access_code: str,
    serial: str,
    *,
    model: str | PrinterModel | None = None,
    rtsp_url: str | None = None,
    **options: Any,
) -> CameraStream:
    """The camera of a printer: the port-6000 JPEG stream (P1/A1) or RTSPS (X1/P2S/H2).

    ``model`` is a name or code (``"P1S"``, ``"BL-P001"``) or a
    :class:`~bambulab.models.printer.PrinterModel`; without it the serial's
    prefix decides. ``rtsp_url`` is the report's ``ipcam.rtsp_url``: a URL
    means RTSPS, ``"disable"`` means LAN liveview is off
    (:class:`CameraUnavailableError`). ``options`` go to the stream.
    """
    chosen = _camera_model(model, serial)
    if _rtsps(chosen, rtsp_url, serial):
        rtsp = _rtsp_module()
        stream: CameraStream = rtsp.RTSPStream(rtsp_url or host, access_code, serial, **options)
        return stream
    return JPEGFrameStream(host, access_code, serial, **options)


def open_async_camera(
    host: str,
    access_code: str,
    serial: str,
    *,
    model: str | PrinterModel | None = None,
    rtsp_url: str | None = None,
    **options: Any,
) -> AsyncCameraStream:
    """The asyncio face of :func:`open_camera`."""
    chosen = _camera_model(model, serial)
    if _rtsps(chosen, rtsp_url, serial):
        rtsp = _rtsp_module()
        stream: AsyncCameraStream = rtsp.AsyncRTSPStream(
            rtsp_url or host, access_code, serial, **options
        )
        return stream
    return AsyncJPEGFrameStream(host, access_code, serial, **options)
