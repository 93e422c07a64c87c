"""LAN printing's decisions before anything is sent, as table tests on PrinterState:
which printers are busy, and what ``use_ams``/``ams_mapping`` a file gets."""

from __future__ import annotations

from typing import Any

import pytest

from bambulab.errors import AmsMappingError, ConfigurationError, PrinterBusyError
from bambulab.local.lan_print import check_idle, mapping_for
from bambulab.models.state import PrinterState
from bambulab.protocol.threemf import read_3mf
from bambulab.sim.threemf_writer import threemf_bytes

SERIAL = "01P00A000000001"


def tray(slot: int, kind: str, colour: str) -> dict[str, Any]:
    return {"id": str(slot), "tray_type": kind, "tray_color": colour, "remain": 80}


def state(gcode_state: str = "IDLE", *, external: str | None = None, **extra: Any) -> PrinterState:
    raw: dict[str, Any] = {
        "gcode_state": gcode_state,
        "stg_cur": 255 if gcode_state in ("IDLE", "FINISH", "FAILED") else 0,
        "mc_percent": 40,
        "subtask_name": "Benchy",
        "ams": {
            "ams": [
                {
                    "id": "0",
                    "tray": [
                        tray(0, "PLA", "FF0000FF"),
                        tray(1, "PETG", "00FF00FF"),
                        tray(2, "PLA", "0000FFFF"),
                        {"id": "3"},
                    ],
                }
            ]
        },
        **extra,
    }
    if external:
        raw["vt_tray"] = {"id": "254", "tray_type": external, "tray_color": "FFFFFFFF"}
    return PrinterState(SERIAL, raw, dev_model_name="C12")


def project(*filaments: tuple[str, str]) -> Any:
    info = read_3mf(threemf_bytes(filaments=filaments))
    return info, info.plate(1)


@pytest.mark.parametrize(
    ("gcode_state", "busy"),
    [
        ("IDLE", False),
        ("FINISH", False),
        ("FAILED", False),
        ("RUNNING", True),
        ("PREPARE", True),
        ("PAUSE", True),
    ],
)
def test_busy(gcode_state: str, busy: bool) -> None:
    if busy:
        with pytest.raises(PrinterBusyError) as caught:
            check_idle(state(gcode_state), SERIAL)
        assert caught.value.state == gcode_state and SERIAL in str(caught.value)
    else:
        check_idle(state(gcode_state), SERIAL)


def test_auto_mapping_type_then_colour() -> None:
    info, plate = project(("PLA", "#0000F0FF"), ("PETG", "#00FF00FF"))
    assert mapping_for(plate, info, state(), "auto") == (True, [2, 1])


def test_none_is_every_filament_unmapped_with_use_ams_off() -> None:
    info, plate = project(("PLA", "#FF0000FF"), ("PETG", "#00FF00FF"))
    assert mapping_for(plate, info, state(), "none") == (False, [-1, -1])


def test_external_spool_only_turns_the_ams_off() -> None:
    info, plate = project(
        ("TPU", "#FFFFFFFF"),
    )
    use_ams, mapping = mapping_for(plate, info, state(external="TPU"), "auto")
    assert (use_ams, mapping) == (False, [-1])


def test_impossible_and_explicit_mappings() -> None:
    info, plate = project(
        ("ABS", "#FFFFFFFF"),
    )
    with pytest.raises(AmsMappingError):
        mapping_for(plate, info, state(), "auto")
    info, plate = project(
        ("PLA", "#FF0000FF"),
    )
    assert mapping_for(plate, info, state(), [2]) == (True, [2])
    with pytest.raises(AmsMappingError):
        mapping_for(plate, info, state(), [1])  # tray 1 holds PETG
    with pytest.raises(ConfigurationError):
        mapping_for(plate, info, state(), "sometimes")


def test_gcode_has_no_mapping() -> None:
    assert mapping_for(None, None, state(), "auto") == (False, [])
