"""Commands a model cannot do are refused before sending, through both MQTT faces.

A printer without the hardware answers "success" and does nothing (no
chamber heater: ``M141`` is ignored), so the client refuses from the model
table instead, with the reason, and sends nothing. The simulated fleet has
one printer of each kind that matters here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bambulab.errors import BambuError, UnsupportedCommandError
from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from tests.conftest import unlimited
from tests.integration.test_mqtt_live import Latest, Live, cloud, wait_for

FLEET = ["p1s", "a1", "a1mini", "x1c", "x1e", "h2d"]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = unlimited().with_demo_fleet(parse_fleet(FLEET))
    with Simulator(config, time_scale=60, tick_interval=0.2) as simulator:
        yield simulator


@pytest.fixture
def fleet(sim: Simulator, face: str) -> Iterator[Live]:
    client = cloud(sim, face).connect()
    yield client
    client.close()


def serial_of(sim: Simulator, prefix: str) -> str:
    return next(e.serial for e in sim.endpoints() if e.serial.startswith(prefix))


REFRESH = ("pushing.pushall", "info.get_version")  # what connecting sends by itself


def received(sim: Simulator, serial: str) -> list[str]:
    names: list[str] = sim.with_printer(serial, lambda p: [name for name, _ in p.received])
    return [name for name in names if name not in REFRESH]


def refused(
    sim: Simulator, serial: str, call: Callable[[], Any], command: str, model: str, missing: str
) -> UnsupportedCommandError:
    before = received(sim, serial)
    with pytest.raises(UnsupportedCommandError) as info:
        call()
    error = info.value
    assert isinstance(error, BambuError)
    assert (error.serial, error.command, error.model) == (serial, command, model)
    assert missing in error.reason and missing in str(error)
    assert serial in str(error) and "\n" not in str(error)
    # Nothing went out: the printer saw no new command.
    after = received(sim, serial)
    assert after == before, after[len(before) :]
    return error


@pytest.mark.parametrize(
    ("prefix", "model"), [("01P", "P1S"), ("039", "A1"), ("030", "A1 mini"), ("00M", "X1 Carbon")]
)
def test_chamber_heating_is_refused_without_a_heater(
    fleet: Live, sim: Simulator, prefix: str, model: str
) -> None:
    serial = serial_of(sim, prefix)
    fleet.get_full_status(serial)
    for call in (
        lambda: fleet.set_chamber_temp(40, serial),
        lambda: fleet.send_gcode(["G28", "M141 S45"], serial),
    ):
        refused(sim, serial, call, "set_chamber_temp", model, "no chamber heater")
    refused(sim, serial, lambda: fleet.set_ctt(40, serial), "set_ctt", model, "no chamber heater")


def test_missing_fans_and_lights_are_refused(fleet: Live, sim: Simulator) -> None:
    a1 = serial_of(sim, "039")
    p1s = serial_of(sim, "01P")
    fleet.get_full_status(a1)
    state = Latest(fleet, a1)  # states are immutable: each read asks for the newest
    fleet.get_full_status(p1s)
    for fan in ("aux", "chamber"):
        refused(
            sim,
            a1,
            lambda f=fan: fleet.set_fan_speed(f, 50, a1),
            "set_fan_speed",
            "A1",
            f"{fan} fan",
        )
    refused(sim, a1, lambda: fleet.send_gcode("M106 P3 S255", a1), "set_fan_speed", "A1", "chamber")
    error = refused(
        sim,
        p1s,
        lambda: fleet.set_light(True, "chamber_light2", p1s),
        "set_light",
        "P1S",
        "chamber_light2",
    )
    assert "chamber_light" in error.reason.split("lights:")[1]
    # What the A1 has still works.
    fleet.set_fan_speed("part", 60, a1)
    wait_for(lambda: state.part_fan == 60, what="part fan at 60 %")


@pytest.mark.parametrize(("prefix", "target"), [("03W", 40), ("094", 45)])
def test_a_model_with_a_chamber_heater_still_heats(
    fleet: Live, sim: Simulator, prefix: str, target: int
) -> None:
    serial = serial_of(sim, prefix)
    fleet.get_full_status(serial)
    state = Latest(fleet, serial)  # states are immutable: each read asks for the newest
    fleet.set_chamber_temp(target, serial)
    # The X1E reports no chamber target (no packed device block): ask the printer itself.
    wait_for(
        lambda: sim.with_printer(serial, lambda p: p.state.chamber.target) == target,
        what="chamber target",
    )
    fleet.set_fan_speed("chamber", 100, serial)
    wait_for(lambda: state.chamber_fan == 100, what="chamber fan")
    node = "chamber_light2" if prefix == "094" else "work_light"
    fleet.set_light(False, node, serial)
    wait_for(lambda: state.lights.get(node) == "off", what=f"{node} off")
    fleet.set_chamber_temp(0, serial)
