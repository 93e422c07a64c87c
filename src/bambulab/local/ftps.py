"""The printer's SD card over implicit FTPS (port 990): :class:`LocalFTPClient` and its async twin.

What the printers demand (PROTOCOL.md §3) and how this client meets it:

* TLS from the first byte: the control socket is wrapped as soon as it is
  connected (the stock ``ftplib.FTP_TLS`` waits for a plaintext 220 that
  never comes), then ``USER bblp`` / ``PASS <access code>``, ``PBSZ 0``,
  ``PROT P``, ``TYPE I``.
* Every passive data socket is wrapped with the **same** ``SSLContext`` and
  ``session=<control socket>.session``: the printers' vsftpd runs with
  ``require_ssl_reuse`` and answers 522 otherwise.
* After ``STOR`` the client sends close_notify without waiting for the
  server's, shuts its write side and reads until the server closes, instead
  of a blocking ``unwrap()`` (which hangs) or a plain ``close()`` (which under
  TLS 1.3 can turn into a reset that truncates the upload while the server
  still answers 226).
* The certificate is checked exactly as for the printer's MQTT broker
  (:func:`bambulab.mqtt.tls.lan_context`: a CA file, or the certificate
  pinned on first use, and CN = serial); ``tls12=True`` caps at TLS 1.2
  (TLS 1.3 session tickets break reuse on some stacks).

Every socket operation has a deadline (``timeout`` seconds for connecting and
for each read or write), reply lines and listings are capped
(:mod:`bambulab.protocol.ftp`), files move in 1 MiB blocks and are never held
whole in memory. An upload goes to a temporary name beside the target and is
renamed on success; on any failure the temporary file is deleted (over a new
connection when the old one died), so nothing half-written ever sits under
the target's name. Downloads to a path work the same way locally. The access
code never appears in an error, a log line or a ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from ..errors import (
    BambuError,
    CertificateError,
    ConfigurationError,
    FTPAuthenticationError,
    FTPError,
    ProtocolError,
    RemoteFileNotFoundError,
    RequestTimeoutError,
    SessionReuseError,
    StorageFullError,
    TransferInterruptedError,
    TransportError,
)
from ..mqtt.tls import PinStore, lan_context, pin_diagnosis
from ..protocol import ftp

log = logging.getLogger("bambulab.ftps")

FTPS_PORT = 990
USER = "bblp"
BLOCK = 1 << 20  # bytes per read/write of a transfer
DEFAULT_TIMEOUT = 15.0
# A listing's whole answer (100 000 entries of ~80 bytes is 8 MB).
MAX_LISTING_BYTES = 16 << 20

Progress = Callable[[int, int | None], Any]
"""``progress(done_bytes, total_bytes_or_None)``, called after every block."""

T = TypeVar("T")
Entries = list[ftp.RemoteEntry]


def _quiet(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


class LocalFTPClient:
    """One printer's SD card over implicit FTPS (blocking).

    ``LocalFTPClient(host, access_code, serial)``; ``port`` (990),
    ``ca_file``/``pin_file``/``insecure`` (how the certificate is checked, as
    for the LAN MQTT connection), ``tls12`` (cap at TLS 1.2), ``timeout``
    (seconds for connecting and for each read or write). Connects on first
    use; ``close()`` or ``with`` ends the session. Not thread-safe: one
    thread uses one client (the async twin gives each client its own thread).

    Remote paths are absolute (``/cache/a.3mf``); a relative one is taken
    from the root.
    """

    def __init__(
        self,
        host: str,
        access_code: str,
        serial: str,
        *,
        port: int = FTPS_PORT,
        ca_file: str | os.PathLike[str] | None = None,
        pin_file: str | os.PathLike[str] | None = None,
        insecure: bool = False,
        tls12: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not host:
            raise ConfigurationError("the printer's address (host) is needed for FTPS")
        if not access_code or len(access_code.strip()) != 8:
            raise ConfigurationError(
                "the LAN access code has 8 characters (see the printer's screen)"
            )
        self.host = host
        self.port = port
        self.serial = serial
        self.timeout = timeout
        self.tls12 = tls12
        self._code = access_code.strip()
        self._ca_file = ca_file
        self._pin_file = pin_file
        self._insecure = insecure
        self._context: ssl.SSLContext | None = None
        self._sock: ssl.SSLSocket | None = None
        self._parser = ftp.ReplyParser(self.label)
        self._replies: list[ftp.Reply] = []
        # Tests switch this off to prove that reuse is what the server demands.
        self._reuse_session = True
        # Set (from another thread) to stop the transfer under way: the async
        # face sets it when the awaiting task is cancelled.
        self._cancel: threading.Event | None = None

    # --- connection ------------------------------------------------------------------

    @property
    def label(self) -> str:
        """``ftps://host:port`` (what errors name)."""
        return f"ftps://{self.host}:{self.port}"

    def __repr__(self) -> str:
        state = "connected" if self._sock is not None else "not connected"
        return f"LocalFTPClient({self.label}, serial={self.serial!r}, {state})"

    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            ctx = lan_context(
                self.serial,
                self.host,
                self.port,
                ca_file=self._ca_file,
                pin_store=PinStore(self._pin_file),
                insecure=self._insecure,
            )
            if self.tls12:
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            self._context = ctx
        return self._context

    def connect(self) -> LocalFTPClient:
        """Open the control connection and log in (done by every operation when needed)."""
        if self._sock is not None:
            return self
        ctx = self._ssl_context()
        raw = self._dial(self.host, self.port)
        try:
            sock = self._handshake(ctx, raw, None)
        except BaseException:
            _quiet(raw)
            raise
        self._sock = sock
        self._parser = ftp.ReplyParser(self.label)
        self._replies = []
        try:
            self._expect(self._reply("greeting"), "greeting", 2)
            reply = self._command(f"USER {USER}", "USER")
            if reply.code == 331:
                reply = self._command(f"PASS {self._code}", "PASS")
            if reply.code in (530, 430) or (reply.kind == 5 and reply.code != 550):
                raise FTPAuthenticationError(
                    f"printer {self.serial} at {self.host} refused the access code "
                    f"({reply.code}): check the code on the printer's screen",
                    host=self.host,
                    code=reply.code,
                    command="PASS",
                )
            self._expect(reply, "PASS", 2)
            self._expect(self._command("PBSZ 0", "PBSZ"), "PBSZ", 2)
            self._expect(self._command("PROT P", "PROT"), "PROT", 2)
            self._expect(self._command("TYPE I", "TYPE"), "TYPE", 2)
        except BaseException:
            self._drop()
            raise
        return self

    def close(self) -> None:
        """Say ``QUIT`` (briefly) and close; safe to call twice."""
        sock = self._sock
        if sock is None:
            return
        with contextlib.suppress(OSError, BambuError):
            sock.settimeout(min(self.timeout, 2.0))
            sock.sendall(b"QUIT\r\n")
            self._reply("QUIT")
        self._drop()

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        _quiet(sock)

    def __enter__(self) -> LocalFTPClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _dial(self, host: str, port: int) -> socket.socket:
        try:
            return socket.create_connection((host, port), timeout=self.timeout)
        except TimeoutError as exc:
            raise RequestTimeoutError(
                f"no answer from {host}:{port} within {self.timeout:g} s", url=self.label
            ) from exc
        except OSError as exc:
            raise TransportError(
                f"cannot reach {host}:{port}: {exc.strerror or exc}", url=self.label
            ) from exc

    def _handshake(
        self, ctx: ssl.SSLContext, raw: socket.socket, session: ssl.SSLSession | None
    ) -> ssl.SSLSocket:
        raw.settimeout(self.timeout)
        try:
            return ctx.wrap_socket(raw, server_hostname=self.serial or None, session=session)
        except ssl.SSLCertVerificationError as exc:
            diagnose = pin_diagnosis(ctx, self.host, self.port)
            explained = diagnose() if diagnose is not None else None
            raise explained or CertificateError(
                f"TLS certificate of printer {self.serial} at {self.host}:{self.port} refused: "
                f"{exc.verify_message}",
                serial=self.serial,
            ) from exc
        except TimeoutError as exc:
            raise RequestTimeoutError(
                f"TLS handshake with {self.label} timed out after {self.timeout:g} s",
                url=self.label,
            ) from exc
        except (ssl.SSLError, OSError) as exc:
            raise TransportError(
                f"TLS handshake with {self.label} failed: {_why(exc)}", url=self.label
            ) from exc

    # --- replies and commands --------------------------------------------------------

    def _control(self) -> ssl.SSLSocket:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        return self._sock

    def _reply(self, what: str) -> ftp.Reply:
        sock = self._sock
        if sock is None:
            raise TransferInterruptedError(
                f"the connection to {self.label} is closed", host=self.host, command=what
            )
        while not self._replies:
            try:
                data = sock.recv(8192)
            except (OSError, ssl.SSLError) as exc:
                raise self._control_broke(exc, what, "did not answer", "waiting for") from exc
            if not data:
                self._drop()
                raise TransferInterruptedError(
                    f"{self.label} closed the connection (waiting for {what})",
                    host=self.host,
                    command=what,
                )
            try:
                self._replies.extend(self._parser.feed(data))
            except ProtocolError:
                self._drop()
                raise
        return self._replies.pop(0)

    def _command(self, line: str, verb: str) -> ftp.Reply:
        sock = self._control()
        try:
            sock.sendall(line.encode("utf-8") + b"\r\n")
        except (OSError, ssl.SSLError) as exc:
            raise self._control_broke(exc, verb, "did not take", "sending") from exc
        return self._reply(verb)

    def _control_broke(self, exc: BaseException, verb: str, late: str, doing: str) -> BambuError:
        """The control connection failed (timeout or break): it is dropped; the error to raise."""
        self._drop()
        if isinstance(exc, TimeoutError):
            return RequestTimeoutError(
                f"{self.label} {late} {verb} within {self.timeout:g} s", url=self.label
            )
        return TransferInterruptedError(
            f"the connection to {self.label} broke {doing} {verb}: {_why(exc)}",
            host=self.host,
            command=verb,
        )

    def _expect(self, reply: ftp.Reply, verb: str, kind: int, path: str | None = None) -> ftp.Reply:
        if reply.kind != kind:
            raise self._refusal(reply, verb, path)
        return reply

    def _refusal(self, reply: ftp.Reply, verb: str, path: str | None) -> FTPError:
        where = f" {path!r}" if path else ""
        said = f"{reply.code} {_short(reply.line)}"
        common = {"host": self.host, "code": reply.code, "command": verb, "path": path}
        if reply.code in (452, 552):
            return StorageFullError(
                f"the storage of printer {self.serial} is full ({said}): "
                f"{verb}{where} was not completed",
                **common,  # type: ignore[arg-type]
            )
        if reply.code == 522:
            return SessionReuseError(
                f"{self.label} refused the data channel ({said}): it must reuse the "
                f"control channel's TLS session",
                **common,  # type: ignore[arg-type]
            )
        if reply.code == 530:
            return FTPAuthenticationError(
                f"{self.label} refused {verb}: not logged in ({said})",
                **common,  # type: ignore[arg-type]
            )
        if reply.code in (550, 450) and path:
            return RemoteFileNotFoundError(
                f"{verb}{where} on printer {self.serial} failed: {said}",
                **common,  # type: ignore[arg-type]
            )
        return FTPError(
            f"{verb}{where} on {self.label} failed: {said}",
            **common,  # type: ignore[arg-type]
        )

    # --- data channel ----------------------------------------------------------------

    def _passive(self) -> socket.socket:
        reply = self._command("EPSV", "EPSV")
        if reply.code == 229:
            port = ftp.parse_epsv(reply.text)
        else:
            reply = self._expect(self._command("PASV", "PASV"), "PASV", 2)
            # The address in a 227 reply is the server's idea of itself (a
            # printer behind NAT, a container): dial the control host instead.
            _, port = ftp.parse_pasv(reply.text)
        return self._dial(self.host, port)

    def _open_data(self, line: str, verb: str, path: str | None) -> ssl.SSLSocket:
        """Send a transfer command on a fresh passive socket; the wrapped data socket."""
        raw = self._passive()
        try:
            reply = self._command(line, verb)
            if reply.kind != 1:
                raise self._refusal(reply, verb, path)
            ctl = self._control()
            session = ctl.session if self._reuse_session else None
            return self._handshake(self._ssl_context(), raw, session)
        except BaseException:
            _quiet(raw)
            raise

    def _stop_if_cancelled(self, data: ssl.SSLSocket, verb: str, path: str) -> None:
        """Abandon the transfer (both connections: the server is mid-transfer) if cancelled."""
        cancel = self._cancel
        if cancel is None or not cancel.is_set():
            return
        _quiet(data)
        self._drop()
        raise TransferInterruptedError(
            f"{verb} {path!r} on {self.label} was cancelled",
            host=self.host,
            command=verb,
            path=path,
        )

    def _finish(self, verb: str, path: str | None) -> ftp.Reply:
        """The reply ending a transfer (226); a refusal becomes its error."""
        try:
            reply = self._reply(verb)
        except TransferInterruptedError as exc:
            raise TransferInterruptedError(
                f"the connection to {self.label} broke before {verb} {path!r} was confirmed",
                host=self.host,
                command=verb,
                path=path,
            ) from exc
        return self._expect(reply, verb, 2, path)

    def _data_error(self, exc: BaseException, verb: str, path: str | None) -> BambuError:
        """A broken data channel: the server's own reason when it gave one (522, 552)."""
        with contextlib.suppress(BambuError):
            if self._sock is not None:
                self._sock.settimeout(min(self.timeout, 2.0))
                reply = self._reply(verb)
                self._sock.settimeout(self.timeout)
                if reply.kind != 2:
                    return self._refusal(reply, verb, path)
        if isinstance(exc, TimeoutError):
            return RequestTimeoutError(
                f"{verb} {path!r} on {self.label}: no data for {self.timeout:g} s",
                url=self.label,
            )
        self._drop()
        return TransferInterruptedError(
            f"the connection to {self.label} broke during {verb} {path!r}: {_why(exc)}",
            host=self.host,
            command=verb,
            path=path,
        )

    def _read_all(self, line: str, verb: str, path: str, cap: int) -> bytes:
        data = self._open_data(line, verb, path)
        chunks: list[bytes] = []
        total = 0
        try:
            while True:
                block = _recv(data, BLOCK)
                if not block:
                    break
                total += len(block)
                if total > cap:
                    raise ProtocolError(f"the answer to {verb} from {self.label} is too long")
                chunks.append(block)
        except ProtocolError:
            _quiet(data)
            self._drop()
            raise
        except (OSError, ssl.SSLError) as exc:
            _quiet(data)
            raise self._data_error(exc, verb, path) from exc
        _quiet(data)
        self._finish(verb, path)
        return b"".join(chunks)

    # --- operations ------------------------------------------------------------------

    def list(self, path: str = "/") -> Entries:
        """The entries of a directory (name, path, size, mtime, is_dir), X1 and P1 alike."""
        where = ftp.normalise(path)
        raw = self._read_all(f"LIST {where}", "LIST", where, MAX_LISTING_BYTES)
        return ftp.parse_list(raw.decode("utf-8", "replace").splitlines(), where)

    def names(self, path: str = "/") -> Entries:
        """``NLST``: names only (the X1 answers full paths, the P1 bare names; both normalised)."""
        where = ftp.normalise(path)
        raw = self._read_all(f"NLST {where}", "NLST", where, MAX_LISTING_BYTES)
        return ftp.parse_nlst(raw.decode("utf-8", "replace").splitlines(), where)

    def size(self, path: str) -> int:
        """A file's size in bytes (:class:`RemoteFileNotFoundError` when there is none)."""
        where = ftp.normalise(path)
        reply = self._command(f"SIZE {where}", "SIZE")
        return ftp.parse_size(self._expect(reply, "SIZE", 2, where))

    def exists(self, path: str) -> bool:
        """Whether a file or directory is there."""
        where = ftp.normalise(path)
        if where == "/":
            return True
        with contextlib.suppress(RemoteFileNotFoundError):
            self.size(where)
            return True
        directory, name = ftp.split(where)
        try:
            return any(e.name == name for e in self.list(directory))
        except RemoteFileNotFoundError:
            return False

    def delete(self, path: str) -> None:
        """Remove a file."""
        where = ftp.normalise(path)
        self._expect(self._command(f"DELE {where}", "DELE"), "DELE", 2, where)

    def rmdir(self, path: str) -> None:
        """Remove an empty directory."""
        where = ftp.normalise(path)
        self._expect(self._command(f"RMD {where}", "RMD"), "RMD", 2, where)

    def mkdir(self, path: str, *, exist_ok: bool = True) -> None:
        """Create a directory (already there is fine unless ``exist_ok=False``)."""
        where = ftp.normalise(path)
        reply = self._command(f"MKD {where}", "MKD")
        if reply.kind == 2:
            return
        if exist_ok and reply.code == 550 and self.exists(where):
            return
        raise self._refusal(reply, "MKD", where)

    def rename(self, source: str, target: str) -> None:
        """Rename (move) a file; an existing ``target`` is replaced."""
        src, dst = ftp.normalise(source), ftp.normalise(target)
        self._expect(self._command(f"RNFR {src}", "RNFR"), "RNFR", 3, src)
        self._expect(self._command(f"RNTO {dst}", "RNTO"), "RNTO", 2, dst)

    def download(
        self,
        remote: str,
        local: str | os.PathLike[str] | IO[bytes],
        *,
        progress: Progress | None = None,
    ) -> int:
        """Copy a file from the card to a local path or binary file object; the bytes moved.

        To a path, the file appears under its name only once complete (a
        temporary file beside it is renamed); a transfer shorter than the
        size the server announced is an error, never a silently short file.
        """
        where = ftp.normalise(remote)
        if isinstance(local, (str, os.PathLike)):
            target = Path(local)
            if target.is_dir():
                target = target / ftp.split(where)[1]
            tmp = target.with_name(f".{target.name}.part-{uuid.uuid4().hex[:8]}")
            try:
                with open(tmp, "wb") as handle:
                    moved = self._download(where, handle, progress)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            return moved
        return self._download(where, local, progress)

    def _download(self, where: str, sink: IO[bytes], progress: Progress | None) -> int:
        total = self.size(where)
        data = self._open_data(f"RETR {where}", "RETR", where)
        moved = 0
        # One reusable 1 MiB buffer, filled record by record (a TLS read returns
        # at most one 16 KiB record): one write and one progress call per MiB.
        buffer = memoryview(bytearray(BLOCK))
        try:
            while True:
                try:
                    filled = _fill(data, buffer)
                except (OSError, ssl.SSLError) as exc:
                    _quiet(data)
                    raise self._data_error(exc, "RETR", where) from exc
                if filled:
                    sink.write(buffer[:filled])
                    moved += filled
                    if progress is not None:
                        progress(moved, total)
                self._stop_if_cancelled(data, "RETR", where)
                if filled < BLOCK:
                    break
        except BambuError:
            raise
        except BaseException:
            _quiet(data)
            self._drop()
            raise
        _quiet(data)
        self._finish("RETR", where)
        if moved != total:
            raise TransferInterruptedError(
                f"RETR {where!r} from {self.label} ended after {moved} of {total} bytes",
                host=self.host,
                command="RETR",
                path=where,
            )
        return moved

    def upload(
        self,
        local: str | os.PathLike[str] | IO[bytes],
        remote: str,
        *,
        progress: Progress | None = None,
    ) -> int:
        """Copy a local path or binary file object to the card; the bytes moved.

        The data goes to a temporary name beside ``remote`` (same directory)
        and is renamed once the server confirmed every byte; on any failure
        (refusal, full card, dropped connection, timeout, Ctrl-C) the
        temporary file is deleted, reconnecting if needed, so ``remote`` is
        either the complete new file or what it was before.
        """
        where = ftp.normalise(remote)
        directory, name = ftp.split(where)
        if not name:
            raise ConfigurationError("upload needs a file name on the printer, not '/'")
        tmp = ftp.join(directory, f".{name}.part-{uuid.uuid4().hex[:8]}")
        if isinstance(local, (str, os.PathLike)):
            try:
                handle: IO[bytes] = open(local, "rb")  # noqa: SIM115
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read {os.fspath(local)!r}: {exc.strerror or exc}"
                ) from None
            total: int | None = os.fstat(handle.fileno()).st_size
        else:
            handle = local
            total = _remaining(local)
        try:
            try:
                moved = self._upload(handle, tmp, where, total, progress)
                self.rename(tmp, where)
            except BaseException:
                self._discard(tmp)
                raise
        finally:
            if handle is not local:
                handle.close()
        return moved

    def _upload(
        self,
        source: IO[bytes],
        tmp: str,
        where: str,
        total: int | None,
        progress: Progress | None,
    ) -> int:
        # Errors name the target (what the caller asked for), not the temporary name.
        data = self._open_data(f"STOR {tmp}", "STOR", where)
        moved = 0
        try:
            while True:
                block = source.read(BLOCK)
                if not block:
                    break
                try:
                    data.sendall(block)
                except (OSError, ssl.SSLError) as exc:
                    _quiet(data)
                    raise self._data_error(exc, "STOR", where) from exc
                moved += len(block)
                if progress is not None:
                    progress(moved, total)
                self._stop_if_cancelled(data, "STOR", where)
            # Not unwrap() (hangs) nor close() (may reset and truncate under
            # TLS 1.3): see _drain.
            try:
                _drain(data, self.timeout)
            except (OSError, ssl.SSLError) as exc:
                _quiet(data)
                raise self._data_error(exc, "STOR", where) from exc
        except BambuError:
            raise
        except BaseException:
            _quiet(data)
            self._drop()
            raise
        _quiet(data)
        self._finish("STOR", where)
        return moved

    def _discard(self, tmp: str) -> None:
        """Delete a temporary upload after a failure, on a new connection if needed."""
        for _ in range(2):
            try:
                self._control()
                self._command(f"DELE {tmp}", "DELE")
                return
            except BambuError:
                self._drop()
            except Exception:  # best effort: the original error is what matters
                self._drop()
                return
        log.warning("could not remove the partial upload %s on %s", tmp, self.label)

    def upload_bytes(self, data: bytes, remote: str) -> int:
        """Upload a small in-memory payload (tests, sidecars)."""
        import io

        return self.upload(io.BytesIO(data), remote)


