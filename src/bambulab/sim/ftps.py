"""The simulated printers' SD cards over implicit FTPS, as the printers' vsftpd serves them.

One :class:`FtpsHost` serves every simulated printer: one thread runs one
pyftpdlib IO loop with one listener per printer, bound to ``127.0.0.1`` on a
free port (a real printer listens on 990; fixed ports can be asked for).
What a client meets is what PROTOCOL.md §3 measured on the printers:

* TLS from the first byte: the handshake starts on accept and the ``220``
  banner follows it. The certificate is the printer's own LAN leaf (CN =
  serial, from the simulator CA, the one its MQTT broker presents);
  :meth:`FtpsHost.set_certificate` swaps it for the wrong-certificate fault;
* user ``bblp``, password = the printer's access code *now* (read through a
  callable, so a code changed at run time applies to the next login), ``530``
  otherwise; home = the printer's :class:`~.printer.sdcard.SdCard` root, and
  nothing outside it is reachable (pyftpdlib's virtual root checks real paths);
* data channels must be protected (``PROT P``; without it every transfer
  command answers ``522 Data connections must be encrypted.`` as vsftpd's
  ``force_local_data_ssl`` does) and must **resume the control channel's TLS
  session** (vsftpd ``require_ssl_reuse``): after the data handshake the
  server checks OpenSSL's ``SSL_session_reused`` and, on TLS 1.2, that the
  master key is the control connection's, and otherwise answers
  ``522 SSL connection failed: session reuse required``. No byte of a listing
  or a download leaves before that check (pyftpdlib would otherwise write
  them from ``push``, inside the handshake, before its callback runs);
* one TLS context per printer for control and data (one session cache and
  ticket key), TLS 1.2 by default (1.3 as an option), OpenSSL's "ignore
  unexpected EOF" so that a client closing without ``close_notify`` does not
  break its next transfer;
* ``NLST`` answers full paths on the X1 family and bare names elsewhere;
  ``LIST`` is in vsftpd's ``ls -l`` form.

Faults (each applied on the FTPS thread through :meth:`FtpsHost.call`): a full
card (``552`` before the transfer when nothing fits, ``452`` when an upload
outgrows the room left; the partial file is removed, never left under the
target's name), connections cut after N bytes of the next transfers (TCP
reset, no answer; a partial upload is removed), a stall (the printer stops
answering for a while), and not listening at all (a printer switched off).

Threads: everything pyftpdlib does runs on the FTPS thread; other threads
hand it work through :meth:`FtpsHost.call` (a queue and a wake-up socket).
The SD card is shared with the printer's own thread: an uploaded file is on
the card, and in the printer's file list, the moment it is complete.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from OpenSSL import SSL
from pyftpdlib.authorizers import AuthenticationFailed  # type: ignore[import-untyped]
from pyftpdlib.exceptions import _RetryError  # type: ignore[import-untyped]
from pyftpdlib.filesystems import AbstractedFS  # type: ignore[import-untyped]
from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler  # type: ignore[import-untyped]
from pyftpdlib.ioloop import IOLoop  # type: ignore[import-untyped]
from pyftpdlib.servers import FTPServer  # type: ignore[import-untyped]

from .brokers import LAN_USER, LOOPBACK, Credential
from .certs import CertFiles
from .printer.sdcard import SdCard

log = logging.getLogger("bambulab.sim.ftps")

T = TypeVar("T")

FTPS_PORT = 990  # where a real printer listens
# Control connections one address may hold open on one printer: a cap against
# a runaway client eating the simulator's file descriptors (vsftpd's own
# default is unlimited; a printer is a small device).
MAX_SESSIONS_PER_IP = 32
REUSE_REQUIRED = "522 SSL connection failed: session reuse required"
MUST_ENCRYPT = "522 Data connections must be encrypted."
CARD_FULL = "552 Insufficient storage space."
CARD_FULL_DURING = "452 Insufficient storage space; transfer aborted."
# Families whose NLST answers full paths (PROTOCOL.md §3: X1 full, P1 bare).
FULL_PATH_NLST = frozenset({"X1"})
_TRANSFERS = frozenset({"LIST", "NLST", "MLSD", "RETR", "STOR", "STOU", "APPE"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SIX_MONTHS = 180 * 86400
_UNDECIDED = object()


def _quiet_pyftpdlib() -> None:
    # pyftpdlib logs every command at INFO; keep that out of `bambu sim` output
    # unless someone configured its logger on purpose.
    library = logging.getLogger("pyftpdlib")
    if library.level == logging.NOTSET:
        library.setLevel(logging.WARNING)


def server_context(cert: CertFiles, *, tls13: bool = False) -> SSL.Context:
    """The one TLS context a printer's control and data channels share."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_max_proto_version(SSL.TLS1_3_VERSION if tls13 else SSL.TLS1_2_VERSION)
    context.use_certificate_chain_file(str(cert.cert_file))
    context.use_privatekey_file(str(cert.key_file))
    options = SSL.OP_NO_COMPRESSION
    options |= getattr(SSL, "OP_IGNORE_UNEXPECTED_EOF", 0)
    context.set_options(options)
    context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    context.set_session_id(b"bambu-sim-ftps")
    return context


