"""PrinterState readers, model detection, HMS and error decoding, event derivation."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest
from pydantic import ValidationError

from bambulab.models.events import (
    HMSCleared,
    HMSRaised,
    PrintFailed,
    PrintFinished,
    PrintPaused,
    PrintResumed,
    PrintStarted,
    StateChanged,
)
from bambulab.models.output import AmsOut, HmsOut, PrinterStateOut
from bambulab.models.printer import HMSEntry, PrintError, Severity, detect_model, stage_name
from bambulab.models.state import PrinterState, fan_percent, unpack_temp
from bambulab.protocol.events import Tracker
from bambulab.protocol.mqtt import ReportStream

X1_REPORT: dict[str, Any] = {
    "nozzle_temper": 219.8,
    "nozzle_target_temper": 220.0,
    "bed_temper": 54.9,
    "bed_target_temper": 55.0,
    "chamber_temper": 31.0,
    "gcode_state": "RUNNING",
    "mc_percent": 42,
    "mc_remaining_time": 63,
    "layer_num": 80,
    "total_layer_num": 200,
    "stg_cur": 0,
    "subtask_name": "Benchy",
    "cooling_fan_speed": "15",
    "big_fan1_speed": "10",
    "big_fan2_speed": "0",
    "spd_lvl": 2,
    "spd_mag": 100,
    "wifi_signal": "-45dBm",
    "net": {"info": [{"ip": 16777343, "mask": 16777215}]},
    "lights_report": [
        {"node": "chamber_light", "mode": "on"},
        {"node": "work_light", "mode": "flashing"},
    ],
    "print_error": 0,
    "hms": [{"attr": 0x07002000, "code": 0x00020001}],
    "ams": {
        "ams": [
            {
                "id": "0",
                "humidity": "4",
                "humidity_raw": "23",
                "temp": "25.1",
                "tray": [
                    {"id": "0", "tray_type": "PLA", "tray_color": "FF0000FF", "remain": 85},
                    {"id": "1", "tray_type": "PETG", "tray_color": "00ff00ff", "remain": -1},
                    {"id": "2"},
                ],
            },
            {
                "id": "128",
                "humidity": "9",
                "tray": [{"id": "0", "tray_type": "PA-CF", "tray_color": "000000FF", "remain": 40}],
            },
        ],
        "tray_now": "1",
    },
    "vt_tray": {"id": "254", "tray_type": "TPU", "tray_color": "FFFFFFFF", "remain": 0},
    "s_obj": [3, "7", "x"],
}


def test_x1_report_reads() -> None:
    state = PrinterState("00M09A350100001", X1_REPORT)
    assert state.model.product == "X1 Carbon"
    assert (state.nozzle_temp, state.nozzle_target, state.bed_temp, state.chamber_temp) == (
        219.8,
        220.0,
        54.9,
        31.0,
    )
    assert (state.gcode_state, state.percent, state.layer, state.total_layers) == (
        "RUNNING",
        42,
        80,
        200,
    )
    assert state.stage_name == "printing" and state.job_name == "Benchy"
    assert (state.part_fan, state.aux_fan, state.chamber_fan) == (100, 67, 0)
    assert state.speed_name == "standard" and state.wifi_dbm == -45
    assert state.ip_address == "127.0.0.1"
    assert state.lights == {"chamber_light": "on", "work_light": "flashing"}
    assert state.skipped_objects == [3, 7]
    assert state["mc_percent"] == 42 and "ams" in state


def test_ams_units_trays_and_external_spool() -> None:
    state = PrinterState("00M09A350100001", X1_REPORT)
    units = state.ams_units
    assert [(u.id, u.kind) for u in units] == [(0, "AMS"), (128, "AMS HT")]
    assert units[0].humidity_level == 4 and units[0].humidity_percent == 23
    assert units[1].humidity_level is None, "levels outside 1-5 are power-up noise"
    trays = units[0].trays
    assert trays[0].colour_rgb == "#FF0000" and trays[1].colour == "00FF00FF"
    assert trays[1].remain is None and trays[2].empty
    assert units[1].trays[0].global_id == 128
    assert state.external_spools[0].type == "TPU" and state.external_spools[0].global_id == 254
    assert state.active_tray is not None and state.active_tray.type == "PETG"


def test_packed_temperatures_and_dual_nozzle() -> None:
    raw = {
        "device": {
            "extruder": {
                "info": [
                    {"id": 0, "temp": 220 | 225 << 16, "snow": 1 << 8 | 2},
                    {"id": 1, "temp": 30},
                ],
                "state": 0x12,
            },
            "bed": {"info": {"temp": 60 | 65 << 16}},
            "ctc": {"info": {"temp": 35 | 40 << 16}},
        }
    }
    state = PrinterState("0940000000001", raw)
    assert state.model.product == "H2D" and state.model.dual_nozzle
    assert (state.extruders[0].temp, state.extruders[0].target) == (220.0, 225.0)
    # The nozzle a user sees is the active one (state 0x12: extruder 1), issue 8 point 2.
    assert (state.nozzle_temp, state.nozzle_target) == (30.0, 0.0)
    assert (state.bed_temp, state.bed_target, state.chamber_temp, state.chamber_target) == (
        60.0,
        65.0,
        35.0,
        40.0,
    )
    assert [(e.index, e.ams_id, e.slot) for e in state.extruders] == [(0, 1, 2), (1, None, None)]
    assert state.active_extruder == 1
    assert unpack_temp("garbage") == (None, None)


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {
            "nozzle_temper": "hot",
            "gcode_state": 5,
            "mc_percent": [1],
            "ams": "none",
            "hms": "x",
            "lights_report": 3,
        },
        {
            "ams": {"ams": [{"id": "z"}, 7, {"tray": "no"}]},
            "device": [1],
            "net": {"info": "?"},
            "vir_slot": [None],
        },
        {
            "gcode_state": "WARPING",
            "stg_cur": "??",
            "print_error": "oops",
            "s_obj": None,
            "wifi_signal": None,
        },
    ],
)
def test_garbage_never_raises(raw: dict[str, Any]) -> None:
    state = PrinterState("", raw)
    summary = state.to_dict()
    assert summary["model"] == "unknown"
    if raw.get("gcode_state") == "WARPING":
        assert state.gcode_state == "UNKNOWN"


def test_model_detection_sources() -> None:
    assert detect_model("01P00A000000001").product == "P1S"
    assert detect_model(dev_model_name="N1").product == "A1 mini"
    assert detect_model(dev_model_name="C11", serial="00M000").product == "P1P"
    assert detect_model(modules=[{"name": "ota", "product_name": "A1"}]).product == "A1"
    assert detect_model("ZZZ").family == "unknown"


def test_hms_and_print_error_decoding() -> None:
    entry = HMSEntry(0x07002000, 0x00020001)
    assert entry.code_string == "0700_2000_0002_0001"
    assert entry.severity is Severity.SERIOUS and entry.module == "AMS"
    assert entry.text == "AMS A Slot 1 filament has run out."
    assert entry.wiki_url.endswith("/0700_2000_0002_0001")
    assert HMSEntry(0x99000000, 0x00090000).severity is Severity.UNKNOWN
    # every runout the simulator can raise has its text: any unit, any slot, HT, external
    assert HMSEntry(0x07012200, 0x00020001).text == "AMS B Slot 3 filament has run out."
    assert HMSEntry(0x07802000, 0x00020001).text == "AMS HT A Slot 1 filament has run out."
    assert HMSEntry(0x07FF2000, 0x00020001).text == "The external spool has run out of filament."
    assert "reported HMS" in HMSEntry(0x07092000, 0x00020001).text
    error = PrintError(0x0300400C)
    assert error.code_string == "0300_400C" and "cancelled" in error.text and error
    assert not PrintError(0)
    assert stage_name(255) == "idle" and stage_name(77) == "stage 77" and stage_name("x") == ""
    assert fan_percent("7") == 47 and fan_percent(None) is None


def feed(tracker: Tracker, raw: dict[str, Any], update: dict[str, Any]) -> list[Any]:
    raw.update(update)
    return tracker.update(PrinterState("01P00A000000001", raw), frozenset(update))


def test_job_lifecycle_events() -> None:
    tracker = Tracker("01P00A000000001")
    raw: dict[str, Any] = {}
    first = feed(tracker, raw, {"gcode_state": "IDLE"})
    assert [type(e).__name__ for e in first] == ["PrinterOnline", "StateChanged"]
    kinds = []
    for state in ("PREPARE", "RUNNING", "PAUSE", "RUNNING", "FINISH", "PREPARE", "FAILED"):
        kinds += [
            type(e)
            for e in feed(tracker, raw, {"gcode_state": state, "subtask_name": "Cube"})
            if not isinstance(e, StateChanged)
        ]
    assert kinds == [
        PrintStarted,
        PrintPaused,
        PrintResumed,
        PrintFinished,
        PrintStarted,
        PrintFailed,
    ]


def test_hms_events() -> None:
    tracker = Tracker("S")
    raw: dict[str, Any] = {"gcode_state": "RUNNING"}
    feed(tracker, raw, {"gcode_state": "RUNNING"})
    raised = feed(tracker, raw, {"hms": [{"attr": 0x07002000, "code": 0x00020001}]})
    assert [type(e) for e in raised if not isinstance(e, StateChanged)] == [HMSRaised]
    cleared = feed(tracker, raw, {"hms": []})
    assert [type(e) for e in cleared if not isinstance(e, StateChanged)] == [HMSCleared]


def report(**fields: Any) -> bytes:
    """One ``push_status`` message, with its envelope."""
    return json.dumps({"print": {"command": "push_status", "sequence_id": "1", **fields}}).encode()


def test_a_state_never_changes_while_the_stream_moves_on() -> None:
    stream = ReportStream("01P00A000000001")
    stream.feed(
        report(
            gcode_state="RUNNING",
            mc_percent=10,
            lights_report=[{"node": "chamber_light", "mode": "on"}],
            ams={"ams": [{"id": "0", "tray": [{"id": "0", "remain": 80}]}], "tray_now": "0"},
        )
    )
    first = stream.state
    kept = copy.deepcopy(first)
    state = PrinterState("01P00A000000001", first)
    assert state.snapshot() is state
    summary = state.to_dict()
    stream.feed(
        report(
            mc_percent=11,
            ams={"ams": [{"id": "0", "humidity": "2", "tray": [{"id": "0", "remain": 79}]}]},
        )
    )
    later = state.evolve(raw=stream.state)
    # The old dict and everything under it are untouched; the new one shares
    # what the report did not touch (copy-on-write, not a deep copy).
    assert first == kept and stream.state is not first
    assert stream.state["lights_report"] is first["lights_report"]
    assert stream.state["ams"]["ams"] is not first["ams"]["ams"]
    assert (state.percent, later.percent) == (10, 11)
    assert state.ams_units[0].humidity_level is None and later.ams_units[0].humidity_level == 2
    assert (state.active_tray and state.active_tray.remain) == 80
    assert (later.active_tray and later.active_tray.remain) == 79
    assert state.to_dict() == summary and state.model.product == "P1S"


def test_a_state_refuses_every_assignment() -> None:
    state = PrinterState("01P00A000000001", {"mc_percent": 5}, {"module": []})
    for name, value in (("info", {}), ("serial", "X"), ("percent", 9), ("raw", {}), ("new", 1)):
        with pytest.raises(AttributeError, match="immutable"):
            setattr(state, name, value)
    with pytest.raises(AttributeError):
        del state.serial
    with pytest.raises(TypeError):
        state.raw["mc_percent"] = 6  # type: ignore[index]
    with pytest.raises(TypeError):
        state.info["module"] = None  # type: ignore[index]
    assert state.percent == 5 and state.serial == "01P00A000000001"
    with pytest.raises(TypeError):
        state.lights["work_light"] = "on"  # type: ignore[index]


def test_derived_values_are_computed_once_per_state() -> None:
    state = PrinterState("00M09A350100001", X1_REPORT)
    assert state.ams_units is state.ams_units and state.trays is state.trays
    assert state.active_tray is state.active_tray and state.hms is state.hms
    assert state.model is state.model
    next_one = state.evolve(raw=dict(X1_REPORT))
    assert next_one.ams_units is not state.ams_units and next_one.ams_units == state.ams_units


def test_get_version_updates_the_next_state_not_this_one() -> None:
    state = PrinterState("", {"gcode_state": "IDLE"})
    assert state.model.known is False and state.firmware == ""
    info = {"module": [{"name": "ota", "sw_ver": "01.08.02.00", "project_name": "C12"}]}
    told = state.evolve(info=info)
    assert told.firmware == "01.08.02.00" and told.gcode_state == "IDLE"
    assert told.model.code == "C12"
    assert state.firmware == "" and state.info == {} and state.model.known is False


def test_the_output_model_round_trips() -> None:
    state = PrinterState("00M09A350100001", X1_REPORT)
    data = state.to_dict()
    out = PrinterStateOut.model_validate(data)
    assert out == PrinterStateOut.from_state(state)
    assert out.model_dump(mode="json") == data
    assert json.loads(json.dumps(data)) == data
    tray = {"id": 0, "type": "PLA", "colour": "FF0000FF", "remain": 85}
    assert data["ams"][0]["trays"][0] == tray and data["fans"]["part"] == 100
    with pytest.raises(ValidationError):
        PrinterStateOut.model_validate({**data, "surprise": 1})
    for model in (AmsOut, HmsOut):
        dumped = model.from_state(state).model_dump(mode="json")
        assert model.model_validate(dumped).model_dump(mode="json") == dumped


def test_a_state_copies_and_pickles_as_itself() -> None:
    state = PrinterState("00M09A350100001", X1_REPORT, {"module": [{"name": "ota", "sw_ver": "1"}]})
    assert copy.copy(state) is state and copy.deepcopy(state) is state
    again = pickle.loads(pickle.dumps(state))
    assert again.to_dict() == state.to_dict() and again.firmware == "1"
    with pytest.raises(AttributeError):
        again.serial = "X"
