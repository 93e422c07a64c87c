"""How the connection reads: everything waiting at once, reports taken out of the buffer.

Against the scripted TLS broker, which writes bytes exactly as a test splits
them: a report cut at every byte, two hundred in one TLS record, a PINGRESP
and a QoS 1 publish between reports, a packet announcing 9 MiB; and when
``connect()`` returns (after the SUBACK, so the first reports are not lost).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from bambulab import BambuMQTT
from bambulab.models.events import StateChanged
from bambulab.mqtt import Backoff
from bambulab.mqtt import core as mqtt_core
from bambulab.protocol.mqtt_frames import MAX_PACKET, remaining_length
from tests.conftest import wait_for
from tests.integration.script_broker import SERIAL, ScriptBroker
from tests.integration.test_mqtt_connection import client_of

TOPIC = f"device/{SERIAL}/report"


@pytest.fixture
def broker() -> Iterator[ScriptBroker]:
    server = ScriptBroker()
    yield server
    server.close()


def report(percent: int, **more: Any) -> dict[str, Any]:
    return {"print": {"command": "push_status", "msg": 1, "mc_percent": percent, **more}}


def percents(events: list[Any]) -> list[int]:
    return [e.state.raw["mc_percent"] for e in list(events) if isinstance(e, StateChanged)]


def test_reports_cut_at_every_byte_arrive_whole_and_in_order(
    broker: ScriptBroker, face: str
) -> None:
    live = client_of(broker, face).connect()
    try:
        link = broker.link
        stream = b"".join(link.packet(TOPIC, report(p, gcode_state="RUNNING")) for p in range(1, 9))
        link.write_pieces(stream, 1)  # one TLS record per byte
        wait_for(lambda: percents(live.events)[-1:] == [8], what="the last report")
        assert percents(live.events) == list(range(1, 9))
        assert live.state().percent == 8
    finally:
        live.close()


def test_two_hundred_reports_in_one_record_all_arrive_in_order(
    broker: ScriptBroker, face: str
) -> None:
    live = client_of(broker, face).connect()
    try:
        link = broker.link
        link.write(b"".join(link.packet(TOPIC, report(p % 101, layer_num=p)) for p in range(200)))
        wait_for(lambda: len(percents(live.events)) >= 200, what="200 reports")
        layers = [e.state.raw["layer_num"] for e in live.events if isinstance(e, StateChanged)]
        assert layers == list(range(200))
    finally:
        live.close()


def test_other_packets_between_reports_go_to_paho(broker: ScriptBroker, face: str) -> None:
    """A PINGRESP and a QoS 1 publish (acknowledged) amid reports: none lost, order kept."""
    live = client_of(broker, face).connect()
    try:
        link = broker.link
        name = TOPIC.encode()
        qos1_body = len(name).to_bytes(2, "big") + name + b"\x12\x34"
        qos1_body += b'{"print":{"command":"push_status","msg":1,"mc_percent":3}}'
        link.write(
            link.packet(TOPIC, report(1))
            + b"\xd0\x00"  # PINGRESP nobody asked for: paho takes it in its stride
            + link.packet(TOPIC, report(2))
            + bytes([0x32, len(qos1_body)])
            + qos1_body
            + link.packet(TOPIC, report(4))
        )
        wait_for(lambda: percents(live.events)[-1:] == [4], what="the report after the QoS 1")
        assert percents(live.events) == [1, 2, 3, 4]
        wait_for(lambda: broker.pubacks == [b"\x12\x34"], what="the PUBACK of the QoS 1 publish")
    finally:
        live.close()


def test_reports_behind_an_ack_are_not_read_by_paho(
    broker: ScriptBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """paho reads a packet per queued message in one call: it gets only the ack it is lent.

    After a connect, hundreds of refresh requests sit in paho's queue; an
    ack followed by reports in one record used to let paho read all of them
    through its own, slower path.
    """
    through_paho: list[str] = []
    original = mqtt_core.Connection._on_message

    def on_message(self: mqtt_core.Connection, client: Any, userdata: Any, message: Any) -> None:
        through_paho.append(message.topic)
        original(self, client, userdata, message)

    monkeypatch.setattr(mqtt_core.Connection, "_on_message", on_message)
    serials = [f"01P00A{i:09d}" for i in range(300)]
    client = BambuMQTT(
        "1000",
        serials,
        token="not-checked-here",
        host="127.0.0.1",
        port=broker.port,
        ca_file=broker.certs.ca_file,
        backoff=Backoff(initial=0.05, maximum=0.2, jitter=0.0),
    )
    events: list[Any] = []
    client.on_event = events.append
    client.connect()
    try:
        link = broker.link
        reports = b"".join(
            link.packet(f"device/{s}/report", report(7, gcode_state="IDLE")) for s in serials
        )
        link.write(b"\xd0\x00" + reports)  # a PINGRESP, then 300 reports
        wait_for(
            lambda: sum(isinstance(e, StateChanged) for e in events) >= 300, what="300 reports"
        )
        assert through_paho == []
    finally:
        client.disconnect()


def test_a_packet_announcing_more_than_the_cap_drops_the_connection(
    broker: ScriptBroker, face: str
) -> None:
    live = client_of(broker, face).connect()
    try:
        link = broker.link
        header = b"\x30" + remaining_length(MAX_PACKET + 1)
        link.write(header + b"\x00" * 1024)  # never sent whole: refused from the header
        wait_for(lambda: len(broker.links) >= 2, what="a new connection")
        error = live.client.connection.last_error
        assert error is not None and f"the limit is {MAX_PACKET}" in str(error)
        broker.link.send(TOPIC, report(42))  # the new connection works
        wait_for(lambda: percents(live.events)[-1:] == [42], what="a report after reconnecting")
    finally:
        live.close()


def connect_time(broker: ScriptBroker, face: str) -> float:
    started = time.monotonic()
    live = client_of(broker, face).connect()
    elapsed = time.monotonic() - started
    live.close()
    return elapsed


def test_connect_returns_once_subscribed_and_misses_no_first_report(
    broker: ScriptBroker, face: str
) -> None:
    broker.suback_delay = 0.6
    # The broker routes reports only to subscribed clients: it sends one right after the SUBACK.
    broker.on_subscribed = lambda link: link.send(TOPIC, report(11))
    started = time.monotonic()
    live = client_of(broker, face).connect()
    try:
        assert time.monotonic() - started >= 0.6
        wait_for(lambda: percents(live.events) == [11], timeout=3, what="the first report")
    finally:
        live.close()


def test_connect_does_not_wait_for_ever_on_a_missing_suback(
    broker: ScriptBroker, face: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt_core, "SUBACK_GRACE", 0.8)
    broker.suback_delay = None
    elapsed = connect_time(broker, face)
    assert 0.8 <= elapsed < 5.0
