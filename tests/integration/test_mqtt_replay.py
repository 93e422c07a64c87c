"""A command must never reach a printer twice, even when the connection dies mid-command.

The broker here is the test's own (TLS, certificate from the simulator's CA):
it passes a QoS 1 ``pause`` on but the connection dies before its PUBACK gets
back, the way a broker restart or a cut connection can land. paho's habit is
to publish every unacknowledged QoS 1 message again after reconnecting, and a
printer would then pause a second time, long after the caller gave up.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest

from bambulab import BambuMQTT
from bambulab.errors import CommandTimeoutError
from bambulab.mqtt.core import Backoff
from bambulab.sim.certs import SimCertificates

SERIAL = "01P00A000000001"


class DyingBroker:
    """Just enough MQTT 3.1.1 server; the first ``pause`` kills its connection unacknowledged."""

    def __init__(self) -> None:
        self.certs = SimCertificates()
        cloud = self.certs.cloud()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cloud.cert_file, cloud.key_file)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.requests: list[tuple[int, dict[str, object]]] = []  # (connection number, body)
        self.connections = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(raw, number), daemon=True).start()

    def _serve(self, raw: socket.socket, number: int) -> None:
        try:
            with self.context.wrap_socket(raw, server_side=True) as sock:
                while (packet := _read_packet(sock)) is not None:
                    if not self._answer(sock, number, *packet):
                        return
        except (OSError, ssl.SSLError):
            return

    def _answer(self, sock: ssl.SSLSocket, number: int, first: int, body: bytes) -> bool:
        kind = first >> 4
        if kind == 1:  # CONNECT
            sock.sendall(b"\x20\x02\x00\x00")
        elif kind == 8:  # SUBSCRIBE: grant QoS 0 to each filter
            filters, rest = 0, body[2:]
            while rest:
                length = int.from_bytes(rest[:2], "big")
                rest = rest[2 + length + 1 :]
                filters += 1
            sock.sendall(bytes([0x90, 2 + filters]) + body[:2] + b"\x00" * filters)
        elif kind == 12:  # PINGREQ
            sock.sendall(b"\xd0\x00")
        elif kind == 3:  # PUBLISH
            qos = (first >> 1) & 3
            length = int.from_bytes(body[:2], "big")
            rest = body[2 + length :]
            packet_id, payload = (rest[:2], rest[2:]) if qos else (b"", rest)
            request = json.loads(payload)
            with self.lock:
                self.requests.append((number, request))
            if number == 1 and "pause" in json.dumps(request):
                return False  # passed on, but the connection dies before the PUBACK
            if qos == 1:
                sock.sendall(b"\x40\x02" + packet_id)
        elif kind == 14:  # DISCONNECT
            return False
        return True

    def pauses(self) -> list[tuple[int, object]]:
        with self.lock:
            return [
                (number, body["print"].get("sequence_id"))  # type: ignore[attr-defined]
                for number, body in self.requests
                if "print" in body
            ]

    def close(self) -> None:
        self.server.close()
        self.certs.cleanup()


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


@pytest.fixture
def broker() -> Iterator[DyingBroker]:
    server = DyingBroker()
    yield server
    server.close()


def test_a_command_cut_off_by_a_dying_connection_is_not_replayed(broker: DyingBroker) -> None:
    client = BambuMQTT(
        "1000",
        SERIAL,
        token="not-checked-here",
        host="127.0.0.1",
        port=broker.port,
        ca_file=broker.certs.ca_file,
        command_timeout=1.5,
        backoff=Backoff(initial=0.1, maximum=0.2),
    )
    client.connect()
    try:
        with pytest.raises(CommandTimeoutError):
            client.pause(SERIAL)  # the connection dies under it: no reply ever comes
        deadline = time.monotonic() + 10
        while client.connection.connects < 2 or not client.connected:
            assert time.monotonic() < deadline, "the client did not reconnect"
            time.sleep(0.05)
        with pytest.raises(CommandTimeoutError):
            client.pause(SERIAL)  # a new command, sent once on the new connection
        time.sleep(0.3)
        pauses = broker.pauses()
        assert [number for number, _ in pauses] == [1, 2], pauses
        first, second = (sequence for _, sequence in pauses)
        assert first != second  # the second pause is the new command, not the old one again
    finally:
        client.disconnect()
