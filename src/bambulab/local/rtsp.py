"""The X1/P2S/H2 printers' camera over RTSPS (port 322): :class:`RTSPStream` and its async twin.

The printers serve ``rtsps://<ip>:322/streaming/live/1`` with user ``bblp``
and the LAN access code as password (PROTOCOL.md §4.2); the ``ipcam.rtsp_url``
field of a report carries the URL, or ``"disable"`` when LAN liveview is off.
The stream is decoded by FFmpeg through PyAV (``pip install
'bambulab[camera]'``; ``av`` is imported only when a stream starts), over
TCP (``rtsp_transport=tcp``), with deadlines for opening and for every read.
Each decoded picture is handed out as a :class:`~bambulab.models.camera.Frame`
holding a JPEG: an MJPEG stream's own JPEG as it came, anything else (the
H.264 of real printers) re-encoded with FFmpeg's MJPEG encoder.

TLS: FFmpeg's TLS layer (gnutls in PyAV's wheels) does not verify the
printer's certificate, and the RTSP demuxer passes no TLS options down to
it. So before FFmpeg dials, this client makes one TLS handshake of its own
and checks the certificate exactly as the MQTT and FTPS clients do
(:func:`bambulab.mqtt.tls.lan_context`: a CA file or the certificate pinned
on first use, and CN = the printer's serial). That proves who listens at
the address at that moment; FFmpeg's own connection a moment later is not
verified (someone able to swap the server between the two handshakes is
not detected). Without ``serial`` nothing can be checked: a warning says so.
``insecure=True`` skips the check, with a warning.

Threads: one worker thread per stream owns the FFmpeg container and does all
network I/O and decoding; frames reach the caller through a small mailbox
(the oldest frame is dropped when the caller falls behind). The async face
never blocks its loop: the worker wakes it with ``call_soon_threadsafe``.
After the stream has given frames, a broken connection is reopened when
``reconnect`` is set; a refused access code (401) never is. The access code
never appears in an error, a log line or a ``repr`` (URLs are shown with
:func:`~bambulab.protocol.camera.without_credentials`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from ..errors import (
    BambuError,
    CameraAuthenticationError,
    CameraError,
    CameraStallError,
    CameraUnavailableError,
    CertificateError,
    ConfigurationError,
)
from ..models.camera import Frame
from ..mqtt.tls import PinStore, lan_context, pin_diagnosis
from ..protocol.camera import (
    CAMERA_USER,
    MAX_FRAME,
    RTSPS_PORT,
    is_jpeg,
    rtsps_url,
    with_credentials,
    without_credentials,
)

log = logging.getLogger("bambulab.camera")

DEFAULT_TIMEOUT = 10.0  # seconds to open the stream (TLS, RTSP, the first picture)
DEFAULT_STALL_TIMEOUT = 10.0  # seconds without a frame
DEFAULT_MAX_RECONNECTS = 5  # attempts in a row without a frame before giving up
DEFAULT_BACKOFF = 0.5  # seconds before the first reconnect, doubled each time
DEFAULT_MAX_BACKOFF = 10.0
MAILBOX = 8  # frames held for a slow reader before the oldest is dropped
LIVEVIEW_OFF = (
    "LAN liveview is switched off on printer {serial}: its report says rtsp_url "
    '"disable". Switch it on on the printer\'s screen (Settings > Network or '
    'Settings > General, "LAN Only Liveview" or "Liveview" depending on the model)'
)
# FFmpeg options: TCP only; probe briefly (an RTSP stream's SDP already names
# the codec, and the default probing waits for ~20 frames, 4 s at 5 fps).
_AV_OPTIONS = {
    "rtsp_transport": "tcp",
    "analyzeduration": "1000000",
    "probesize": "1000000",
    "fpsprobesize": "0",
}


def _load_av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise ConfigurationError(
            "decoding the RTSPS camera needs PyAV: pip install 'bambulab[camera]'"
        ) from exc
    return av


class _Mailbox:
    """Frames from the worker to the reader: a short deque, a sticky error, a wake-up."""

    def __init__(self, size: int = MAILBOX) -> None:
        self._frames: deque[Frame] = deque(maxlen=size)
        self._error: BambuError | None = None
        self._cond = threading.Condition()
        self._wakers: list[Callable[[], None]] = []

    def put(self, item: Frame | BambuError) -> None:
        with self._cond:
            if isinstance(item, Frame):
                self._frames.append(item)
            else:
                self._error = item
            self._cond.notify_all()
            wakers = list(self._wakers)
        for wake in wakers:
            wake()  # call_soon_threadsafe: never blocks the worker

    def take(self) -> Frame | None:
        """The oldest waiting frame; raises the fatal error once frames run out."""
        with self._cond:
            if self._frames:
                return self._frames.popleft()
            if self._error is not None:
                raise self._error
            return None

    def latest(self) -> Frame | None:
        """The newest waiting frame (older ones are discarded)."""
        with self._cond:
            if self._frames:
                frame = self._frames[-1]
                self._frames.clear()
                return frame
            if self._error is not None:
                raise self._error
            return None

    def wait(self, timeout: float | None) -> Frame | None:
        """The next frame, ``None`` after ``timeout`` s (``None``: until a frame or the end)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                frame = self.take()
                if frame is not None:
                    return frame
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)

    def add_waker(self, wake: Callable[[], None]) -> None:
        with self._cond:
            self._wakers.append(wake)

    def remove_waker(self, wake: Callable[[], None]) -> None:
        with self._cond, contextlib.suppress(ValueError):
            self._wakers.remove(wake)


