"""The connection both MQTT faces share: one paho client driven by one thread.

The thread owns the socket: it connects, reconnects with exponential backoff
and jitter, resubscribes and refreshes state after a reconnect (keeping the
P1P's five-minute ``pushall`` rule), and runs a watchdog that notices a
silent stall and heals it by reconnecting. What it is doing is kept as an
immutable :class:`~bambulab.models.events.ConnectionStatus` (``status``) and
announced as connection events (``Connected``, ``ConnectionLost``,
``RetryScheduled``, ``Reconnected``, ``ConnectionFailed``) on the same
callback as the printers' events, so callers never have to guess. Incoming payloads go through the
sans-IO :class:`~bambulab.protocol.mqtt.ReportStream` (one per printer) and
the event :class:`~bambulab.protocol.events.Tracker`; replies resolve the
futures of the commands that asked for them. Wrong credentials stop the
thread at once: no retry storm.
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ..errors import (
    BambuError,
    CertificateError,
    CommandError,
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
from ..protocol.events import ConnectionTracker, Tracker

log = logging.getLogger("bambulab.mqtt")

PUSHALL_MIN_INTERVAL_P1P = 300.0  # the P1P is reported to struggle with more
SUBSCRIBE_BATCH = 200  # topics per SUBSCRIBE packet when following many printers


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter for reconnects."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.3

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
        self.full = threading.Event()

    def sync_info(self) -> None:
        """Swap in a state carrying the latest ``info`` family body (``get_version``)."""
        info = self.stream.families.get("info")
        if info is not None:
            self.state = self.state.evolve(info=info)

    def process(self, payload: bytes) -> tuple[proto.Incoming, list[Event]]:
        """Decode, merge and turn one message into events (the hot path of every report)."""
        incoming = proto.decode(proto.report_topic(self.serial), payload, loads=orjson.loads)
        self.stream.apply(incoming)
        if incoming.kind == "report" and incoming.family == "print":
            self.state = state = self.state.evolve(raw=self.stream.state)
            self.last_report = time.monotonic()
            if not self.full.is_set() and "gcode_state" in incoming.body:
                self.full.set()
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


class Connection:
    """A paho client plus everything both faces need; runs in its own thread."""

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
    ) -> None:
        self.endpoint = endpoint
        self.first_attempts = first_attempts
        self.keepalive = keepalive
        self.stall_timeout = stall_timeout
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self._rng = random.Random()
        self._on_event = on_event
        self.printers: dict[str, Printer] = {}
        for serial in serials:
            self.printers[serial] = Printer(serial, (models or {}).get(serial))
        self._sequence = proto.SequenceCounter()
        self._pending: dict[
            tuple[str, str], tuple[str, concurrent.futures.Future[proto.Incoming]]
        ] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._settled = threading.Event()  # first connect succeeded or failed for good
        self.fatal: BambuError | None = None
        self.last_error: BambuError | None = None
        self.connects = 0
        self.last_rx = 0.0
        self._tracker = ConnectionTracker(endpoint.label, time.time())
        self._attempt_error: str | None = None  # why the broker refused this attempt
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
        the printer twice (same ``sequence_id``), long after its caller gave up
        waiting: a replayed ``pause`` could stop a print resumed since.
        """
        self._client.reinitialise(self.endpoint.client_id, clean_session=True)
        self._configure(self._client)

    def _configure(self, client: paho.Client) -> None:
        ep = self.endpoint
        client.username_pw_set(ep.username, ep.password)
        if ep.tls is not None:
            client.tls_set_context(ep.tls)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        # Without this, paho writes a publish straight to the socket from the
        # calling thread while this connection's thread may be reading it: two
        # threads in one TLS connection corrupt its records (the broker sees
        # "bad record mac" and hangs up). With the hook set, paho only queues
        # the packet and wakes the network thread, the socket's only user.
        client.on_socket_register_write = _network_thread_writes
        # Unbounded: a (re)connect queues a refresh for every followed printer at once.
        client.max_queued_messages_set(0)

    def start(self) -> None:
        """Start the network thread (returns at once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"bambu-mqtt-{self.endpoint.label}", daemon=True
        )
        self._thread.start()

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until the first connection is up; raise why it could not be."""
        limit = self.connect_timeout if timeout is None else timeout
        if not self._settled.wait(limit):
            self.close()
            reason = f": {self.last_error}" if self.last_error else ""
            raise TransportError(
                f"could not connect to {self.endpoint.label} within {limit:g} s{reason}"
            )
        if self.fatal is not None:
            raise self.fatal

    @property
    def connected(self) -> bool:
        """Whether the broker session is up right now."""
        return self._connected.is_set()

    @property
    def status(self) -> ConnectionStatus:
        """What the connection is doing now: an immutable snapshot, safe from any thread."""
        return self._tracker.status

    def close(self) -> None:
        """Stop the thread and disconnect; idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        self._tracker.closed(time.time())
        self._fail_pending(NotConnectedError("the connection was closed"))

    # --- the network thread -----------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        first = True
        while not self._stop.is_set():
            self._attempt_error = None
            self._tracker.trying()
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
                if not self._sleep(delay):
                    break
                continue
            started = time.monotonic()
            self.last_rx = started
            sessions = self.connects
            reason = "connection lost"
            while not self._stop.is_set():
                try:
                    rc = self._client.loop(timeout=0.2)
                except Exception:  # a bug in a callback: reconnect rather than die
                    log.exception("%s: the network loop failed; reconnecting", self.endpoint.label)
                    reason = "the network loop failed"
                    break
                if self.fatal is not None:
                    break
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    reason = _rc_reason(rc)
                    break
                now = time.monotonic()
                if not self._connected.is_set() and now - started > self.connect_timeout:
                    reason = "did not answer CONNECT"
                    self._note(TransportError(f"{self.endpoint.label} {reason}"))
                    break
                if self._connected.is_set() and now - self.last_rx > self.stall_timeout:
                    reason = f"nothing received for {now - self.last_rx:.0f} s"
                    log.warning("%s: %s; reconnecting", self.endpoint.label, reason)
                    break
            # Whether this session got as far as CONNACK. Not _connected: paho's
            # on_disconnect has usually cleared it by now, and then the backoff
            # never reset, so the Nth reconnect waited 0.5 * 2**N s (up to 30 s).
            was_up = self.connects > sessions
            self._connected.clear()
            self._safe_disconnect()
            if self.fatal is not None or self._stop.is_set():
                break
            if was_up:
                attempt = 0
            attempt += 1
            delay = self.backoff.delay(attempt, self._rng)
            if was_up:
                # The connection's news first: a view then knows the printers'
                # offline events below come from the outage, not from them.
                self._emit_all(self._tracker.lost(reason, time.time(), delay))
                self._offline_all()
            else:
                error_text = self._attempt_error or reason
                self._emit_all(self._tracker.retry(error_text, time.time(), delay))
            if not self._sleep(delay):
                break
        self._connected.clear()
        self._safe_disconnect()
        self._settled.set()

    def _sleep(self, seconds: float) -> bool:
        """Wait unless asked to stop; whether to go on."""
        return not self._stop.wait(seconds)

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
        self.fatal = error
        self.last_error = error
        # Raised to the caller (wait_connected, commands): logging it too would say it twice.
        log.debug("giving up: %s", error)
        self._stop.set()
        self._emit_all(self._tracker.failed(str(error), time.time()))
        self._settled.set()
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
        self._connected.set()
        self._emit_all(self._tracker.connected(time.time()))
        self._settled.set()
        log.info("connected to %s (connection #%d)", self.endpoint.label, self.connects)
        topics = [(proto.report_topic(serial), 0) for serial in list(self.printers)]
        for start in range(0, len(topics), SUBSCRIBE_BATCH):
            client.subscribe(topics[start : start + SUBSCRIBE_BATCH])
        for printer in list(self.printers.values()):
            try:
                self._refresh(printer)
            except BambuError as exc:  # a callback must never kill the network thread
                log.info("%s: could not ask for a refresh: %s", printer.serial, exc)

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
        self.last_rx = time.monotonic()
        serial = proto.serial_of(message.topic)
        printer = self.printers.get(serial or "")
        if printer is None:
            return
        try:
            self._handle(printer, bytes(message.payload))
        except Exception:
            log.exception("%s: failed to handle a message; skipped", printer.serial)

    def _handle(self, printer: Printer, payload: bytes) -> None:
        incoming, events = printer.process(payload)
        if incoming.kind == "ignored":
            log.warning("%s: ignored a message: %s", printer.serial, incoming.problem)
            return
        if incoming.kind == "reply" or (incoming.kind == "report" and incoming.family != "print"):
            self._resolve(printer.serial, incoming)
        for event in events:
            self._emit(event)

    def _emit(self, event: LiveEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("an event callback failed on %s", type(event).__name__)

    def _emit_all(self, events: list[ConnectionEvent]) -> None:
        for event in events:
            self._emit(event)

    def _offline_all(self) -> None:
        for printer in self.printers.values():
            for event in printer.tracker.presence(printer.state, False):
                self._emit(event)

    def add(self, serial: str, dev_model_name: str | None = None) -> Printer:
        """Follow one more printer on this connection (subscribes at once when connected)."""
        printer = self.printers.get(serial)
        if printer is not None:
            return printer
        printer = Printer(serial, dev_model_name)
        self.printers[serial] = printer
        if self._connected.is_set():
            self._client.subscribe(proto.report_topic(serial), qos=0)
            self._refresh(printer)
        return printer

    # --- commands -------------------------------------------------------------------------

    def _publish(self, serial: str, command: proto.Command) -> None:
        info = self._client.publish(proto.request_topic(serial), command.encode(), qos=command.qos)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise NotConnectedError(
                f"could not send {command.command} to {serial}: not connected", serial=serial
            )

    def send(
        self, serial: str, command: proto.Command, *, wait: bool = True
    ) -> concurrent.futures.Future[proto.Incoming]:
        """Publish ``command``; the future resolves with the reply (or at once if not ``wait``)."""
        printer = self.printers.get(serial)
        if printer is None:
            raise NotConnectedError(f"printer {serial} is not on this connection", serial=serial)
        self.check_supported(printer, command)
        if self.fatal is not None:
            raise self.fatal
        if not self._connected.is_set():
            raise NotConnectedError(
                f"not connected to {self.endpoint.label}; {command.command} was not sent",
                serial=serial,
            )
        seq = self._sequence()
        cmd = command.with_sequence(seq)
        future: concurrent.futures.Future[proto.Incoming] = concurrent.futures.Future()
        if wait:
            with self._lock:
                self._pending[(serial, seq)] = (cmd.command, future)
        if cmd.family == "pushing" and cmd.command == "pushall":
            self.printers[serial].last_pushall = time.monotonic()
        self._publish(serial, cmd)
        if not wait:
            future.set_result(proto.Incoming("reply", serial, cmd.family, cmd.command, seq, {}))
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

    def forget(self, serial: str, future: concurrent.futures.Future[proto.Incoming]) -> None:
        """Stop waiting for a reply (after a timeout)."""
        with self._lock:
            for key, (_, pending) in list(self._pending.items()):
                if pending is future:
                    del self._pending[key]

    def _resolve(self, serial: str, incoming: proto.Incoming) -> None:
        if incoming.sequence_id is None:
            return
        with self._lock:
            entry = self._pending.pop((serial, incoming.sequence_id), None)
        if entry is None:
            return
        name, future = entry
        if future.done():
            return
        if incoming.succeeded:
            future.set_result(incoming)
            return
        err = incoming.body.get("err_code")
        code = int(err) if isinstance(err, int) else None
        reason = incoming.reason or "refused"
        hint = ""
        if code == 0x05024007:
            hint = " (this firmware needs signed commands; enable LAN-only developer mode)"
        future.set_exception(
            CommandError(
                f"printer {serial} refused {name} "
                f"(sequence {incoming.sequence_id}): {reason}{hint}",
                serial=serial,
                command=name,
                sequence_id=incoming.sequence_id,
                reason=reason,
                err_code=code,
            )
        )

    def _fail_pending(self, error: BambuError) -> None:
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for _, future in pending:
            if not future.done():
                future.set_exception(error)

    def timeout_error(self, serial: str, command: str, timeout: float) -> CommandTimeoutError:
        """The error for a command whose reply did not come."""
        return CommandTimeoutError(
            f"printer {serial} did not answer {command} within {timeout:g} s",
            serial=serial,
            command=command,
        )


def _rc_reason(rc: MQTTErrorCode) -> str:
    """paho's words for why the loop stopped, as the middle of a sentence."""
    if rc == MQTTErrorCode.MQTT_ERR_CONN_LOST:
        return "connection lost"
    text = paho.error_string(rc).strip().rstrip(".")
    return text[:1].lower() + text[1:] if text else f"error {int(rc)}"


def _network_thread_writes(client: paho.Client, userdata: Any, sock: Any) -> None:
    """Nothing to do: the network thread's ``loop()`` sends what is queued."""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused"
    if isinstance(exc, TimeoutError) or "timed out" in text.lower():
        return "timed out"
    return text.splitlines()[0][:120]
