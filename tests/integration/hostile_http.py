"""A deliberately bad HTTP server on 127.0.0.1, one misbehaviour per instance.

Raw sockets and threads, no HTTP library: each mode is what a broken proxy,
a captive portal or a hostile host really sends. Every connection thread
stops when the server does, so a test that gave up early leaves nothing
behind. The slow modes give up after ``give_up`` seconds (closing the
connection), so a client without a deadline makes a test fail, not hang.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

GIB = 1 << 30
CHUNK = 64 * 1024

MODES = (
    "drip_body",  # headers at once, then one body byte per interval
    "drip_headers",  # the status line and headers one byte per interval
    "silent",  # accepts, reads the request, never answers
    "huge_declared",  # Content-Length 1 GiB, then streams it at ~1 MiB/s
    "huge_undeclared",  # no Content-Length: up to 1 GiB until the client hangs up
    "deep",  # 100 000 "[" with the right Content-Length
    "truncated",  # Content-Length 1000, sends 10 bytes, closes
    "garbage",  # not HTTP at all
    "bad_gzip",  # Content-Encoding: gzip over bytes that are not gzip
    "big_file",  # a well-formed 20 MiB body of a declared size (a download)
)


class HostileServer:
    """``with HostileServer("drip_body") as server: ... server.url ...``."""

    def __init__(
        self, mode: str, interval: float = 0.25, fill: bytes = b"[", give_up: float = 8.0
    ) -> None:
        if mode not in MODES:
            raise ValueError(mode)
        self.mode = mode
        self.interval = interval
        self.give_up = give_up
        self.fill = fill
        self.sent = 0  # body bytes written, over all connections
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []
        acceptor = threading.Thread(target=self._accept, daemon=True)
        acceptor.start()
        self._threads.append(acceptor)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        handler: Callable[[socket.socket], None] = getattr(self, "_" + self.mode)
        with conn:
            conn.settimeout(5)
            try:
                self._read_request(conn)
                handler(conn)
            except OSError:
                pass  # the client hung up: that is what it should do

    @staticmethod
    def _read_request(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(CHUNK)
            if not chunk:
                raise ConnectionResetError
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                left = int(value) - len(rest)
                while left > 0:
                    left -= len(conn.recv(min(left, CHUNK)))

    def _waiter(self) -> Callable[[], bool]:
        """Sleeps one interval per call; False once stopping or past ``give_up``."""
        end = time.monotonic() + self.give_up
        return lambda: not self._stop.wait(self.interval) and time.monotonic() < end

    def _head(self, length: int | None) -> bytes:
        size = f"Content-Length: {length}\r\n" if length is not None else "Connection: close\r\n"
        return f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{size}\r\n".encode()

    def _drip_body(self, conn: socket.socket) -> None:
        conn.sendall(self._head(100_000))
        wait = self._waiter()
        while wait():
            conn.sendall(b" ")
            self.sent += 1

    def _drip_headers(self, conn: socket.socket) -> None:
        wait = self._waiter()
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100_000:
            if not wait():
                return
            conn.sendall(bytes([byte]))

    def _silent(self, conn: socket.socket) -> None:
        self._stop.wait(self.give_up)

    def _stream(self, conn: socket.socket, total: int, pause: float = 0.0) -> None:
        block = self.fill * CHUNK
        while self.sent < total and not self._stop.wait(pause):
            conn.sendall(block)
            self.sent += len(block)

    def _huge_declared(self, conn: socket.socket) -> None:
        # Slow enough that reading up to the cap would outlast any test's
        # deadline: only a refusal on the Content-Length header is quick.
        conn.sendall(self._head(GIB))
        self._stream(conn, GIB, pause=0.05)

    def _huge_undeclared(self, conn: socket.socket) -> None:
        conn.sendall(self._head(None))
        self._stream(conn, GIB)

    def _deep(self, conn: socket.socket) -> None:
        body = b"[" * 100_000
        conn.sendall(self._head(len(body)) + body)

    def _truncated(self, conn: socket.socket) -> None:
        conn.sendall(self._head(1000) + b'{"devices"')
        conn.shutdown(socket.SHUT_RDWR)

    def _garbage(self, conn: socket.socket) -> None:
        conn.sendall(b"SSH-2.0-OpenSSH_9.6 \x00\xff\r\n\r\n")
        conn.shutdown(socket.SHUT_RDWR)

    def _bad_gzip(self, conn: socket.socket) -> None:
        body = b"\x1f\x8bnot really gzip"
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    def _big_file(self, conn: socket.socket) -> None:
        size = 20 * 1024 * 1024
        conn.sendall(
            f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        self._stream(conn, size)
