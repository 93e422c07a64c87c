"""The simulated X1/P2S/H2 cameras: a small RTSP 1.0 server over TLS (PROTOCOL.md §4.2).

The real printers serve ``rtsps://<ip>:322/streaming/live/1`` (user ``bblp``,
password the access code). This is the simulator's own server rather than
GStreamer's: the simulator must run from a pip install, behave the same on
every machine, and break on demand (faults). FFmpeg (ffprobe, ffmpeg, PyAV)
decoding it is the test of its fidelity.

What a client meets:

* TLS from the first byte with the printer's LAN certificate (CN = serial,
  from the simulator CA); :meth:`RtspHost.set_certificate` swaps it for the
  wrong-certificate fault.
* ``OPTIONS``, ``DESCRIBE`` (SDP: one video track, RTP/AVP payload type 26 =
  JPEG, ``a=control``), ``SETUP`` (``RTP/AVP/TCP;interleaved=0-1`` only; UDP
  answers ``461 Unsupported Transport``), ``PLAY``, ``PAUSE``,
  ``GET_PARAMETER`` (keep-alive), ``TEARDOWN``; ``CSeq`` echoed, a ``Session``
  header from ``SETUP`` on; ``404`` for another path.
* Authentication with ``bblp`` and the printer's access code *now* (read
  through a callable): a Digest challenge (MD5, RFC 2617) and Basic, both
  offered and both accepted; ``401`` otherwise. ``OPTIONS`` needs none.
* Media: interleaved RTP (``$``, channel, length) carrying RTP/JPEG (RFC
  2435) cut from baseline 4:2:0 JPEGs: type 1, Q = 255 with the quantisation
  tables in-band in each frame's first packet, fragments of about 1400 bytes,
  the marker bit on a frame's last packet, 90 kHz timestamps, a few frames a
  second. Each frame is cut once and shared by every viewer; only the RTP
  header (sequence number) is per session.

Bounds: a connection limit per printer, a deadline on every read (a request
must be complete within ``request_timeout``; an idle session ends after
``session_timeout``), capped request lines, header counts and bodies, and a
viewer that does not read is dropped once ``max_backlog`` bytes wait for it.

Faults (applied on the RTSP thread through :meth:`RtspHost.call`): a stall
(no frames for a while), dropping every connection (now, or after N frames),
refusing connections (the listener closed), and the wrong certificate.

Threads: one thread runs one asyncio loop for every printer's listener;
other threads hand it work through :meth:`RtspHost.call`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import io
import logging
import secrets
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TypeVar

from ..protocol.camera import CAMERA_USER, RTSPS_PATH
from .brokers import LOOPBACK
from .certs import CertFiles

log = logging.getLogger("bambulab.sim.rtsp")

T = TypeVar("T")

RTSP_PORT = 322  # where a real printer listens
PAYLOAD_JPEG = 26
CLOCK_RATE = 90_000
FRAGMENT = 1400  # JPEG bytes per RTP packet (fits a 1500-byte MTU with headers)
REALM = "bambu-sim-camera"
SERVER = "bambu-sim-rtsp/1.0"
MAX_LINE = 2048  # bytes of a request or header line
MAX_HEADERS = 64
MAX_BODY = 4096
MAX_CONNECTIONS = 8  # per printer: a printer is a small device
DEFAULT_FPS = 5.0
DEFAULT_WIDTH = 1280
DEFAULT_HEIGHT = 720
_METHODS = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, GET_PARAMETER, TEARDOWN"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    459: "Aggregate Operation Not Allowed",
    461: "Unsupported Transport",
    501: "Not Implemented",
}


# --- RTP/JPEG (RFC 2435) ---------------------------------------------------------------------


class JpegError(ValueError):
    """A JPEG RTP/JPEG cannot carry (not baseline 4:2:0 with 8-bit tables)."""


@dataclass(frozen=True, slots=True)
class JpegParts:
    """What RTP/JPEG sends of a baseline JPEG: its size, two quantisation tables, the scan."""

    width: int
    height: int
    tables: bytes  # 128 bytes: luma then chroma, in the zigzag order of the DQT segment
    scan: bytes  # entropy-coded data after SOS, without EOI


def parse_jpeg(data: bytes) -> JpegParts:
    """Cut a baseline JPEG (as Pillow writes with ``subsampling=2``) into RTP/JPEG parts.

    Refuses what a receiver could not rebuild: progressive or extended
    coding, 16-bit tables, restart intervals, a sampling other than 4:2:0,
    sizes not a multiple of 8 or over 2040.
    """
    if data[:2] != b"\xff\xd8":
        raise JpegError("not a JPEG (no SOI)")
    pos = 2
    tables: dict[int, bytes] = {}
    width = height = 0
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise JpegError(f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = struct.unpack_from(">H", data, pos + 2)[0]
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xDB:  # DQT: one or more tables
            at = 0
            while at < len(segment):
                precision, ident = segment[at] >> 4, segment[at] & 0x0F
                if precision != 0:
                    raise JpegError("16-bit quantisation tables are not carried by RTP/JPEG")
                tables[ident] = segment[at + 1 : at + 65]
                at += 65
        elif marker in (0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            raise JpegError("only baseline JPEG (SOF0) is carried by RTP/JPEG")
        elif marker == 0xC0:  # SOF0
            height, width = struct.unpack_from(">HH", segment, 1)
            components = segment[5]
            sampling = [segment[6 + 3 * i + 1] for i in range(components)]
            if components != 3 or sampling != [0x22, 0x11, 0x11]:
                raise JpegError("RTP/JPEG type 1 needs three components sampled 4:2:0")
        elif marker == 0xDD:  # DRI
            if struct.unpack_from(">H", segment)[0]:
                raise JpegError("restart intervals are not supported here")
        elif marker == 0xDA:  # SOS: the scan runs to EOI
            start = pos + 2 + length
            end = data.rfind(b"\xff\xd9")
            if end < start:
                raise JpegError("JPEG without EOI")
            if not width or not height:
                raise JpegError("JPEG without SOF0")
            if width % 8 or height % 8 or width > 2040 or height > 2040:
                raise JpegError(f"{width}x{height} is not a multiple of 8 up to 2040")
            if 0 not in tables or 1 not in tables:
                raise JpegError("JPEG without both quantisation tables")
            return JpegParts(width, height, tables[0] + tables[1], data[start:end])
        pos += 2 + length
    raise JpegError("JPEG without a scan (SOS)")


def rtp_jpeg_payloads(parts: JpegParts, fragment: int = FRAGMENT) -> list[bytes]:
    """The RTP payloads of one frame: main JPEG header, tables in the first, then the scan."""
    payloads: list[bytes] = []
    scan = parts.scan
    offset = 0
    while offset < len(scan) or not payloads:
        chunk = scan[offset : offset + fragment]
        # type-specific 0, fragment offset (24 bits), type 1 (4:2:0), Q 255, size / 8
        head = struct.pack(">I4B", offset & 0xFFFFFF, 1, 255, parts.width // 8, parts.height // 8)
        if offset == 0:
            head += struct.pack(">BBH", 0, 0, len(parts.tables)) + parts.tables
        payloads.append(head + chunk)
        offset += len(chunk)
        if not chunk:
            break
    return payloads


def rtp_packet(payload: bytes, *, seq: int, timestamp: int, ssrc: int, marker: bool) -> bytes:
    """One RTP packet (version 2, payload type 26)."""
    second = PAYLOAD_JPEG | (0x80 if marker else 0)
    return struct.pack(">BBHII", 0x80, second, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc) + payload


def interleaved(channel: int, packet: bytes) -> bytes:
    """``$``, channel, length, packet: RTP inside the RTSP connection (RFC 2326 §10.12)."""
    return struct.pack(">cBH", b"$", channel, len(packet)) + packet


def status_card(
    serial: str, index: int, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT
) -> bytes:
    """A baseline 4:2:0 JPEG naming the printer and the frame number (needs Pillow)."""
    from PIL import Image, ImageDraw

    shade = (index * 7) % 200
    image = Image.new("RGB", (width, height), (30 + shade // 4, 40, 60 + shade // 2))
    draw = ImageDraw.Draw(image)
    bar = (index * 16) % width
    draw.rectangle((bar, height - 40, min(width, bar + 120), height - 10), fill=(240, 200, 40))
    draw.text((20, 20), f"{serial}  frame {index}", fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=70, optimize=False, progressive=False, subsampling=2)
    return out.getvalue()


# --- per printer -------------------------------------------------------------------------


@dataclass
class Faults:
    """One printer's camera faults; read and written on the RTSP thread only."""

    stall_until: float = 0.0  # time.monotonic() until which no frame is sent
    drop_after_frames: int | None = None  # close every session after this many more frames

    def stalled(self) -> bool:
        """Whether frames are held back now."""
        return time.monotonic() < self.stall_until


