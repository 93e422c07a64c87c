"""A raw paho client for the MQTT simulator tests (deliberately not the project's client).

:class:`Probe` connects over TLS with the simulator CA, optionally forcing
SNI / hostname verification to a printer serial (how a careful LAN client
checks that the certificate's CN is the serial), records every message and
lets a test wait for one that matches, instead of sleeping.
"""

from __future__ import annotations

import errno
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bambulab.sim import Simulator
from tests.sim.simtools import DEMO

TIMEOUT = 5.0
_counter = 0


class ServerNameContext(ssl.SSLContext):
    """Verifies the certificate against ``server_name``, whatever address paho dials."""

    server_name: str | None = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if self.server_name is not None:
            kwargs["server_hostname"] = self.server_name
        return super().wrap_socket(*args, **kwargs)


def tls_context(ca_file: str, server_name: str | None = None) -> ssl.SSLContext:
    """A verifying client context (chain and hostname) trusting only ``ca_file``."""
    context = ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca_file)
    context.server_name = server_name
    return context


class Message:
    """One received message."""

    def __init__(self, topic: str, payload: bytes) -> None:
        self.topic = topic
        self.payload = payload
        self.received = time.monotonic()

    def json(self) -> Any:
        """The payload parsed (raises for malformed ones)."""
        return orjson.loads(self.payload)

    def body(self) -> dict[str, Any] | None:
        """The parsed payload when it is a JSON object, else None."""
        try:
            data = orjson.loads(self.payload)
        except orjson.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None


