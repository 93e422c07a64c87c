"""The P1/A1 camera stream on TLS port 6000, sans-IO (PROTOCOL.md §4.1).

The client opens TLS, sends one 80-byte :func:`auth_packet` and then reads
frames: a 16-byte header (u32 little-endian payload size, u32 itrack 0, u32
flags 1, u32 0) followed by that many bytes of JPEG (``FF D8`` ... ``FF D9``).
Neither a header nor a frame arrives in one ``recv``: :class:`FrameDecoder`
takes bytes in any split (one at a time included) and yields whole JPEG
payloads, refusing a size over the cap, a zero size, or a payload that is not
a JPEG with :class:`~bambulab.errors.ProtocolError`. No sockets here; the
clients in :mod:`bambulab.local.camera` and the simulator's camera drive it.

Also here: the RTSPS URL of the X1/P2S/H2 families (§4.2) and the TUTK URL
of the remote camera (§4.3).
"""

from __future__ import annotations

import struct
from urllib.parse import quote, urlsplit, urlunsplit

from ..errors import ConfigurationError, ProtocolError

CAMERA_PORT = 6000
RTSPS_PORT = 322
RTSPS_PATH = "/streaming/live/1"
CAMERA_USER = "bblp"

AUTH_SIZE = 80
HEADER_SIZE = 16
# A 1280x720 printer frame is 50-300 KB; 16 MiB leaves room for any real one
# and stops a hostile size word from making the client hold gigabytes.
MAX_FRAME = 16 * 1024 * 1024
JPEG_START = b"\xff\xd8"
JPEG_END = b"\xff\xd9"

_AUTH_HEAD = struct.Struct("<IIII")
_HEADER = struct.Struct("<IIII")
_FIELD = 32


def _field(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > _FIELD:
        raise ConfigurationError(f"the camera {what} is longer than {_FIELD} bytes")
    return raw.ljust(_FIELD, b"\0")


def auth_packet(access_code: str, user: str = CAMERA_USER) -> bytes:
    """The 80 bytes a client sends first: u32 0x40, 0x3000, 0, 0, user and access code."""
    return _AUTH_HEAD.pack(0x40, 0x3000, 0, 0) + _field(user, "user") + _field(access_code, "code")


def parse_auth_packet(packet: bytes) -> tuple[str, str]:
    """``(user, access_code)`` of an auth packet (the simulator's side); ProtocolError if bad."""
    if len(packet) != AUTH_SIZE:
        raise ProtocolError(f"camera auth packet of {len(packet)} bytes, {AUTH_SIZE} expected")
    head = _AUTH_HEAD.unpack_from(packet)
    if head != (0x40, 0x3000, 0, 0):
        raise ProtocolError("camera auth packet with an unknown header")
    fields = packet[16:48], packet[48:80]
    try:
        user, code = (f.split(b"\0", 1)[0].decode("utf-8") for f in fields)
    except UnicodeDecodeError as exc:
        raise ProtocolError("camera auth packet that is not text") from exc
    return user, code


def frame_header(size: int) -> bytes:
    """The 16-byte header before a JPEG payload of ``size`` bytes."""
    return _HEADER.pack(size, 0, 1, 0)


def is_jpeg(payload: bytes | bytearray | memoryview) -> bool:
    """Whether ``payload`` starts with SOI and ends with EOI."""
    return (
        len(payload) >= 4 and bytes(payload[:2]) == JPEG_START and bytes(payload[-2:]) == JPEG_END
    )


class FrameDecoder:
    """Bytes of the stream in, JPEG payloads out.

    ``feed`` may be given any split of the stream; it returns the frames
    completed by that chunk (often none). ``max_frame`` caps the size a header
    may announce. After a :class:`ProtocolError` the stream is unusable: the
    caller drops the connection (the decoder raises again if fed).
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._need: int | None = None  # payload size once a header is read
        self._broken: ProtocolError | None = None
        self.frames = 0

    @property
    def pending(self) -> int:
        """Bytes held towards the next header or frame."""
        return len(self._buffer)

    @property
    def mid_frame(self) -> bool:
        """Whether a header or payload is partly read (the stream ended inside a frame)."""
        return bool(self._buffer) or self._need is not None

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take ``data``; the whole frames it completes, in order."""
        if self._broken is not None:
            raise self._broken
        self._buffer += data
        done: list[bytes] = []
        while True:
            if self._need is None:
                if len(self._buffer) < HEADER_SIZE:
                    return done
                size = _HEADER.unpack_from(self._buffer)[0]
                if size == 0 or size > self.max_frame:
                    self._broken = ProtocolError(
                        f"camera frame header announces {size} bytes "
                        f"(allowed 1 to {self.max_frame})"
                    )
                    raise self._broken
                del self._buffer[:HEADER_SIZE]
                self._need = size
            if len(self._buffer) < self._need:
                return done
            with memoryview(self._buffer) as view:
                payload = bytes(view[: self._need])  # one copy, not two
            del self._buffer[: self._need]
            self._need = None
            if not is_jpeg(payload):
                self._broken = ProtocolError(
                    f"camera frame of {len(payload)} bytes is not a JPEG (no FF D8 ... FF D9)"
                )
                raise self._broken
            self.frames += 1
            done.append(payload)


def rtsps_url(host: str, port: int = RTSPS_PORT, path: str = RTSPS_PATH) -> str:
    """``rtsps://host:port/streaming/live/1`` (no credentials)."""
    return f"rtsps://{_host(host)}:{port}{path}"


def with_credentials(url: str, access_code: str, user: str = CAMERA_USER) -> str:
    """``url`` with ``user:access_code@`` in it (percent-encoded): for FFmpeg and friends."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{quote(user, safe='')}:{quote(access_code, safe='')}@{_host(host)}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` removed: what logs and errors may show."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
