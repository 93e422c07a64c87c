"""The same status and command basics with mosquitto as the broker (child process).

What mosquitto mode enforces (see ``bambulab.sim.mosquitto``): LAN listeners
check ``bblp`` + access code; the cloud listener does not check passwords
but its ACL gives each ``u_<uid>`` its own printers' topics only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from bambulab.sim import Simulator
from bambulab.sim.mosquitto import ExternalBroker, password_line
from tests.binaries import needs
from tests.sim.mqtt_support import (
    Probe,
    cloud_probe,
    command,
    is_full_report,
    port_kept_from_strangers,
    pushall,
    reply_to,
)
from tests.sim.simtools import DEMO, PASSWORD_USER, SEED_DEVICE, UNLIMITED

BIND = "/v1/iot-service/api/user/bind"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(UNLIMITED, broker="mosquitto", tick_interval=0.2) as running:
        yield running


@needs("mosquitto")
def test_status_and_command_over_the_cloud_listener(sim: Simulator, probes: list[Probe]) -> None:
    assert sim.broker_kind == "mosquitto"
    probe = cloud_probe(sim, probes).expect_connected()
    probe.subscribe(f"device/{SEED_DEVICE}/report")
    request = f"device/{SEED_DEVICE}/request"
    probe.publish(request, pushall("1"))
    assert probe.wait_for(is_full_report).json()["print"]["gcode_state"] == "RUNNING"
    probe.publish(request, command("print", "print_speed", "2", param="2"))
    reply = probe.wait_for(reply_to("print", "print_speed", "2")).json()["print"]
    assert reply["result"] == "success"


@needs("mosquitto")
def test_lan_listener_checks_the_access_code(sim: Simulator, probes: list[Probe]) -> None:
    address = sim.lan_address(SEED_DEVICE)
    good = Probe(
        address,
        "bblp",
        sim.printers[SEED_DEVICE].access_code,
        ca_file=sim.ca_file,
        server_name=SEED_DEVICE,
    ).expect_connected()
    probes.append(good)
    good.subscribe(f"device/{SEED_DEVICE}/report")
    good.publish(f"device/{SEED_DEVICE}/request", pushall("3"))
    good.wait_for(is_full_report)

    bad = Probe(address, "bblp", "00000000", ca_file=sim.ca_file, server_name=SEED_DEVICE)
    probes.append(bad)
    assert str(bad.connect()) == "Not authorized"


@needs("mosquitto")
def test_cloud_acl_keeps_accounts_apart(sim: Simulator, probes: list[Probe]) -> None:
    account = sim.world.find_account(PASSWORD_USER)
    assert account is not None
    other = sim.world.devices_of(account.uid)[0].dev_id
    owner = cloud_probe(sim, probes, PASSWORD_USER).expect_connected()
    owner.subscribe(f"device/{other}/report")
    demo = cloud_probe(sim, probes).expect_connected()
    demo.subscribe(f"device/{other}/report")  # mosquitto 2.0 grants it, then delivers nothing
    demo.publish(f"device/{other}/request", pushall("10"))  # dropped by the ACL
    owner.publish(f"device/{other}/request", command("info", "get_version", "11"))
    owner.wait_for(reply_to("info", "get_version", "11"))
    assert not any(is_full_report(m) for m in owner.messages)
    assert not demo.messages


def _full_report_arrives(probe: Probe, serial: str, seconds: float) -> bool:
    """Ask for a full report every half second; whether one arrives within ``seconds``."""
    deadline = time.monotonic() + seconds
    n = 100
    while time.monotonic() < deadline:
        n += 1
        mark = probe.mark()
        probe.publish(f"device/{serial}/request", pushall(str(n)))
        try:
            probe.wait_for(is_full_report, timeout=0.5, after=mark)
        except AssertionError:
            continue
        return True
    return False


@needs("mosquitto")
def test_a_printer_bound_at_run_time_is_followed_without_a_restart(
    sim: Simulator, probes: list[Probe]
) -> None:
    serial, code = next(
        (d.dev_id, d.bind_code) for d in sim.world.devices.values() if d.owner is None
    )
    headers = {"Authorization": f"Bearer {sim.issue_token(DEMO)}"}
    probe = cloud_probe(sim, probes).expect_connected()
    probe.subscribe(f"device/{serial}/report")
    assert not _full_report_arrives(probe, serial, 1.0)  # not ours yet: the ACL drops it
    bound = httpx.post(
        sim.url + BIND, json={"device_id": serial, "bind_code": code}, headers=headers
    )
    assert bound.status_code == 200, bound.text
    try:
        assert _full_report_arrives(probe, serial, 5.0)
    finally:
        gone = httpx.delete(sim.url + BIND, params={"dev_id": serial}, headers=headers)
    assert gone.status_code == 200, gone.text
    time.sleep(0.3)  # mosquitto rereads its ACL on SIGHUP, a moment later
    assert not _full_report_arrives(probe, serial, 1.5)  # unbound: followed no more


@needs("mosquitto")
def test_restart_keeps_ports(sim: Simulator, probes: list[Probe]) -> None:
    probe = cloud_probe(sim, probes).expect_connected()
    probe.subscribe(f"device/{SEED_DEVICE}/report")
    ports = (sim.mqtt_port, sim.lan_address(SEED_DEVICE))
    sim.restart_broker()
    assert (sim.mqtt_port, sim.lan_address(SEED_DEVICE)) == ports
    probe.wait_reconnected()
    mark = probe.mark()
    probe.publish(f"device/{SEED_DEVICE}/request", pushall("20"))
    probe.wait_for(is_full_report, after=mark)


@needs("mosquitto")
def test_a_restarting_mosquitto_keeps_its_ports_from_other_programs(
    sim: Simulator, probes: list[Probe]
) -> None:
    probe = cloud_probe(sim, probes).expect_connected()
    probe.subscribe(f"device/{SEED_DEVICE}/report")
    # a LAN port nobody was connected to: no TIME_WAIT connection keeps it taken
    port_kept_from_strangers(sim, sim.lan_address(SEED_DEVICE)[1], downtime=1.0)
    probe.wait_reconnected()
    mark = probe.mark()
    probe.publish(f"device/{SEED_DEVICE}/request", pushall("21"))
    probe.wait_for(is_full_report, after=mark)


def test_password_lines_and_broker_urls() -> None:
    line = password_line("bblp", "12345678")
    user, _, rest = line.strip().partition(":")
    assert user == "bblp"
    assert rest.startswith("$7$101$")
    broker = ExternalBroker.parse("mqtts://u_1:s%40cret@broker.example:8884?insecure=1")
    assert (broker.host, broker.port, broker.tls, broker.insecure) == (
        "broker.example",
        8884,
        True,
        True,
    )
    assert broker.credential is not None
    assert broker.credential.password == "s@cret"
    assert "s@cret" not in str(broker)
    assert "s@cret" not in repr(broker.credential)
    assert ExternalBroker.parse("mqtt://localhost").port == 1883
    with pytest.raises(ValueError, match="mqtt://"):
        ExternalBroker.parse("http://localhost")


@needs("mosquitto")
def test_external_broker_url_is_used_as_the_cloud_broker(
    sim: Simulator, probes: list[Probe]
) -> None:
    # The mosquitto of the module fixture plays "someone else's broker" here:
    # its internal listener with the host credential, as a plain mqtt:// URL.
    assert sim._mosquitto is not None
    credential = sim._internal
    url = (
        f"mqtt://{credential.username}:{credential.password}"
        f"@127.0.0.1:{sim._mosquitto.internal_port}"
    )
    with Simulator(UNLIMITED, broker=url, lan=False, tick_interval=0.2) as external:
        assert external.broker_kind == "url"
        assert external.mqtt_port == sim._mosquitto.internal_port
        watcher = Probe(
            (external.mqtt_host, external.mqtt_port),
            credential.username,
            credential.password,
            ca_file=None,
        ).expect_connected()
        probes.append(watcher)
        watcher.subscribe(f"device/{SEED_DEVICE}/report")
        watcher.publish(f"device/{SEED_DEVICE}/request", command("info", "get_version", "30"))
        watcher.wait_for(reply_to("info", "get_version", "30"))


@needs("mosquitto")
def test_a_printer_switched_off_takes_no_lan_login(sim: Simulator, probes: list[Probe]) -> None:
    """mosquitto cannot close one listener: an offline printer's refuses every login."""
    serial = next(s for s in sim.printers if s != SEED_DEVICE)
    address, code = sim.lan_address(serial), sim.printers[serial].access_code

    def login() -> str:
        probe = Probe(address, "bblp", code, ca_file=sim.ca_file, server_name=serial)
        probes.append(probe)
        return str(probe.connect())

    sim.take_offline(serial)
    try:
        # mosquitto rereads its password files on SIGHUP, shortly after the signal.
        deadline = time.monotonic() + 5
        while (answer := login()) != "Not authorized" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answer == "Not authorized"
    finally:
        sim.bring_online(serial)
    deadline = time.monotonic() + 5
    while (answer := login()) != "Success" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answer == "Success"