class Probe:
    """A paho client on its own loop thread that records what it receives."""

    def __init__(
        self,
        address: tuple[str, int],
        username: str | None,
        password: str | None,
        *,
        ca_file: str | None,
        server_name: str | None = None,
        client_id: str | None = None,
    ) -> None:
        global _counter
        _counter += 1
        self.address = address
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"probe-{_counter}"
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set_context(tls_context(ca_file, server_name))
        # paho's loop thread reconnects by itself; quickly, for fast tests.
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # type: ignore[arg-type]
        self.messages: list[Message] = []
        self.topics: list[str] = []
        self.connack: Any = None
        self.connects = 0
        self.disconnects = 0
        self.connected = threading.Event()
        self.ready = threading.Event()  # connected and subscribed again
        self.answered = threading.Event()
        self.disconnected = threading.Event()  # set at the first disconnect, never cleared
        self._resubscribe_mid: int | None = None
        self._suback: dict[int, list[Any]] = {}
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    # --- callbacks ---------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        with self._cond:
            self.connack = rc
            self.answered.set()
            if not rc.is_failure:
                self.connects += 1
                self.connected.set()
                # A clean session forgets subscriptions: take them up again,
                # and count as back only once the broker has acknowledged them.
                if self.topics and self.connects > 1:
                    _result, self._resubscribe_mid = client.subscribe(
                        [(topic, 0) for topic in self.topics]
                    )
                else:
                    self.ready.set()
            self._cond.notify_all()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        with self._cond:
            self.disconnects += 1
            self.connected.clear()
            self.ready.clear()
            self.disconnected.set()
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Message(message.topic, bytes(message.payload)))
            self._cond.notify_all()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any
    ) -> None:
        with self._cond:
            self._suback[mid] = list(codes)
            if mid == self._resubscribe_mid:
                self.ready.set()
            self._cond.notify_all()

    # --- actions ---------------------------------------------------------------------

    def connect(self, timeout: float = TIMEOUT) -> Any:
        """Connect and wait for the CONNACK; returns its reason code."""
        self.client.connect(*self.address, keepalive=30)
        self.client.loop_start()
        assert self.answered.wait(timeout), "no CONNACK"
        return self.connack

    def expect_connected(self) -> Probe:
        """Connect and insist on success."""
        code = self.connect()
        assert not code.is_failure, f"refused: {code}"
        return self

    def subscribe(self, topic: str, timeout: float = TIMEOUT) -> list[Any]:
        """Subscribe (QoS 0) and return the SUBACK reason codes."""
        self.topics.append(topic)
        _result, mid = self.client.subscribe(topic, 0)
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self._suback, timeout), "no SUBACK"
            return self._suback[mid]

    def publish(self, topic: str, payload: bytes | dict[str, Any], qos: int = 0) -> None:
        """Publish bytes, or a dict as JSON."""
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        self.client.publish(topic, data, qos=qos)

    def wait_for(
        self,
        predicate: Callable[[Message], bool],
        timeout: float = TIMEOUT,
        *,
        after: int = 0,
    ) -> Message:
        """The first message (from index ``after``) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        index = after
        with self._cond:
            while True:
                while index < len(self.messages):
                    message = self.messages[index]
                    index += 1
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching message within {timeout} s")
                self._cond.wait(remaining)

    def mark(self) -> int:
        """Index of the next message (to wait only for newer ones)."""
        with self._cond:
            return len(self.messages)

    def wait_reconnected(self, since: int = 0, timeout: float = TIMEOUT) -> None:
        """Wait for a disconnect after the ``since``-th, then until connected and subscribed."""
        with self._cond:
            assert self._cond.wait_for(lambda: self.disconnects > since, timeout), "no disconnect"
            assert self._cond.wait_for(
                lambda: self.connects > self.disconnects and self.ready.is_set(), timeout
            ), "not reconnected"

    def close(self) -> None:
        """Disconnect and stop the loop thread."""
        self.client.disconnect()
        self.client.loop_stop()


def command(family: str, name: str, sequence_id: str, **fields: Any) -> dict[str, Any]:
    """A request envelope."""
    return {family: {"command": name, "sequence_id": sequence_id, **fields}}


def pushall(sequence_id: str = "1") -> dict[str, Any]:
    """The full-report request (PROTOCOL.md §2.3)."""
    return command("pushing", "pushall", sequence_id, version=1, push_target=1)


def is_full_report(message: Message) -> bool:
    """A ``push_status`` with ``msg`` 0 (what pushall answers)."""
    body = message.body()
    report = body.get("print") if body else None
    return (
        isinstance(report, dict)
        and report.get("command") == "push_status"
        and report.get("msg") == 0
        and "gcode_state" in report
    )


def reply_to(family: str, name: str, sequence_id: str) -> Callable[[Message], bool]:
    """Matches the reply to a command."""

    def check(message: Message) -> bool:
        body = message.body()
        part = body.get(family) if body else None
        return (
            isinstance(part, dict)
            and part.get("command") == name
            and part.get("sequence_id") == sequence_id
            and "result" in part
        )

    return check


def presence_event(kind: str) -> Callable[[Message], bool]:
    """Matches ``{"event": {"event": kind}}``."""

    def check(message: Message) -> bool:
        body = message.body()
        return body == {"event": {"event": kind}}

    return check


def cloud_probe(
    sim: Simulator,
    probes: list[Probe],
    login: str = DEMO,
    password: str | None = None,
    client_id: str | None = None,
) -> Probe:
    """A raw client of the cloud broker as ``login`` (token by default), not yet awaited."""
    account = sim.world.find_account(login)
    assert account is not None
    probe = Probe(
        (sim.mqtt_host, sim.mqtt_port),
        f"u_{account.uid}",
        password if password is not None else sim.issue_token(login),
        ca_file=sim.ca_file,
        client_id=client_id,
    )
    probes.append(probe)
    return probe


def port_kept_from_strangers(sim: Simulator, port: int, downtime: float) -> None:
    """While the broker restarts: connections refused, and nobody else can bind its port."""
    restart = threading.Thread(
        target=sim.restart_broker, args=("cloud",), kwargs={"downtime": downtime}
    )
    restart.start()
    try:
        deadline = time.monotonic() + downtime
        while True:
            assert time.monotonic() < deadline, "the broker never went down"
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
            except ConnectionRefusedError:
                break
            time.sleep(0.005)
        # the holder binds a moment after the listener closes: the outage's first instant
        time.sleep(0.2)
        with socket.socket() as stranger, pytest.raises(OSError, match="in use") as taken:
            stranger.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE
    finally:
        restart.join(20)
