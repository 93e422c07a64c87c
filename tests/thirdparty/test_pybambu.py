"""``pybambu`` (the Home Assistant integration's library) against ``bambu sim``.

Used as the integration uses it: the config flow checks a printer with
``try_connection()`` (one ``get_version`` answer, from which the model is
detected), then ``connect(callback)`` keeps a session whose ``Device`` the
entities read; buttons and switches call ``publish()`` / the model's setters.
Cloud mode logs in with ``BambuCloud.login``, lists devices and connects to
the cloud broker as ``u_<uid>`` with the token.

Adapted, and only that: the addresses the library hard-codes (port 8883,
``us.mqtt.bambulab.com``, ``https://api.bambulab.com``) are mapped onto the
simulator's loopback ones. The library does not verify certificates. The
model is left for the library to detect (``device_type="unknown"``), which
also keeps its P1/A1 camera thread (port 6000; the simulator has no camera
yet) from starting.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from bambulab.sim import Simulator
from tests.thirdparty.conftest import (
    BINDABLE_H2D,
    PASSWORD,
    PASSWORD_USER,
    SEED_DEVICE,
    TIMINGS,
    WAIT,
    Held,
    Redirect,
    access_code,
    eventually,
    held,
    require,
    serial_of,
    settle,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    """Skip (fail under CI) before the simulator starts when the library is missing."""
    require("pybambu")


X1C = "BL-P001"
A1_MINI = "N1"
P1P = "C11"
# What pybambu calls each model once it has read get_version (its utils.get_printer_type).
PYBAMBU_NAME = {P1P: "P1P", "C12": "P1S", X1C: "X1C", "C13": "X1E", A1_MINI: "A1MINI", "N2S": "A1"}


@pytest.fixture
def pybambu(monkeypatch: pytest.MonkeyPatch, sim: Simulator) -> Any:
    """The library, dialling the simulator instead of 8883 / the Bambu cloud."""
    require("pybambu")
    client_module = require("pybambu.bambu_client")
    cloud_module = require("pybambu.bambu_cloud")
    redirect = Redirect()
    for serial in sim.printers:
        try:
            host, port = sim.lan_address(serial)
        except (KeyError, RuntimeError):
            continue
        redirect.mqtt[(f"printer-{serial}", 8883)] = (host, port)
    assert sim.mqtt_host is not None and sim.mqtt_port is not None
    redirect.mqtt[("us.mqtt.bambulab.com", 8883)] = (sim.mqtt_host, sim.mqtt_port)
    redirect.http["https://api.bambulab.com"] = sim.url
    monkeypatch.setattr(client_module, "mqtt", redirect.paho_module())
    monkeypatch.setattr(cloud_module, "requests", redirect.requests_module())
    return client_module


def lan_client(pybambu: Any, sim: Simulator, serial: str) -> Any:
    # The host is the printer's address; each simulated printer gets a name
    # that the redirect maps to its own broker.
    return pybambu.BambuClient(
        device_type="unknown",
        serial=serial,
        host=f"printer-{serial}",
        local_mqtt=True,
        region="",
        email="",
        username="",
        auth_token="",
        access_code=access_code(sim, serial),
    )


def full(device: Any) -> bool:
    """The Device has seen a full report (job state and temperatures)."""
    return device.print_job.gcode_state != "unknown" and device.info.nozzle_diameter != 0


@pytest.fixture
def session(pybambu: Any, sim: Simulator) -> Iterator[Any]:
    """``session(serial)``: a connected client whose Device holds a full state."""
    clients: list[Any] = []

    def start(serial: str, client: Any | None = None, label: str = "pybambu (LAN)") -> Any:
        client = client or lan_client(pybambu, sim, serial)
        events: list[str] = []
        began = time.monotonic()
        client.connect(callback=events.append)
        clients.append(client)
        device = client.get_device()
        eventually(lambda: full(device), bool)
        assert full(device), (
            f"no full state {WAIT} s after connect: gcode_state "
            f"{device.print_job.gcode_state!r}, nozzle diameter {device.info.nozzle_diameter}"
        )
        TIMINGS.setdefault(label, time.monotonic() - began)
        return client

    yield start
    for client in clients:
        client.disconnect()
        client._on_disconnect()  # stops its watchdog thread, as a paho disconnect callback does


def check_state(sim: Simulator, serial: str, device: Any) -> None:
    """Every value the integration's sensors show equals what the printer holds."""

    def now() -> Held:
        return held(sim, serial)

    got, want = settle(
        lambda: (
            device.print_job.gcode_state,
            device.print_job.print_percentage,
            device.print_job.current_layer,
            device.print_job.total_layers,
        ),
        lambda: (now().gcode_state, now().percent, now().layer, now().total_layers),
    )
    assert got == want, "gcode_state, percent, layer, total layers"
    t = device.temperature
    got, want = settle(
        lambda: (t.nozzle_temp, t.target_nozzle_temp, t.bed_temp, t.target_bed_temp),
        lambda: tuple(
            round(v)
            for v in (now().nozzle_temp, now().nozzle_target, now().bed_temp, now().bed_target)
        ),
    )
    assert got == want, "nozzle, nozzle target, bed, bed target (the library rounds)"
    assert (device.info.nozzle_diameter, device.info.nozzle_type) == (
        now().nozzle_diameter,
        now().nozzle_type,
    )
    assert device.lights.chamber_light == now().lights["chamber_light"]
    assert device.info.sw_ver == now().firmware or device.info.sw_ver == "unknown"


