"""The connection both MQTT faces share: one paho client driven by one thread.

The thread owns the socket: only it calls paho, reads and writes. It
connects, reconnects with exponential backoff and jitter, resubscribes and
refreshes state after a reconnect (keeping the P1P's five-minute ``pushall``
rule); paho's keepalive pings replace a link that stopped answering, and a
printer silent past ``stall_timeout`` is asked for a full report. Other
threads hand it work through a queue and a wake-up socket and get futures
back; its timers settle those futures (timeouts), so nothing waits on it
without a deadline. What it is doing is kept as an immutable
:class:`~bambulab.models.events.ConnectionStatus` (``status``) and announced
as connection events (``Connected``, ``ConnectionLost``, ``RetryScheduled``,
``Reconnected``, ``ConnectionFailed``) on the same hand-over as the printers'
events. Incoming payloads go through the sans-IO
:class:`~bambulab.protocol.mqtt.ReportStream` (one per printer) and the event
:class:`~bambulab.protocol.events.Tracker`; replies resolve the futures of
the commands that asked for them. Wrong credentials stop the thread at once:
no retry storm.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import heapq
import itertools
import logging
import random
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ..errors import (
    BambuError,
    CertificateError,
    CommandError,
    CommandInterruptedError,
    CommandTimeoutError,
    MQTTAuthenticationError,
    NotConnectedError,
    TransportError,
    UnsupportedCommandError,
)
from ..models.events import ConnectionEvent, ConnectionStatus, Event, LiveEvent
from ..models.printer import detect_model
from ..models.state import PrinterState
from ..protocol import mqtt as proto
from ..protocol import mqtt_frames as frames
from ..protocol.events import ConnectionTracker, Tracker
from .tls import ReadAheadSocket

log = logging.getLogger("bambulab.mqtt")

PUSHALL_MIN_INTERVAL_P1P = 300.0  # the P1P is reported to struggle with more
# Bytes read per pass of the network loop at most: then timers and commands get a turn.
READ_AHEAD = 1024 * 1024
SUBSCRIBE_BATCH = 200  # topics per SUBSCRIBE packet when following many printers
# connect() returns at the SUBACKs, or this long after the CONNACK if they do not come.
SUBACK_GRACE = 3.0
# Waiting callers give up this long after the connection's own deadline would have fired.
BACKSTOP = 5.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter for reconnects."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.3
    # A session that lasted this long was healthy: the next outage starts from ``initial``.
    # Shorter ones (a broker that accepts, then drops us) keep growing the delay.
    stable_after: float = 5.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before reconnect ``attempt`` (1-based)."""
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return base * (1 + self.jitter * (rng.random() * 2 - 1))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and as whom to connect."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    tls: ssl.SSLContext | None = field(default=None, repr=False)
    client_id: str = ""
    label: str = ""  # for messages: "printer 01P... at 192.168.1.5" or "the Bambu cloud"
    # Asked once a certificate is refused: a clearer error (a pinned certificate that changed).
    diagnose: Callable[[], BambuError | None] | None = field(default=None, repr=False)


class Printer:
    """What the connection knows about one printer.

    :attr:`state` is an immutable :class:`PrinterState`: each message that
    changes it builds the next one (the stream merges copy-on-write) and
    rebinds :attr:`state` in one assignment, so a reader on another thread
    holds either the old state or the new one, whole, and an event carries
    the state right after its change for good.
    """

    def __init__(self, serial: str, dev_model_name: str | None = None) -> None:
        self.serial = serial
        # X1-family printers send the whole object every time: no leaf-by-leaf merge needed.
        style = detect_model(serial, dev_model_name).report_style
        self.stream = proto.ReportStream(serial, loads=orjson.loads, full_reports=style == "full")
        self.state = PrinterState(serial, self.stream.state, dev_model_name=dev_model_name)
        self.tracker = Tracker(serial)
        self.last_report = 0.0  # time.monotonic() of the last print report; 0: none yet
        self.last_pushall = 0.0
        self.full = (
            False  # a full report came (plain bool: one Event per printer weighed on the GC)
        )
        # Malformed fields already logged: once per field, not once per message.
        self.warned: set[str] = set()

    def sync_info(self) -> None:
        """Swap in a state carrying the latest ``info`` family body (``get_version``)."""
        info = self.stream.families.get("info")
        if info is not None:
            self.state = self.state.evolve(info=info)
            # get_version may name a model the serial did not (a new prefix):
            # from now on its reports are read the way that model sends them.
            self.stream.full_reports = self.state.model.report_style == "full"

    def process(self, payload: bytes) -> tuple[proto.Incoming, list[Event]]:
        """Decode, merge and turn one message into events (the hot path of every report)."""
        incoming = proto.decode(proto.report_topic(self.serial), payload, loads=orjson.loads)
        self.stream.apply(incoming)
        if incoming.kind == "report" and incoming.family == "print":
            self.state = state = self.state.evolve(raw=self.stream.state)
            self.last_report = time.monotonic()
            if not self.full and "gcode_state" in incoming.body:
                self.full = True
            return incoming, self.tracker.update(state, incoming.body.keys())
        if incoming.kind == "event":
            if incoming.command in ("client.connected", "client.disconnected"):
                online = incoming.command == "client.connected"
                return incoming, self.tracker.presence(self.state, online)
            return incoming, []
        if incoming.family == "info":
            self.sync_info()
        return incoming, []

    def report_age(self, now: float | None = None) -> float | None:
        """Seconds since the last print report (``None`` before the first)."""
        if not self.last_report:
            return None
        return max(0.0, (time.monotonic() if now is None else now) - self.last_report)

    def may_pushall(self, now: float | None = None) -> bool:
        """Whether a ``pushall`` may go out now (a P1P gets one every 5 min at most)."""
        if not self.is_p1p or not self.last_pushall:
            return True
        moment = time.monotonic() if now is None else now
        return moment - self.last_pushall >= PUSHALL_MIN_INTERVAL_P1P

    @property
    def is_p1p(self) -> bool:
        """Whether ``pushall`` must be rationed."""
        return self.state.model.code == "C11" or (
            self.state.model.code == "" and detect_model(self.serial).code == "C11"
        )


