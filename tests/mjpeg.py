"""A raw MJPEG viewer for the camera server's tests and bench: asyncio sockets, no HTTP library.

A hundred of these fit in one test loop cheaply (an HTTP client per viewer
would cost more CPU than the server under test). The reader speaks just
enough HTTP/1.1: one GET, a status line and headers, a chunked body, and the
``multipart/x-mixed-replace`` parts inside it, each checked to carry
``Content-Type: image/jpeg`` and a ``Content-Length`` that matches a whole
JPEG.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

MAX_HEADERS = 64 * 1024
MAX_PART = 16 * 1024 * 1024


class StreamError(Exception):
    """The response was not a well-formed MJPEG stream."""


@dataclass
class MjpegViewer:
    """One streaming viewer; ``frames`` counts whole JPEG parts, ``times`` their arrival."""

    host: str
    port: int
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    times: list[float] = field(default_factory=list)
    last: bytes = b""
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _buffer: bytearray = field(default_factory=bytearray)  # the body, de-chunked
    _raw: bytearray = field(default_factory=bytearray)  # bytes read, still chunked
    _body_done: bool = False

    async def open(self, timeout: float = 5.0) -> MjpegViewer:
        """Connect, send the GET and read the status line and headers."""
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout
        )
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await asyncio.wait_for(self._reader.readuntil(b"\r\n\r\n"), timeout)
        if len(head) > MAX_HEADERS:
            raise StreamError("headers too long")
        status_line, *rest = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in rest:
            if ":" in line:
                name, value = line.split(":", 1)
                self.response_headers[name.strip().lower()] = value.strip()
        return self

    @property
    def boundary(self) -> str:
        content_type = self.response_headers.get("content-type", "")
        if not content_type.startswith("multipart/x-mixed-replace"):
            raise StreamError(f"not a multipart stream: {content_type!r}")
        return content_type.split("boundary=", 1)[1].strip()

    async def _more(self) -> None:
        """Read more of the chunked body into the buffer.

        Cancel-safe (a timeout may interrupt it at any await): bytes are only
        ever taken from the socket by one ``read`` and parsed without awaiting.
        """
        assert self._reader is not None
        data = await self._reader.read(65536)
        if not data:
            raise StreamError("the server closed the stream")
        self._raw += data
        while True:
            line_end = self._raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(self._raw[:line_end]).split(b";")[0], 16)
            if size == 0:
                self._body_done = True
                raise StreamError("the stream ended")
            if size > MAX_PART:
                raise StreamError("chunk too big")
            if len(self._raw) < line_end + 2 + size + 2:
                return
            start = line_end + 2
            self._buffer += self._raw[start : start + size]
            del self._raw[: start + size + 2]

    async def _need(self, count: int) -> None:
        while len(self._buffer) < count:
            await self._more()

    async def next_frame(self, timeout: float = 5.0) -> bytes:
        """The next whole JPEG part."""
        return await asyncio.wait_for(self._next_frame(), timeout)

    async def _next_frame(self) -> bytes:
        marker = f"--{self.boundary}\r\n".encode()
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buffer) > MAX_HEADERS:
                raise StreamError("part headers too long")
            await self._more()
        head = bytes(self._buffer[:end])
        if not head.startswith(marker):
            raise StreamError(f"part does not start with the boundary: {head[:40]!r}")
        part_headers = {}
        for line in head[len(marker) :].decode("latin-1").split("\r\n"):
            name, value = line.split(":", 1)
            part_headers[name.strip().lower()] = value.strip()
        if part_headers.get("content-type") != "image/jpeg":
            raise StreamError(f"part of type {part_headers.get('content-type')!r}")
        length = int(part_headers["content-length"])
        start = end + 4
        await self._need(start + length + 2)
        jpeg = bytes(self._buffer[start : start + length])
        if self._buffer[start + length : start + length + 2] != b"\r\n":
            raise StreamError("part not followed by CRLF")
        del self._buffer[: start + length + 2]
        if not (jpeg.startswith(b"\xff\xd8") and jpeg.endswith(b"\xff\xd9")):
            raise StreamError("part is not a JPEG")
        self.frames += 1
        self.times.append(time.monotonic())
        self.last = jpeg
        return jpeg

    async def read_for(self, seconds: float) -> int:
        """Read frames for ``seconds``; how many came."""
        before = self.frames
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                await self.next_frame(left)
            except TimeoutError:
                break
        return self.frames - before

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
            self._writer = None