@pytest.mark.parametrize("model", [P1P, X1C, A1_MINI])
def test_config_flow_detects_the_model(pybambu: Any, sim: Simulator, model: str) -> None:
    """``try_connection()`` reads get_version's modules: ``esp32``/``rv1126`` board + project."""
    import asyncio

    serial = SEED_DEVICE if model == P1P else serial_of(sim, model)
    client = lan_client(pybambu, sim, serial)
    assert asyncio.run(client.try_connection()) is True
    info = client.get_device().info
    assert (info.device_type, info.sw_ver) == (PYBAMBU_NAME[model], held(sim, serial).firmware)


@pytest.mark.parametrize("model", [P1P, X1C, A1_MINI])
def test_lan_session_reads_what_the_printer_holds(sim: Simulator, session: Any, model: str) -> None:
    serial = SEED_DEVICE if model == P1P else serial_of(sim, model)
    client = session(serial)
    check_state(sim, serial, client.get_device())


def test_chamber_temperature_of_an_x1(sim: Simulator, session: Any) -> None:
    serial = serial_of(sim, X1C)
    device = session(serial).get_device()
    got, want = settle(
        lambda: device.temperature.chamber_temp, lambda: round(held(sim, serial).chamber_temp)
    )
    assert got == want


@pytest.mark.parametrize("model", [X1C, A1_MINI])
def test_ams_trays_and_colours(sim: Simulator, session: Any, model: str) -> None:
    serial = serial_of(sim, model)
    device = session(serial).get_device()
    seen = {
        (ams_id, slot): (tray.type, tray.color)
        for ams_id, unit in enumerate(device.ams.data)
        if unit is not None
        for slot, tray in enumerate(unit.tray)
        if not tray.empty and tray.type
    }
    assert seen == held(sim, serial).trays
    assert device.ams.tray_now == held(sim, serial).tray_now


def test_light_switch_round_trip(sim: Simulator, session: Any) -> None:
    """The chamber light switch publishes ``system.ledctrl``; the report confirms it."""
    serial = serial_of(sim, X1C)
    device = session(serial).get_device()
    device.lights.TurnChamberLightOff()
    assert (
        eventually(lambda: held(sim, serial).lights["chamber_light"], lambda m: m == "off") == "off"
    )
    # The override clears when a report confirms the new mode.
    assert eventually(lambda: device.lights.chamber_light_override, lambda o: o == "") == ""
    assert device.lights.chamber_light == "off"
    device.lights.TurnChamberLightOn()
    assert (
        eventually(lambda: held(sim, serial).lights["chamber_light"], lambda m: m == "on") == "on"
    )
    assert eventually(lambda: device.lights.chamber_light_override, lambda o: o == "") == ""
    assert device.lights.chamber_light == "on"


