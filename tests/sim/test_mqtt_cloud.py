"""The simulated cloud broker (embedded amqtt) seen by a raw paho client over TLS.

Credentials (token, access code, refusals), the per-account topic ACL, live
reports, command replies, presence, stalls and malformed payloads. One
simulator per module; tests that break brokers live in ``test_mqtt_faults``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from bambulab.sim import Simulator
from bambulab.sim.live import MALFORMED_KINDS, malformed_payload
from tests.sim.mqtt_support import (
    Probe,
    cloud_probe,
    command,
    is_full_report,
    presence_event,
    pushall,
    reply_to,
)
from tests.sim.simtools import DEMO, PASSWORD_USER, SEED_DEVICE, UNLIMITED


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(UNLIMITED, tick_interval=0.2) as running:
        yield running


def owned(sim: Simulator, login: str) -> list[str]:
    account = sim.world.find_account(login)
    assert account is not None
    return [device.dev_id for device in sim.world.devices_of(account.uid)]


# --- credentials ---------------------------------------------------------------------------


def test_token_login_and_pushall_full_report(sim: Simulator, probes: list[Probe]) -> None:
    probe = cloud_probe(sim, probes).expect_connected()
    topic = f"device/{SEED_DEVICE}/report"
    assert not probe.subscribe(topic)[0].is_failure
    probe.publish(f"device/{SEED_DEVICE}/request", pushall("17"))
    full = probe.wait_for(is_full_report).json()["print"]
    assert full["sequence_id"]  # a report has its own counter
    assert full["gcode_state"] == "RUNNING"  # the seed device prints at start
    assert {"nozzle_temper", "bed_temper", "mc_percent", "ams"} <= set(full)


def test_access_code_of_an_owned_printer_is_refused_as_the_real_broker_does(
    sim: Simulator, probes: list[Probe]
) -> None:
    # A printer's access code opens its LAN broker only: code that connects to the
    # simulated cloud with one would fail against the real cloud.
    x1c = owned(sim, DEMO)[1]
    probe = cloud_probe(sim, probes, password=sim.world.devices[x1c].access_code)
    assert str(probe.connect()) == "Not authorized"


def test_lenient_broker_takes_the_access_code_of_an_owned_printer(probes: list[Probe]) -> None:
    with Simulator(replace(UNLIMITED, lenient_cloud_mqtt=True), lan=False) as lenient:
        x1c = owned(lenient, DEMO)[1]
        code = lenient.world.devices[x1c].access_code
        probe = cloud_probe(lenient, probes, password=code).expect_connected()
        assert not probe.subscribe(f"device/{x1c}/report")[0].is_failure
        other = owned(lenient, PASSWORD_USER)[0]
        stranger = cloud_probe(lenient, probes, password=lenient.world.devices[other].access_code)
        assert str(stranger.connect()) == "Not authorized"


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("u_{uid}", "not-a-token"),
        ("u_{uid}", ""),
        ("u_1", "{token}"),  # a genuine token of another uid
        ("bblp", "{code}"),  # LAN credentials are not cloud credentials
        ("bambu-sim-host", "guess"),
        (None, None),
    ],
)
def test_bad_credentials_are_not_authorized(
    sim: Simulator, probes: list[Probe], username: str | None, password: str | None
) -> None:
    uid = sim.user_id
    values = {
        "uid": str(uid),
        "token": sim.issue_token(DEMO),
        "code": sim.world.devices[SEED_DEVICE].access_code,
    }
    probe = Probe(
        (sim.mqtt_host, sim.mqtt_port),
        username.format(**values) if username else None,
        password.format(**values) if password is not None else None,
        ca_file=sim.ca_file,
    )
    probes.append(probe)
    code = probe.connect()
    assert code.is_failure
    assert str(code) == "Not authorized"


def test_access_code_of_someone_elses_printer_is_refused(
    sim: Simulator, probes: list[Probe]
) -> None:
    other = owned(sim, PASSWORD_USER)[0]
    probe = cloud_probe(sim, probes, password=sim.world.devices[other].access_code)
    assert str(probe.connect()) == "Not authorized"


def test_expired_token_is_refused(probes: list[Probe]) -> None:
    with Simulator(UNLIMITED, lan=False) as own:
        token = own.issue_token(DEMO)
        own.advance_clock(own.config.token_ttl + 1)
        probe = Probe(
            (own.mqtt_host, own.mqtt_port), f"u_{own.user_id}", token, ca_file=own.ca_file
        )
        probes.append(probe)
        assert str(probe.connect()) == "Not authorized"


def test_refused_connect_with_a_live_client_id_leaves_the_session_alone(
    sim: Simulator, probes: list[Probe]
) -> None:
    live = cloud_probe(sim, probes, client_id="same-id").expect_connected()
    topic = f"device/{SEED_DEVICE}/report"
    live.subscribe(topic)
    intruder = cloud_probe(sim, probes, password="wrong", client_id="same-id")
    assert intruder.connect().is_failure
    # Still connected and still subscribed: a reply reaches it.
    mark = live.mark()
    live.publish(f"device/{SEED_DEVICE}/request", pushall("31"))
    live.wait_for(is_full_report, after=mark)
    assert live.connects == 1


# --- ACL -------------------------------------------------------------------------------------


def test_acl_refuses_other_accounts_and_wildcards(sim: Simulator, probes: list[Probe]) -> None:
    other = owned(sim, PASSWORD_USER)[0]
    demo = cloud_probe(sim, probes).expect_connected()
    assert demo.subscribe(f"device/{other}/report")[0].is_failure
    assert demo.subscribe("device/+/report")[0].is_failure
    assert demo.subscribe("#")[0].is_failure
    assert demo.subscribe(f"device/{SEED_DEVICE}/request")[0].is_failure

    owner = cloud_probe(sim, probes, login=PASSWORD_USER).expect_connected()
    owner.subscribe(f"device/{other}/report")
    # A foreign request is dropped by the broker: the printer never sees it.
    mark = owner.mark()
    demo.publish(f"device/{other}/request", pushall("401"))
    owner.publish(f"device/{other}/request", command("info", "get_version", "402"))
    owner.wait_for(reply_to("info", "get_version", "402"), after=mark)
    assert not any(is_full_report(m) for m in owner.messages[mark:])
    assert not any(m.topic.endswith(f"{other}/report") for m in demo.messages)


# --- printers ---------------------------------------------------------------------------------


def test_command_reply_echoes_the_sequence_id(sim: Simulator, probes: list[Probe]) -> None:
    probe = cloud_probe(sim, probes).expect_connected()
    probe.subscribe(f"device/{SEED_DEVICE}/report")
    request = f"device/{SEED_DEVICE}/request"
    probe.publish(request, command("print", "print_speed", "4711", param="3"))
    reply = probe.wait_for(reply_to("print", "print_speed", "4711")).json()["print"]
    assert reply["result"].lower() == "success"
    assert sim.with_printer(SEED_DEVICE, lambda p: p.truth()["spd_lvl"]) == 3

    probe.publish(request, command("print", "print_speed", "4712", param="9"))
    refused = probe.wait_for(reply_to("print", "print_speed", "4712")).json()["print"]
    assert refused["result"] == "failed"

    probe.publish(request, command("info", "get_version", "4713"))
    version = probe.wait_for(reply_to("info", "get_version", "4713")).json()["info"]
    assert any(module["name"] == "ota" for module in version["module"])


def test_reports_keep_coming(sim: Simulator, probes: list[Probe]) -> None:
    x1c = owned(sim, DEMO)[1]  # X1: a full push_status every tick
    probe = cloud_probe(sim, probes).expect_connected()
    probe.subscribe(f"device/{x1c}/report")
    first = probe.wait_for(lambda m: "print" in (m.body() or {}))
    probe.wait_for(lambda m: "print" in (m.body() or {}), after=probe.messages.index(first) + 1)


def test_offline_and_online_publish_presence(sim: Simulator, probes: list[Probe]) -> None:
    a1mini, x1c = owned(sim, DEMO)[3], owned(sim, DEMO)[1]
    probe = cloud_probe(sim, probes).expect_connected()
    probe.subscribe(f"device/{a1mini}/report")
    probe.subscribe(f"device/{x1c}/report")
    sim.take_offline(a1mini)
    try:
        probe.wait_for(presence_event("client.disconnected"))
        assert sim.world.devices[a1mini].online is False
        devices = httpx.get(f"{sim.url}/sim/devices").json()["devices"]
        assert next(d for d in devices if d["dev_id"] == a1mini)["online"] is False
        # An offline printer answers nothing. Requests and answers travel one
        # connection each way in order, so once the X1C has answered, an
        # answer from the A1 mini would have arrived before.
        mark = probe.mark()
        probe.publish(f"device/{a1mini}/request", pushall("55"))
        probe.publish(f"device/{x1c}/request", command("info", "get_version", "56"))
        probe.wait_for(reply_to("info", "get_version", "56"), after=mark)
        assert not any(m.topic == f"device/{a1mini}/report" for m in probe.messages[mark:])
    finally:
        sim.bring_online(a1mini)
    probe.wait_for(presence_event("client.connected"))
    probe.publish(f"device/{a1mini}/request", pushall("57"))
    probe.wait_for(lambda m: is_full_report(m) and m.topic == f"device/{a1mini}/report")


def test_stalled_printer_goes_quiet_then_resumes(sim: Simulator, probes: list[Probe]) -> None:
    x1c = owned(sim, DEMO)[1]
    x1c_report = f"device/{x1c}/report"
    probe = cloud_probe(sim, probes).expect_connected()
    probe.subscribe(x1c_report)
    probe.subscribe(f"device/{SEED_DEVICE}/report")
    probe.wait_for(lambda m: m.topic == x1c_report)
    seconds = 1.0
    stalled_at = time.monotonic()
    sim.stall(x1c, seconds)
    # Whatever the X1C sent before the stall travels ahead of this reply
    # (one connection each way, in order).
    probe.publish(f"device/{SEED_DEVICE}/request", command("info", "get_version", "61"))
    barrier = probe.wait_for(reply_to("info", "get_version", "61"))
    mark = probe.messages.index(barrier) + 1
    resumed = probe.wait_for(lambda m: m.topic == x1c_report, timeout=3, after=mark)
    assert resumed.received - stalled_at >= seconds * 0.9


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_malformed_payloads_are_delivered_as_is(
    sim: Simulator, probes: list[Probe], kind: str
) -> None:
    a1 = owned(sim, DEMO)[2]
    probe = cloud_probe(sim, probes).expect_connected()
    probe.subscribe(f"device/{a1}/report")
    lan_host, lan_port = sim.lan_address(a1)
    lan = Probe(
        (lan_host, lan_port),
        "bblp",
        sim.printers[a1].access_code,
        ca_file=sim.ca_file,
        server_name=a1,
    ).expect_connected()
    probes.append(lan)
    lan.subscribe(f"device/{a1}/report")
    expected = malformed_payload(kind, sim.config.seed)
    sent = sim.publish_malformed(a1, kind)
    assert sent == expected
    assert probe.wait_for(lambda m: m.payload == expected).topic == f"device/{a1}/report"
    lan.wait_for(lambda m: m.payload == expected)
    # The printer and its links are unharmed.
    probe.publish(f"device/{a1}/request", pushall("77"))
    probe.wait_for(is_full_report)


def test_http_fault_endpoint(sim: Simulator, probes: list[Probe]) -> None:
    a1mini = owned(sim, DEMO)[3]
    info = httpx.get(f"{sim.url}/sim/mqtt").json()
    assert info["port"] == sim.mqtt_port
    assert info["broker"] == "amqtt"
    assert {p["serial"] for p in info["printers"]} == set(sim.printers)
    assert "access_code" not in str(info)

    probe = cloud_probe(sim, probes).expect_connected()
    probe.subscribe(f"device/{a1mini}/report")
    url = f"{sim.url}/sim/mqtt/faults"
    response = httpx.post(url, json={"fault": "malformed", "serial": a1mini, "payload": "empty"})
    assert response.status_code == 200, response.text
    probe.wait_for(lambda m: m.payload == b"")
    assert httpx.post(url, json={"fault": "offline", "serial": a1mini}).status_code == 200
    probe.wait_for(presence_event("client.disconnected"))
    assert httpx.post(url, json={"fault": "online", "serial": a1mini}).status_code == 200
    probe.wait_for(presence_event("client.connected"))
    assert httpx.post(url, json={"fault": "stall", "serial": a1mini, "seconds": 0}).is_success

    for bad in (
        {"fault": "melt"},
        {"fault": "stall", "serial": "nope"},
        {"fault": "malformed", "serial": a1mini, "payload": "gibberish"},
        {"fault": "restart", "broker": "no-such-broker"},
        {"fault": "stall", "serial": a1mini, "seconds": -1},
    ):
        response = httpx.post(url, json=bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["code"] == 400
