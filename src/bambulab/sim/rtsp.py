"""The simulated X1/P2S/H2 cameras: a small RTSP 1.0 server over TLS (PROTOCOL.md §4.2).

The real printers serve ``rtsps://<ip>:322/streaming/live/1`` (user ``bblp``,
password the access code). This is the simulator's own server rather than
GStreamer's: the simulator must run from a pip install, behave the same on
every machine, and break on demand (faults). FFmpeg (ffprobe, ffmpeg, PyAV)
decoding it is the test of its fidelity.

What a client meets:

* TLS from the first byte with the printer's LAN certificate (CN = serial,
  from the simulator CA); :meth:`~.camera.CameraHost.set_certificate` swaps it for the
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

Bounds: a connection limit per printer, a deadline on every read (the TLS
handshake and each request must be complete within ``request_timeout``; a
silent session ends after ``session_timeout``), capped request lines, header
counts and bodies, and a viewer that does not read is cut once the camera
host's ``max_backlog`` bytes wait for it (with a fixed kernel send buffer).

:class:`RtspEndpoint` is a :class:`~.camera.CameraEndpoint`: it runs on the
simulator's one camera thread and loop beside the P1/A1 JPEG streams, sends
the same status pictures (rendered off the loop at most once per the host's
interval, cut into RTP once per picture and shared by every viewer; only the
RTP header is per session) and takes the same faults through
:class:`~.camera.CameraHost`: a stall (no frames, connections stay open),
cutting every connection, not listening, and the wrong certificate.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import secrets
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..protocol.camera import CAMERA_USER, RTSPS_PATH
from .brokers import LOOPBACK
from .camera import MAX_BACKLOG, SEND_BUFFER, CameraEndpoint, _Viewer
from .certs import CertFiles

log = logging.getLogger("bambulab.sim.rtsp")


RTSP_PORT = 322  # where a real printer listens
PAYLOAD_JPEG = 26
CLOCK_RATE = 90_000
FRAGMENT = 1400  # JPEG bytes per RTP packet (fits a 1500-byte MTU with headers)
REALM = "bambu-sim-camera"
SERVER = "bambu-sim-rtsp/1.0"
MAX_LINE = 2048  # bytes of a request or header line
MAX_HEADERS = 64
MAX_BODY = 4096
MAX_CONNECTIONS = 8  # open connections per printer (playing ones count against max_clients)
DEFAULT_FPS = 5.0
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
    453: "Not Enough Bandwidth",
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


# --- one connection ---------------------------------------------------------------------


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
        endpoint: RtspEndpoint,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
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
        if _Viewer(self.writer).backlog() + len(data) > self.endpoint.max_backlog:
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
            lines.append(f"Session: {self.session};timeout={int(self.endpoint.session_timeout)}")
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
        idle = self.endpoint.session_timeout if self.session else self.endpoint.request_timeout
        try:
            first = await asyncio.wait_for(self.reader.readexactly(1), idle)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ssl.SSLError) as exc:
            raise _Closed(type(exc).__name__) from exc
        deadline = time.monotonic() + self.endpoint.request_timeout
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
            if self not in self.endpoint.sessions and not self.endpoint.admits():
                self.answer(request, 453)  # as many viewers as the printer serves already
                return
            rtptime = self.endpoint.rtp_time()
            info = f"url={request.uri};seq={self.seq};rtptime={rtptime}"
            self.answer(request, 200, {"Range": "npt=0.000-", "RTP-Info": info})
            self.playing = True
            self.endpoint.sessions.add(self)
            self.endpoint.total += 1
            self.endpoint.start_pump()
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


# --- the endpoint ---------------------------------------------------------------------------


class RtspEndpoint(CameraEndpoint):
    """An X1/P2S/H2 printer's camera: RTSP over TLS, RTP/JPEG interleaved (PROTOCOL.md §4.2).

    Registered with the :class:`~.camera.CameraHost` beside the P1/A1 JPEG
    streams: the same thread and loop, the same pictures (:meth:`CameraHost.latest`,
    re-rendered at most once per the host's interval and sent ``fps`` times a
    second), the same faults (stall, drop, not listening, certificate).
    ``request_timeout`` bounds the TLS handshake and each request;
    ``session_timeout`` the silence of a client between requests (players
    send ``GET_PARAMETER`` keep-alives).
    """

    kind = "rtsps"

    def __init__(
        self,
        serial: str,
        access_code: Callable[[], str],
        cert: CertFiles,
        *,
        port: int = 0,
        fps: float = DEFAULT_FPS,
        request_timeout: float = 10.0,
        session_timeout: float = 60.0,
    ) -> None:
        super().__init__(serial, access_code, cert, port=port)
        if not 0 < fps <= 60:
            raise ValueError("the RTSP camera's fps must be more than 0 and at most 60")
        self.fps = fps
        self.request_timeout = request_timeout
        self.session_timeout = session_timeout
        self.sessions: set[_Connection] = set()  # playing now
        self.frames_sent = 0
        self._open: set[_Connection] = set()  # every connection, before auth too
        self._server: asyncio.Server | None = None
        self._pump: asyncio.Task[None] | None = None
        self._clock_base = secrets.randbits(32)
        self._started = time.monotonic()

    @property
    def max_backlog(self) -> int:
        """Unread bytes after which a viewer is cut (the host's bound)."""
        return self.host.max_backlog if self.host is not None else MAX_BACKLOG

    @property
    def connections(self) -> int:
        return len(self.sessions)

    async def listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve,
            LOOPBACK,
            self.port,
            reuse_address=True,
            ssl=self.context(),
            ssl_handshake_timeout=self.request_timeout,
            limit=MAX_LINE * 2,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    def unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def drop(self) -> int:
        connections = list(self._open)
        for connection in connections:
            connection.abort()
        self._open.clear()
        self.sessions.clear()
        return len(connections)

    def admits(self) -> bool:
        """Whether one more viewer may play (the host's ``max_clients``)."""
        limit = self.host.max_clients if self.host is not None else MAX_CONNECTIONS
        return len(self.sessions) < limit

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._open) >= MAX_CONNECTIONS or not self.listening:
            writer.transport.abort()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        connection = _Connection(self, reader, writer)
        self._open.add(connection)
        try:
            await connection.run()
        finally:
            self._open.discard(connection)

    # --- media

    def rtp_time(self) -> int:
        """The 90 kHz clock now (one clock for every viewer of this camera)."""
        ticks = int((time.monotonic() - self._started) * CLOCK_RATE)
        return (self._clock_base + ticks) & 0xFFFFFFFF

    def start_pump(self) -> None:
        """Start sending frames if no one was watching."""
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run_pump())

    async def _run_pump(self) -> None:
        """Cut the current picture into RTP/JPEG and send it ``fps`` times a second."""
        host = self.host
        assert host is not None
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.fps
        cut: tuple[bytes, list[bytes]] | None = None
        while self.sessions:
            started = loop.time()
            if not self.stalled():
                try:
                    jpeg = await host.latest(self.serial)
                    if cut is None or cut[0] is not jpeg:
                        cut = (jpeg, rtp_jpeg_payloads(parse_jpeg(jpeg)))
                except Exception:  # a printer host that is stopping: try again next time
                    log.debug("camera %s: no picture", self.serial, exc_info=True)
                else:
                    stamp = self.rtp_time()
                    self.frames_sent += 1
                    for connection in list(self.sessions):
                        connection.send_frame(cut[1], stamp)
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
