"""``bambulabs_api`` (LAN MQTT) against the simulated printers, as its README uses it.

The README: ``printer = bl.Printer(IP, ACCESS_CODE, SERIAL)``, connect, read
``get_state()``, temperatures, percentage, and send commands. The simulator
has no camera yet, so the MQTT side is started alone (``mqtt_start()``, the
library's documented "no camera" form). Only the port is adapted: the
library dials 8883 and does not verify the certificate.

On connect the library publishes one message carrying three families
(``pushing.pushall``, ``info.get_version``, ``upgrade.get_history``) and then
merges whatever comes back; real printers answer each family (PROTOCOL.md
§2.6.1), so the first full state must arrive without any further request.
"""

from __future__ import annotations

import hashlib
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bambulab.sim import Simulator
from tests.thirdparty.conftest import (
    SEED_DEVICE,
    TIMINGS,
    WAIT,
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
    require("bambulabs_api")


X1C = "BL-P001"
A1_MINI = "N1"
P1P = "C11"


@pytest.fixture
def bl() -> Any:
    return require("bambulabs_api")


@pytest.fixture
def connect(sim: Simulator, bl: Any) -> Iterator[Any]:
    """``connect(serial)``: a started ``bl.Printer`` whose first full report has arrived."""
    started: list[Any] = []

    def start(serial: str) -> Any:
        host, port = sim.lan_address(serial)
        printer = bl.Printer(host, access_code(sim, serial), serial)
        printer.mqtt_client._port = port  # the printer's 8883, on a free loopback port
        began = time.monotonic()
        printer.mqtt_start()
        started.append(printer)
        # Read the raw dump: the library's getters send a pushall of their own
        # when called, which would hide a printer that never answered connect.
        dump = eventually(printer.mqtt_dump, lambda d: "gcode_state" in d.get("print", {}))
        assert "gcode_state" in dump.get("print", {}), (
            f"no full report {WAIT} s after connect; the library got {sorted(dump.get('print', {}))}"
        )
        TIMINGS.setdefault("bambulabs_api (LAN)", time.monotonic() - began)
        return printer

    yield start
    for printer in started:
        printer.mqtt_stop()
        printer.mqtt_client._client.disconnect()


@pytest.mark.parametrize("model", [P1P, X1C, A1_MINI])
def test_reads_what_the_printer_holds(sim: Simulator, connect: Any, model: str) -> None:
    serial = SEED_DEVICE if model == P1P else serial_of(sim, model)
    printer = connect(serial)

    def now() -> Any:
        return held(sim, serial)

    got, want = settle(lambda: str(printer.get_state()), lambda: now().gcode_state)
    assert got == want, "gcode_state"
    got, want = settle(
        lambda: (printer.get_percentage(), printer.current_layer_num(), printer.total_layer_num()),
        lambda: (now().percent, now().layer, now().total_layers),
    )
    assert got == want, "percent, layer, total layers"
    got, want = settle(
        lambda: (
            printer.get_nozzle_temperature(),
            printer.mqtt_client.get_nozzle_temperature_target(),
            printer.get_bed_temperature(),
            printer.mqtt_client.get_bed_temperature_target(),
        ),
        lambda: (now().nozzle_temp, now().nozzle_target, now().bed_temp, now().bed_target),
    )
    assert got == want, "nozzle, nozzle target, bed, bed target"
    assert printer.nozzle_diameter() == now().nozzle_diameter
    assert printer.nozzle_type().value == now().nozzle_type
    assert printer.get_light_state() == now().lights["chamber_light"]
    fans = now().fans
    assert (
        printer.mqtt_client.get_part_fan_speed(),
        printer.mqtt_client.get_aux_fan_speed(),
        printer.mqtt_client.get_chamber_fan_speed(),
    ) == (fans["part"], fans["aux"], fans["chamber"])
    # The version comes in the answer to the library's own get_version, which
    # may land after the first full report on a loaded machine: wait for it.
    got, want = settle(printer.mqtt_client.firmware_version, lambda: now().firmware)
    assert got == want, "firmware version"


@pytest.mark.parametrize("model", [P1P, A1_MINI])
def test_chamber_without_a_sensor_reads_the_placeholder(
    sim: Simulator, connect: Any, model: str
) -> None:
    """P1P/A1 have no chamber sensor and report 5 (PROTOCOL.md §2.6.1): that is what users see."""
    serial = SEED_DEVICE if model == P1P else serial_of(sim, model)
    printer = connect(serial)
    assert printer.get_chamber_temperature() == 5.0


def test_chamber_with_a_sensor(sim: Simulator, connect: Any) -> None:
    serial = serial_of(sim, X1C)
    printer = connect(serial)
    got, want = settle(printer.get_chamber_temperature, lambda: held(sim, serial).chamber_temp)
    assert got == want


@pytest.mark.parametrize("model", [X1C, A1_MINI])
def test_ams_trays_and_colours(sim: Simulator, connect: Any, model: str) -> None:
    """Idle printers, so no tray changes between the full report and the read."""
    serial = serial_of(sim, model)
    printer = connect(serial)
    printer.mqtt_client.process_ams()
    hub = printer.ams_hub().ams_hub
    seen = {
        (ams_id, slot): (tray.tray_type, tray.tray_color)
        for ams_id, unit in hub.items()
        for slot, tray in unit.filament_trays.items()
        if tray.tray_type
    }
    assert seen == held(sim, serial).trays


def test_pause_and_resume(sim: Simulator, connect: Any) -> None:
    printer = connect(SEED_DEVICE)
    assert printer.pause_print()
    assert eventually(lambda: held(sim, SEED_DEVICE).gcode_state, lambda s: s == "PAUSE") == "PAUSE"
    assert eventually(lambda: str(printer.get_state()), lambda s: s == "PAUSE") == "PAUSE"
    assert printer.resume_print()
    assert (
        eventually(lambda: held(sim, SEED_DEVICE).gcode_state, lambda s: s == "RUNNING")
        == "RUNNING"
    )
    assert eventually(lambda: str(printer.get_state()), lambda s: s == "RUNNING") == "RUNNING"


def test_gcode_line_sets_a_fan(sim: Simulator, connect: Any) -> None:
    """``set_part_fan_speed`` sends ``M106 P1 S<n>`` as a ``gcode_line``."""
    serial = serial_of(sim, X1C)
    printer = connect(serial)
    assert printer.set_part_fan_speed(255)
    assert eventually(lambda: held(sim, serial).fans["part"], lambda v: v == 255) == 255
    assert eventually(printer.mqtt_client.get_part_fan_speed, lambda v: v == 255) == 255
    assert printer.gcode("M106 P1 S0")
    assert eventually(lambda: held(sim, serial).fans["part"], lambda v: v == 0) == 0
    assert eventually(printer.mqtt_client.get_part_fan_speed, lambda v: v == 0) == 0


def test_light_command_without_ledctrl_is_not_acted_on(sim: Simulator, connect: Any) -> None:
    """``turn_light_off()`` publishes ``{"system": {"led_mode": "off"}}``: no ``command``, no
    ``led_node``. Printers ignore it (the Go port of this library replaced the same form
    with ``system.ledctrl`` because it "is not working"), so the light stays as it was.
    """
    serial = serial_of(sim, X1C)
    printer = connect(serial)
    before = held(sim, serial).lights
    assert printer.turn_light_off()
    time.sleep(1.0)  # two report ticks
    assert held(sim, serial).lights == before
    assert printer.get_light_state() == before["chamber_light"]


IDLE_P1S = "01P09C470100201"
IDLE_H2D = "09409B120100202"


def small_project(path: Path) -> Path:
    """A small sliced-project-shaped 3MF: plate 1's G-code, its MD5, slice_info."""
    gcode = "".join(f"G1 X{10 + i % 20} Y{10 + i // 20} E0.1 F1200\n" for i in range(400))
    gcode = "; HEADER_BLOCK_START\n; total layer number: 4\n; HEADER_BLOCK_END\nG28\n" + gcode
    slice_info = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<config>\n  <plate>\n'
        '    <metadata key="index" value="1"/>\n'
        '    <metadata key="printer_model_id" value="C12"/>\n'
        '    <metadata key="prediction" value="600"/>\n'
        '    <metadata key="weight" value="2.50"/>\n'
        '    <object identify_id="75" name="cube" skipped="false"/>\n'
        '    <filament id="1" type="PLA" color="#FFFFFF" used_m="0.80" used_g="2.50"/>\n'
        "  </plate>\n</config>\n"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Metadata/plate_1.gcode", gcode)
        archive.writestr("Metadata/plate_1.gcode.md5", hashlib.md5(gcode.encode()).hexdigest())
        archive.writestr("Metadata/slice_info.config", slice_info)
    return path


@pytest.mark.parametrize("serial", [IDLE_H2D, IDLE_P1S], ids=["h2d", "p1s"])
def test_upload_over_ftps_then_start_print(
    sim: Simulator, connect: Any, tmp_path: Path, serial: str
) -> None:
    """The README's ``upload_file`` (implicit FTPS on 990) and ``start_print``.

    The library sends ``ftp:///<name>`` to every model; users report that working
    on a P1S (issue 9), so every simulated family must take it.
    """
    printer = connect(serial)
    printer.ftp_client.port = sim.ftps_address(serial)[1]  # the printer's 990
    project = small_project(tmp_path / "bambulab-thirdparty.3mf")
    with project.open("rb") as file:
        result = printer.upload_file(file, "bambulab-thirdparty.3mf")
    assert str(result).startswith("226"), result
    card = sim.printers[serial].card.root / "bambulab-thirdparty.3mf"
    assert card.read_bytes() == project.read_bytes()
    try:
        assert printer.start_print("bambulab-thirdparty.3mf", 1, use_ams=False)

        def job_file() -> str | None:
            return sim.with_printer(
                serial, lambda p: p.state.job.gcode_file if p.state.job else None
            )

        assert eventually(job_file, lambda f: f is not None and "bambulab-thirdparty" in f)
        assert eventually(
            lambda: held(sim, serial).gcode_state, lambda s: s in ("PREPARE", "RUNNING")
        ) in ("PREPARE", "RUNNING")
    finally:
        printer.stop_print()
        eventually(lambda: held(sim, serial).gcode_state, lambda s: s not in ("PREPARE", "RUNNING"))
