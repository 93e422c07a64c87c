"""The library's report parser (``ReportStream`` + ``PrinterState``) against facts written by hand.

Every expected value here is worked out from PROTOCOL.md §2.3/§2.6.1, not
taken from the simulator: packed temperatures (``target << 16 | current``),
fans as 0-15 steps, AMS humidity levels, tray ids 254/255, HMS codes and
little-endian IPs. The second half feeds the simulator-made fixtures in
``tests/fixtures/mqtt`` through the same parser and checks them against the
scenario their README promises, so a fixture (or the parser) that drifts from
the protocol fails here, not only against itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bambulab.models.printer import Severity
from bambulab.models.state import PrinterState
from bambulab.protocol.mqtt import ReportStream, report_topic

FIXTURES = Path(__file__).parents[1] / "fixtures" / "mqtt"
SERIAL = "01P00A000000001"


def feed(*reports: dict[str, Any], serial: str = SERIAL, full: bool = False) -> PrinterState:
    """The state after ``reports`` went over the wire (bytes), in order."""
    stream = ReportStream(serial, full_reports=full)
    for report in reports:
        message = report if "print" in report else {"print": {"command": "push_status", **report}}
        incoming = stream.feed(json.dumps(message).encode(), report_topic(serial))
        assert incoming.kind == "report", incoming.problem
    return PrinterState(serial, stream.state)


def tray(tray_id: int, kind: str = "PLA", colour: str = "FF0000FF", remain: int = 80) -> dict:
    return {"id": str(tray_id), "tray_type": kind, "tray_color": colour, "remain": remain}


def unit(unit_id: int, *trays: dict[str, Any], humidity: str = "4", raw: str = "31") -> dict:
    return {
        "id": str(unit_id),
        "humidity": humidity,
        "humidity_raw": raw,
        "temp": "24.5",
        "tray": list(trays),
    }


TWO_UNITS = {
    "ams": {
        "ams": [
            unit(0, tray(0), tray(1, "PETG", "00AA00FF", 55), tray(2), tray(3)),
            unit(1, tray(0, "ABS", "000000FF", 10), tray(1), tray(2), tray(3, "TPU")),
        ],
        "tray_now": "1",
        "tray_tar": "1",
    },
    "vt_tray": {"id": "254", "tray_type": "PLA", "tray_color": "FFFFFFFF", "remain": -1},
}


# --- facts, one at a time ------------------------------------------------------------------------


def test_packed_temperatures_are_target_high_current_low() -> None:
    state = feed(
        {
            "device": {
                "bed": {"info": {"temp": 65 << 16 | 60}},  # 4259900: target 65, at 60
                "ctc": {"info": {"temp": 35 << 16 | 28}},
                "extruder": {
                    "state": 0x12,  # one... active extruder in bits 4-7: 1
                    "info": [
                        {"id": 0, "temp": 180 << 16 | 179, "snow": 0xFFFF},
                        {"id": 1, "temp": 220 << 16 | 218, "snow": 1 << 8 | 2},
                    ],
                },
            }
        },
        serial="0948AB000000001",  # an H2D: a P1S has neither two nozzles nor a chamber sensor
    )
    assert (state.bed_temp, state.bed_target) == (60.0, 65.0)
    assert (state.chamber_temp, state.chamber_target) == (28.0, 35.0)
    assert [(e.temp, e.target) for e in state.extruders] == [(179.0, 180.0), (218.0, 220.0)]
    assert state.active_extruder == 1
    assert (state.extruders[1].ams_id, state.extruders[1].slot) == (1, 2)  # snow = ams<<8 | slot
    # The nozzle a user sees is the active one (extruder 1), not the first (issue 8 point 2).
    assert (state.nozzle_temp, state.nozzle_target) == (218.0, 220.0)


def test_plain_temperatures_win_over_nothing() -> None:
    state = feed({"nozzle_temper": 219.5, "nozzle_target_temper": 220, "bed_temper": "59.9"})
    assert (state.nozzle_temp, state.nozzle_target, state.bed_temp) == (219.5, 220.0, 59.9)


@pytest.mark.parametrize(
    ("wire", "percent"),
    [("0", 0), ("1", 7), ("6", 40), ("10", 67), ("15", 100), ("99", 100), ("x", None)],
)
def test_fans_are_fifteen_steps(wire: str, percent: int | None) -> None:
    state = feed({"cooling_fan_speed": wire, "big_fan1_speed": "3", "big_fan2_speed": "9"})
    assert state.part_fan == percent
    assert (state.aux_fan, state.chamber_fan) == (20, 60)


def test_ams_units_trays_and_humidity() -> None:
    state = feed(TWO_UNITS)
    first, second = state.ams_units
    assert (first.id, first.humidity_level, first.humidity_percent, first.temp) == (0, 4, 31, 24.5)
    assert [t.global_id for t in second.trays] == [4, 5, 6, 7]  # ams_id * 4 + slot
    assert (second.trays[0].type, second.trays[0].colour_rgb) == ("ABS", "#000000")
    assert state.tray_now == 1
    assert state.active_tray is not None
    assert (state.active_tray.ams_id, state.active_tray.id, state.active_tray.type) == (
        0,
        1,
        "PETG",
    )


@pytest.mark.parametrize(("level", "expected"), [("1", 1), ("5", 5), ("0", None), ("6", None)])
def test_humidity_outside_one_to_five_is_no_reading(level: str, expected: int | None) -> None:
    state = feed({"ams": {"ams": [unit(0, tray(0), humidity=level)]}})
    assert state.ams_units[0].humidity_level == expected


def test_tray_now_254_is_the_external_spool_and_255_is_none() -> None:
    external = feed({**TWO_UNITS, "ams": {**TWO_UNITS["ams"], "tray_now": "254"}})
    assert external.tray_now == 254
    assert external.active_tray is not None and external.active_tray.ams_id == 254
    assert external.active_tray.remain is None  # -1: unknown
    none = feed({**TWO_UNITS, "ams": {**TWO_UNITS["ams"], "tray_now": "255"}})
    assert none.tray_now == 255 and none.active_tray is None


def test_ams_ht_units_hold_one_slot_with_the_unit_id() -> None:
    state = feed({"ams": {"ams": [unit(128, tray(0, "PA-CF"))], "tray_now": "128"}})
    (ht,) = state.ams_units
    assert (ht.id, ht.kind, ht.trays[0].global_id) == (128, "AMS HT", 128)
    assert state.active_tray is not None and state.active_tray.type == "PA-CF"


def test_hms_codes_severity_and_module() -> None:
    # attr 0x07002100 code 0x00020001: AMS (0x07), serious (code >> 16 == 2).
    state = feed(
        {
            "hms": [
                {"attr": 0x07002100, "code": 0x00020001},
                {"attr": 0x0C00_0300, "code": 0x0003_0008},
            ]
        }
    )
    first, second = state.hms
    assert first.code_string == "0700_2100_0002_0001"
    assert (first.severity, first.module) == (Severity.SERIOUS, "AMS")
    assert second.code_string == "0C00_0300_0003_0008"
    assert second.severity == Severity.COMMON


def test_print_error_and_cancel() -> None:
    state = feed({"print_error": 0x0300400C})  # 50348044: cancelled by the user
    assert state.print_error.code_string == "0300_400C"
    assert "cancel" in state.print_error.text.lower()
    assert not feed({"print_error": 0}).print_error


def test_speed_wifi_ip_and_lights() -> None:
    state = feed(
        {
            "spd_lvl": 4,
            "spd_mag": 166,
            "wifi_signal": "-45dBm",
            "net": {"info": [{"ip": 0x0101A8C0}]},  # little-endian 192.168.1.1
            "lights_report": [{"node": "chamber_light", "mode": "flashing"}],
        }
    )
    assert (state.speed_level, state.speed_name, state.speed_percent) == (4, "ludicrous", 166)
    assert state.wifi_dbm == -45
    assert state.ip_address == "192.168.1.1"
    assert state.lights == {"chamber_light": "flashing"}


# --- partial AMS reports (P1/A1 send only what changed) -----------------------------------------


def test_a_delta_with_one_tray_of_one_unit_keeps_every_other_tray_and_unit() -> None:
    # ``ams.ams`` lists every unit (a unit left out was removed: test_merge_rules.py);
    # a unit sent as only its id, and the trays a listed unit leaves out, keep their fields.
    delta = [{"id": "0"}, {"id": "1", "tray": [{"id": "3", "remain": 42}]}]
    state = feed(TWO_UNITS, {"ams": {"ams": delta}})
    first, second = state.ams_units
    assert second.trays[3].remain == 42 and second.trays[3].type == "TPU", "the tray merged"
    assert [(t.type, t.remain) for t in second.trays[:3]] == [("ABS", 10), ("PLA", 80), ("PLA", 80)]
    assert [(t.type, t.colour, t.remain) for t in first.trays] == [
        ("PLA", "FF0000FF", 80),
        ("PETG", "00AA00FF", 55),
        ("PLA", "FF0000FF", 80),
        ("PLA", "FF0000FF", 80),
    ]
    assert (second.humidity_level, second.temp) == (4, 24.5)
    assert state.tray_now == 1 and state.external_spools[0].type == "PLA"


def test_a_delta_with_only_tray_now_keeps_the_units() -> None:
    state = feed(TWO_UNITS, {"ams": {"tray_now": "6"}})
    assert state.tray_now == 6
    assert [len(u.trays) for u in state.ams_units] == [4, 4]
    assert state.active_tray is not None and (state.active_tray.ams_id, state.active_tray.id) == (
        1,
        2,
    )
    assert state.get("ams")["tray_tar"] == "1"


# --- the fixtures, against the facts -----------------------------------------------------------


def fixture(name: str) -> list[dict[str, Any]]:
    data = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data if isinstance(data, list) else [data]


def test_x1c_full_fixture() -> None:
    state = feed(*fixture("x1c_full.json"), serial="00M09A000000001", full=True)
    assert state.gcode_state == "RUNNING" and state.percent == 23
    assert state.speed_name == "sport"
    assert len(state.ams_units) == 2
    tray = state.active_tray
    assert state.tray_now == 5 and tray is not None
    assert (tray.ams_id, tray.id, tray.type) == (1, 1, "PETG")  # AMS B slot 2
    assert [h.code_string for h in state.hms] == ["0500_0100_0003_0004"]
    assert state.lights["chamber_light"] == "on" and state.lights["work_light"] == "flashing"
    assert state.skipped_objects
    assert state.ip_address == "127.0.0.1"
    for temp in (state.nozzle_temp, state.bed_temp):
        assert isinstance(temp, float)


def test_multi_ams_fixture() -> None:
    state = feed(*fixture("multi_ams.json"), serial="00M09A000000001", full=True)
    assert [u.id for u in state.ams_units] == [0, 1, 2, 3]
    assert state.get("ams")["ams_exist_bits"] == "f"
    assert state.ams_units[1].trays[2].empty, (
        "AMS B slot 3 (1-based, like slot 2 = tray 9) was emptied"
    )
    assert not state.ams_units[1].trays[3].empty
    assert state.tray_now == 9
    assert state.active_tray is not None
    assert (state.active_tray.ams_id, state.active_tray.id) == (2, 1)  # AMS C slot 2
    assert all(u.humidity_level is None or 1 <= u.humidity_level <= 5 for u in state.ams_units)


def test_ams_ht_fixture() -> None:
    state = feed(*fixture("ams_ht.json"), serial="22E00A000000001", full=True)
    units = {u.id: u for u in state.ams_units}
    assert set(units) == {0, 128}
    assert len(units[128].trays) == 1 and units[128].kind == "AMS HT"
    assert state.tray_now == 128
    assert state.active_tray is not None and state.active_tray.global_id == 128
    (extruder,) = state.extruders
    assert (extruder.ams_id, extruder.slot) == (0x80, 0)  # snow 0x8000


def test_h2d_fixture() -> None:
    state = feed(*fixture("h2d.json"), serial="0948AB000000001", full=True)
    targets = sorted(e.target for e in state.extruders if e.target is not None)
    assert targets == [180.0, 220.0]
    assert state.chamber_target == 35.0
    assert {t.id for t in state.external_spools} == {254, 255}
    assert {t.id: t.type for t in state.external_spools}[255] == "PLA"
    assert state.get("ipcam")["rtsp_url"] == "disable"


def test_p1s_stream_fixture_merges_like_a_p1s() -> None:
    reports = fixture("p1s_stream.json")
    first = feed(reports[0])
    state = feed(*reports)
    assert first.gcode_state == "IDLE"
    # The deltas' partial ams.ams[] entries only touched tray 2.
    before = {t.global_id: (t.type, t.colour, t.remain) for t in first.trays}
    after = {t.global_id: (t.type, t.colour, t.remain) for t in state.trays}
    assert set(before) == set(after)
    changed = {gid for gid in before if before[gid] != after[gid]}
    assert changed == {2}
    assert after[2][2] is not None and before[2][2] is not None and after[2][2] < before[2][2]
    assert state.gcode_state in ("RUNNING", "PREPARE") and state.layer


def test_a1_stream_fixture_runout() -> None:
    reports = fixture("a1_stream.json")
    states = [feed(*reports[: n + 1], serial="03919A000000001") for n in range(len(reports))]
    runout = next(s for s in states if s.print_error)
    assert runout.print_error.code_string == "0700_8011"
    assert [h.code_string for h in runout.hms] == ["0700_2000_0002_0001"]
    assert (runout.hms[0].module, runout.hms[0].severity) == ("AMS", Severity.SERIOUS)
    final = states[-1]
    assert not final.hms, "ams_control resume cleared the HMS"
    assert final.lights.get("chamber_light") == "off"
    assert all(u.humidity_level is None for u in final.ams_units)  # AMS Lite: humidity "0"
