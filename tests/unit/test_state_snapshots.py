"""Immutable printer states under load: what a reader on another thread may rely on.

The connection's thread feeds reports through ``Printer.process`` (the hot
path of every live client) while callers read ``printer.state`` and the
events' states on theirs. Every report below sets several fields, at
different depths, to the same value: a reader that ever sees them differ
has seen a half-merged state.
"""

from __future__ import annotations

import copy
import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bambulab.models.events import StateChanged
from bambulab.models.state import PrinterState
from bambulab.mqtt.core import Printer
from bambulab.protocol import mqtt as proto
from tests.unit.test_mqtt_protocol import report_strategy, split

P1S = "01P00A000000001"  # partial reports, merged leaf by leaf
X1C = "00M09A350100001"  # full reports
REPORTS = 4000


@pytest.fixture(autouse=True)
def switch_often() -> Iterator[None]:
    """Let the threads take turns every few bytecodes, not every 5 ms."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def report(i: int) -> bytes:
    value = i % 100
    return orjson.dumps(
        {
            "print": {
                "command": "push_status",
                "msg": 1,
                "sequence_id": str(i),
                "mc_percent": value,
                "ams": {
                    "ams": [
                        {"id": "0", "humidity": "3", "tray": [{"id": "1", "remain": value}]},
                        {"id": "1", "tray": [{"id": "0", "remain": value}]},
                    ],
                    "tray_now": "1",
                },
                # A key that is new in every report: an in-place merge grows the dict
                # a copying reader iterates ("dictionary changed size during iteration").
                "seen": {str(i): value},
                "layer_num": value,
            }
        }
    )


def first_report() -> bytes:
    trays = [{"id": str(t), "remain": 0, "tray_type": "PLA"} for t in range(4)]
    return orjson.dumps(
        {
            "print": {
                "command": "push_status",
                "sequence_id": "0",
                "gcode_state": "RUNNING",
                "mc_percent": 0,
                "layer_num": 0,
                "ams": {
                    "ams": [{"id": "0", "tray": trays}, {"id": "1", "tray": copy.deepcopy(trays)}],
                    "tray_now": "1",
                },
                "seen": {},
            }
        }
    )


def values(state: PrinterState) -> set[Any]:
    """Every field the reports set together, read through the typed views and ``to_dict()``."""
    data = state.snapshot().to_dict()
    units = {u.id: u for u in state.ams_units}
    trays = {t.global_id: t.remain for t in state.trays}
    raw = state.raw
    return {
        state.percent,
        state.layer,
        data["percent"],
        data["layer"],
        next(t.remain for t in units[0].trays if t.id == 1),
        trays[4],
        state.active_tray.remain if state.active_tray else "no active tray",
        data["ams"][1]["trays"][0]["remain"],
        tray(raw, 0, 1),
    }


def tray(raw: Any, unit: int, slot: int) -> Any:
    """``remain`` of one tray of the wire dict, found by ids (full reports carry only some)."""
    found = next(u for u in raw["ams"]["ams"] if u["id"] == str(unit))
    return next(t["remain"] for t in found["tray"] if t["id"] == str(slot))


def stream_values(raw: dict[str, Any]) -> set[Any]:
    """The same fields read straight from the stream's dict."""
    return {raw["mc_percent"], raw["layer_num"], tray(raw, 0, 1), tray(raw, 1, 0)}


@pytest.mark.parametrize("serial", [P1S, X1C], ids=["partial", "full"])
def test_a_hammering_reader_never_sees_a_half_merged_state(serial: str) -> None:
    printer = Printer(serial)
    printer.process(first_report())
    events: list[tuple[int, StateChanged]] = []
    done = threading.Event()
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            for i in range(1, REPORTS + 1):
                _, new = printer.process(report(i))
                events.extend((i, e) for e in new if isinstance(e, StateChanged))
        except BaseException as exc:  # pragma: no cover - reported below
            failure.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=feed)
    writer.start()
    reads = 0
    seen: set[Any] = set()
    try:
        while not done.is_set() or reads < 50:
            state = printer.state
            got = values(state)
            assert len(got) == 1, f"half-merged state: {got}"
            got_raw = stream_values(printer.stream.state)
            assert len(got_raw) == 1, f"half-merged stream dict: {got_raw}"
            seen |= got
            reads += 1
    finally:
        writer.join()
    assert not failure, failure
    assert len(seen) >= 3, "the reader should have seen the state move"
    # Every event still carries the state right after its own report.
    assert len(events) == REPORTS
    for i, event in events:
        assert values(event.state) == {i % 100}
        assert event.state.raw["seen"].get(str(i)) == i % 100


