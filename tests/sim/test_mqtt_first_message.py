"""The first answer after a client subscribes is never lost, cloud or LAN (issue 8, point 14).

Reproduced with a plain paho client, the way third-party cloud clients are
written: ``pushall`` published before the subscription reaches the broker,
either queued before the CONNACK (subscribe in ``on_connect``) or published
just before ``subscribe`` in ``on_connect`` (the client's Nagle algorithm then
holds the SUBSCRIBE for the broker's delayed ACK). The real printer behind the
cloud answers long after the subscription is in place; the simulated one
answered within a millisecond, before it, and the report went nowhere. The
cloud broker now holds a new client's requests until it subscribes (at most
``FIRST_REQUEST_GRACE``).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bambulab.sim import Simulator
from bambulab.sim.brokers import FIRST_REQUEST_GRACE
from tests.sim.simtools import UNLIMITED

PUSHALL = json.dumps(
    {"pushing": {"sequence_id": "0", "command": "pushall", "version": 1, "push_target": 1}}
)
TRIES = 5
# The answer comes in milliseconds; a loaded test machine has taken seconds to connect.
ANSWER_WAIT = 10.0


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(UNLIMITED, lan=False) as running:
        yield running


def delta_printers(sim: Simulator) -> list[str]:
    # P1/A1 printers say nothing unasked between changes: only the answer can arrive.
    return [
        e.serial
        for e in sim.endpoints()
        if sim.printers[e.serial].online and e.serial[:3] in ("01P", "030", "01S", "039")
    ]


def first_full_report(sim: Simulator, serial: str, pattern: str) -> bool:
    got = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"third-party-{time.time_ns()}")
    client.username_pw_set(f"u_{sim.user_id}", sim.issue_token(sim.demo_account.email))
    client.tls_set_context(ssl.create_default_context(cafile=sim.ca_file))

    def on_connect(c: mqtt.Client, userdata: object, flags: object, rc: object, p: object) -> None:
        if pattern == "publish-then-subscribe":
            c.publish(f"device/{serial}/request", PUSHALL)
        c.subscribe(f"device/{serial}/report")

    def on_message(c: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        body = json.loads(message.payload).get("print", {})
        if "gcode_state" in body and "ams" in body:
            got.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(sim.mqtt_host, sim.mqtt_port)
    if pattern == "queued-before-connack":
        client.publish(f"device/{serial}/request", PUSHALL)
    client.loop_start()
    try:
        return got.wait(ANSWER_WAIT)
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.parametrize("pattern", ["queued-before-connack", "publish-then-subscribe"])
def test_the_answer_to_a_request_sent_before_subscribing_arrives(
    sim: Simulator, pattern: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bambulab.sim.mqtt")
    serials = delta_printers(sim)
    results = [first_full_report(sim, serials[i % len(serials)], pattern) for i in range(TRIES)]
    assert results == [True] * TRIES, caplog.text


def test_a_client_that_never_subscribes_is_held_no_longer_than_the_grace(sim: Simulator) -> None:
    serial = delta_printers(sim)[0]
    before = sim.with_printer(serial, lambda p: len(p.received))
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"publisher-{time.time_ns()}")
    client.username_pw_set(f"u_{sim.user_id}", sim.issue_token(sim.demo_account.email))
    client.tls_set_context(ssl.create_default_context(cafile=sim.ca_file))
    client.connect(sim.mqtt_host, sim.mqtt_port)
    client.publish(f"device/{serial}/request", PUSHALL)
    started = time.monotonic()
    client.loop_start()
    try:
        deadline = started + 3
        while sim.with_printer(serial, lambda p: len(p.received)) == before:
            assert time.monotonic() < deadline, "the request never reached the printer"
            time.sleep(0.01)
        assert time.monotonic() - started < FIRST_REQUEST_GRACE + 0.5
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.fixture(scope="module")
def lan_sim() -> Iterator[Simulator]:
    with Simulator(UNLIMITED) as running:
        yield running


def first_lan_reply(sim: Simulator, serial: str) -> bool:
    """A LAN client that publishes get_version before its SUBSCRIBE reaches the broker."""
    got = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"lan-lib-{time.time_ns()}")
    client.username_pw_set("bblp", sim.printers[serial].access_code)
    context = ssl.create_default_context(cafile=sim.ca_file)
    context.check_hostname = False  # dialled by address; the CA check stays
    client.tls_set_context(context)
    version = json.dumps({"info": {"sequence_id": "0", "command": "get_version"}})

    def on_connect(c: mqtt.Client, userdata: object, flags: object, rc: object, p: object) -> None:
        c.publish(f"device/{serial}/request", version)
        c.subscribe(f"device/{serial}/report")

    def on_message(c: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if json.loads(message.payload).get("info", {}).get("command") == "get_version":
            got.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(*sim.lan_address(serial))
    client.loop_start()
    try:
        return got.wait(ANSWER_WAIT)
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_lan_reply_to_a_request_sent_before_subscribing_arrives(
    lan_sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bambulab.sim.mqtt")
    serials = delta_printers(lan_sim)
    results = [first_lan_reply(lan_sim, serials[i % len(serials)]) for i in range(TRIES)]
    assert results == [True] * TRIES, caplog.text  # the broker says if a grace ran out
