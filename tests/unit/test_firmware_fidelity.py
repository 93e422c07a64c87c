"""PrinterState reads current firmware as the printer's screen and Bambu Studio show it (issue 8).

Points 1-5 and 7: model detection from ``get_version`` in every spelling,
the active nozzle of dual-nozzle printers, nozzle type codes, the chamber,
idle, and the typed SD card / door / camera / second aux fan fields. The
payloads are written from the facts (``tests/firmware_payloads.py``) and go
over the wire as bytes through the public ``ReportStream``, like a client's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bambulab.models.output import AmsOut, PrinterStateOut
from bambulab.models.printer import MODELS, detect_model, model_named
from bambulab.models.state import PrinterState, nozzle_kind
from bambulab.protocol.mqtt import ReportStream, report_topic
from tests.firmware_payloads import (
    A1_MINI_SERIAL,
    H2D_SERIAL,
    P2S_SERIAL,
    UNKNOWN_SERIAL,
    X1C_SERIAL,
    X2D_SERIAL,
    a1_mini,
    h2d,
    module,
    p2s,
    snow,
    version,
    x1c,
    x2d,
)


def feed(
    serial: str,
    *reports: dict[str, Any],
    info: dict[str, Any] | None = None,
    dev_model_name: str | None = None,
) -> PrinterState:
    """The state after ``reports`` (and a ``get_version`` reply) went over the wire."""
    stream = ReportStream(serial)
    state = PrinterState(serial, stream.state, dev_model_name=dev_model_name)
    messages: list[dict[str, Any]] = [{"print": {"command": "push_status", **r}} for r in reports]
    if info is not None:
        messages.append({"info": info})
    for message in messages:
        incoming = stream.feed(json.dumps(message).encode(), report_topic(serial))
        assert incoming.kind in ("report", "reply"), incoming.problem
        if incoming.family == "info":
            state = state.evolve(info=stream.families["info"])
        else:
            state = state.evolve(raw=stream.state)
    return state


# --- 1. model detection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "product"),
    [
        ("Bambu Lab H2D", "H2D"),
        ("Bambu Lab H2D Pro", "H2D Pro"),
        ("H2D Pro", "H2D Pro"),
        ("H2DPRO", "H2D Pro"),
        ("Bambu Lab X1-Carbon", "X1 Carbon"),
        ("Bambu Lab X1 Carbon", "X1 Carbon"),
        ("X1 Carbon", "X1 Carbon"),
        ("X1C", "X1 Carbon"),
        ("3DPrinter-X1-Carbon", "X1 Carbon"),
        ("Bambu Lab X1", "X1"),
        ("Bambu Lab X1E", "X1E"),
        ("Bambu Lab A1 mini", "A1 mini"),
        ("A1 Mini", "A1 mini"),
        ("Bambu Lab A1", "A1"),
        ("Bambu Lab P1S", "P1S"),
        ("P1P", "P1P"),
        ("Bambu Lab P2S", "P2S"),
        ("Bambu Lab X2D", "X2D"),
        ("Bambu Lab H2S", "H2S"),
        ("Bambu Lab H2C", "H2C"),
        ("Bambu Lab A2L", "A2L"),
        ("BL-P001", "X1 Carbon"),
        ("O1E", "H2D Pro"),
        ("N2S", "A1"),
    ],
)
def test_every_spelling_names_its_model(name: str, product: str) -> None:
    found = model_named(name)
    assert found is not None and found.product == product
    # ... from whichever module of get_version carries it, whatever the serial says.
    for carrier in ("ota", "mc", "rv1126"):
        modules = [
            module("n3f/0", product_name="AMS 2 Pro (1)"),
            module(carrier, product_name=name),
        ]
        assert detect_model(UNKNOWN_SERIAL, None, modules).product == product


@pytest.mark.parametrize(
    "name", ["AMS 2 Pro (1)", "AMS HT (1)", "AMS Lite", "", "N/A", "Bambu Lab"]
)
def test_an_ams_or_nothing_names_no_printer(name: str) -> None:
    assert model_named(name) is None
    assert detect_model(UNKNOWN_SERIAL, None, [module("ota", product_name=name)]).known is False


@pytest.mark.parametrize(
    ("modules", "serial", "product"),
    [
        ([module("ota", project_name="C11")], UNKNOWN_SERIAL, "P1P"),  # older firmware: codes
        ([module("ota", project_name="N2S"), module("esp32")], UNKNOWN_SERIAL, "A1"),
        ([module("ota"), module("rv1126", hw_ver="AP05")], UNKNOWN_SERIAL, "X1 Carbon"),
        ([module("ota"), module("rv1126", hw_ver="AP05")], "00W00A000000001", "X1"),
        ([module("ota"), module("rv1126", hw_ver="AP05")], "03W00A000000001", "X1E"),
        ([module("ota"), module("rv1126", hw_ver="AP02")], UNKNOWN_SERIAL, "X1E"),
        # AP05 alone does not make an A1 an X1: its esp32 module or its prefix says otherwise.
        ([module("ota"), module("mc", hw_ver="AP05"), module("esp32")], UNKNOWN_SERIAL, "unknown"),
        ([module("ota"), module("mc", hw_ver="AP05")], "03909A000000001", "A1"),
        # product_name beats project_name, project_name beats the board.
        ([module("ota", project_name="C11", product_name="Bambu Lab P1S")], "", "P1S"),
        ([module("mc", hw_ver="AP05"), module("ota", project_name="C12")], "", "P1S"),
    ],
)
def test_project_names_and_boards(modules: list[dict[str, Any]], serial: str, product: str) -> None:
    assert detect_model(serial, None, modules).product == product


def test_get_version_overrides_a_serial_prefix_guess_but_not_a_named_model() -> None:
    info = version(module("ota", product_name="Bambu Lab H2D Pro", hw_ver="N/A"))
    # A prefix only suggests: the H2D Pro's is unknown, and the printer's own answer wins.
    assert feed(UNKNOWN_SERIAL, {}).model.known is False
    assert feed(UNKNOWN_SERIAL, {}, info=info).model.product == "H2D Pro"
    assert feed(H2D_SERIAL, {}, info=info).model.product == "H2D Pro"
    # dev_model_name (binding list, configuration) is the printer's name already.
    assert feed(H2D_SERIAL, {}, info=info, dev_model_name="O1D").model.product == "H2D"
    assert feed(H2D_SERIAL, {}, info=info, dev_model_name="Bambu Lab H2D").model.product == "H2D"
    # A get_version that names nothing leaves the prefix's model.
    assert feed(H2D_SERIAL, {}, info=version(module("ota"))).model.product == "H2D"


def test_every_model_has_a_serial_prefix_but_the_h2d_pro() -> None:
    missing = {m.product for m in MODELS if not m.serial_prefix}
    assert missing == {"H2D Pro"}  # not known from Bambu Studio nor PROTOCOL.md §2.6


# --- 2. dual nozzle ------------------------------------------------------------------------------


@pytest.mark.parametrize("active", [0, 1])
def test_dual_nozzle_shows_the_active_nozzle(active: int) -> None:
    state = feed(H2D_SERIAL, h2d(active=active))
    right, left = state.extruders
    assert (right.name, left.name) == ("right", "left")  # Bambu Studio: extruder 0 is the right
    assert state.active_extruder == active and state.dual_nozzle
    shown = (218.0, 220.0) if active == 0 else (151.0, 160.0)
    assert (state.nozzle_temp, state.nozzle_target) == shown
    assert state.get("nozzle_temper") != shown[0]  # the top level is the idle nozzle's
    # Loaded tray: the active extruder's snow, not ams.tray_now (a slot number only).
    tray = (0, 2) if active == 0 else (1, 3)
    assert state.tray_now == tray[0] * 4 + tray[1]
    assert state.active_tray is not None
    assert (state.active_tray.ams_id, state.active_tray.id) == tray
    assert state.active_tray.type == ("PLA-CF" if active == 0 else "PC")
    # Per-nozzle diameter and kind; the top-level ones follow the active nozzle.
    assert right.nozzle is not None and left.nozzle is not None
    assert (right.nozzle.diameter, left.nozzle.diameter) == (0.4, 0.6)
    assert state.nozzle_diameter == (0.4 if active == 0 else 0.6)
    assert state.nozzle_type == ("stainless_steel" if active == 0 else "hardened_steel")
    assert (right.tray_now, left.tray_now) == (2, 7)


def test_switching_extruders_then_switched() -> None:
    first = h2d(active=0)
    state = feed(H2D_SERIAL, first, {"device": {"extruder": {"state": 0x12}}})
    assert state.active_extruder == 1 and state.nozzle_temp == 151.0
    switching = h2d(active=0, switching=True)
    state = feed(H2D_SERIAL, switching)
    assert state.active_extruder is None  # 0xF: changing over
    assert state.nozzle_temp is not None  # still something readable, not a blank


@pytest.mark.parametrize(
    ("wire", "tray_now", "spool"),
    [
        (0xFFFF, 255, None),  # nothing loaded
        (0xFEFF, 255, None),  # nothing loaded (left)
        (snow(0xFF, 0), 254, "PLA"),  # external spool 255 (right)
        (snow(0xFE, 0), 254, "PETG"),  # external spool 254 (left)
        (snow(0x80, 0), 128, None),  # an AMS HT (none fitted here)
        (snow(1, 1), 5, ""),  # AMS 2 slot 2: an empty slot
    ],
)
def test_snow_values(wire: int, tray_now: int, spool: str | None) -> None:
    state = feed(H2D_SERIAL, h2d(active=1, left_snow=wire))
    assert state.tray_now == tray_now
    active = state.active_tray
    assert (active.type if active is not None else None) == spool


def test_ams_view_marks_only_the_feeding_external_spool() -> None:
    state = feed(H2D_SERIAL, h2d(active=1, left_snow=snow(0xFE, 0)))
    out = AmsOut.from_state(state)
    assert [(s.id, s.active) for s in out.external] == [(254, True), (255, False)]
    assert not any(slot.active for unit in out.units for slot in unit.trays)


# --- 3. nozzle type codes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "material", "flow", "text"),
    [
        ("HS01", "hardened_steel", "standard", "Hardened Steel, Standard"),
        ("HH01", "hardened_steel", "high_flow", "Hardened Steel, High Flow"),
        ("HS05", "tungsten_carbide", "standard", "Tungsten Carbide, Standard"),
        ("HX05", "tungsten_carbide", "standard", "Tungsten Carbide, Standard"),
        ("HS00", "stainless_steel", "standard", "Stainless Steel, Standard"),
        ("HS01-0.4", "hardened_steel", "standard", "Hardened Steel, Standard"),
        ("HU01", "hardened_steel", "tpu_high_flow", "Hardened Steel, TPU High Flow"),
        ("hardened_steel", "hardened_steel", "", "Hardened Steel"),
        ("stainless_steel", "stainless_steel", "", "Stainless Steel"),
        ("HZ99", "", "", "HZ99"),
    ],
)
def test_nozzle_codes(code: str, material: str, flow: str, text: str) -> None:
    kind = nozzle_kind(code)
    assert kind is not None and (kind.material, kind.flow, str(kind)) == (material, flow, text)


@pytest.mark.parametrize("code", ["", "N/A", None, 7])
def test_no_nozzle_code_is_no_kind(code: Any) -> None:
    assert nozzle_kind(code) is None


def test_the_nozzle_block_wins_over_the_stale_legacy_type() -> None:
    state = feed(H2D_SERIAL, h2d(active=1, left_nozzle=(0.4, "HH01")))
    assert state.get("nozzle_type") == "brass"  # stale
    assert state.nozzle_type == "hardened_steel" and state.nozzle is not None
    assert state.nozzle.flow == "high_flow"
    assert state.nozzle_diameter == 0.4  # not the stale "0.2"
    # A printer without the block keeps its top-level fields.
    legacy = feed(X1C_SERIAL, x1c())
    assert (legacy.nozzle_type, legacy.nozzle_diameter) == ("hardened_steel", 0.4)
    # A top-level code is decoded too (Bambu Studio parses both the same way).
    coded = feed(X1C_SERIAL, {**x1c(), "nozzle_type": "HS05"})
    assert coded.nozzle_type == "tungsten_carbide"


# --- 4. chamber -----------------------------------------------------------------------------------


def test_the_ctc_block_wins_over_chamber_temper() -> None:
    state = feed(H2D_SERIAL, h2d())
    assert (state.chamber_temp, state.chamber_target) == (38.0, 45.0)
    assert feed(P2S_SERIAL, p2s(door_open=False)).chamber_temp == 27.0  # not the 5
    assert feed(X1C_SERIAL, x1c(chamber=31.0)).chamber_temp == 31.0  # no block: the field


@pytest.mark.parametrize(
    "serial", [A1_MINI_SERIAL, "03909A000000001", "26A00A000000001", "01S00A0", "01P00A0"]
)
def test_no_chamber_sensor_no_chamber_temperature(serial: str) -> None:
    state = feed(serial, a1_mini(), {"device": {"ctc": {"info": {"temp": 5}}}})
    assert state.model.known and not state.model.chamber_sensor
    assert (state.chamber_temp, state.chamber_target) == (None, None)
    assert state.to_dict()["chamber_temp"] is None


# --- 5. idle is idle ------------------------------------------------------------------------------


@pytest.mark.parametrize("gcode_state", ["IDLE", "FINISH", "FAILED"])
@pytest.mark.parametrize("stage", [0, -1, 255])
def test_idle_is_idle(gcode_state: str, stage: int) -> None:
    state = feed(X1C_SERIAL, {"gcode_state": gcode_state, "stg_cur": stage})
    assert state.idle and not state.printing
    assert state.stage_name == "idle"
    assert state.to_dict()["stage"] == "idle"


@pytest.mark.parametrize(("gcode_state", "printing"), [("RUNNING", True), ("PREPARE", True)])
def test_a_running_job_at_stage_zero_is_printing(gcode_state: str, printing: bool) -> None:
    state = feed(X1C_SERIAL, {"gcode_state": gcode_state, "stg_cur": 0})
    assert state.printing is printing and state.stage_name == "printing" and not state.idle


# --- 7. typed fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("home_flag", "card"),
    [(0x000, "absent"), (0x100, "normal"), (0x200, "abnormal"), (0x300, "readonly")],
)
def test_sd_card_from_home_flag(home_flag: int, card: str) -> None:
    flags = 0x3C_0000_FF & ~0x300 | home_flag  # other bits set, as real flags are
    assert feed(X1C_SERIAL, x1c(home_flag=flags)).sd_card == card


def test_sd_card_without_home_flag() -> None:
    assert feed(X1C_SERIAL, {"sdcard": True}).sd_card == "normal"
    assert feed(X1C_SERIAL, {"sdcard": False}).sd_card == "absent"
    assert feed(X1C_SERIAL, {"gcode_state": "IDLE"}).sd_card is None


@pytest.mark.parametrize("door_open", [True, False])
def test_door_in_stat_on_p2_h2_x2(door_open: bool) -> None:
    state = feed(P2S_SERIAL, p2s(door_open=door_open))
    assert state.door_open is door_open
    assert feed(P2S_SERIAL, {"stat": 0x00800000 if door_open else 0}).door_open is door_open
    assert feed(H2D_SERIAL, h2d()).door_open is True
    assert feed(P2S_SERIAL, {"gcode_state": "IDLE"}).door_open is None  # not reported


@pytest.mark.parametrize("door_open", [True, False])
def test_door_in_home_flag_on_x1(door_open: bool) -> None:
    flags = 0x100 | (0x00800000 if door_open else 0)
    assert feed(X1C_SERIAL, x1c(home_flag=flags)).door_open is door_open


def test_no_door_sensor_no_door() -> None:
    # P1/A1: no door sensor, whatever bits their flags carry.
    report = {**a1_mini(), "home_flag": 0x00800100, "stat": "00800000"}
    assert feed(A1_MINI_SERIAL, report).door_open is None
    assert feed("01P00A000000001", report).door_open is None


def test_camera_flags() -> None:
    h2 = feed(H2D_SERIAL, h2d())
    assert (h2.timelapse, h2.camera_recording) == (False, True)
    x1 = feed(X1C_SERIAL, x1c())
    assert (x1.timelapse, x1.camera_recording) == (True, False)
    nothing = feed(X1C_SERIAL, {"gcode_state": "IDLE"})
    assert (nothing.timelapse, nothing.camera_recording) == (None, None)


def test_second_aux_fan() -> None:
    assert feed(X2D_SERIAL, x2d(aux2=55)).aux_fan2 == 55
    assert feed(X2D_SERIAL, x2d(aux2=None)).aux_fan2 is None
    assert feed(X1C_SERIAL, x1c()).aux_fan2 is None


def test_every_new_field_is_none_when_not_reported() -> None:
    state = feed(UNKNOWN_SERIAL, {"gcode_state": "IDLE"})
    for name in (
        "sd_card",
        "door_open",
        "timelapse",
        "camera_recording",
        "aux_fan2",
        "nozzle",
        "nozzle_diameter",
        "active_extruder",
        "active_nozzle",
        "chamber_temp",
        "tray_now",
    ):
        assert getattr(state, name) is None, name
    assert state.extruders == () and state.nozzles == () and state.nozzle_type == ""


def test_to_dict_carries_the_fields() -> None:
    state = feed(
        H2D_SERIAL, h2d(active=1), info=version(module("ota", product_name="Bambu Lab H2D"))
    )
    data = state.to_dict()
    assert PrinterStateOut.model_validate(data) == PrinterStateOut.from_state(state)
    assert data["model"] == "H2D"
    assert (data["nozzle_temp"], data["nozzle_target"]) == (151.0, 160.0)
    assert data["nozzle_diameter"] == 0.6 and data["nozzle_type"] == "hardened_steel"
    assert data["nozzle"] == {
        "material": "hardened_steel",
        "flow": "high_flow",
        "code": "HH01",
        "text": "Hardened Steel, High Flow",
    }
    assert data["active_extruder"] == 1 and data["active_tray"] == 7
    assert [(e["name"], e["active"], e["nozzle_temp"]) for e in data["extruders"]] == [
        ("right", False, 218.0),
        ("left", True, 151.0),
    ]
    assert (data["sd_card"], data["door_open"]) == ("normal", True)
    assert (data["timelapse"], data["camera_recording"], data["aux_fan2"]) == (False, True, None)
    assert (data["chamber_temp"], data["chamber_target"]) == (38.0, 45.0)