def _fill(sock: ssl.SSLSocket, buffer: memoryview) -> int:
    """Read until ``buffer`` is full or the peer closed; the bytes read (short only at the end)."""
    filled = 0
    size = len(buffer)
    while filled < size:
        try:
            got = sock.recv_into(buffer[filled:], size - filled)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return filled
        if not got:
            return filled
        filled += got
    return filled


def _recv(sock: ssl.SSLSocket, size: int) -> bytes:
    """One read; the peer's close without close_notify counts as the end (vsftpd does that)."""
    try:
        return sock.recv(size)
    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
        return b""


def _drain(sock: ssl.SSLSocket, timeout: float) -> None:
    """End an upload: send close_notify and FIN, then read until the server closes.

    A blocking ``unwrap()`` waits for the server's own close_notify, which
    the printers never send (the upload hangs); a bare ``close()`` may turn
    into a reset that truncates the upload (TLS 1.3 tickets still unread), and
    a FIN without close_notify makes an OpenSSL 3 vsftpd answer 426. So the
    close_notify is sent without waiting for the answer (a non-blocking
    shutdown), and whatever the server still sends is read raw to the end.
    """
    sock.setblocking(False)
    with contextlib.suppress(ssl.SSLError, OSError, ValueError):
        sock.unwrap()
    sock.settimeout(timeout)
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_WR)
    while True:
        try:
            chunk = socket.socket.recv(sock, 65536)
        except ConnectionResetError:
            return
        if not chunk:
            return