def session_resumed(data: SSL.Connection, control: SSL.Connection) -> bool:
    """Whether the data connection resumed the control connection's TLS session.

    OpenSSL's ``SSL_session_reused`` (pyOpenSSL has no wrapper; its binding
    does), plus, on TLS 1.2, the same master key as the control connection:
    a session resumed from another control connection does not count.
    """
    from OpenSSL._util import lib  # private, but the binding pyOpenSSL itself uses

    if not lib.SSL_session_reused(data._ssl):
        return False
    if data.get_protocol_version_name() == "TLSv1.2":
        return data.master_key() == control.master_key()
    return True


def _cut(channel: Any) -> None:
    """Close a channel's TCP connection with a reset, no TLS goodbye, no answer."""
    if channel is None or channel._closed:
        return
    channel._error = True  # skip the TLS shutdown in SSLConnectionMixin.close
    channel._resp = ()  # a data channel's final answer
    with contextlib.suppress(OSError):
        channel.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    channel.close()


# --- per printer ---------------------------------------------------------------------------


@dataclass
class Faults:
    """One printer's FTPS faults; read and written on the FTPS thread only."""

    drop_after: int | None = None  # cut the next transfers after this many bytes
    drop_times: int = 0  # how many transfers still get cut
    stall_until: float = 0.0  # time.monotonic() until which nothing is answered

    def stalled(self) -> float:
        """Seconds the stall still lasts (0 when not stalled)."""
        return max(0.0, self.stall_until - time.monotonic())


@dataclass
class Endpoint:
    """One printer's FTPS service: its card, code, certificate, listener and faults."""

    serial: str
    card: SdCard
    access_code: Callable[[], str]
    cert: CertFiles
    full_path_nlst: bool
    port: int = 0
    tls13: bool = False
    listening: bool = True
    faults: Faults = field(default_factory=Faults)
    server: Any = None  # _Server while listening
    sessions: set[Any] = field(default_factory=set)  # open control channels
    _context: SSL.Context | None = None

    def context(self) -> SSL.Context:
        """The TLS context, made on first use (a big fleet starts without making any)."""
        if self._context is None:
            self._context = server_context(self.cert, tls13=self.tls13)
        return self._context

    def set_certificate(self, cert: CertFiles) -> None:
        """Present ``cert`` to the next connections."""
        self.cert = cert
        self._context = None