@dataclass(slots=True)
class _Pending:
    """A command waiting for its reply (owned by the network thread)."""

    command: str
    future: concurrent.futures.Future[proto.Incoming]
    session: int


# Commands printers answer unsigned even when they want signatures (PROTOCOL.md §2.7:
# reads stay open); everything else is signed when a signer is configured.
UNSIGNED = frozenset(
    {
        ("pushing", "pushall"),
        ("pushing", "start"),
        ("pushing", "stop"),
        ("info", "get_version"),
        ("upgrade", "get_history"),
    }
)


@dataclass(frozen=True)
class Signer:
    """Signs commands for firmware that wants them (PROTOCOL.md §2.8).

    ``sign`` is an RSA-SHA256 signature over the caller's own key (this project
    ships none); ``cert_serial_hex`` the serial of the certificate that goes
    with it. The envelope is :func:`bambulab.protocol.mqtt.sign_envelope`'s.
    """

    sign: Callable[[bytes], bytes] = field(repr=False)
    cert_serial_hex: str

    def envelope(self, command: proto.Command, serial: str) -> dict[str, Any]:
        """The signed message for ``command`` to printer ``serial``."""
        return proto.sign_envelope(command, self.sign, self.cert_serial_hex, serial)


class Connection:
    """A paho client plus everything both faces need, driven by one thread that owns the socket.

    Threads: the network thread (``bambu-mqtt-...``) is the only one that
    touches the paho client and its socket. Every other thread hands work over
    through :meth:`_call` (commands, ``add``, raw publishes) and gets a
    :class:`concurrent.futures.Future` back; timeouts are timers of the network
    thread, so both faces wait the same way. ``on_event`` is called on the
    network thread and must only hand the event over (to a dispatcher thread or
    an event loop): it must never block or call back into the connection and
    wait. What callers read (``printers``, each printer's ``state``,
    ``status``) is replaced whole, never changed in place.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        serials: Iterable[str],
        *,
        on_event: Callable[[LiveEvent], None],
        keepalive: int = 30,
        stall_timeout: float = 60.0,
        connect_timeout: float = 15.0,
        backoff: Backoff | None = None,
        models: dict[str, str] | None = None,
        first_attempts: int = 3,
        signer: Signer | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.signer = signer
        self.first_attempts = first_attempts
        self.keepalive = keepalive
        self.stall_timeout = stall_timeout
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self._rng = random.Random()
        self._on_event = on_event
        # Replaced whole by add() (under _table_lock), so iterating it is always safe.
        self.printers: Mapping[str, Printer] = {
            serial: Printer(serial, (models or {}).get(serial)) for serial in serials
        }
        self._table_lock = threading.Lock()
        # --- owned by the network thread --------------------------------------------------
        # A random start: the cloud broker carries other clients' replies on the same
        # report topic, and two clients both counting from 1 would take each other's.
        self._sequence = proto.SequenceCounter(self._rng.randrange(1, 1_000_000_000))
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()
        self._full_waiters: dict[str, list[concurrent.futures.Future[PrinterState]]] = {}
        self._nudged: dict[str, float] = {}
        self._unacked: set[int] = set()  # SUBSCRIBE packets of this session not acknowledged yet
        self._session_started = 0.0
        self._attempt_error: str | None = None  # why the broker refused this attempt
        # --- shared ---------------------------------------------------------------------
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._connected = threading.Event()
        self.session = 0  # number of the session up now (or last up); written by the network thread
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.closed: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.fatal: BambuError | None = None
        self.last_error: BambuError | None = None
        self.connects = 0
        self._tracker = ConnectionTracker(endpoint.label, time.time())
        self._thread: threading.Thread | None = None
        self._client = self._make_client()

    # --- lifecycle ----------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.endpoint.client_id,
            protocol=paho.MQTTv311,
            clean_session=True,  # the broker keeps nothing for us between connections
        )
        self._configure(client)
        return client

    def _fresh_session(self) -> None:
        """Forget everything the last connection left queued, before connecting again.

        paho sends every QoS 1 publish that was not acknowledged again after a
        reconnect (with DUP set), whatever ``clean_session`` says. A command
        the broker had already passed on when the connection died would reach
        the printer twice (same ``sequence_id``), long after its caller was
        told it failed: a replayed ``pause`` could stop a print resumed since.
        """
        self._client.reinitialise(self.endpoint.client_id, clean_session=True)
        self._configure(self._client)

    def _configure(self, client: paho.Client) -> None:
        ep = self.endpoint
        client.username_pw_set(ep.username, ep.password)
        if ep.tls is not None:
            if ep.tls.sslsocket_class is ssl.SSLSocket:
                # Reads everything waiting at once (see _read_ahead); otherwise the same.
                ep.tls.sslsocket_class = ReadAheadSocket
            client.tls_set_context(ep.tls)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        # With this hook set (and no paho thread), paho only queues a packet;
        # the network thread's own loop writes it. Only that thread calls paho.
        client.on_socket_register_write = _network_thread_writes
        # Unbounded: a (re)connect queues a refresh for every followed printer at once.
        client.max_queued_messages_set(0)

    def start(self, timeout: float | None = None) -> None:
        """Start the network thread (returns at once); give up if not connected within ``timeout``.

        ``ready`` resolves once the first connection is up and its subscriptions
        are acknowledged (a report published after that is not missed), or
        fails with why it could not be had.
        """
        if self._thread is not None:
            return
        limit = self.connect_timeout if timeout is None else timeout
        self._call(
            lambda: self._at(time.monotonic() + limit, lambda: self._connect_deadline(limit))
        )
        self._thread = threading.Thread(
            target=self._run, name=f"bambu-mqtt-{self.endpoint.label}", daemon=True
        )
        self._thread.start()

    def _connect_deadline(self, limit: float) -> None:
        if self.ready.done():
            return
        reason = f": {self.last_error}" if self.last_error else ""
        self._give_up(
            TransportError(f"could not connect to {self.endpoint.label} within {limit:g} s{reason}")
        )

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until the first connection is up; raise (a fresh copy of) why it could not be."""
        self.start(timeout)
        result_of(self.ready, self.connect_timeout if timeout is None else timeout)
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        """Raise a fresh copy of the error that stopped this connection for good, if any."""
        if self.fatal is not None:
            raise fresh(self.fatal) from self.fatal

    @property
    def connected(self) -> bool:
        """Whether the broker session is up right now."""
        return self._connected.is_set()

    @property
    def stopped(self) -> bool:
        """Whether the connection was closed or gave up."""
        return self._stop.is_set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until the connection was closed or gave up; whether it did."""
        return self._stop.wait(timeout)

    @property
    def status(self) -> ConnectionStatus:
        """What the connection is doing now: an immutable snapshot, safe from any thread."""
        return self._tracker.status

    def close_soon(self) -> None:
        """Ask the thread to disconnect and stop (returns at once; ``closed`` resolves after)."""
        self._stop.set()
        self._tracker.closed(time.time())
        if self._thread is None:
            self._finish()  # never started: nothing else will
        else:
            self._wake()

    def close(self) -> None:
        """Stop the thread and disconnect; idempotent. Pending commands fail at once."""
        self.close_soon()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    # --- work handed to the network thread ------------------------------------------------

    def _call(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the network thread (soon); after it ended, right here."""
        self._calls.append(work)
        if self._finished.is_set():
            self._run_calls()
        else:
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (already woken) or closed (finished)
            self._wake_w.send(b"\0")

    def _run_calls(self) -> None:
        while True:
            try:
                work = self._calls.popleft()
            except IndexError:
                return
            try:
                work()
            except Exception:  # a bug must not kill the network thread
                log.exception("%s: queued work failed", self.endpoint.label)

    def _at(self, when: float, work: Callable[[], None]) -> None:
        """Run ``work`` on the network thread at ``when`` (time.monotonic)."""
        heapq.heappush(self._timers, (when, next(self._timer_ids), work))

    def _run_timers(self, now: float) -> float:
        """Run the timers due; seconds until the next one."""
        while self._timers and self._timers[0][0] <= now:
            _, _, work = heapq.heappop(self._timers)
            try:
                work()
            except Exception:
                log.exception("%s: a timer failed", self.endpoint.label)
        return self._timers[0][0] - now if self._timers else 1.0

    # --- the network thread -----------------------------------------------------------

    def _run(self) -> None:
        try:
            self._every_second()
            self._connect_loop()
        finally:
            self._connected.clear()
            self._safe_disconnect()
            self._finish()

    def _finish(self) -> None:
        """Fail whatever still waits; later work runs in its caller (and fails there)."""
        self._finished.set()
        error = self.fatal or NotConnectedError("the connection was closed")
        if not self.ready.done():
            self.ready.set_exception(fresh(error))
        self._fail_pending(error)
        self._run_calls()
        for waiters in self._full_waiters.values():
            for future in waiters:
                _fail(future, fresh(error))
        self._full_waiters.clear()
        with contextlib.suppress(OSError):
            self._wake_r.close()
            self._wake_w.close()
        _succeed(self.closed, None)

    def _connect_loop(self) -> None:
        attempt = 0
        first = True
        while not self._stop.is_set():
            self._attempt_error = None
            self._tracker.trying()
            self._run_calls()
            try:
                if not first:
                    self._fresh_session()
                first = False
                self._client.connect(self.endpoint.host, self.endpoint.port, self.keepalive)
            except ssl.SSLCertVerificationError as exc:
                diagnose = self.endpoint.diagnose
                explained = diagnose() if diagnose is not None else None
                self._give_up(
                    explained
                    or CertificateError(
                        f"TLS certificate of {self.endpoint.label} refused: {exc.verify_message}"
                    )
                )
                break
            except (OSError, ssl.SSLError, ValueError) as exc:
                attempt += 1
                error = TransportError(f"cannot reach {self.endpoint.label}: {_reason(exc)}")
                self._note(error)
                if self.connects == 0 and attempt >= self.first_attempts:
                    # Never reached it at all: say so now rather than at the timeout.
                    self._give_up(error)
                    break
                delay = self.backoff.delay(attempt, self._rng)
                self._emit_all(self._tracker.retry(_reason(exc), time.time(), delay))
                if not self._idle(delay):
                    break
                continue
            sessions = self.connects
            reason = self._serve()
            up = self.connects > sessions  # this attempt reached CONNACK
            uptime = time.monotonic() - self._session_started if up else 0.0
            self._connected.clear()
            self._safe_disconnect()
            self._end_session(reason)
            if self.fatal is not None or self._stop.is_set():
                break
            if up and uptime >= self.backoff.stable_after:
                attempt = 0  # a healthy session: the next outage starts the backoff afresh
            attempt += 1
            delay = self.backoff.delay(attempt, self._rng)
            if up:
                # The connection's news first: a view then knows the printers'
                # offline events below come from the outage, not from them.
                self._emit_all(self._tracker.lost(reason, time.time(), delay))
                self._offline_all()
            else:
                error_text = self._attempt_error or reason
                self._emit_all(self._tracker.retry(error_text, time.time(), delay))
            if not self._idle(delay):
                break

    def _serve(self) -> str:
        """Drive one session's socket until it ends; why it ended."""
        client = self._client
        sock = client.socket()
        if sock is None:
            return "connection lost"
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                # A command is one small write: sent now, not held back by Nagle
                # until the broker's delayed ACK of the previous one (~40 ms).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.monotonic()
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_r, selectors.EVENT_READ)
            selector.register(sock, selectors.EVENT_READ)
            writing = False
            while not self._stop.is_set():
                self._run_calls()
                wait_for = self._run_timers(time.monotonic())
                if client.want_write() != writing:
                    writing = not writing
                    mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
                    selector.modify(sock, mask)
                # Bytes TLS already decrypted are not seen by select: read them first.
                buffered = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
                ready = selector.select(0 if buffered or self._calls else min(wait_for, 1.0))
                readable = buffered
                for key, events in ready:
                    if key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    elif events & selectors.EVENT_READ:
                        readable = True
                self._run_calls()
                rc = MQTTErrorCode.MQTT_ERR_SUCCESS
                if readable:
                    if isinstance(sock, ReadAheadSocket):
                        rc = self._read_ahead(sock)
                    else:
                        rc = client.loop_read()
                if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and client.want_write():
                    rc = client.loop_write()
                if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    rc = client.loop_misc()  # keepalive: a link that stopped answering pings dies
                if self.fatal is not None:
                    return "gave up"
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is not sock:
                    return _rc_reason(rc)
                if (
                    not self._connected.is_set()
                    and time.monotonic() - started > self.connect_timeout
                ):
                    reason = "did not answer CONNECT"
                    self._note(TransportError(f"{self.endpoint.label} {reason}"))
                    return reason
        return "closed"

    def _read_ahead(self, sock: ReadAheadSocket) -> MQTTErrorCode:
        """Read all that is waiting; take the QoS 0 publishes (reports) ourselves.

        paho reads a packet per call, a byte at a time, and builds a message
        object for it: at thousands of reports a second that was most of the
        connection's CPU. Here each select reads everything available; each
        whole QoS 0 ``PUBLISH`` goes straight to :meth:`_deliver`, and any
        other whole packet (acks, ``PINGRESP``, QoS 1) is lent to paho, which
        reads it, and only it, from the same buffer: it never holds half a
        packet, nor takes the reports behind it.
        """
        ended = sock.fill(READ_AHEAD)
        inbox = sock.inbox
        while True:
            try:
                found = frames.next_packet(inbox)
            except frames.FrameError as exc:
                self._note(TransportError(f"{self.endpoint.label} sent {exc}"))
                return MQTTErrorCode.MQTT_ERR_PROTOCOL
            if found is None:
                break
            first, start, end = found
            if not frames.is_qos0_publish(first):
                # paho reads exactly this packet from the inbox (it would go on
                # through the reports if it could: it reads as many packets per
                # call as it has messages queued, thousands after a connect).
                sock.window = end
                try:
                    rc = self._client.loop_read()
                finally:
                    sock.window = None
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._client.socket() is not sock:
                    return rc
                continue
            try:
                topic, payload = frames.publish_parts(inbox, start, end)
            except frames.FrameError as exc:
                log.warning("%s: skipped a message: %s", self.endpoint.label, exc)
                topic, payload = "", b""
            del inbox[:end]
            self._deliver(topic, payload)
        # At the end of the stream paho reads the EOF or the error itself and says which.
        return self._client.loop_read() if ended else MQTTErrorCode.MQTT_ERR_SUCCESS

    def _idle(self, seconds: float) -> bool:
        """Wait between attempts, still running queued work and timers; whether to go on."""
        until = time.monotonic() + seconds
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop.is_set():
                self._run_calls()
                now = time.monotonic()
                if now >= until:
                    return True
                next_timer = self._run_timers(now)
                if selector.select(max(0.0, min(until - now, next_timer))):
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
        return False

    def _every_second(self) -> None:
        """Per-printer staleness: a printer silent past its period is asked to report again."""
        self._at(time.monotonic() + 1.0, self._every_second)
        if not self._connected.is_set():
            return
        now = time.monotonic()
        for printer in self.printers.values():
            heard = max(
                printer.last_report, self._session_started, self._nudged.get(printer.serial, 0)
            )
            if now - heard < self.stall_timeout:
                continue
            self._nudged[printer.serial] = now
            if not printer.may_pushall(now):
                continue
            log.info("%s: no report for %.0f s; asking for a full one", printer.serial, now - heard)
            printer.last_pushall = now
            self._publish(printer.serial, proto.pushall().with_sequence(self._sequence()))

    def _end_session(self, reason: str) -> None:
        """The session ended: every command still waiting fails now, saying what is unknown."""
        label = self.endpoint.label
        for key, pending in list(self._pending.items()):
            if pending.session != self.session:
                continue
            del self._pending[key]
            serial, seq = key
            _fail(
                pending.future,
                CommandInterruptedError(
                    f"the connection to {label} was lost ({reason}) before printer {serial} "
                    f"answered {pending.command} (sequence {seq}): it may or may not have "
                    "been delivered",
                    serial=serial,
                    command=pending.command,
                    sequence_id=seq,
                    reason=reason,
                ),
            )

    def _safe_disconnect(self) -> None:
        try:
            self._client.disconnect()
        except Exception:
            log.debug("disconnect failed", exc_info=True)

    def _note(self, error: BambuError) -> None:
        if str(error) != str(self.last_error):
            log.info("%s", error)
        self.last_error = error

    def _give_up(self, error: BambuError) -> None:
        if self.fatal is not None:
            return
        self.fatal = error
        self.last_error = error
        # Raised to the caller (wait_connected, commands): logging it too would say it twice.
        log.debug("giving up: %s", error)
        self._stop.set()
        self._emit_all(self._tracker.failed(str(error), time.time()))
        if not self.ready.done():
            self.ready.set_exception(fresh(error))
        self._fail_pending(error)

    # --- paho callbacks (network thread) ------------------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            text = str(reason)
            if (
                reason.value in (4, 5, 134, 135)
                or "authori" in text.lower()
                or "password" in text.lower()
            ):
                self._give_up(
                    MQTTAuthenticationError(
                        f"{self.endpoint.label} refused the credentials ({text}): "
                        "check the access code or log in again",
                    )
                )
            else:
                self._attempt_error = f"refused the connection: {text}"
                self._note(TransportError(f"{self.endpoint.label} {self._attempt_error}"))
            return
        self.connects += 1
        self.session = self.connects
        self._session_started = time.monotonic()
        self._nudged.clear()
        self._connected.set()
        self._emit_all(self._tracker.connected(time.time()))
        log.info("connected to %s (connection #%d)", self.endpoint.label, self.connects)
        topics = [(proto.report_topic(serial), 0) for serial in self.printers]
        self._unacked = set()
        for start in range(0, len(topics), SUBSCRIBE_BATCH):
            _, mid = client.subscribe(topics[start : start + SUBSCRIBE_BATCH])
            if mid is not None:
                self._unacked.add(mid)
        if self._unacked:
            # A broker that never acknowledges must not hold connect() up for good.
            self._at(time.monotonic() + SUBACK_GRACE, self._subscribed)
        else:
            self._subscribed()
        for printer in self.printers.values():
            self._refresh(printer)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, codes: Any, props: Any
    ) -> None:
        refused = [code for code in codes if code.is_failure]
        if refused:
            log.warning(
                "%s refused %d subscription(s): %s", self.endpoint.label, len(refused), refused[0]
            )
        self._unacked.discard(mid)
        if not self._unacked:
            self._subscribed()

    def _subscribed(self) -> None:
        """The first session's subscriptions are in place (or their grace ran out)."""
        if not self.ready.done() and self._connected.is_set():
            self.ready.set_result(None)

    def _refresh(self, printer: Printer) -> None:
        """Ask for the full state after a (re)connect, within the P1P's rule."""
        now = time.monotonic()
        if not printer.may_pushall(now):
            log.info("%s: not sending pushall (a P1P gets one every 5 min at most)", printer.serial)
            return
        printer.last_pushall = now
        self._publish(printer.serial, proto.pushall().with_sequence(self._sequence()))
        if not printer.state.info:
            # The modules name the model (serials of new families are not all known)
            # and carry the firmware version.
            self._publish(printer.serial, proto.get_version().with_sequence(self._sequence()))

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self._connected.is_set():
            log.info("disconnected from %s (%s)", self.endpoint.label, reason)
        self._connected.clear()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._deliver(message.topic, bytes(message.payload))

    def _deliver(self, topic: str, payload: bytes) -> None:
        serial = proto.serial_of(topic)
        printer = self.printers.get(serial or "")
        if printer is None:
            return
        try:
            self._handle(printer, payload)
        except Exception:
            log.exception("%s: failed to handle a message; skipped", printer.serial)

    def _handle(self, printer: Printer, payload: bytes) -> None:
        incoming, events = printer.process(payload)
        if incoming.kind == "ignored":
            log.warning("%s: ignored a message: %s", printer.serial, incoming.problem)
            return
        for name in incoming.malformed:
            if name not in printer.warned:
                printer.warned.add(name)
                log.warning(
                    "%s: a report's %s had the wrong type; kept the last good value "
                    "(logged once per field)",
                    printer.serial,
                    name,
                )
        if incoming.kind == "reply" or (incoming.kind == "report" and incoming.family != "print"):
            self._resolve(printer.serial, incoming)
        for event in events:
            self._emit(event)
        waiters = self._full_waiters.get(printer.serial)
        if waiters and printer.full:
            del self._full_waiters[printer.serial]
            for future in waiters:
                _succeed(future, printer.state)

    def _emit(self, event: LiveEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("handing over %s failed", type(event).__name__)

    def _emit_all(self, events: list[ConnectionEvent]) -> None:
        for event in events:
            self._emit(event)

    def _offline_all(self) -> None:
        for printer in self.printers.values():
            for event in printer.tracker.presence(printer.state, False):
                self._emit(event)

    # --- the printer table ----------------------------------------------------------------

    def add(self, serial: str, dev_model_name: str | None = None) -> Printer:
        """Follow one more printer (from any thread; subscribed now, or at the next connection)."""
        with self._table_lock:
            printer = self.printers.get(serial)
            if printer is not None:
                return printer
            printer = Printer(serial, dev_model_name)
            self.printers = {**self.printers, serial: printer}
        self._call(lambda: self._follow(printer))
        return printer

    def _follow(self, printer: Printer) -> None:
        if self._connected.is_set():
            self._client.subscribe(proto.report_topic(printer.serial), qos=0)
            self._refresh(printer)

    def printer(self, serial: str) -> Printer:
        """The printer ``serial`` (``NotConnectedError`` if it is not followed here)."""
        printer = self.printers.get(serial)
        if printer is None:
            raise NotConnectedError(f"printer {serial} is not on this connection", serial=serial)
        return printer

    def full_state(self, serial: str, timeout: float) -> concurrent.futures.Future[PrinterState]:
        """The state once a full report came (``pushall`` is sent if none comes soon)."""
        printer = self.printer(serial)
        future: concurrent.futures.Future[PrinterState] = concurrent.futures.Future()
        if printer.full:
            future.set_result(printer.state)
            return future
        self._call(lambda: self._await_full(printer, future, timeout))
        return future

    def _await_full(
        self, printer: Printer, future: concurrent.futures.Future[PrinterState], timeout: float
    ) -> None:
        if printer.full:
            _succeed(future, printer.state)
            return
        self._full_waiters.setdefault(printer.serial, []).append(future)
        now = time.monotonic()

        def nudge() -> None:
            # Reports may already be on their way (connecting asks for one): ask only if not.
            if not future.done() and self._connected.is_set() and printer.may_pushall():
                printer.last_pushall = time.monotonic()
                self._publish(printer.serial, proto.pushall().with_sequence(self._sequence()))

        def expire() -> None:
            waiters = self._full_waiters.get(printer.serial, [])
            if future in waiters:
                waiters.remove(future)
            _fail(
                future,
                CommandTimeoutError(
                    f"printer {printer.serial} sent no full report within {timeout:g} s",
                    serial=printer.serial,
                    command="pushall",
                ),
            )

        self._at(now + min(2.0, timeout), nudge)
        self._at(now + timeout, expire)

    # --- commands -------------------------------------------------------------------------

    def _publish(self, serial: str, command: proto.Command) -> bool:
        """Hand one command to paho (network thread only); whether it was accepted."""
        payload = command.encode()
        if self.signer is not None and (command.family, command.command) not in UNSIGNED:
            payload = orjson.dumps(self.signer.envelope(command, serial))
        info = self._client.publish(proto.request_topic(serial), payload, qos=command.qos)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def send(
        self,
        serial: str,
        command: proto.Command,
        *,
        wait: bool = True,
        timeout: float = 10.0,
    ) -> concurrent.futures.Future[proto.Incoming]:
        """Send ``command`` on the session up now; the future resolves with the reply.

        From any thread. Fails at once (nothing sent) when the connection is
        down or gave up, or the model cannot do it. The command is sent on this
        session or not at all: never later, on another one. The future fails
        with :class:`CommandTimeoutError` after ``timeout`` seconds, or with
        :class:`CommandInterruptedError` if the session ends first. Without
        ``wait`` it resolves once the command is handed to the socket.
        """
        printer = self.printer(serial)
        self.check_supported(printer, command)
        self.raise_if_failed()
        if not self._connected.is_set():
            raise NotConnectedError(
                f"not connected to {self.endpoint.label}; {command.command} was not sent",
                serial=serial,
            )
        future: concurrent.futures.Future[proto.Incoming] = concurrent.futures.Future()
        session = self.session
        self._call(lambda: self._send_now(serial, command, future, session, wait, timeout))
        return future

    def _send_now(
        self,
        serial: str,
        command: proto.Command,
        future: concurrent.futures.Future[proto.Incoming],
        session: int,
        wait: bool,
        timeout: float,
    ) -> None:
        if future.done():  # cancelled meanwhile
            return
        if self._stop.is_set() or not self._connected.is_set() or session != self.session:
            _fail(
                future,
                NotConnectedError(
                    f"the connection to {self.endpoint.label} dropped; "
                    f"{command.command} was not sent",
                    serial=serial,
                ),
            )
            return
        seq = self._sequence()
        cmd = command.with_sequence(seq)
        key = (serial, seq)
        if wait:
            self._pending[key] = _Pending(cmd.command, future, session)
        if cmd.family == "pushing" and cmd.command == "pushall":
            self.printers[serial].last_pushall = time.monotonic()
        try:
            accepted = self._publish(serial, cmd)
        except (ValueError, OSError) as exc:  # paho refused the packet (too large...)
            log.info("%s: could not send %s: %s", serial, cmd.command, exc)
            accepted = False
        if not accepted:
            self._pending.pop(key, None)
            _fail(
                future,
                NotConnectedError(
                    f"could not send {cmd.command} to {serial}; nothing was sent", serial=serial
                ),
            )
            return
        if not wait:
            _succeed(future, proto.Incoming("reply", serial, cmd.family, cmd.command, seq, {}))
            return
        self._at(time.monotonic() + timeout, lambda: self._expire(key, future, timeout))

    def _expire(
        self,
        key: tuple[str, str],
        future: concurrent.futures.Future[proto.Incoming],
        timeout: float,
    ) -> None:
        pending = self._pending.get(key)
        if pending is None or pending.future is not future:
            return
        del self._pending[key]
        serial, seq = key
        _fail(
            future,
            CommandTimeoutError(
                f"printer {serial} did not answer {pending.command} within {timeout:g} s",
                serial=serial,
                command=pending.command,
                sequence_id=seq,
            ),
        )

    def publish(self, serial: str, payload: bytes, qos: int = 0) -> concurrent.futures.Future[None]:
        """Publish raw bytes on the printer's request topic (no reply awaited)."""
        self.raise_if_failed()
        if not self._connected.is_set():
            raise NotConnectedError(
                f"not connected to {self.endpoint.label}; nothing was sent", serial=serial
            )
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        session = self.session

        def now() -> None:
            if not self._connected.is_set() or session != self.session:
                _fail(future, NotConnectedError("the connection dropped; nothing was sent"))
                return
            info = self._client.publish(proto.request_topic(serial), payload, qos=qos)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                _succeed(future, None)
            else:
                _fail(future, NotConnectedError(f"could not publish to {serial}", serial=serial))

        self._call(now)
        return future

    @staticmethod
    def check_supported(printer: Printer, command: proto.Command) -> None:
        """Refuse, before anything is sent, what the printer's model cannot do."""
        model = printer.state.model
        refused = proto.refusal(model, command)
        if refused is None:
            return
        raise UnsupportedCommandError(
            f"printer {printer.serial} cannot {refused.command}: {refused.reason} "
            "(nothing was sent)",
            serial=printer.serial,
            command=refused.command,
            model=model.product,
            reason=refused.reason,
        )

    def _resolve(self, serial: str, incoming: proto.Incoming) -> None:
        """A reply: settle the command it answers (a late or foreign reply settles nothing)."""
        if incoming.sequence_id is None:
            return
        pending = self._pending.pop((serial, incoming.sequence_id), None)
        if pending is None:
            return
        if incoming.command and pending.command and incoming.command != pending.command:
            # Another client's command with the same number: not ours.
            self._pending[(serial, incoming.sequence_id)] = pending
            return
        if incoming.succeeded:
            _succeed(pending.future, incoming)
            return
        err = incoming.body.get("err_code")
        code = int(err) if isinstance(err, int) else None
        reason = incoming.reason or "refused"
        hint = ""
        if code == 0x05024007:
            hint = " (this firmware needs signed commands; enable LAN-only developer mode)"
        _fail(
            pending.future,
            CommandError(
                f"printer {serial} refused {pending.command} "
                f"(sequence {incoming.sequence_id}): {reason}{hint}",
                serial=serial,
                command=pending.command,
                sequence_id=incoming.sequence_id,
                reason=reason,
                err_code=code,
            ),
        )

    def _fail_pending(self, error: BambuError) -> None:
        pending = list(self._pending.values())
        self._pending.clear()
        for entry in pending:
            _fail(entry.future, fresh(error))


def result_of(future: concurrent.futures.Future[T], timeout: float) -> T:
    """The result of a future the network thread settles by its own deadline.

    ``timeout`` is only a backstop (the connection's timers fire first); waiting
    on the network thread itself would wait forever, so it is refused.
    """
    if threading.current_thread().name.startswith("bambu-mqtt-"):
        raise RuntimeError("do not wait for a command on the MQTT network thread")
    try:
        return future.result(timeout + BACKSTOP)
    except concurrent.futures.TimeoutError:
        raise TransportError("the MQTT connection stopped answering") from None


def fresh(error: BambuError) -> BambuError:
    """A new exception equal to ``error`` (raising one stored object twice chains tracebacks)."""
    copy = type(error).__new__(type(error))
    copy.args = error.args
    copy.__dict__.update(error.__dict__)
    return copy


def _succeed(future: concurrent.futures.Future[T], value: T) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_result(value)


def _fail(future: concurrent.futures.Future[Any], error: BaseException) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_exception(error)


def _rc_reason(rc: MQTTErrorCode) -> str:
    """paho's words for why the loop stopped, as the middle of a sentence."""
    if rc == MQTTErrorCode.MQTT_ERR_CONN_LOST:
        return "connection lost"
    text = paho.error_string(rc).strip().rstrip(".")
    return text[:1].lower() + text[1:] if text else f"error {int(rc)}"


def _network_thread_writes(client: paho.Client, userdata: Any, sock: Any) -> None:
    """Nothing to do: the network thread writes what paho queued, on its next turn."""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused"
    if isinstance(exc, TimeoutError) or "timed out" in text.lower():
        return "timed out"
    return text.splitlines()[0][:120]
