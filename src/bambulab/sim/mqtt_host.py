"""The printer host: simulated printers connected to MQTT brokers as ordinary clients.

A real printer is an MQTT client of the cloud broker and the broker of its own
LAN side. The host plays that part for a whole fleet, with as few
connections and threads as possible so that a thousand printers cost little:

* one :class:`Link` (one paho client) per broker, shared by every printer
  that broker serves; each printer subscribes ``device/<serial>/request``
  on its links and publishes everything it says on ``device/<serial>/report``
  of each of them (QoS 0, JSON by orjson);
* one thread runs every link through paho's external-loop API (a
  ``selectors`` loop fed by ``on_socket_*`` callbacks), calls
  :meth:`SimPrinter.tick` on every printer about once a second and reconnects
  links that dropped, with a short backoff. Printers are not thread-safe, so
  everything that touches them runs on this thread; other threads go
  through :meth:`PrinterHost.call`.

The host also carries the printer-side faults: taking a printer offline
(silence, plus the cloud's ``client.disconnected`` presence event), stalling
its reports, and publishing arbitrary bytes on its report topic.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ..protocol.mqtt import report_topic, request_topic
from .brokers import Credential

log = logging.getLogger("bambulab.sim.mqtt")

T = TypeVar("T")

KEEPALIVE = 60
CONNECT_TIMEOUT = 5.0
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
SUBSCRIBE_BATCH = 200  # topics per SUBSCRIBE packet


class HostedPrinter(Protocol):
    """What the host needs from a printer (:class:`bambulab.sim.printer.SimPrinter`)."""

    serial: str
    online: bool

    def handle_request(self, payload: bytes) -> list[dict[str, Any]]: ...

    def tick(self) -> list[dict[str, Any]]: ...


def presence(connected: bool) -> dict[str, Any]:
    """The cloud's presence message on a report topic (PROTOCOL.md §2.2)."""
    return {"event": {"event": "client.connected" if connected else "client.disconnected"}}


class Link:
    """One MQTT connection of the host, to one broker."""

    def __init__(
        self,
        host: PrinterHost,
        name: str,
        address: tuple[str, int],
        credential: Credential | None,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.name = name
        self.address = address
        self._host = host
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bambu-sim-host-{name}",
            clean_session=True,
        )
        self.client.enable_logger(logging.getLogger("bambulab.sim.mqtt.paho"))
        if credential is not None:
            self.client.username_pw_set(credential.username, credential.password)
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.connect_timeout = CONNECT_TIMEOUT
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_socket_open = self._on_socket_open
        self.client.on_socket_close = self._on_socket_close
        self.client.on_socket_register_write = self._on_register_write
        self.client.on_socket_unregister_write = self._on_unregister_write
        self.client.connect_async(address[0], address[1], KEEPALIVE)
        self.topics: dict[str, _Entry] = {}  # request topic -> printer
        self.connected = False
        self.ready = threading.Event()  # connected and every subscription acknowledged
        self.connects = 0
        self.next_attempt = 0.0
        self._backoff = BACKOFF_MIN
        self._pending_acks: set[int] = set()
        self._last_misc = 0.0
        self._refused_logged = False

    # --- paho callbacks (all on the host thread) -------------------------------------------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):
            # A reply and the report after it are two small writes: without this
            # the second waits for the broker's delayed ACK (~40 ms a command).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._host._selector.register(sock, selectors.EVENT_READ, self)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._host._selector.unregister(sock)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._host._selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._host._selector.modify(sock, selectors.EVENT_READ, self)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            if not self._refused_logged:
                log.warning(
                    "printer host: broker %s refused the connection: %s", self.name, reason_code
                )
                self._refused_logged = True
            self._schedule_retry()
            client.disconnect()
            return
        self.connected = True
        self.connects += 1
        self._backoff = BACKOFF_MIN
        self._refused_logged = False
        topics = sorted(self.topics)
        self._pending_acks.clear()
        for start in range(0, len(topics), SUBSCRIBE_BATCH):
            batch = [(topic, 0) for topic in topics[start : start + SUBSCRIBE_BATCH]]
            result, mid = client.subscribe(batch)
            if result == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._pending_acks.add(mid)
        if not self._pending_acks:
            self.ready.set()
        log.debug("printer host: connected to %s (%d printers)", self.name, len(topics))

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        if any(code.is_failure for code in reason_codes):
            log.warning("printer host: broker %s refused a request subscription", self.name)
        self._pending_acks.discard(mid)
        if not self._pending_acks and self.connected:
            self.ready.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        was_connected = self.connected
        self.connected = False
        self.ready.clear()
        if self._host.running:
            self._schedule_retry()
            if was_connected:
                log.info("printer host: lost broker %s; reconnecting", self.name)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        entry = self.topics.get(message.topic)
        if entry is not None:
            self._host._handle_request(entry, bytes(message.payload))

    # --- driven by the host loop ------------------------------------------------------------

    def _schedule_retry(self) -> None:
        self.next_attempt = time.monotonic() + self._backoff
        self._backoff = min(BACKOFF_MAX, self._backoff * 2)

    def attempt(self) -> None:
        """Dial the broker (blocking TCP/TLS set-up; loopback makes that quick)."""
        self.next_attempt = float("inf")  # until a callback or a failure schedules again
        try:
            self.client.reconnect()
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.debug("printer host: cannot reach broker %s: %s", self.name, exc)
            self._schedule_retry()

    def misc(self, now: float) -> None:
        """Keep-alive pings, at most once a second."""
        if now - self._last_misc >= 1.0:
            self._last_misc = now
            self.client.loop_misc()

    def publish(self, topic: str, payload: bytes) -> bool:
        """QoS 0, only while connected (a printer does not queue reports while offline)."""
        if not self.connected:
            return False
        return self.client.publish(topic, payload, qos=0).rc == mqtt.MQTT_ERR_SUCCESS