@dataclass
class Endpoint:
    """One printer's RTSPS camera: code, certificate, listener, frames, faults."""

    serial: str
    access_code: Callable[[], str]
    cert: CertFiles
    port: int = 0
    fps: float = DEFAULT_FPS
    frame_source: Callable[[int], bytes] | None = None  # frame number -> baseline JPEG
    listening: bool = True
    faults: Faults = field(default_factory=Faults)
    server: asyncio.Server | None = None
    sessions: set[_Connection] = field(default_factory=set)
    frames_sent: int = 0
    _context: ssl.SSLContext | None = None
    _ticker: asyncio.Task[None] | None = None

    def context(self) -> ssl.SSLContext:
        """The TLS context, made on first use."""
        if self._context is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(self.cert.cert_file), str(self.cert.key_file))
            ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
            self._context = ctx
        return self._context

    def render(self, index: int) -> bytes:
        """Frame ``index`` as a JPEG."""
        if self.frame_source is not None:
            return self.frame_source(index)
        return status_card(self.serial, index)


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    uri: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def cseq(self) -> str:
        return self.headers.get("cseq", "0")


class _Closed(Exception):
    """The connection ended or broke a limit: close it without an answer."""


class _Connection:
    """One client connection: requests in, answers and (when playing) RTP out."""

    def __init__(
        self,
        host: RtspHost,
        endpoint: Endpoint,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.host = host
        self.endpoint = endpoint
        self.reader = reader
        self.writer = writer
        self.session: str | None = None
        self.playing = False
        self.seq = secrets.randbelow(0x10000)
        self.ssrc = secrets.randbits(32)
        self.nonce = secrets.token_hex(16)
        self.closed = False

    # --- output ----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue bytes; drop the client when too much waits for it (it does not read)."""
        if self.closed:
            return
        transport = self.writer.transport
        if transport.get_write_buffer_size() + len(data) > self.host.max_backlog:
            log.info("camera %s: a viewer stopped reading; dropped", self.endpoint.serial)
            self.abort()
            return
        self.writer.write(data)

    def send_frame(self, payloads: list[bytes], timestamp: int) -> None:
        """Send one frame's packets with this session's sequence numbers."""
        last = len(payloads) - 1
        chunks = []
        for number, payload in enumerate(payloads):
            packet = rtp_packet(
                payload, seq=self.seq, timestamp=timestamp, ssrc=self.ssrc, marker=number == last
            )
            self.seq = (self.seq + 1) & 0xFFFF
            chunks.append(interleaved(0, packet))
        self.send(b"".join(chunks))

    def abort(self) -> None:
        """Cut the connection at once (no TLS goodbye)."""
        if self.closed:
            return
        self.closed = True
        self.playing = False
        self.endpoint.sessions.discard(self)
        self.writer.transport.abort()

    def answer(
        self,
        request: _Request | None,
        status: int,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        lines = [f"RTSP/1.0 {status} {_REASONS.get(status, 'Error')}"]
        lines.append(f"CSeq: {request.cseq if request else '0'}")
        lines.append(f"Server: {SERVER}")
        if self.session and status != 401:
            lines.append(f"Session: {self.session};timeout={int(self.host.session_timeout)}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    # --- input -----------------------------------------------------------------------

    async def _line(self, deadline: float) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Closed("request too slow")
        try:
            line = await asyncio.wait_for(self.reader.readuntil(b"\n"), left)
        except asyncio.LimitOverrunError as exc:
            raise _Closed("line too long") from exc
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ssl.SSLError) as exc:
            raise _Closed(type(exc).__name__) from exc
        if len(line) > MAX_LINE:
            raise _Closed("line too long")
        return line.rstrip(b"\r\n")

    async def _exact(self, count: int, deadline: float) -> bytes:
        left = deadline - time.monotonic()
        try:
            return await asyncio.wait_for(self.reader.readexactly(count), max(left, 0.001))
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ssl.SSLError) as exc:
            raise _Closed(type(exc).__name__) from exc

    async def read_request(self) -> _Request | None:
        """The next request; ``None`` after an interleaved packet (RTCP from the client)."""
        idle = self.host.session_timeout if self.session else self.host.request_timeout
        try:
            first = await asyncio.wait_for(self.reader.readexactly(1), idle)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ssl.SSLError) as exc:
            raise _Closed(type(exc).__name__) from exc
        deadline = time.monotonic() + self.host.request_timeout
        if first == b"$":
            head = await self._exact(3, deadline)
            await self._exact(struct.unpack(">H", head[1:])[0], deadline)
            return None
        line = first + await self._line(deadline)
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("RTSP/"):
            self.answer(None, 400)
            raise _Closed("bad request line")
        headers: dict[str, str] = {}
        while True:
            raw = await self._line(deadline)
            if not raw:
                break
            if len(headers) >= MAX_HEADERS:
                self.answer(None, 400)
                raise _Closed("too many headers")
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                self.answer(None, 400)
                raise _Closed("bad header")
            headers[name.strip().lower()] = value.strip()
        body = b""
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            self.answer(_Request(parts[0], parts[1], headers, b""), 413)
            raise _Closed("body too big")
        if int(length):
            body = await self._exact(int(length), deadline)
        return _Request(parts[0].upper(), parts[1], headers, body)

    # --- protocol ------------------------------------------------------------------------

    def authorised(self, request: _Request) -> bool:
        """Digest (MD5) or Basic with ``bblp`` and the current access code."""
        value = request.headers.get("authorization", "")
        scheme, _, rest = value.partition(" ")
        code = self.endpoint.access_code()
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(rest, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return hmac.compare_digest(user.encode(), CAMERA_USER.encode()) and hmac.compare_digest(
                password.encode(), code.encode()
            )
        if scheme.lower() != "digest":
            return False
        fields = _digest_fields(rest)
        if fields.get("username") != CAMERA_USER or fields.get("nonce") != self.nonce:
            return False
        uri = fields.get("uri", "")
        ha1 = _md5(f"{CAMERA_USER}:{fields.get('realm', '')}:{code}")
        ha2 = _md5(f"{request.method}:{uri}")
        if fields.get("qop"):
            tail = f"{fields.get('nc', '')}:{fields.get('cnonce', '')}:{fields['qop']}"
            expected = _md5(f"{ha1}:{self.nonce}:{tail}:{ha2}")
        else:
            expected = _md5(f"{ha1}:{self.nonce}:{ha2}")
        return fields.get("realm") == REALM and hmac.compare_digest(
            expected.encode(), fields.get("response", "").encode()
        )

    def path_ok(self, uri: str) -> bool:
        path = _path(uri)
        return path.rstrip("/") == RTSPS_PATH or path.startswith(RTSPS_PATH + "/")

    async def handle(self, request: _Request) -> None:
        method = request.method
        if method == "OPTIONS":
            self.answer(request, 200, {"Public": _METHODS})
            return
        if method not in _METHODS.split(", "):
            self.answer(request, 501 if method.isalpha() else 400)
            return
        if not self.authorised(request):
            challenge = (
                f'Digest realm="{REALM}", nonce="{self.nonce}", algorithm=MD5',
                f'Basic realm="{REALM}"',
            )
            # One header per scheme, Digest first (clients take the strongest they know).
            self.send(
                (
                    f"RTSP/1.0 401 Unauthorized\r\nCSeq: {request.cseq}\r\nServer: {SERVER}\r\n"
                    f"WWW-Authenticate: {challenge[0]}\r\nWWW-Authenticate: {challenge[1]}\r\n\r\n"
                ).encode("latin-1")
            )
            return
        if not self.path_ok(request.uri):
            self.answer(request, 404)
            return
        if method == "DESCRIBE":
            base = request.uri.rstrip("/") + "/"
            self.answer(
                request,
                200,
                {"Content-Type": "application/sdp", "Content-Base": base},
                self.sdp().encode("ascii"),
            )
            return
        if method == "SETUP":
            transport = request.headers.get("transport", "")
            if "RTP/AVP/TCP" not in transport.upper() or "interleaved" not in transport:
                self.answer(request, 461)
                return
            if self.session is None:
                self.session = secrets.token_hex(8).upper()
            self.answer(request, 200, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})
            return
        if method in ("PLAY", "PAUSE", "GET_PARAMETER", "TEARDOWN"):
            given = request.headers.get("session", "").split(";")[0].strip()
            if (method != "GET_PARAMETER" or given) and (
                self.session is None or given != self.session
            ):
                self.answer(request, 454)
                return
        if method == "PLAY":
            rtptime = self.host.rtp_time()
            info = f"url={request.uri};seq={self.seq};rtptime={rtptime}"
            self.answer(request, 200, {"Range": "npt=0.000-", "RTP-Info": info})
            self.playing = True
            self.endpoint.sessions.add(self)
            self.host.ensure_ticker(self.endpoint)
        elif method == "PAUSE":
            self.playing = False
            self.endpoint.sessions.discard(self)
            self.answer(request, 200)
        elif method == "GET_PARAMETER":
            self.answer(request, 200)
        elif method == "TEARDOWN":
            self.playing = False
            self.endpoint.sessions.discard(self)
            self.answer(request, 200)
            self.session = None
            raise _Closed("teardown")

    def sdp(self) -> str:
        """One video track, payload type 26 (JPEG), controlled as ``trackID=0``."""
        return (
            "v=0\r\n"
            f"o=- {self.ssrc} 1 IN IP4 {LOOPBACK}\r\n"
            f"s=Bambu Lab camera {self.endpoint.serial} (simulated)\r\n"
            "c=IN IP4 0.0.0.0\r\n"
            "t=0 0\r\n"
            "a=control:*\r\n"
            "a=range:npt=0-\r\n"
            f"m=video 0 RTP/AVP {PAYLOAD_JPEG}\r\n"
            f"a=rtpmap:{PAYLOAD_JPEG} JPEG/{CLOCK_RATE}\r\n"
            f"a=framerate:{self.endpoint.fps:g}\r\n"
            "a=control:trackID=0\r\n"
        )

    async def run(self) -> None:
        try:
            while not self.closed:
                request = await self.read_request()
                if request is not None:
                    await self.handle(request)
        except _Closed as exc:
            log.debug("camera %s: connection ends (%s)", self.endpoint.serial, exc)
        except Exception:  # pragma: no cover - a bug here must not kill the loop
            log.exception("camera %s: connection failed", self.endpoint.serial)
        finally:
            self.playing = False
            self.endpoint.sessions.discard(self)
            if not self.closed:
                self.closed = True
                with contextlib.suppress(Exception):
                    self.writer.close()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _digest_fields(text: str) -> dict[str, str]:
    """``key="value", key=value`` pairs of a Digest Authorization header."""
    fields: dict[str, str] = {}
    rest = text
    while rest:
        key, sep, rest = rest.partition("=")
        if not sep:
            break
        key = key.strip(" ,").lower()
        rest = rest.lstrip()
        if rest.startswith('"'):
            value, _, rest = rest[1:].partition('"')
        else:
            value, _, rest = rest.partition(",")
        fields[key] = value.strip()
        rest = rest.lstrip(" ,")
    return fields


