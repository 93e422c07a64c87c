"""The dispatch rules, held against realistic printer states (the MQTT fixtures, current firmware).

Each case starts from a report a printer of that family sends
(``tests/fixtures/mqtt``, ``tests/firmware_payloads``) and changes the one
field the rule reads, so a rule that read the wrong field, or none, fails.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bambulab.farm.models import Job, Requirements, Target
from bambulab.farm.rules import Fit, check, rank
from bambulab.models.state import PrinterState
from bambulab.models.threemf import Filament
from tests import firmware_payloads as fw

FIXTURES = Path(__file__).parent.parent / "fixtures" / "mqtt"
P1S, A1, X1C, P2S, H2D = (
    "01P00A000000001",
    "03900A000000001",
    fw.X1C_SERIAL,
    fw.P2S_SERIAL,
    fw.H2D_SERIAL,
)


def report(name: str) -> dict[str, Any]:
    """The first ``print`` body of a fixture (a stream's pushall reply), a private copy."""
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    first = data[0] if isinstance(data, list) else data
    return copy.deepcopy(first["print"])


def idle(raw: dict[str, Any]) -> dict[str, Any]:
    raw.update(gcode_state="IDLE", stg_cur=-1, hms=[], mc_percent=0)
    return raw


def p1s(change: Callable[[dict[str, Any]], object] | None = None) -> PrinterState:
    """The P1S of ``p1s_stream``: idle, AMS with PLA grey 0, orange 1, black 2, yellow 3."""
    raw = report("p1s_stream")
    if change is not None:
        change(raw)
    return PrinterState(P1S, raw, dev_model_name="C12")


def a1() -> PrinterState:
    return PrinterState(A1, report("a1_stream"), dev_model_name="N2S")


def x1c_four_ams() -> PrinterState:
    return PrinterState(X1C, idle(report("multi_ams")), dev_model_name="BL-P001")


def p2s_with_ht() -> PrinterState:
    return PrinterState(P2S, idle(report("ams_ht")), dev_model_name="N7")


def h2d() -> PrinterState:
    """An idle H2D: right nozzle 0.4, left 0.6; external spools 254 PETG green, 255 PLA blue."""
    return PrinterState(H2D, idle(fw.h2d()), dev_model_name="O1D")


def external_only(*spool: tuple[str, str]) -> PrinterState:
    """A P1S without AMS: only the external spool (``vt_tray``) loaded."""

    def change(raw: dict[str, Any]) -> None:
        raw["ams"] = {"ams": [], "tray_now": "254"}
        kind, colour = spool[0] if spool else ("", "00000000")
        raw["vt_tray"].update(tray_type=kind, tray_color=colour, remain=-1)

    return p1s(change)


def job(
    *filaments: tuple[str, str] | tuple[int, str, str],
    model: str = "C12",
    nozzle: float | None = 0.4,
    target: Target | None = None,
) -> Job:
    made = []
    for i, item in enumerate(filaments, 1):
        slot, kind, colour = item if len(item) == 3 else (i, *item)  # type: ignore[misc]
        made.append(Filament(slot=int(slot), type=str(kind), colour=str(colour), grams=10.0))
    return Job(
        id=7,
        name="Cube",
        file="/farm/files/cube.3mf",
        file_md5="0" * 32,
        plate=1,
        target=target or Target(),
        requirements=Requirements(model_id=model, nozzle_diameter=nozzle, filaments=tuple(made)),
    )


GREY, ORANGE, BLACK, YELLOW = "#898989FF", "#FF6A13FF", "#000000FF", "#F4A925FF"
PLA_GREY = job(("PLA", GREY))


def _set(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda raw: raw.update(fields)


# (what, state, job, keyword arguments, ok, text the reason must contain)
REFUSALS: list[tuple[str, Callable[[], PrinterState], Job, dict[str, Any], str]] = [
    (
        "another printer is named",
        p1s,
        job(("PLA", GREY), target=Target("printer", A1)),
        {},
        f"the job is for printer {A1}, not {P1S}",
    ),
    (
        "another model class is named",
        p1s,
        job(("PLA", GREY), target=Target("model", "N2S")),
        {},
        "the job is for A1 (N2S) printers; this is a P1S (C12)",
    ),
    ("the connection is down", p1s, PLA_GREY, {"online": False}, f"printer {P1S} is offline"),
    (
        "the printer reports OFFLINE",
        lambda: p1s(_set(gcode_state="OFFLINE")),
        PLA_GREY,
        {},
        "is offline",
    ),
    (
        "nothing reported yet",
        lambda: PrinterState(P1S, {}, dev_model_name="C12"),
        PLA_GREY,
        {},
        "has not reported its state yet",
    ),
    (
        "printing (the X1C fixture, 23 %)",
        lambda: PrinterState(X1C, report("x1c_full"), dev_model_name="BL-P001"),
        job(("PLA", BLACK), model="BL-P001"),
        {},
        "is busy: running (",
    ),
    ("paused", lambda: p1s(_set(gcode_state="PAUSE", stg_cur=16)), PLA_GREY, {}, "busy: pause"),
    (
        "preparing",
        lambda: p1s(_set(gcode_state="PREPARE", stg_cur=2)),
        PLA_GREY,
        {},
        "busy: prepare",
    ),
    (
        "idle but loading filament from the screen",
        lambda: p1s(_set(stg_cur=4)),
        PLA_GREY,
        {},
        "is not ready: changing filament",
    ),
    ("starting up", lambda: p1s(_set(gcode_state="INIT")), PLA_GREY, {}, "is not ready: init"),
    (
        "a serious HMS alert (AMS filament tangled)",
        lambda: p1s(_set(hms=[{"attr": 0x07004000, "code": 0x00020001}])),
        PLA_GREY,
        {},
        "has an HMS alert: HMS_0700_4000_0002_0001 [serious]",
    ),
    (
        "a firmware update runs",
        lambda: p1s(lambda raw: raw["upgrade_state"].update(dis_state=2)),
        PLA_GREY,
        {},
        "is updating its firmware",
    ),
    (
        "no SD card (home_flag bits 8-9 clear)",
        lambda: p1s(lambda raw: raw.update(home_flag=raw["home_flag"] & ~0x300)),
        PLA_GREY,
        {},
        "has no usable SD card (absent)",
    ),
    (
        "the bed still holds the last print",
        p1s,
        PLA_GREY,
        {"bed_clear_needed": True},
        "waits for its bed to be cleared",
    ),
    ("sliced for another model", a1, PLA_GREY, {}, "sliced for P1S (C12), this is an A1 (N2S)"),
    (
        "sliced for another nozzle",
        p1s,
        job(("PLA", GREY), nozzle=0.6),
        {},
        "sliced for a 0.6 mm nozzle, this printer has 0.4 mm",
    ),
    (
        "a filament type that is not loaded",
        p1s,
        job(("PETG", "#FFFFFFFF")),
        {},
        "no PETG loaded (filament 1, #FFFFFF); loaded: 0 PLA #898989, 1 PLA #FF6A13, "
        "2 PLA #000000, 3 PLA #F4A925",
    ),
    (
        "the second filament of a plate is missing",
        p1s,
        job(("PLA", GREY), ("PETG", "#FFFFFFFF")),
        {},
        "no PETG loaded (filament 2",
    ),
    (
        "two filaments, no AMS, one external spool",
        lambda: external_only(("PETG", "FFFFFFFF")),
        job(("PETG", "#FFFFFFFF"), ("PETG", "#000000FF")),
        {},
        "the plate uses 2 filaments and this printer has no AMS loaded",
    ),
    (
        "an H2D without the 0.8 mm nozzle",
        h2d,
        job(("PLA", "#0000FFFF"), model="O1D", nozzle=0.8),
        {},
        "sliced for a 0.8 mm nozzle, this printer has 0.4 mm and 0.6 mm",
    ),
]


@pytest.mark.parametrize(
    ("state", "the_job", "kw", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in REFUSALS],
)
def test_each_rule_refuses_with_one_clear_line(
    state: Callable[[], PrinterState], the_job: Job, kw: dict[str, Any], reason: str
) -> None:
    fit = check(the_job, state(), **kw)
    assert not fit.ok and not fit
    assert reason in fit.reason
    assert "\n" not in fit.reason and fit.mapping == ()


# (what, state, job, mapping, use_ams)
FITS: list[tuple[str, Callable[[], PrinterState], Job, tuple[int, ...], bool]] = [
    ("the exact colour", p1s, PLA_GREY, (0,), True),
    ("the nearest colour: orange-ish to orange", p1s, job(("PLA", "#F06010FF")), (1,), True),
    ("the nearest colour: near-black to black", p1s, job(("PLA", "#101010FF")), (2,), True),
    (
        "multi-colour: each filament its own tray",
        p1s,
        job(("PLA", YELLOW), ("PLA", ORANGE), ("PLA", BLACK)),
        (3, 1, 2),
        True,
    ),
    (
        "project slots the plate does not use are -1",
        p1s,
        job((1, "PLA", BLACK), (3, "PLA", GREY)),
        (2, -1, 0),
        True,
    ),
    (
        "four AMS units: TPU, ABS and PLA-S from units C and D",
        x1c_four_ams,
        job(("TPU", "#0A2989FF"), ("ABS", BLACK), ("PLA-S", "#F72323FF"), model="BL-P001"),
        (10, 11, 14),
        True,
    ),
    (
        "the target names this model",
        p1s,
        job(("PLA", GREY), target=Target("model", "P1S")),
        (0,),
        True,
    ),
    (
        "the target names this printer",
        p1s,
        job(("PLA", GREY), target=Target("printer", P1S)),
        (0,),
        True,
    ),
    (
        "FINISH with stg_cur left at 0 is idle",
        lambda: p1s(_set(gcode_state="FINISH", stg_cur=0)),
        PLA_GREY,
        (0,),
        True,
    ),
    ("FAILED is idle", lambda: p1s(_set(gcode_state="FAILED", stg_cur=255)), PLA_GREY, (0,), True),
    (
        "a common HMS alert does not block",
        lambda: p1s(_set(hms=[{"attr": 0x05000100, "code": 0x00030004}])),
        PLA_GREY,
        (0,),
        True,
    ),
    ("a file that names no model", a1, job(("PLA", "#898989FF"), model=""), (0,), True),
    (
        "a printer of unknown model takes any file",
        lambda: PrinterState(fw.UNKNOWN_SERIAL, report("p1s_stream")),
        PLA_GREY,
        (0,),
        True,
    ),
    ("no nozzle in the file", p1s, job(("PLA", GREY), nozzle=None), (0,), True),
    (
        "the external spool, no AMS, one filament",
        lambda: external_only(("PETG", "FFFFFFFF")),
        job(("PETG", "#FFFFFFFF")),
        (254,),
        False,
    ),
    (
        "AMS HT: red PETG from the HT unit, green from the AMS 2 Pro",
        p2s_with_ht,
        job(("PETG", "#F72323FF"), ("PETG", "#00AE42FF"), model="N7"),
        (128, 3),
        True,
    ),
    (
        "dual nozzle: the left nozzle is the file's, both external spools used",
        h2d,
        job(("PETG", "#00FF00FF"), ("PLA", "#0000FFFF"), model="O1D", nozzle=0.6),
        (254, 255),
        False,
    ),
]


@pytest.mark.parametrize(
    ("state", "the_job", "mapping", "use_ams"),
    [pytest.param(*case[1:], id=case[0]) for case in FITS],
)
def test_fitting_printers_get_their_mapping(
    state: Callable[[], PrinterState], the_job: Job, mapping: tuple[int, ...], use_ams: bool
) -> None:
    fit = check(the_job, state())
    assert fit.ok, fit.reason
    assert fit.mapping == mapping
    assert fit.use_ams is use_ams
    assert fit.reason.startswith("fits")


def test_an_empty_tray_is_not_loaded() -> None:
    # multi_ams: the only PLA-CF is AMS A slot 4 (tray 3); AMS B slot 3 has no filament at all.
    plate = job(("PLA-CF", "#FFFFFFFF"), model="BL-P001")
    assert check(plate, x1c_four_ams()).mapping == (3,)
    raw = idle(report("multi_ams"))
    raw["ams"]["ams"][0]["tray"][3]["state"] = 0  # current firmware: state 0 is an empty slot
    fit = check(plate, PrinterState(X1C, raw, dev_model_name="BL-P001"))
    assert not fit.ok and "no PLA-CF loaded" in fit.reason


def test_colour_distance_is_the_match_quality() -> None:
    exact = check(PLA_GREY, p1s())
    near = check(job(("PLA", "#808080FF")), p1s())
    assert exact.distance == 0.0
    assert 0 < near.distance < 10
    assert exact.remain == 96  # tray 0's remain


def test_strings_from_the_printer_are_neutralised() -> None:
    def hostile(raw: dict[str, Any]) -> None:
        raw["ams"]["ams"][0]["tray"][0]["tray_type"] = "PLA\x1b[2J\nX"

    fit = check(job(("PETG", "#FFFFFFFF")), p1s(hostile))
    assert not fit.ok
    assert "\x1b" not in fit.reason and "\n" not in fit.reason
    assert "\\x1b" in fit.reason


def loaded(colour: str, remain: int) -> Callable[[dict[str, Any]], None]:
    """Every AMS tray PLA of ``colour`` with ``remain`` % left."""

    def change(raw: dict[str, Any]) -> None:
        for tray in raw["ams"]["ams"][0]["tray"]:
            tray.update(tray_type="PLA", tray_color=colour, remain=remain)

    return change


def printer(serial: str, colour: str, remain: int) -> PrinterState:
    return PrinterState(serial, p1s(loaded(colour, remain)).raw.copy(), dev_model_name="C12")


def test_rank_prefers_the_better_colour_then_the_fuller_tray() -> None:
    red = job(("PLA", "#FF0000FF"))
    exact_low = printer("01P00A000000002", "FF0000FF", 10)
    exact_full = printer("01P00A000000003", "FF0000FF", 90)
    orange = printer("01P00A000000001", "FF6A13FF", 100)
    busy = PrinterState(
        "01P00A000000004",
        {**exact_full.raw, "gcode_state": "RUNNING", "stg_cur": 0},
        dev_model_name="C12",
    )
    order = rank(red, [orange, busy, exact_low, exact_full])
    assert [s.serial for s, _ in order] == [exact_full.serial, exact_low.serial, orange.serial]
    assert all(isinstance(f, Fit) and f.ok for _, f in order)
    # The order never depends on the input's.
    assert [s.serial for s, _ in rank(red, [exact_full, exact_low, orange])] == [
        s.serial for s, _ in order
    ]


def test_rank_leaves_out_printers_waiting_for_a_bed_clear_or_offline() -> None:
    red = job(("PLA", "#FF0000FF"))
    one = printer("01P00A000000001", "FF0000FF", 50)
    two = printer("01P00A000000002", "FF0000FF", 50)
    three = printer("01P00A000000003", "FF0000FF", 50)
    order = rank(red, [one, two, three], bed_clear_needed={one.serial}, offline={three.serial})
    assert [s.serial for s, _ in order] == [two.serial]
    assert rank(job(("PETG", "#FF0000FF")), [one, two]) == []
