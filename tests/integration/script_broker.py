"""A scriptable MQTT 3.1.1 broker over TLS, for what real brokers will not do on cue.

Just enough of the protocol for one client at a time: CONNECT, SUBSCRIBE,
PUBLISH (QoS 0/1), PINGREQ, DISCONNECT. A test decides what happens to each
publish the client sends (``on_publish``: answer, pass silently, or kill the
connection before the PUBACK), can publish to the client (``send``), freeze a
connection (it then answers nothing, not even pings: a dead link that TCP
has not noticed), and drop connections right after CONNACK (a flapping broker).
Every publish received is recorded with the connection number and DUP flag.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bambulab.protocol.mqtt_frames import remaining_length
from bambulab.sim.certs import SimCertificates

SERIAL = "01P00A000000001"


@dataclass(frozen=True)
class Received:
    """One PUBLISH from the client."""

    connection: int
    topic: str
    body: dict[str, Any]
    dup: bool
    at: float

    @property
    def command(self) -> tuple[str, str, str]:
        """(family, command, sequence_id) of a request."""
        family, inner = next(iter(self.body.items()))
        return family, str(inner.get("command")), str(inner.get("sequence_id"))


class Link:
    """The broker's side of one client connection."""

    def __init__(self, sock: ssl.SSLSocket, number: int) -> None:
        self.sock = sock
        self.number = number
        self.frozen = False
        self.write_lock = threading.Lock()
        self.connected_at = time.monotonic()

    def write(self, data: bytes) -> None:
        if self.frozen:
            return
        with self.write_lock:
            self.sock.sendall(data)

    def send(self, topic: str, payload: dict[str, Any] | bytes) -> None:
        """PUBLISH (QoS 0) to the client."""
        if isinstance(payload, bytes):
            name = topic.encode()
            body = len(name).to_bytes(2, "big") + name + payload
            self.write(bytes([0x30]) + remaining_length(len(body)) + body)
        else:
            self.write(self.packet(topic, payload))

    def write_pieces(self, data: bytes, size: int = 1) -> None:
        """Write ``data`` ``size`` bytes per TLS record, nothing else in between."""
        with self.write_lock:
            for start in range(0, len(data), size):
                self.sock.sendall(data[start : start + size])

    def packet(self, topic: str, payload: dict[str, Any]) -> bytes:
        """The bytes of a QoS 0 PUBLISH to the client (for writes the test splits itself)."""
        name = topic.encode()
        body = len(name).to_bytes(2, "big") + name + json.dumps(payload).encode()
        return bytes([0x30]) + remaining_length(len(body)) + body

    def kill(self) -> None:
        with self.write_lock:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()


# What to do with one publish: "ack" (PUBACK if QoS 1), "silent" (nothing), "kill".
Action = str


class ScriptBroker:
    """See the module's docstring. ``port``, ``certs.ca_file`` to connect."""

    def __init__(self) -> None:
        self.certs = SimCertificates()
        cloud = self.certs.cloud()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cloud.cert_file, cloud.key_file)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received: list[Received] = []
        self.links: list[Link] = []
        self.connects: list[float] = []  # monotonic time of each CONNECT
        self.on_publish: Callable[[Link, Received], Action] = lambda link, got: "ack"
        self.drop_after_connack = False
        self.refuse_code = 0  # CONNACK return code; 5 = not authorised
        self.subscribed: list[tuple[int, str]] = []  # (connection number, topic filter)
        self.suback_delay: float | None = 0.0  # seconds before each SUBACK; None: never sent
        self.on_subscribed: Callable[[Link], None] = lambda link: None  # right after a SUBACK
        self.pubacks: list[bytes] = []  # packet ids the client acknowledged
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    # --- for tests ---------------------------------------------------------------------

    @property
    def link(self) -> Link:
        """The latest connection."""
        with self.lock:
            return self.links[-1]

    def requests(self, command: str | None = None) -> list[Received]:
        with self.lock:
            found = list(self.received)
        return [r for r in found if command is None or r.command[1] == command]

    def wait_for(self, what: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            if time.monotonic() > deadline:
                raise AssertionError("the broker did not see it in time")
            time.sleep(0.01)

    def reply(self, link: Link, got: Received, **fields: Any) -> None:
        """Answer a request as a printer would (same family, command and sequence_id)."""
        family, command, seq = got.command
        body = {"command": command, "sequence_id": seq, "result": "success", **fields}
        link.send(f"device/{SERIAL}/report", {family: body})

    def close(self) -> None:
        self.server.close()
        with self.lock:
            links = list(self.links)
        for link in links:
            link.kill()
        self.certs.cleanup()

    # --- the server ----------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            sock = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            return
        with self.lock:
            link = Link(sock, len(self.links) + 1)
            self.links.append(link)
        try:
            while (packet := _read_packet(sock)) is not None:
                if link.frozen:
                    continue
                if not self._answer(link, *packet):
                    break
        except (OSError, ssl.SSLError):
            pass
        link.kill()

    def _answer(self, link: Link, first: int, body: bytes) -> bool:
        kind = first >> 4
        if kind == 1:  # CONNECT
            with self.lock:
                self.connects.append(time.monotonic())
            link.write(b"\x20\x02\x00" + bytes([self.refuse_code]))
            return not self.drop_after_connack and not self.refuse_code
        if kind == 8:  # SUBSCRIBE: grant QoS 0 to each filter
            filters, rest = 0, body[2:]
            while rest:
                length = int.from_bytes(rest[:2], "big")
                with self.lock:
                    self.subscribed.append((link.number, rest[2 : 2 + length].decode()))
                rest = rest[2 + length + 1 :]
                filters += 1
            suback = bytes([0x90]) + remaining_length(2 + filters) + body[:2] + b"\x00" * filters
            if self.suback_delay is not None:
                threading.Timer(self.suback_delay, self._suback, (link, suback)).start()
        elif kind == 4:  # PUBACK of a QoS 1 publish sent to the client
            with self.lock:
                self.pubacks.append(body[:2])
        elif kind == 12:  # PINGREQ
            link.write(b"\xd0\x00")
        elif kind == 3:  # PUBLISH
            qos = (first >> 1) & 3
            length = int.from_bytes(body[:2], "big")
            topic = body[2 : 2 + length].decode()
            rest = body[2 + length :]
            packet_id, payload = (rest[:2], rest[2:]) if qos else (b"", rest)
            got = Received(
                link.number, topic, json.loads(payload), bool(first & 0x08), time.monotonic()
            )
            with self.lock:
                self.received.append(got)
            action = self.on_publish(link, got)
            if action == "kill":
                return False
            if qos == 1 and action == "ack":
                link.write(b"\x40\x02" + packet_id)
        elif kind == 14:  # DISCONNECT
            return False
        return True

    def _suback(self, link: Link, suback: bytes) -> None:
        with contextlib.suppress(OSError):
            link.write(suback)
            self.on_subscribed(link)


def _read_packet(sock: ssl.SSLSocket) -> tuple[int, bytes] | None:
    head = sock.recv(1)
    if not head:
        return None
    length, shift = 0, 0
    while True:
        byte = sock.recv(1)
        if not byte:
            return None
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return head[0], body
