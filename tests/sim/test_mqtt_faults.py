"""Broker faults: restarts on the same port, dropped connections, and start-up time.

Each test gets its own simulator, since these faults affect every client.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from bambulab.sim import SimConfig, Simulator
from tests.sim.mqtt_support import (
    Message,
    Probe,
    cloud_probe,
    command,
    is_full_report,
    port_kept_from_strangers,
    pushall,
    reply_to,
)
from tests.sim.simtools import DEMO, SEED_DEVICE, UNLIMITED


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(UNLIMITED, tick_interval=0.2) as running:
        yield running


def seed_watcher(sim: Simulator, probes: list[Probe]) -> Probe:
    probe = cloud_probe(sim, probes).expect_connected()
    probe.subscribe(f"device/{SEED_DEVICE}/report")
    return probe


def lan_probe(sim: Simulator, probes: list[Probe], serial: str = SEED_DEVICE) -> Probe:
    probe = Probe(
        sim.lan_address(serial),
        "bblp",
        sim.printers[serial].access_code,
        ca_file=sim.ca_file,
        server_name=serial,
    ).expect_connected()
    probes.append(probe)
    probe.subscribe(f"device/{serial}/report")
    return probe


def test_start_up_is_under_two_seconds() -> None:
    started = time.perf_counter()
    sim = Simulator(SimConfig())
    sim.start()
    elapsed = time.perf_counter() - started
    try:
        assert elapsed < 2.0, f"start-up took {elapsed:.2f} s"
        assert sim.startup_seconds < 2.0
        assert len(sim.printers) == len(sim.world.devices)
        assert sim.wait_mqtt_ready(timeout=0)
    finally:
        stopping = time.perf_counter()
        sim.stop()
    assert time.perf_counter() - stopping < 2.0
    sim.stop()  # idempotent


def test_cloud_broker_restart_keeps_port_and_printer_state(
    sim: Simulator, probes: list[Probe]
) -> None:
    probe = seed_watcher(sim, probes)
    request = f"device/{SEED_DEVICE}/request"
    probe.publish(request, command("print", "print_speed", "1", param="4"))
    probe.wait_for(reply_to("print", "print_speed", "1"))
    port = sim.mqtt_port

    sim.restart_broker("cloud", downtime=0.2)

    assert sim.mqtt_port == port
    probe.wait_reconnected()
    assert probe.connects >= 2
    mark = probe.mark()
    probe.publish(request, pushall("2"))
    full = probe.wait_for(is_full_report, after=mark).json()["print"]
    assert full["spd_lvl"] == 4  # the printer kept its state


def test_a_restarting_broker_keeps_its_port_from_other_programs(
    sim: Simulator, probes: list[Probe]
) -> None:
    probe = seed_watcher(sim, probes)
    port_kept_from_strangers(sim, sim.mqtt_port, downtime=1.0)
    probe.wait_reconnected()
    mark = probe.mark()
    probe.publish(f"device/{SEED_DEVICE}/request", pushall("5"))
    probe.wait_for(is_full_report, after=mark)


def test_dropped_connections_are_seen_and_recovered(sim: Simulator, probes: list[Probe]) -> None:
    probe = seed_watcher(sim, probes)
    sim.drop_connections("cloud")
    probe.wait_reconnected()
    mark = probe.mark()
    probe.publish(f"device/{SEED_DEVICE}/request", pushall("3"))
    probe.wait_for(is_full_report, after=mark)


def test_lan_broker_restart_and_drop(sim: Simulator, probes: list[Probe]) -> None:
    lan = lan_probe(sim, probes)
    cloud = seed_watcher(sim, probes)
    port = sim.lan_address(SEED_DEVICE)[1]
    sim.restart_broker(SEED_DEVICE)
    assert sim.lan_address(SEED_DEVICE)[1] == port
    lan.wait_reconnected()
    assert cloud.disconnects == 0  # the cloud broker was not touched
    before = lan.disconnects
    sim.drop_connections(SEED_DEVICE)
    lan.wait_reconnected(since=before)
    mark = lan.mark()
    lan.publish(f"device/{SEED_DEVICE}/request", pushall("4"))
    lan.wait_for(is_full_report, after=mark)


def test_http_restart_fault(sim: Simulator, probes: list[Probe]) -> None:
    probe = seed_watcher(sim, probes)
    response = httpx.post(
        f"{sim.url}/sim/mqtt/faults", json={"fault": "restart", "broker": "cloud"}, timeout=10
    )
    assert response.status_code == 200, response.text
    probe.wait_reconnected()
    response = httpx.post(f"{sim.url}/sim/mqtt/faults", json={"fault": "drop"}, timeout=10)
    assert response.status_code == 200, response.text


def test_time_scale_runs_a_print_in_seconds(probes: list[Probe]) -> None:
    with Simulator(UNLIMITED, lan=False, time_scale=600, tick_interval=0.1) as sim:
        x1c = next(d.dev_id for d in sim.world.devices_of(sim.user_id) if d.model.key == "x1c")
        sim.with_printer(x1c, lambda p: p.start_job(minutes=20, layers=30))
        probe = Probe(
            (sim.mqtt_host, sim.mqtt_port),
            f"u_{sim.user_id}",
            sim.issue_token(DEMO),
            ca_file=sim.ca_file,
        ).expect_connected()
        probes.append(probe)
        probe.subscribe(f"device/{x1c}/report")

        def finished(message: Message) -> bool:
            report = (message.body() or {}).get("print")
            return isinstance(report, dict) and report.get("gcode_state") == "FINISH"

        probe.wait_for(finished, timeout=15)


def test_advance_clock_moves_printers_by_as_much(probes: list[Probe]) -> None:
    with Simulator(UNLIMITED, lan=False, time_scale=5, tick_interval=0.1) as sim:
        x1c = next(d.dev_id for d in sim.world.devices_of(sim.user_id) if d.model.key == "x1c")
        sim.with_printer(x1c, lambda p: p.start_job(minutes=30, layers=30))
        before = sim.with_printer(x1c, lambda p: p.sim_time)
        sim.advance_clock(3600)  # an hour, not five: jumps are not scaled
        probe = Probe(
            (sim.mqtt_host, sim.mqtt_port),
            f"u_{sim.user_id}",
            sim.issue_token(DEMO),
            ca_file=sim.ca_file,
        ).expect_connected()
        probes.append(probe)
        probe.subscribe(f"device/{x1c}/report")
        probe.wait_for(lambda m: (m.body() or {}).get("print", {}).get("gcode_state") == "FINISH")
        elapsed = sim.with_printer(x1c, lambda p: p.sim_time) - before
        assert 3600 <= elapsed < 3600 + 60
    with pytest.raises(ValueError, match="positive"):
        Simulator(UNLIMITED, time_scale=0)