class RTSPStream:
    """An X1/P2S/H2 printer's camera: iterate :class:`Frame`\\ s (blocking).

    ``RTSPStream(url_or_host, access_code, serial)``: an ``rtsps://`` URL (the
    report's ``ipcam.rtsp_url``; credentials in it are ignored) or a host;
    ``port`` (322) when a host is given; ``timeout`` (seconds to open the
    stream, and for each read); ``stall_timeout`` (seconds without a frame
    before :class:`CameraStallError`); ``reconnect`` (reopen a stream that
    broke after giving frames); ``ca_file``/``pin_file``/``insecure`` (how
    the certificate is checked, as for MQTT and FTPS).

    ``for frame in stream`` or ``frames(limit)`` yields frames as they come;
    ``snapshot()`` gives the next one. The worker starts on first use and
    runs until ``close()`` (or the end of a ``with`` block).
    """

    def __init__(
        self,
        url_or_host: str,
        access_code: str,
        serial: str | None = None,
        *,
        port: int = RTSPS_PORT,
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
        if timeout <= 0 or stall_timeout <= 0:
            raise ConfigurationError("camera timeouts must be positive")
        if not url_or_host:
            raise ConfigurationError("the printer's address or RTSPS URL is needed")
        if url_or_host.strip().lower() == "disable":
            raise CameraUnavailableError(
                LIVEVIEW_OFF.format(serial=serial or "(unknown)"), serial=serial
            )
        if not access_code:
            raise ConfigurationError("the LAN access code is needed for the camera")
        if "://" in url_or_host:
            parts = urlsplit(url_or_host)
            if parts.scheme not in ("rtsps", "rtsp") or not parts.hostname:
                raise ConfigurationError(
                    f"not an RTSP(S) URL: {without_credentials(url_or_host)!r}"
                )
            self.host = parts.hostname
            self.port = parts.port or (RTSPS_PORT if parts.scheme == "rtsps" else 554)
            self.url = without_credentials(url_or_host)
        else:
            self.host = url_or_host
            self.port = port
            self.url = rtsps_url(url_or_host, port)
        self.tls = self.url.startswith("rtsps://")
        self.serial = serial
        self.timeout = timeout
        self.stall_timeout = stall_timeout
        self.reconnect = reconnect
        self.max_reconnects = max_reconnects
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_frame = max_frame
        self._code = access_code.strip()
        self._ca_file = ca_file
        self._pin_file = pin_file
        self._insecure = insecure
        self._mailbox = _Mailbox()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._index = 0
        self._last_error: str | None = None
        self.connects = 0  # streams opened (1 + reconnects)
        self._warned = False

    # --- the seed's names --------------------------------------------------------------

    @property
    def printer_ip(self) -> str:
        """The printer's address (the seed's name)."""
        return self.host

    @property
    def access_code(self) -> str:
        """The access code (the seed exposes it; never printed by this class)."""
        return self._code

    @property
    def label(self) -> str:
        """The URL without credentials (what errors name)."""
        return self.url

    @property
    def frames_received(self) -> int:
        """Frames so far on this stream (the last ``index``)."""
        return self._index

    def get_stream_url(self) -> str:
        """The URL WITH credentials, for another player (do not log it)."""
        return with_credentials(self.url, self._code)

    def get_credentials(self) -> tuple[str, str]:
        """``("bblp", access_code)``."""
        return CAMERA_USER, self._code

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RTSPStream({self.url}, serial={self.serial!r}, {state})"

    # --- life --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> RTSPStream:
        """Start the worker (done by the first read); returns self."""
        with self._lock:
            if self._stop.is_set():
                raise CameraError(f"the camera stream {self.url} is closed", serial=self.serial)
            if self._thread is None:
                _load_av()  # a missing PyAV is the caller's error, not the worker's
                self._thread = threading.Thread(
                    target=self._work, name=f"bambu-rtsp-{self.serial or self.host}", daemon=True
                )
                self._thread.start()
        return self

    connect = start

    def close(self, wait: float = 1.0) -> None:
        """Stop the worker; it ends within one read (at most ``timeout`` s, in the background)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait)

    disconnect = close

    def __enter__(self) -> RTSPStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- reading -----------------------------------------------------------------------

    def _stalled(self, waited: float | None = None) -> CameraStallError:
        why = f" (last error: {self._last_error})" if self._last_error else ""
        limit = self.stall_timeout if waited is None else waited
        return CameraStallError(
            f"no frame from camera {self.url} within {limit:g} s{why}",
            serial=self.serial,
        )

    def next_frame(self, timeout: float | None = None) -> Frame:
        """The next frame; CameraStallError when none comes within ``timeout``.

        Without ``timeout`` it waits as the JPEG stream does: a stall (no frame
        for ``stall_timeout``) reconnects, and only giving up ends the wait.
        """
        self.start()
        frame = self._mailbox.wait(timeout)
        if frame is None:
            raise self._stalled(timeout)
        return frame

    def get_frame(self) -> bytes:
        """The next frame's JPEG bytes (the seed library's call)."""
        return self.next_frame().jpeg

    def snapshot(self, timeout: float | None = None) -> Frame:
        """The newest frame: one already waiting, else the next to arrive."""
        self.start()
        frame = self._mailbox.latest()
        return frame if frame is not None else self.next_frame(timeout)

    def frames(self, limit: int | None = None) -> Iterator[Frame]:
        """Frames as they come, ``limit`` of them or until closed or broken."""
        count = 0
        while (limit is None or count < limit) and not self._stop.is_set():
            yield self.next_frame()
            count += 1

    def stream_frames(self) -> Iterator[bytes]:
        """JPEG bytes as they come (the seed library's generator)."""
        for frame in self.frames():
            yield frame.jpeg

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    # --- the worker --------------------------------------------------------------------

    def _work(self) -> None:
        failures = 0  # attempts in a row without a frame
        had_frames = False
        while not self._stop.is_set():
            before = self._index
            try:
                self._check_tls()
                for frame in self._stream():
                    had_frames = True
                    self._mailbox.put(frame)
                if self._stop.is_set():
                    return
                raise CameraError(f"camera {self.url} ended the stream", serial=self.serial)
            except (CameraAuthenticationError, CertificateError, ConfigurationError) as exc:
                self._mailbox.put(exc)
                return
            except CameraError as exc:
                self._last_error = str(exc)
                if self._stop.is_set():
                    return
                failures = 0 if self._index > before else failures + 1
                if not (self.reconnect and had_frames):
                    self._mailbox.put(exc)
                    return
                if failures > self.max_reconnects:
                    self._mailbox.put(
                        type(exc)(
                            f"{exc} (gave up after {self.max_reconnects} reconnects)",
                            serial=self.serial,
                        )
                    )
                    return
                delay = min(self.max_backoff, self.backoff * 2.0 ** max(0, failures - 1))
                delay *= random.uniform(0.5, 1.0)  # viewers of one printer spread out
                log.info("%s; reconnecting in %.1f s", exc, delay)
                if self._stop.wait(delay):
                    return
            except BambuError as exc:
                self._mailbox.put(exc)
                return
            except Exception as exc:  # a bug must reach the reader, not die silently
                self._mailbox.put(
                    CameraError(
                        f"camera {self.url} failed: {type(exc).__name__}", serial=self.serial
                    )
                )
                return

    def _check_tls(self) -> None:
        """One TLS handshake of our own: the certificate must be the printer's."""
        if not self.tls:
            return
        if self._insecure:
            if not self._warned:
                self._warned = True
                log.warning("camera %s: TLS certificate NOT checked (insecure)", self.url)
            return
        if not self.serial:
            if not self._warned:
                self._warned = True
                log.warning(
                    "camera %s: TLS certificate not checked: pass the printer's serial", self.url
                )
            return
        try:
            ctx = lan_context(
                self.serial,
                self.host,
                self.port,
                ca_file=self._ca_file,
                pin_store=PinStore(self._pin_file),
            )
        except CertificateError:
            raise
        except BambuError as exc:
            raise CameraError(
                f"camera {self.url} of printer {self.serial}: {exc}", serial=self.serial
            ) from exc
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout) as raw:
                raw.settimeout(self.timeout)
                with ctx.wrap_socket(raw, server_hostname=self.serial):
                    pass
        except ssl.SSLCertVerificationError as exc:
            diagnose = pin_diagnosis(ctx, self.host, self.port)
            explained = diagnose() if diagnose is not None else None
            raise explained or CertificateError(
                f"TLS certificate of camera {self.url} (printer {self.serial}) refused: "
                f"{exc.verify_message}"
            ) from exc
        except TimeoutError as exc:
            raise CameraError(
                f"no answer from camera {self.url} within {self.timeout:g} s", serial=self.serial
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise CameraError(
                f"cannot reach camera {self.url}: {_why(exc)}", serial=self.serial
            ) from exc

    def _stream(self) -> Iterator[Frame]:
        """Open the stream and yield frames until it breaks (worker thread only)."""
        av = _load_av()
        full = with_credentials(self.url, self._code)
        try:
            container = av.open(
                full, options=dict(_AV_OPTIONS), timeout=(self.timeout, self.stall_timeout)
            )
        except Exception as exc:
            raise self._translate(exc, opening=True) from None
        self.connects += 1
        encoder: Any = None
        try:
            video = container.streams.video[0] if container.streams.video else None
            if video is None:
                raise CameraError(f"camera {self.url} offers no video track", serial=self.serial)
            passthrough = video.codec_context.name == "mjpeg"
            log.debug("camera %s open: %s", self.url, video.codec_context.name)
            for packet in container.demux(video):
                if self._stop.is_set():
                    return
                for picture in packet.decode():
                    if passthrough and is_jpeg(memoryview(packet)):
                        jpeg = bytes(packet)
                    else:
                        if encoder is None:
                            encoder = _jpeg_encoder(av, picture.width, picture.height)
                        jpeg = _encode(encoder, picture)
                    if len(jpeg) > self.max_frame:
                        raise CameraError(
                            f"camera {self.url} sent a {len(jpeg)}-byte picture "
                            f"(allowed up to {self.max_frame})",
                            serial=self.serial,
                        )
                    self._index += 1
                    yield Frame(
                        jpeg=jpeg,
                        timestamp=time.time(),
                        index=self._index,
                        monotonic=time.monotonic(),
                        serial=self.serial or "",
                        width=picture.width,
                        height=picture.height,
                    )
        except CameraError:
            raise
        except Exception as exc:
            raise self._translate(exc, opening=False) from None
        finally:
            with contextlib.suppress(Exception):
                container.close()

    def _translate(self, exc: Exception, *, opening: bool) -> BambuError:
        """A PyAV error as one line without the password (PyAV's messages carry the URL)."""
        name = type(exc).__name__
        reason = getattr(exc, "strerror", None) or name
        if name == "HTTPUnauthorizedError":
            return CameraAuthenticationError(
                f"camera {self.url} refused the access code (401): check the code on the "
                f"printer's screen",
                serial=self.serial,
            )
        if name in ("HTTPNotFoundError", "HTTPForbiddenError"):
            return CameraUnavailableError(
                f"camera {self.url} has no such stream ({reason}): is LAN liveview on?",
                serial=self.serial,
            )
        if name in ("ExitError", "TimeoutError") or isinstance(exc, TimeoutError):
            what = "open" if opening else "send a frame"
            limit = self.timeout if opening else self.stall_timeout
            kind = CameraError if opening else CameraStallError
            return kind(f"camera {self.url} did not {what} within {limit:g} s", serial=self.serial)
        verb = "cannot open" if opening else "stream broke from"
        return CameraError(f"{verb} camera {self.url}: {reason}", serial=self.serial)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


def _jpeg_encoder(av: Any, width: int, height: int) -> Any:
    """FFmpeg's MJPEG encoder for pictures of this size (no Pillow needed)."""
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width = width
    encoder.height = height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = "1/90000"
    encoder.options = {"q:v": "3"}
    encoder.qmin = 2
    encoder.qmax = 5
    encoder.open()
    return encoder


def _encode(encoder: Any, picture: Any) -> bytes:
    converted = picture.reformat(format="yuvj420p")
    converted.pts = None
    return b"".join(bytes(packet) for packet in encoder.encode(converted))


class AsyncRTSPStream:
    """The async face of :class:`RTSPStream`: same arguments, same frames, no blocking.

    ``async for frame in stream``, ``await stream.snapshot()``,
    ``stream.frames(limit)`` (an async iterator), ``await stream.aclose()``,
    ``async with``. The decoding worker is the blocking stream's thread; this
    side only awaits a wake-up from it.
    """

    def __init__(
        self, url_or_host: str, access_code: str, serial: str | None = None, **kwargs: Any
    ) -> None:
        self._sync = RTSPStream(url_or_host, access_code, serial, **kwargs)

    @property
    def url(self) -> str:
        """The stream's URL without credentials."""
        return self._sync.url

    @property
    def serial(self) -> str | None:
        """The printer's serial, when given."""
        return self._sync.serial

    @property
    def connects(self) -> int:
        """Streams opened (1 + reconnects)."""
        return self._sync.connects

    def __repr__(self) -> str:
        return "Async" + repr(self._sync)

    def _start(self) -> None:
        self._sync.start()

    async def next_frame(self, timeout: float | None = None) -> Frame:
        """The next frame; CameraStallError when none comes within ``timeout``."""
        self._start()
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

        mailbox = self._sync._mailbox
        mailbox.add_waker(wake)
        try:
            deadline = None if timeout is None else loop.time() + timeout
            while True:
                frame = mailbox.take()
                if frame is not None:
                    return frame
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise self._sync._stalled(timeout)
                event.clear()
                frame = mailbox.take()
                if frame is not None:
                    return frame
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), left)
        finally:
            mailbox.remove_waker(wake)

    async def snapshot(self, timeout: float | None = None) -> Frame:
        """The newest frame: one already waiting, else the next to arrive."""
        self._start()
        frame = self._sync._mailbox.latest()
        return frame if frame is not None else await self.next_frame(timeout)

    async def frames(self, limit: int | None = None) -> AsyncIterator[Frame]:
        """Frames as they come, ``limit`` of them or until closed or broken."""
        count = 0
        while (limit is None or count < limit) and not self._sync._stop.is_set():
            yield await self.next_frame()
            count += 1

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self.frames()

    async def aclose(self) -> None:
        """Stop the worker (joined off the loop)."""
        await asyncio.to_thread(self._sync.close)

    async def __aenter__(self) -> AsyncRTSPStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


__all__ = ["AsyncRTSPStream", "RTSPStream"]