def _remaining(handle: IO[bytes]) -> int | None:
    try:
        here = handle.tell()
        end = handle.seek(0, os.SEEK_END)
        handle.seek(here)
        return end - here
    except (OSError, ValueError, AttributeError):
        return None


def _why(exc: BaseException) -> str:
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, BrokenPipeError)):
        return "the other side closed the connection"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.__class__.__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__


def _short(text: str) -> str:
    from ..safetext import visible

    return visible(text)[:120]


def on_loop(progress: Progress | None) -> Progress | None:
    """``progress`` as a callback that a worker thread may call: it runs on the running loop."""
    if progress is None:
        return None
    loop = asyncio.get_running_loop()

    def relay(done: int, total: int | None) -> None:
        loop.call_soon_threadsafe(progress, done, total)

    return relay


class AsyncLocalFTPClient:
    """The async face of :class:`LocalFTPClient`: the same methods, awaited.

    asyncio's TLS (``loop.start_tls``/``open_connection(ssl=...)``) cannot
    resume a TLS session on a new connection (it takes no ``session``), and
    the printers refuse a data channel that does not resume the control
    channel's session (522). So each client drives the blocking code on its
    own worker thread, which owns every socket of that client; the event
    loop only awaits results. Progress callbacks are handed back to the
    event loop (``call_soon_threadsafe``), never run on the worker thread.
    ``async with`` / ``aclose()`` end the session and the thread. Cancelling
    the task that awaits a transfer stops the worker at the next block (an
    upload's temporary file is deleted, a download's not kept).
    """

    def __init__(self, host: str, access_code: str, serial: str, **kw: Any) -> None:
        self._sync = LocalFTPClient(host, access_code, serial, **kw)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"bambu-ftps-{serial or host}")
        self._closed = threading.Event()

    @property
    def sync(self) -> LocalFTPClient:
        """The blocking client underneath (use only from its worker, via ``run``)."""
        return self._sync

    def __repr__(self) -> str:
        return "Async" + repr(self._sync)

    async def _run(self, function: Callable[..., T], *args: Any, **kw: Any) -> T:
        if self._closed.is_set():
            raise ConfigurationError("this FTPS client is closed")
        loop = asyncio.get_running_loop()
        cancel = threading.Event()

        def call() -> T:
            # On the worker: this call's own cancel flag (a queued call cannot clear it).
            self._sync._cancel = cancel
            try:
                return function(*args, **kw)
            finally:
                self._sync._cancel = None

        try:
            return await loop.run_in_executor(self._pool, call)
        except asyncio.CancelledError:
            # The worker stops at the next block; an upload's temporary file is
            # deleted there, so a cancelled upload leaves nothing behind either.
            cancel.set()
            raise

    async def connect(self) -> AsyncLocalFTPClient:
        await self._run(self._sync.connect)
        return self

    async def list(self, path: str = "/") -> Entries:
        return await self._run(self._sync.list, path)

    async def names(self, path: str = "/") -> Entries:
        return await self._run(self._sync.names, path)

    async def size(self, path: str) -> int:
        return await self._run(self._sync.size, path)

    async def exists(self, path: str) -> bool:
        return await self._run(self._sync.exists, path)

    async def delete(self, path: str) -> None:
        await self._run(self._sync.delete, path)

    async def rmdir(self, path: str) -> None:
        await self._run(self._sync.rmdir, path)

    async def mkdir(self, path: str, *, exist_ok: bool = True) -> None:
        await self._run(self._sync.mkdir, path, exist_ok=exist_ok)

    async def rename(self, source: str, target: str) -> None:
        await self._run(self._sync.rename, source, target)

    async def download(
        self,
        remote: str,
        local: str | os.PathLike[str] | IO[bytes],
        *,
        progress: Progress | None = None,
    ) -> int:
        return await self._run(self._sync.download, remote, local, progress=on_loop(progress))

    async def upload(
        self,
        local: str | os.PathLike[str] | IO[bytes],
        remote: str,
        *,
        progress: Progress | None = None,
    ) -> int:
        return await self._run(self._sync.upload, local, remote, progress=on_loop(progress))

    async def aclose(self) -> None:
        """Close the session and stop the worker thread."""
        if self._closed.is_set():
            return
        with contextlib.suppress(Exception):
            await self._run(self._sync.close)
        self._closed.set()
        # The worker is idle now; joining it off the loop leaves no thread behind.
        await asyncio.to_thread(self._pool.shutdown, True)

    async def __aenter__(self) -> AsyncLocalFTPClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
