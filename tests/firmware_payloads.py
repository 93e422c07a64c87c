"""Report and ``get_version`` payloads of current firmware, written from the facts of issue 8.

Each builder returns what a printer of one family sends, as PROTOCOL.md
§2.6.1 and Bambu Studio's parsers describe it (``DevExtruderSystem``,
``DevNozzleSystem``, ``DevChamber``, ``DevFan``, ``parse_home_flag``). None
is a recording: every value is chosen so that a misreading shows (the two
nozzles of an H2D differ in temperature, diameter, kind and loaded tray; the
top-level fields hold the idle nozzle's values, as real H2D firmware does).
"""

from __future__ import annotations

from typing import Any

H2D_SERIAL = "0948AB000000001"
X1C_SERIAL = "00M09A350100001"
P2S_SERIAL = "22E00A000000001"
X2D_SERIAL = "20P00A000000001"
A1_MINI_SERIAL = "03009A000000001"
# A serial whose prefix this project does not know (the H2D Pro's is not known).
UNKNOWN_SERIAL = "9ZZ00A000000001"


def packed(current: int, target: int = 0) -> int:
    """``device.*.temp``: current in the low 16 bits, target in the high 16."""
    return target << 16 | current


def snow(ams_id: int, slot: int) -> int:
    """``device.extruder.info[].snow``: AMS id in bits 8-15, slot in bits 0-7."""
    return ams_id << 8 | slot


def version(*modules: dict[str, Any]) -> dict[str, Any]:
    """An ``info`` body answering ``get_version``."""
    return {"command": "get_version", "sequence_id": "1", "module": list(modules)}


def module(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "sw_ver": "01.02.03.04", "hw_ver": "", "sn": "N/A", **fields}


def ams_unit(unit_id: int, *types: str) -> dict[str, Any]:
    trays = [
        {"id": str(i), "tray_type": kind, "tray_color": "FF0000FF", "remain": 50, "state": 11}
        for i, kind in enumerate(types)
    ]
    return {
        "id": str(unit_id),
        "humidity": "3",
        "humidity_raw": "30",
        "temp": "25.0",
        "tray": trays,
    }


def h2d(
    *,
    active: int = 1,
    right: tuple[int, int] = (218, 220),
    left: tuple[int, int] = (151, 160),
    right_snow: int = snow(0, 2),
    left_snow: int = snow(1, 3),
    right_nozzle: tuple[float, str] = (0.4, "HS00"),
    left_nozzle: tuple[float, str] = (0.6, "HH01"),
    switching: bool = False,
) -> dict[str, Any]:
    """A full H2D report: extruder 0 (right) and 1 (left), ``active`` feeding.

    The top-level ``nozzle_temper``/``nozzle_target_temper`` belong to the
    idle nozzle, ``ams.tray_now`` holds only the active slot number, and the
    legacy ``nozzle_type``/``nozzle_diameter`` are stale (a different kind
    than either nozzle): what a client must not show.
    """
    idle_temp, idle_target = right if active == 1 else left
    active_snow = left_snow if active == 1 else right_snow
    state = 0x2 | (0xF if switching else active) << 4
    return {
        "gcode_state": "RUNNING",
        "stg_cur": 0,
        "nozzle_temper": float(idle_temp),
        "nozzle_target_temper": float(idle_target),
        "nozzle_diameter": "0.2",
        "nozzle_type": "brass",
        "bed_temper": 60.0,
        "bed_target_temper": 60.0,
        "chamber_temper": 21.0,
        "home_flag": 0x100,
        "stat": "46A58008",  # bit 0x00800000 set: the door is open
        "ipcam": {"ipcam_record": "enable", "timelapse": "disable", "rtsp_url": "disable"},
        "ams": {
            "ams": [
                ams_unit(0, "PLA", "PETG", "PLA-CF", "ABS"),
                ams_unit(1, "TPU", "", "PA", "PC"),
            ],
            "tray_now": str(active_snow & 0xFF),
        },
        "vir_slot": [
            {"id": "254", "tray_type": "PETG", "tray_color": "00FF00FF", "remain": -1},
            {"id": "255", "tray_type": "PLA", "tray_color": "0000FFFF", "remain": -1},
        ],
        "device": {
            "bed": {"info": {"temp": packed(60, 60)}},
            "ctc": {"info": {"temp": packed(38, 45)}},
            "extruder": {
                "state": state,
                "info": [
                    {"id": 0, "temp": packed(*right), "snow": right_snow, "hnow": 0, "info": 14},
                    {"id": 1, "temp": packed(*left), "snow": left_snow, "hnow": 1, "info": 14},
                ],
            },
            "nozzle": {
                "exist": 3,
                "info": [
                    {"id": 0, "diameter": right_nozzle[0], "type": right_nozzle[1]},
                    {"id": 1, "diameter": left_nozzle[0], "type": left_nozzle[1]},
                ],
            },
        },
    }


def x1c(*, home_flag: int = 0x100, chamber: float = 31.0) -> dict[str, Any]:
    """A full X1 Carbon report: legacy top-level fields, door and SD card in ``home_flag``."""
    return {
        "gcode_state": "IDLE",
        "stg_cur": -1,
        "nozzle_temper": 24.0,
        "nozzle_target_temper": 0.0,
        "nozzle_diameter": "0.4",
        "nozzle_type": "hardened_steel",
        "chamber_temper": chamber,
        "home_flag": home_flag,
        "ipcam": {"ipcam_record": "disable", "timelapse": "enable"},
    }


def a1_mini() -> dict[str, Any]:
    """An A1 mini: no chamber sensor, so ``chamber_temper`` is the placeholder 5."""
    return {
        "gcode_state": "FINISH",
        "stg_cur": 0,
        "nozzle_temper": 30.0,
        "chamber_temper": 5,
        "nozzle_type": "stainless_steel",
        "nozzle_diameter": "0.4",
        "home_flag": 0x200,
        "ams": {"ams": [{"id": "0", "humidity": "0", "tray": []}], "tray_now": "255"},
    }


def p2s(*, door_open: bool) -> dict[str, Any]:
    """A P2S: the door in ``stat`` (a hex string), one extruder in the ``device`` block."""
    stat = 0x46258008 | (0x00800000 if door_open else 0)  # other bits: whatever firmware sets
    return {
        "gcode_state": "IDLE",
        "stg_cur": 255,
        "nozzle_temper": 26.0,
        "nozzle_target_temper": 0.0,
        "chamber_temper": 5.0,
        "stat": f"{stat:08X}",
        "home_flag": 0x100,
        "device": {
            "ctc": {"info": {"temp": packed(27)}},
            "extruder": {"state": 0x01, "info": [{"id": 0, "temp": packed(26), "snow": 0xFFFF}]},
            "nozzle": {"info": [{"id": 0, "diameter": 0.4, "type": "HS01"}]},
        },
    }


def x2d(*, aux2: int | None) -> dict[str, Any]:
    """An X2D: ``device.airduct.parts[]`` with part fan, aux fan and (maybe) the second aux fan."""
    parts = [
        {"id": 1 << 4, "func": 0, "state": 40, "range": 100 << 16},  # fan 1: part cooling
        {"id": 2 << 4, "func": 1, "state": 70, "range": 100 << 16},  # fan 2: aux
    ]
    if aux2 is not None:
        parts.append({"id": 160, "func": 2, "state": aux2, "range": 100 << 16})  # fan 10
    body = h2d(active=0)
    body["device"]["airduct"] = {"modeCur": 0, "subMode": 0, "parts": parts}
    return body