def _path(uri: str) -> str:
    if "://" in uri:
        after = uri.split("://", 1)[1]
        slash = after.find("/")
        return after[slash:] if slash >= 0 else "/"
    return uri


# --- the host ---------------------------------------------------------------------------


class RtspHost:
    """Every simulated printer's RTSPS camera, on one thread with one asyncio loop."""

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        request_timeout: float = 10.0,
        session_timeout: float = 60.0,
        max_backlog: int = 4 << 20,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.host = host
        self.request_timeout = request_timeout
        self.session_timeout = session_timeout
        self.max_backlog = max_backlog
        self.max_connections = max_connections
        self.endpoints: dict[str, Endpoint] = {}
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._clock_base = secrets.randbits(32)
        self._started = time.monotonic()
        self._connections: dict[str, set[_Connection]] = {}

    # --- thread ----------------------------------------------------------------------

    def start(self) -> RtspHost:
        """Start the loop thread (listeners are added with :meth:`add`)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="bambu-sim-rtsp", daemon=True
            )
            self._thread.start()
        return self

    def call(self, work: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
        """Run a coroutine function on the RTSP thread and wait for its result."""
        if self._thread is None:
            raise RuntimeError("RtspHost is not started")
        future: Future[T] = asyncio.run_coroutine_threadsafe(_wrap(work), self._loop)
        return future.result(timeout)

    def stop(self) -> None:
        """Close every listener and connection and end the thread."""
        if self._thread is None:
            return

        async def close_all() -> None:
            for endpoint in self.endpoints.values():
                await self._close_listener(endpoint)
                self._cut(endpoint)
                if endpoint._ticker is not None:
                    endpoint._ticker.cancel()

        with contextlib.suppress(Exception):
            self.call(close_all)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._thread = None
        with contextlib.suppress(RuntimeError):
            self._loop.close()

    # --- printers --------------------------------------------------------------------

    def add(self, endpoint: Endpoint) -> int:
        """Serve ``endpoint``; the port it listens on (a free one when its port is 0)."""
        self.endpoints[endpoint.serial] = endpoint
        self._connections[endpoint.serial] = set()

        async def listen() -> int:
            if endpoint.listening:
                await self._listen(endpoint)
            return endpoint.port

        return self.call(listen)

    def port(self, serial: str) -> int:
        """The port ``serial``'s camera listens on."""
        return self.endpoints[serial].port

    async def _listen(self, endpoint: Endpoint) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(endpoint, reader, writer)

        endpoint.server = await asyncio.start_server(
            accept,
            self.host,
            endpoint.port,
            ssl=endpoint.context(),
            ssl_handshake_timeout=self.request_timeout,
            limit=MAX_LINE * 2,
            reuse_address=True,
        )
        endpoint.port = endpoint.server.sockets[0].getsockname()[1]

    async def _close_listener(self, endpoint: Endpoint) -> None:
        if endpoint.server is not None:
            endpoint.server.close()
            endpoint.server = None

    async def _serve(
        self, endpoint: Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        open_now = self._connections[endpoint.serial]
        if len(open_now) >= self.max_connections or not endpoint.listening:
            writer.transport.abort()
            return
        connection = _Connection(self, endpoint, reader, writer)
        open_now.add(connection)
        try:
            await connection.run()
        finally:
            open_now.discard(connection)

    def _cut(self, endpoint: Endpoint) -> int:
        open_now = list(self._connections.get(endpoint.serial, ()))
        for connection in open_now:
            connection.abort()
        return len(open_now)

    # --- media -----------------------------------------------------------------------

    def rtp_time(self) -> int:
        """The 90 kHz clock now (one clock for every stream of this host)."""
        return (self._clock_base + int((time.monotonic() - self._started) * CLOCK_RATE)) & (
            0xFFFFFFFF
        )

    def ensure_ticker(self, endpoint: Endpoint) -> None:
        """Start the endpoint's frame loop if no one is watching yet."""
        if endpoint._ticker is None or endpoint._ticker.done():
            endpoint._ticker = self._loop.create_task(self._tick(endpoint))

    async def _tick(self, endpoint: Endpoint) -> None:
        """Render, cut and send a frame every ``1/fps`` s while someone plays."""
        interval = 1.0 / max(endpoint.fps, 0.1)
        next_at = time.monotonic()
        while any(c.playing for c in endpoint.sessions):
            if not endpoint.faults.stalled():
                try:
                    parts = parse_jpeg(endpoint.render(endpoint.frames_sent + 1))
                except Exception:
                    log.exception("camera %s: cannot render a frame", endpoint.serial)
                    return
                payloads = rtp_jpeg_payloads(parts)
                stamp = self.rtp_time()
                endpoint.frames_sent += 1
                for connection in list(endpoint.sessions):
                    if connection.playing:
                        connection.send_frame(payloads, stamp)
                drop = endpoint.faults.drop_after_frames
                if drop is not None:
                    if drop <= 1:
                        endpoint.faults.drop_after_frames = None
                        self._cut(endpoint)
                    else:
                        endpoint.faults.drop_after_frames = drop - 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if next_at < time.monotonic() - interval:
                next_at = time.monotonic()

    # --- faults ----------------------------------------------------------------------

    def stall(self, serial: str, seconds: float) -> None:
        """Send no frame for ``seconds`` (0 ends a stall)."""

        async def apply() -> None:
            self.endpoints[serial].faults.stall_until = time.monotonic() + seconds

        self.call(apply)

    def drop_connections(self, serial: str, *, after_frames: int | None = None) -> int:
        """Cut every connection now (how many), or after ``after_frames`` more frames."""

        async def apply() -> int:
            endpoint = self.endpoints[serial]
            if after_frames is not None:
                endpoint.faults.drop_after_frames = after_frames
                return 0
            return self._cut(endpoint)

        return self.call(apply)

    def refuse(self, serial: str, refuse: bool = True) -> None:
        """Stop listening (connections refused, open ones cut), or listen again on the same port."""

        async def apply() -> None:
            endpoint = self.endpoints[serial]
            endpoint.listening = not refuse
            if refuse:
                await self._close_listener(endpoint)
                self._cut(endpoint)
            elif endpoint.server is None:
                await self._listen(endpoint)

        self.call(apply)

    def set_certificate(self, serial: str, cert: CertFiles) -> None:
        """Present ``cert`` from now on (the listener restarts on the same port)."""

        async def apply() -> None:
            endpoint = self.endpoints[serial]
            endpoint.cert = cert
            endpoint._context = None
            if endpoint.server is not None:
                await self._close_listener(endpoint)
                await self._listen(endpoint)

        self.call(apply)

    def frames_sent(self, serial: str) -> int:
        """Frames ``serial``'s camera has sent (shared by its viewers)."""
        return self.endpoints[serial].frames_sent

    def viewers(self, serial: str) -> int:
        """Open connections to ``serial``'s camera."""

        async def count() -> int:
            return len(self._connections[serial])

        return self.call(count)


async def _wrap(work: Callable[[], Awaitable[T]]) -> T:
    return await work()