def test_pause_resume_buttons(sim: Simulator, session: Any) -> None:
    commands = require("pybambu.commands")
    client = session(SEED_DEVICE)
    device = client.get_device()
    assert client.publish(commands.PAUSE)
    assert eventually(lambda: held(sim, SEED_DEVICE).gcode_state, lambda s: s == "PAUSE") == "PAUSE"
    assert eventually(lambda: device.print_job.gcode_state, lambda s: s == "PAUSE") == "PAUSE"
    assert client.publish(commands.RESUME)
    assert (
        eventually(lambda: held(sim, SEED_DEVICE).gcode_state, lambda s: s == "RUNNING")
        == "RUNNING"
    )
    assert eventually(lambda: device.print_job.gcode_state, lambda s: s == "RUNNING") == "RUNNING"


def test_fan_control_sends_a_gcode_line(sim: Simulator, session: Any) -> None:
    const = require("pybambu.const")
    serial = serial_of(sim, X1C)
    device = session(serial).get_device()
    device.fans.set_fan_speed(const.FansEnum.PART_COOLING, 100)  # M106 P1 S255
    assert eventually(lambda: held(sim, serial).fans["part"], lambda v: v == 255) == 255
    # The library shows its own value for 5 s, then the printer's again.
    time.sleep(5.5)
    assert (
        eventually(
            lambda: device.fans.get_fan_speed(const.FansEnum.PART_COOLING), lambda v: v == 100
        )
        == 100
    )


def test_cloud_login_devices_and_session(pybambu: Any, sim: Simulator, session: Any) -> None:
    """The integration's cloud set-up: password login, device list, cloud MQTT with the token."""
    cloud = pybambu.BambuCloud(region="", email="", username="", auth_token="")
    cloud.login("", PASSWORD_USER, PASSWORD)
    account = sim.world.find_account(PASSWORD_USER)
    assert account is not None
    assert cloud.username == f"u_{account.uid}"
    devices = cloud.get_device_list()
    assert len(devices) == 1
    device = devices[0]
    serial = device["dev_id"]
    assert device["dev_model_name"] == held(sim, serial).model
    client = pybambu.BambuClient(
        device_type=cloud.get_device_type_from_device_product_name(device["dev_product_name"]),
        serial=serial,
        host="",
        local_mqtt=False,
        region="",
        email=PASSWORD_USER,
        username=cloud.username,
        auth_token=cloud.auth_token,
        access_code=device["dev_access_code"],
    )
    session(serial, client, label="pybambu (cloud)")
    check_state(sim, serial, client.get_device())


def test_h2d_top_level_nozzle_is_the_idle_one(sim: Simulator, session: Any) -> None:
    """On dual-nozzle printers the top-level ``nozzle_temper`` belongs to the idle nozzle
    (PROTOCOL.md §2.6.1), and that is what a library reading only top-level fields shows."""
    import copy

    commands = require("pybambu.commands")
    client = session(BINDABLE_H2D)
    device = client.get_device()
    heat = copy.deepcopy(commands.SEND_GCODE_TEMPLATE)
    heat["print"]["param"] = "M104 S200\n"  # the active nozzle
    assert client.publish(heat)
    try:

        def spread() -> float:
            now = held(sim, BINDABLE_H2D)
            idle = now.nozzle_temps[1 - now.active_extruder]
            return now.nozzle_temp - idle

        assert eventually(spread, lambda d: d > 20) > 20
        got, want = settle(
            lambda: device.temperature.nozzle_temp,
            lambda: round(
                held(sim, BINDABLE_H2D).nozzle_temps[1 - held(sim, BINDABLE_H2D).active_extruder]
            ),
        )
        assert got == want, "top-level nozzle_temper = the idle nozzle's"
    finally:
        heat["print"]["param"] = "M104 S0\n"
        client.publish(heat)