@dataclass(slots=True)
class Route:
    """Where one printer talks: a link and the topics to use on it.

    ``kinds`` (``cloud``, ``lan``, or both when one broker plays both
    parts) lets faults and presence target one side; ``enabled`` (e.g. "is
    the printer bound to an account?") is asked before every publication.
    """

    link: Link
    kinds: tuple[str, ...]
    report: str
    request: str
    enabled: Callable[[], bool] | None = None


@dataclass(slots=True)
class _Entry:
    printer: HostedPrinter
    routes: list[Route]
    stalled_until: float = 0.0


@dataclass(slots=True)
class HostStats:
    """Counters for benchmarks and tests."""

    published: int = 0
    requests: int = 0
    dropped_stalled: int = 0
    ticks: int = 0
    tick_seconds: float = 0.0  # time spent in the last tick round


class PrinterHost:
    """Runs printers on MQTT links from one thread (see the module docstring)."""

    def __init__(self, *, tick_interval: float = 1.0) -> None:
        self.tick_interval = tick_interval
        self.links: dict[str, Link] = {}
        self.stats = HostStats()
        self._entries: dict[str, _Entry] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.running = False

    # --- set-up (before start) ------------------------------------------------------------

    def add_link(
        self,
        name: str,
        address: tuple[str, int],
        credential: Credential | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> Link:
        """A connection to one broker; ``tls`` None means plain TCP."""
        if self._thread is not None:
            raise RuntimeError("links are added before start()")
        link = Link(self, name, address, credential, tls)
        self.links[name] = link
        return link

    def add_printer(self, printer: HostedPrinter, routes: Iterable[Route]) -> None:
        """Host ``printer`` on ``routes`` (before start)."""
        if self._thread is not None:
            raise RuntimeError("printers are added before start()")
        entry = _Entry(printer, list(routes))
        self._entries[printer.serial] = entry
        for route in entry.routes:
            route.link.topics[route.request] = entry

    @staticmethod
    def route(
        link: Link,
        serial: str,
        kinds: tuple[str, ...],
        enabled: Callable[[], bool] | None = None,
    ) -> Route:
        """The standard route of ``serial`` on ``link``."""
        return Route(link, kinds, report_topic(serial), request_topic(serial), enabled)

    @property
    def printers(self) -> dict[str, HostedPrinter]:
        """Hosted printers by serial."""
        return {serial: entry.printer for serial, entry in self._entries.items()}

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 5.0) -> None:
        """Start the loop thread; returns once every link is connected and subscribed."""
        if self._thread is not None:
            return
        self.running = True
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="bambu-sim-printers", daemon=True)
        self._thread.start()
        if not self.wait_ready(timeout=timeout):
            missing = [name for name, link in self.links.items() if not link.ready.is_set()]
            self.stop()
            raise RuntimeError(f"printer host could not connect to: {', '.join(missing)}")

    def wait_ready(self, names: Iterable[str] | None = None, timeout: float = 5.0) -> bool:
        """Wait until the named links (default: all) are connected and subscribed."""
        deadline = time.monotonic() + timeout
        for name in names if names is not None else list(self.links):
            if not self.links[name].ready.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def stop(self) -> None:
        """Disconnect every link and end the thread."""
        thread = self._thread
        if thread is None:
            return
        self.running = False

        def disconnect_all() -> None:
            for link in self.links.values():
                if link.connected:
                    link.client.disconnect()
                    with contextlib.suppress(Exception):
                        link.client.loop_write()

        with contextlib.suppress(Exception):
            self.call(disconnect_all, timeout=2.0)
        self._stopping = True
        self._wake()
        thread.join(5.0)
        self._thread = None
        for link in self.links.values():
            with contextlib.suppress(Exception):
                link.client._sock_close()
        with contextlib.suppress(Exception):
            self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # --- cross-thread calls ---------------------------------------------------------------

    def call(self, function: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``function`` on the host thread and return its result."""
        thread = self._thread
        if thread is None or thread is threading.current_thread() or not thread.is_alive():
            return function()
        future: Future[T] = Future()
        self._calls.append((function, future))
        self._wake()
        return future.result(timeout)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def reconnect_now(self, names: Iterable[str] | None = None) -> None:
        """Dial disconnected links at once instead of waiting out their backoff."""

        def kick() -> None:
            for name in names if names is not None else list(self.links):
                link = self.links[name]
                if not link.connected:
                    link.next_attempt = 0.0

        self.call(kick)

    # --- printer controls (any thread) ----------------------------------------------------

    def with_printer(self, serial: str, function: Callable[[Any], T]) -> T:
        """``function(printer)`` on the host thread (printers are not thread-safe)."""
        entry = self._entries[serial]
        return self.call(lambda: function(entry.printer))

    def set_online(self, serial: str, online: bool) -> None:
        """Power a printer on or off; the cloud side announces it (presence event)."""
        entry = self._entries[serial]

        def apply() -> None:
            printer = entry.printer
            if printer.online == online:
                return
            # An offline printer's tick lets time pass without it, so switching
            # back on needs nothing else.
            printer.online = online
            payload = orjson.dumps(presence(online))
            for route in entry.routes:
                if "cloud" in route.kinds and _enabled(route):
                    self._send(route, payload)

        self.call(apply)

    def stall(self, serial: str, seconds: float) -> None:
        """Drop everything ``serial`` would publish for ``seconds`` (it keeps running)."""
        entry = self._entries[serial]

        def apply() -> None:
            entry.stalled_until = time.monotonic() + seconds

        self.call(apply)

    def publish_raw(
        self, serial: str, payload: bytes, kinds: Iterable[str] = ("cloud", "lan")
    ) -> int:
        """Publish ``payload`` as is on ``serial``'s report topic; returns the links used."""
        entry = self._entries[serial]
        wanted = set(kinds)

        def apply() -> int:
            sent = 0
            for route in entry.routes:
                if wanted.intersection(route.kinds) and self._send(route, payload):
                    sent += 1
            return sent

        return self.call(apply)

    def publish_message(self, serial: str, message: dict[str, Any]) -> None:
        """Publish ``message`` as ``serial`` would (respects offline and stall)."""
        entry = self._entries[serial]
        self.call(lambda: self._emit(entry, [message]))

    # --- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic() + self.tick_interval
        while not self._stopping:
            now = time.monotonic()
            if self.running:
                for link in self.links.values():
                    idle = not link.connected and link.client.socket() is None
                    if idle and now >= link.next_attempt:
                        link.attempt()
            deadline = next_tick
            for link in self.links.values():
                if link.client.socket() is None:
                    deadline = min(deadline, link.next_attempt)
            timeout = max(0.0, min(deadline - time.monotonic(), 1.0))
            try:
                events = self._selector.select(timeout)
            except (OSError, ValueError):
                events = []
            for key, mask in events:
                link = key.data
                if link is None:
                    with contextlib.suppress(OSError):
                        while self._wake_r.recv(4096):
                            pass
                    continue
                self._service(link, mask)
            self._run_calls()
            now = time.monotonic()
            for link in self.links.values():
                if link.client.socket() is not None:
                    link.misc(now)
            if now >= next_tick:
                self._tick()
                next_tick += self.tick_interval
                if next_tick < now:  # fell behind (a long pause): do not tick in a burst
                    next_tick = now + self.tick_interval
        self._run_calls()

    def _service(self, link: Link, mask: int) -> None:
        client = link.client
        try:
            if mask & selectors.EVENT_READ:
                client.loop_read()
                sock = client.socket()
                # TLS may hold decrypted bytes the selector cannot see.
                while isinstance(sock, ssl.SSLSocket) and sock.pending():
                    client.loop_read()
                    sock = client.socket()
            if mask & selectors.EVENT_WRITE and client.socket() is not None:
                client.loop_write()
        except Exception:  # one broken link must not stop the others
            log.exception("printer host: error on link %s", link.name)

    def _run_calls(self) -> None:
        while self._calls:
            function, future = self._calls.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function())
            except BaseException as exc:
                future.set_exception(exc)

    def _tick(self) -> None:
        started = time.perf_counter()
        for entry in self._entries.values():
            try:
                messages = entry.printer.tick()
            except Exception:
                log.exception("printer host: %s failed to tick", entry.printer.serial)
                continue
            if messages:
                self._emit(entry, messages)
        self.stats.ticks += 1
        self.stats.tick_seconds = time.perf_counter() - started

    def _handle_request(self, entry: _Entry, payload: bytes) -> None:
        self.stats.requests += 1
        try:
            messages = entry.printer.handle_request(payload)
        except Exception:  # the printer logs its own bugs; the link must survive
            log.exception("printer host: %s failed on a request", entry.printer.serial)
            return
        if messages:
            self._emit(entry, messages)

    def _emit(self, entry: _Entry, messages: list[dict[str, Any]]) -> None:
        if entry.stalled_until and time.monotonic() < entry.stalled_until:
            self.stats.dropped_stalled += len(messages)
            return
        for message in messages:
            payload = orjson.dumps(message)
            for route in entry.routes:
                if _enabled(route):
                    self._send(route, payload)

    def _send(self, route: Route, payload: bytes) -> bool:
        if route.link.publish(route.report, payload):
            self.stats.published += 1
            return True
        return False


def _enabled(route: Route) -> bool:
    return route.enabled is None or route.enabled()