def test_an_old_state_and_an_events_state_are_unchanged_by_later_reports() -> None:
    printer = Printer(P1S)
    printer.process(first_report())
    _, events = printer.process(report(7))
    old = printer.state
    kept = copy.deepcopy(dict(old.raw))
    summary = old.to_dict()
    event = next(e for e in events if isinstance(e, StateChanged))
    assert event.state is old
    for i in range(8, 60):
        printer.process(report(i))
    assert printer.state is not old and printer.state.percent == 59
    assert dict(old.raw) == kept and old.to_dict() == summary
    assert values(old) == {7} and values(event.state) == {7}
    assert old.raw["seen"] == {"7": 7} and len(printer.state.raw["seen"]) == 53


def test_changed_never_lists_the_envelope() -> None:
    printer = Printer(P1S)
    seen: list[frozenset[str]] = []
    for payload in (first_report(), report(1), report(2)):
        _, events = printer.process(payload)
        for event in events:
            if isinstance(event, StateChanged):
                assert not {"command", "msg", "sequence_id"} & {
                    k for k in ("command", "msg", "sequence_id") if k in event.changed
                }
                assert len(event.changed) == len(frozenset(event.changed))
                seen.append(frozenset(event.changed))
    assert len(seen) == 3
    for changed in seen:
        assert not changed & {"command", "msg", "sequence_id"}, changed
    assert seen[1] == {"mc_percent", "ams", "seen", "layer_num"}


def test_get_version_swaps_in_a_new_state() -> None:
    printer = Printer("")
    printer.process(first_report())
    before = printer.state
    info = {
        "info": {
            "command": "get_version",
            "sequence_id": "2",
            "module": [{"name": "ota", "sw_ver": "01.07.00.00", "project_name": "C12"}],
        }
    }
    printer.process(orjson.dumps(info))
    assert printer.state is not before and printer.state.firmware == "01.07.00.00"
    assert before.firmware == "" and before.info == {}
    assert printer.state.percent == before.percent == 0


def test_a_hostile_report_leaves_the_state_alone() -> None:
    printer = Printer(P1S)
    printer.process(first_report())

    def deep(levels: int) -> Any:
        node: Any = {"x": 1}
        for _ in range(levels):
            node = {"d": node}
        return node

    # Past the parser's nesting guard (as a decoded message): the first is adopted
    # as it is, the second must be merged into it, deeper than Python recurses.
    printer.stream.apply(
        proto.Incoming("report", P1S, "print", "push_status", "8", {"z": deep(3000)})
    )
    before, raw = printer.state, printer.stream.state
    hostile = proto.Incoming("report", P1S, "print", "push_status", "9", {"z": deep(3000)})
    printer.stream.apply(hostile)
    assert hostile.kind == "ignored" and hostile.problem == "nested too deeply"
    assert printer.stream.state is raw and printer.state is before
    assert printer.stream.problems == 1


@settings(max_examples=200, deadline=None)
@given(report=report_strategy(), parts=st.integers(1, 5), data=st.data())
def test_copy_on_write_merges_leave_every_earlier_state_as_it_was(
    report: dict[str, Any], parts: int, data: st.DataObject
) -> None:
    def choose(n: int) -> int:
        return data.draw(st.integers(0, n - 1))

    pieces = split(report, choose, parts)
    stream = proto.ReportStream(P1S)
    history: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for piece in pieces:
        stream.feed(json.dumps({"print": {"command": "push_status", **piece}}).encode())
        history.append((stream.state, copy.deepcopy(stream.state)))
    for state, kept in history:
        assert state == kept
    merged_in_place: dict[str, Any] = {}
    for piece in pieces:
        proto.merge(merged_in_place, piece)
    assert stream.state == merged_in_place