class _Authorizer:
    """``bblp`` and the printer's access code; home is the SD card."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        if not Credential(LAN_USER, self._endpoint.access_code()).matches(username, password):
            raise AuthenticationFailed("Login incorrect.")

    def get_home_dir(self, username: str) -> str:
        return str(self._endpoint.card.root)

    def has_user(self, username: str) -> bool:
        return username == LAN_USER

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return True  # the virtual root (AbstractedFS.validpath) keeps paths on the card

    def get_perms(self, username: str) -> str:
        return "elradfmwMT"

    def get_msg_login(self, username: str) -> str:
        return "Login successful."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        pass

    def terminate_impersonation(self, username: str) -> None:
        pass


class _Upload:
    """A file being uploaded, refusing to grow past the room left on the card."""

    def __init__(self, file: Any, room: int) -> None:
        self._file = file
        self._room = room
        self.full = False

    @property
    def name(self) -> str:
        return str(self._file.name)

    @property
    def closed(self) -> bool:
        return bool(self._file.closed)

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            self.full = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return int(self._file.write(data))

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._file.seek(offset, whence))

    def tell(self) -> int:
        return int(self._file.tell())

    def close(self) -> None:
        self._file.close()


def _ls_line(name: str, st: os.stat_result, now: float) -> str:
    """One ``LIST`` line as vsftpd's ``build_dir_line`` writes it.

    Link count padded to 4, owner and group to 8, size to 8, and the date as
    strftime ``%b %d %H:%M`` (``%b %d  %Y`` past six months): the day is
    zero-padded, unlike GNU ls, and LAN libraries parse exactly that
    (bambu-printer-manager's ``FTP_LIST_PATTERN`` wants two digits).
    """
    kind = "d" if stat.S_ISDIR(st.st_mode) else "-"
    perms = kind + ("rwxr-xr-x" if kind == "d" else "rw-r--r--")
    moment = time.gmtime(st.st_mtime)
    if abs(now - st.st_mtime) > _SIX_MONTHS:
        when = f"{_MONTHS[moment.tm_mon - 1]} {moment.tm_mday:02d}  {moment.tm_year}"
    else:
        clock = f"{moment.tm_hour:02d}:{moment.tm_min:02d}"
        when = f"{_MONTHS[moment.tm_mon - 1]} {moment.tm_mday:02d} {clock}"
    return f"{perms} {st.st_nlink:4d} {'root':<8} {'root':<8} {st.st_size:8d} {when} {name}\r\n"


class _CardFS(AbstractedFS):  # type: ignore[misc]
    """pyftpdlib's virtual root on the card, with vsftpd's listing and the card's capacity."""

    def open(self, filename: str, mode: str) -> Any:
        file = super().open(filename, mode)
        room = getattr(self.cmd_channel, "upload_room", None)
        if ("r" in mode and "+" not in mode) or room is None:
            return file
        return _Upload(file, room)

    def format_list(
        self, basedir: str, listing: list[str], ignore_err: bool = True
    ) -> Iterator[bytes]:
        now = time.time()
        for name in listing:
            try:
                st = os.stat(os.path.join(basedir, name))
            except OSError:
                if ignore_err:
                    continue
                raise
            yield _ls_line(name, st, now).encode("utf-8", "replace")


class _Data(TLS_DTPHandler):  # type: ignore[misc]
    """A data channel that proves TLS session reuse before it moves a byte."""

    # 256 KiB per read and write instead of pyftpdlib's 64 KiB: fewer trips
    # through the Python loop per megabyte on a fast loopback.
    ac_in_buffer_size = 1 << 18
    ac_out_buffer_size = 1 << 18

    def __init__(self, sock: socket.socket, cmd_channel: Any) -> None:
        self._verified = False
        self._counted = 0
        self._resp: tuple[Any, ...] = ()
        self._limit: int | object | None = _UNDECIDED
        super().__init__(sock, cmd_channel)

    def handle_ssl_established(self) -> None:
        control = self.cmd_channel
        if not session_resumed(self.socket, control.socket):
            control.server_aborted = True
            self._resp = ()
            self._error = True  # close at once, no TLS goodbye
            control.respond(REUSE_REQUIRED)
            self.close()
            return
        self._verified = True

    def initiate_send(self) -> None:
        # pyftpdlib pushes listings and downloads as soon as the command
        # arrives: hold them until the handshake is done and checked.
        if self._ssl_requested and not self._verified:
            return
        super().initiate_send()

    def _budget(self, wanted: int) -> int:
        """Bytes this transfer may still move before a drop fault cuts it (-1: cut now).

        The fault is taken by the first file transfer (RETR, STOR, APPE: the
        data channel has a file) that moves a byte after it was set.
        """
        if self._limit is _UNDECIDED:
            faults: Faults = self.cmd_channel.endpoint.faults
            self._limit = None
            if self.file_obj is not None and faults.drop_after is not None:
                self._limit = faults.drop_after
                faults.drop_times -= 1
                if faults.drop_times <= 0:
                    faults.drop_after, faults.drop_times = None, 0
        if not isinstance(self._limit, int):
            return wanted
        left = self._limit - self._counted
        return min(wanted, left) if left > 0 else -1

    def _pause_if_stalled(self) -> bool:
        seconds = self.cmd_channel.endpoint.faults.stalled()
        if seconds <= 0:
            return False
        _pause(self, seconds)
        return True

    def recv(self, buffer_size: int) -> bytes:
        if self._pause_if_stalled():
            raise _RetryError
        budget = self._budget(buffer_size)
        if budget < 0:
            self.cmd_channel.cut()
            raise _RetryError
        data = bytes(super().recv(budget))
        self._counted += len(data)
        return data

    def send(self, data: bytes) -> int:
        if self._pause_if_stalled():
            return 0
        budget = self._budget(len(data))
        if budget < 0:
            self.cmd_channel.cut()
            return 0
        sent = int(super().send(data[:budget]))
        self._counted += sent
        return sent

    def handle_failed_ssl_handshake(self) -> None:
        if not self._initialized:
            # A data connection no transfer is waiting for (the client gave
            # up after a 550, say): vsftpd would not even have accepted it.
            self._resp = ()
            self.close()
            return
        super().handle_failed_ssl_handshake()

    def close(self) -> None:
        # An upload the server cut (card full, dropped connection, no session
        # reuse) must not stay behind under the target's name; remove it
        # before the socket closes or the answer goes out, so that a client
        # that sees either already finds it gone.
        upload = self.file_obj
        if (
            not self._closed
            and self.receive
            and not self.transfer_finished
            and self.cmd_channel.server_aborted
            and upload is not None
        ):
            upload.close()
            with contextlib.suppress(OSError):
                os.remove(upload.name)
        super().close()

    def handle_error(self) -> None:
        upload = self.file_obj
        if isinstance(upload, _Upload) and upload.full:
            self.cmd_channel.server_aborted = True
            self._resp = (CARD_FULL_DURING, log.debug)
            self._error = True
            self.close()
            return
        super().handle_error()


def _pause(channel: Any, seconds: float) -> None:
    """Take a channel off the loop for ``seconds`` (a stalled printer), then put it back."""
    events = channel._current_io_events
    channel.del_channel()

    def resume() -> None:
        if not channel._closed:
            channel.add_channel(events=events)

    channel.ioloop.call_later(seconds, resume)


class _Control(TLS_FTPHandler):  # type: ignore[misc]
    """A printer's control connection: implicit TLS, vsftpd's answers, the card as root."""

    dtp_handler = _Data
    abstracted_fs = _CardFS
    banner = "Bambu Lab printer FTPS (bambulab simulator)"
    use_sendfile = False
    auth_failed_timeout = 0.5
    max_login_attempts = 3
    timeout = 300  # vsftpd's idle_session_timeout

    @classmethod
    def get_ssl_context(cls) -> None:
        # FTPServer asks the class; each printer's context comes from its endpoint.
        return None

    def __init__(self, conn: socket.socket, server: Any, ioloop: Any = None) -> None:
        self.endpoint: Endpoint = server.endpoint
        self.upload_room: int | None = None
        self.server_aborted = False
        self._greeted = False
        self._refusal = ""
        super().__init__(conn, server, ioloop)
        if not self.connected:
            return
        self.authorizer = _Authorizer(self.endpoint)
        self.ssl_context = self.endpoint.context()
        self.endpoint.sessions.add(self)

    # --- implicit TLS: handshake first, then the banner

    def handle(self) -> None:
        self.on_connect()
        seconds = self.endpoint.faults.stalled()
        self.secure_connection(self.ssl_context)
        if seconds > 0 and not self._closed:
            _pause(self, seconds)

    def handle_ssl_established(self) -> None:
        if self._greeted:
            return
        self._greeted = True
        if self._refusal:
            self.respond(self._refusal)
            self.close_when_done()
            return
        self.respond(f"220 {self.banner}")

    def handle_max_cons_per_ip(self) -> None:
        # pyftpdlib would answer in clear text; on implicit TLS the refusal
        # comes after the handshake, in place of the banner.
        self._refusal = "421 There are too many connections from your internet address."
        self.handle()

    def close(self) -> None:
        self.endpoint.sessions.discard(self)
        super().close()

    def cut(self) -> None:
        """A dropped connection: reset the data and control connections, answer nothing."""
        self.server_aborted = True
        _cut(self.data_channel)
        _cut(self)

    # --- commands

    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        seconds = self.endpoint.faults.stalled()
        if seconds > 0:
            events = self._current_io_events
            self.del_channel()

            def later() -> None:
                if not self._closed:
                    self.add_channel(events=events)
                    super(_Control, self).pre_process_command(line, cmd, arg)

            self.ioloop.call_later(seconds, later)
            return
        super().pre_process_command(line, cmd, arg)

    def process_command(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        if cmd in _TRANSFERS and not self._prot:
            self.respond(MUST_ENCRYPT)
            return
        super().process_command(cmd, *args, **kwargs)

    def ftp_PROT(self, line: str) -> None:
        # vsftpd's answers; it does not insist on PBSZ first.
        arg = line.upper()
        if arg == "C":
            self._prot = False
            self.respond("200 PROT now Clear.")
        elif arg == "P":
            self._prot = True
            self.respond("200 PROT now Private.")
        elif arg in ("S", "E"):
            self.respond("536 PROT not supported.")
        else:
            self.respond("504 PROT not recognized.")

    def ftp_NLST(self, path: str) -> str | None:
        if not self.endpoint.full_path_nlst:
            listed: str | None = super().ftp_NLST(path)
            return listed
        try:
            if self.fs.isdir(path):
                names = sorted(self.fs.listdir(path))
                base = self.fs.fs2ftp(path)
            else:
                self.fs.lstat(path)
                base, names = self.fs.fs2ftp(os.path.dirname(path)), [os.path.basename(path)]
        except OSError as exc:
            self.respond(f"550 {exc.strerror or 'No such file or directory'}.")
            return None
        lines = "".join(f"{base.rstrip('/')}/{name}\r\n" for name in names)
        self.push_dtp_data(lines.encode("utf-8", "replace"), cmd="NLST")
        return path

    def ftp_STOR(self, file: str, mode: str = "w") -> str | None:
        card = self.endpoint.card
        free = card.free_bytes()
        if free <= 0:
            self.respond(CARD_FULL)
            return None
        replaced = 0
        with contextlib.suppress(OSError):
            replaced = os.stat(file).st_size if "a" not in mode else 0
        self.upload_room = free + replaced
        self.server_aborted = False
        try:
            result = super().ftp_STOR(file, mode)
        finally:
            self.upload_room = None
        return None if result is None else str(result)


class _Server(FTPServer):  # type: ignore[misc]
    """One printer's listener."""

    max_cons = 0  # pyftpdlib counts the whole loop's sockets, every printer's: no use here
    max_cons_per_ip = MAX_SESSIONS_PER_IP

    def __init__(self, endpoint: Endpoint, ioloop: Any) -> None:
        self.endpoint = endpoint
        super().__init__((LOOPBACK, endpoint.port), _Control, ioloop=ioloop, backlog=16)


# --- the thread ---------------------------------------------------------------------------


class _Waker:
    """The read end of a socket pair in the IO loop: runs the queued calls."""

    def __init__(self, host: FtpsHost) -> None:
        self._host = host
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)

    def fileno(self) -> int:
        return self.reader.fileno()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def handle_read_event(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self.reader.recv(4096):
                pass
        self._host._run_calls()

    def handle_write_event(self) -> None:
        pass

    def handle_close(self) -> None:
        pass

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self.writer.send(b"\0")

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


class FtpsHost:
    """Every simulated printer's FTPS server, on one thread and one IO loop."""

    def __init__(self, *, tls13: bool = False) -> None:
        self.tls13 = tls13
        self.endpoints: dict[str, Endpoint] = {}
        self._ioloop: Any = None
        self._thread: threading.Thread | None = None
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._waker: _Waker | None = None
        self._stopping = False

    def add(
        self,
        serial: str,
        card: SdCard,
        access_code: Callable[[], str],
        cert: CertFiles,
        *,
        family: str,
        port: int = 0,
    ) -> Endpoint:
        """Register a printer (before :meth:`start`)."""
        if self._thread is not None:
            raise RuntimeError("add printers before starting the FTPS host")
        endpoint = Endpoint(
            serial,
            card,
            access_code,
            cert,
            full_path_nlst=family in FULL_PATH_NLST,
            port=port,
            tls13=self.tls13,
        )
        self.endpoints[serial] = endpoint
        return endpoint

    def start(self) -> None:
        """Listen for every printer and start the thread."""
        if self._thread is not None:
            return
        _quiet_pyftpdlib()
        self._ioloop = IOLoop.factory()
        waker = _Waker(self)
        self._waker = waker
        self._ioloop.register(waker.fileno(), waker, self._ioloop.READ)
        try:
            for endpoint in self.endpoints.values():
                if endpoint.listening:
                    self._listen(endpoint)
        except BaseException:
            self._close_loop()
            raise
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="bambu-sim-ftps", daemon=True)
        self._thread.start()

    def _listen(self, endpoint: Endpoint) -> None:
        if endpoint.server is None:
            endpoint.server = _Server(endpoint, self._ioloop)
            endpoint.port = int(endpoint.server.address[1])

    def _run(self) -> None:
        ioloop = self._ioloop
        while not self._stopping:
            timeout = ioloop.sched.poll()
            try:
                ioloop.poll(0.5 if timeout is None else min(timeout, 0.5))
            except Exception:  # a handler bug must not take every printer's FTPS down
                log.exception("FTPS loop error")
        self._run_calls()

    def _run_calls(self) -> None:
        while True:
            try:
                function, future = self._calls.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function())
            except BaseException as exc:
                future.set_exception(exc)

    def call(self, function: Callable[[], T], timeout: float = 10.0) -> T:
        """``function()`` on the FTPS thread; its result (runs directly when not started)."""
        if self._thread is None or threading.current_thread() is self._thread:
            return function()
        future: Future[T] = Future()
        self._calls.put((function, future))
        assert self._waker is not None
        self._waker.wake()
        return future.result(timeout)

    def stop(self) -> None:
        """Close every listener and connection and end the thread (safe twice)."""
        thread = self._thread
        if thread is not None:
            with contextlib.suppress(Exception):
                self.call(self._close_all, timeout=5.0)
            self._stopping = True
            if self._waker is not None:
                self._waker.wake()
            thread.join(5.0)
            self._thread = None
        self._close_loop()

    def _close_all(self) -> None:
        for endpoint in self.endpoints.values():
            self._drop(endpoint)
            self._unlisten(endpoint)

    def _close_loop(self) -> None:
        if self._ioloop is not None:
            for endpoint in self.endpoints.values():
                endpoint.server = None
                endpoint.sessions.clear()
            with contextlib.suppress(Exception):
                self._ioloop.close()
            self._ioloop = None
        if self._waker is not None:
            self._waker.close()
            self._waker = None

    # --- per printer, from any thread

    def address(self, serial: str) -> tuple[str, int]:
        """``(host, port)`` of a printer's FTPS server (the port is kept while it is off)."""
        return LOOPBACK, self.endpoints[serial].port

    def set_listening(self, serial: str, listening: bool) -> None:
        """Listen (on the same port as before) or stop, cutting every connection."""
        endpoint = self.endpoints[serial]

        def apply() -> None:
            endpoint.listening = listening
            if listening:
                self._listen(endpoint)
            else:
                self._drop(endpoint)
                self._unlisten(endpoint)

        self.call(apply)

    def set_certificate(self, serial: str, cert: CertFiles) -> None:
        """Present ``cert`` to new connections (the open ones keep theirs)."""
        endpoint = self.endpoints[serial]
        self.call(lambda: endpoint.set_certificate(cert))

    def drop_connections(self, serial: str) -> int:
        """Reset every connection of a printer; it keeps listening. Returns how many."""
        endpoint = self.endpoints[serial]
        return self.call(lambda: self._drop(endpoint))

    def drop_after(self, serial: str, nbytes: int | None, times: int = 1) -> None:
        """Cut the next ``times`` transfers after ``nbytes`` bytes (None: stop doing that)."""
        if nbytes is not None and (nbytes < 0 or times < 1):
            raise ValueError("nbytes must be >= 0 and times >= 1")
        faults = self.endpoints[serial].faults

        def apply() -> None:
            faults.drop_after = nbytes
            faults.drop_times = times if nbytes is not None else 0

        self.call(apply)

    def stall(self, serial: str, seconds: float) -> None:
        """Answer nothing (commands, transfers, new connections) for ``seconds``."""
        faults = self.endpoints[serial].faults

        def apply() -> None:
            faults.stall_until = time.monotonic() + max(0.0, seconds)

        self.call(apply)

    def _drop(self, endpoint: Endpoint) -> int:
        sessions = list(endpoint.sessions)
        for session in sessions:
            session.cut()
        endpoint.sessions.clear()
        return len(sessions)

    def _unlisten(self, endpoint: Endpoint) -> None:
        server, endpoint.server = endpoint.server, None
        if server is not None:
            server.close()
