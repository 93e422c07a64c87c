"""The rules of a report merge beyond field by field (issue 8, points 6 and 8).

* ``ams.ams`` is the complete set of units: a unit it leaves out was removed
  (Bambu Studio's DevFilaSystemParser::ParseV1_0 erases it);
* a tray sent as only ``{"id": ...}`` or with ``state`` 0 is empty: none of
  its old filament survives (ParseAmsTrayInfo / DevAmsTray::reset);
* an AMS Lite's humidity "0" is no reading;
* a known field with the wrong shape keeps its last good value, is named in
  ``Incoming.malformed``, and the next good value replaces it.

Fixtures are P1S and A1 delta streams written here from those facts, fed to
the public :class:`ReportStream` as bytes, read through :class:`PrinterState`.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bambulab.models.state import PrinterState
from bambulab.protocol.mqtt import ReportStream, report_topic
from bambulab.sim.live import malformed_payload

P1S = "01P00A000000001"
A1 = "03900A000000001"
X1C = "00M09A350100001"


def report(**fields: Any) -> bytes:
    return json.dumps({"print": {"command": "push_status", "msg": 1, **fields}}).encode()


def stream_of(serial: str, *reports: bytes, full: bool = False) -> ReportStream:
    stream = ReportStream(serial, full_reports=full)
    for payload in reports:
        assert stream.feed(payload, report_topic(serial)).kind == "report"
    return stream


def state_of(stream: ReportStream) -> PrinterState:
    return PrinterState(stream.serial, stream.state)


def tray(tray_id: int, kind: str = "PLA", colour: str = "FF0000FF", **more: Any) -> dict[str, Any]:
    return {
        "id": str(tray_id),
        "tray_type": kind,
        "tray_color": colour,
        "tray_info_idx": "GFA00",
        "tag_uid": "A1B2C3D4E5F60708",
        "nozzle_temp_min": "190",
        "nozzle_temp_max": "230",
        "remain": 80,
        "k": 0.02,
        **more,
    }


def unit(unit_id: int, *trays: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"id": str(unit_id), "humidity": "4", "temp": "24.5", "tray": list(trays), **more}


# A P1S with two AMS units (older firmware: no tray ``state``), then its deltas.
P1S_FULL = report(
    gcode_state="IDLE",
    nozzle_temper=24.0,
    ams={
        "ams": [
            unit(0, tray(0), tray(1, "PETG", "00AA00FF"), tray(2), tray(3)),
            unit(1, tray(0, "ABS", "000000FF"), tray(1), tray(2), tray(3, "TPU")),
        ],
        "ams_exist_bits": "3",
        "tray_now": "2",
    },
)


# --- AMS: units and trays ---------------------------------------------------------------------


def test_p1s_tray_sent_as_only_its_id_is_empty_and_keeps_no_old_filament() -> None:
    # The spool of unit 0 slot 2 was pulled: the firmware sends the unit list whole,
    # that tray as only its id (the old shape, without ``state``).
    delta = report(
        ams={
            "ams": [
                unit(0, tray(0), tray(1, "PETG", "00AA00FF"), {"id": "2"}, tray(3)),
                unit(1, tray(0, "ABS", "000000FF"), tray(1), tray(2), tray(3, "TPU")),
            ]
        }
    )
    state = state_of(stream_of(P1S, P1S_FULL, delta))
    first, second = state.ams_units
    pulled = first.trays[2]
    assert pulled.empty
    assert (pulled.type, pulled.colour, pulled.tag_uid, pulled.info_idx) == ("", "", "", "")
    assert (pulled.remain, pulled.nozzle_temp_min, pulled.k) == (None, None, None)
    assert dict(pulled.raw) == {"id": "2"}
    assert [t.type for t in first.trays] == ["PLA", "PETG", "", "PLA"]
    assert [t.type for t in second.trays] == ["ABS", "PLA", "PLA", "TPU"]
    assert state.to_dict()["ams"][0]["trays"][2]["type"] == ""


def test_a_later_delta_of_one_listed_tray_field_merges_into_the_full_tray() -> None:
    delta = report(ams={"ams": [{"id": "0", "tray": [{"id": "1", "remain": 42}]}, {"id": "1"}]})
    first, second = state_of(stream_of(P1S, P1S_FULL, delta)).ams_units
    assert (first.trays[1].type, first.trays[1].colour, first.trays[1].remain) == (
        "PETG",
        "00AA00FF",
        42,
    )
    assert [t.type for t in second.trays] == ["ABS", "PLA", "PLA", "TPU"]
    assert second.humidity_level == 4


def test_p1s_unit_left_out_of_the_list_was_removed() -> None:
    delta = report(
        ams={"ams": [unit(0, tray(0), tray(1), tray(2), tray(3))], "ams_exist_bits": "1"}
    )
    state = state_of(stream_of(P1S, P1S_FULL, delta))
    assert [u.id for u in state.ams_units] == [0]
    assert len(state.trays) == 4
    assert state.get("ams")["tray_now"] == "2", "the other AMS fields still merge"
    # And a report without ``ams.ams`` says nothing about the units.
    state = state_of(stream_of(P1S, P1S_FULL, report(ams={"tray_now": "5"})))
    assert [u.id for u in state.ams_units] == [0, 1] and state.tray_now == 5


def test_an_empty_unit_list_removes_every_unit() -> None:
    state = state_of(stream_of(P1S, P1S_FULL, report(ams={"ams": []})))
    assert state.ams_units == ()


def test_a1_ams_lite_tray_with_state_0_is_empty_and_humidity_0_is_no_reading() -> None:
    full = report(
        gcode_state="IDLE",
        ams={
            "ams": [
                unit(
                    0,
                    *(tray(i, state=11) for i in range(4)),
                    humidity="0",
                    humidity_raw="0",
                    info="1002",
                )
            ],
            "tray_now": "255",
        },
    )
    # Slot 3 runs out: current firmware says so with ``state`` 0 and may send the rest.
    emptied = {"id": "3", "state": 0, "tray_type": "", "tray_color": "00000000"}
    delta = report(ams={"ams": [{"id": "0", "tray": [emptied]}]})
    stream = stream_of(A1, full, delta)
    (lite,) = state_of(stream).ams_units
    assert lite.kind == "AMS Lite"  # ``info`` bits 0-3 = 2 (Bambu Studio's ParseAmsInfo)
    assert (lite.humidity_level, lite.humidity_percent) == (None, None)
    assert [t.empty for t in lite.trays] == [False, False, False, True]
    assert lite.trays[3].tag_uid == "" and lite.trays[3].remain is None
    # A tray still sent whole with a type but ``state`` 0 reads empty too.
    stale = report(ams={"ams": [{"id": "0", "tray": [tray(3, state=0)]}]})
    stream.feed(stale)
    assert state_of(stream).ams_units[0].trays[3].empty


def test_x1_full_reports_follow_the_same_rules() -> None:
    stream = stream_of(X1C, P1S_FULL, full=True)
    stream.feed(
        report(ams={"ams": [unit(1, tray(0, state=0), tray(1), tray(2), tray(3))]}),
    )
    (only,) = state_of(stream).ams_units
    assert only.id == 1 and only.trays[0].empty and not only.trays[1].empty


# --- malformed fields ---------------------------------------------------------------------------


def overlay(base: Any, over: Any) -> Any:
    """``over`` written into ``base``: objects by key, lists of objects by ``id``."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: overlay(base.get(k), v) for k, v in over.items()}}
    if isinstance(base, list) and isinstance(over, list) and all(isinstance(i, dict) for i in over):
        changes = {str(i.get("id")): i for i in over}
        return [overlay(i, changes[str(i["id"])]) if str(i["id"]) in changes else i for i in base]
    return over


GOOD = report(
    gcode_state="RUNNING",
    nozzle_temper=215.0,
    bed_temper=60.0,
    mc_percent=40,
    mc_remaining_time=33,
    layer_num=12,
    stg_cur=0,
    wifi_signal="-45dBm",
    hms=[{"attr": 0x07002100, "code": 0x00020001}],
    lights_report=[{"node": "chamber_light", "mode": "on"}],
    ams={"ams": [unit(0, tray(0), tray(1), tray(2), tray(3))], "tray_now": "1"},
    device={"extruder": {"state": 0x10, "info": [{"id": 0, "temp": 220 << 16 | 215}]}},
)


def watched(state: PrinterState) -> dict[str, Any]:
    """What ``bambu watch`` shows."""
    return {
        "state": state.gcode_state,
        "nozzle": state.nozzle_temp,
        "bed": state.bed_temp,
        "percent": state.percent,
        "remaining": state.remaining_minutes,
        "layer": state.layer,
        "wifi": state.wifi_dbm,
        "hms": [h.code_string for h in state.hms],
        "lights": dict(state.lights),
        "trays": [(t.type, t.remain) for t in state.trays],
        "humidity": [u.humidity_level for u in state.ams_units],
        "tray_now": state.tray_now,
        "extruders": [(e.temp, e.target) for e in state.extruders],
    }


@pytest.mark.parametrize(
    ("bad", "names"),
    [
        ({"nozzle_temper": "hot"}, ["nozzle_temper"]),
        ({"bed_temper": None}, ["bed_temper"]),
        ({"mc_percent": "half"}, ["mc_percent"]),
        ({"mc_remaining_time": [1]}, ["mc_remaining_time"]),
        ({"layer_num": {"n": 1}}, ["layer_num"]),
        ({"gcode_state": 3}, ["gcode_state"]),
        ({"wifi_signal": -45}, ["wifi_signal"]),
        ({"hms": {"attr": "x"}}, ["hms"]),
        ({"lights_report": "on"}, ["lights_report"]),
        ({"ams": "absent"}, ["ams"]),
        ({"ams": {"ams": {"id": "0"}}}, ["ams.ams"]),
        ({"ams": {"ams": ["unit"]}}, ["ams.ams"]),
        ({"ams": {"tray_now": "one"}}, ["ams.tray_now"]),
        (
            {
                "ams": {
                    "ams": [{"id": "0", "humidity": "wet", "tray": [{"id": "1", "remain": "x"}]}]
                }
            },
            ["ams.ams.humidity", "ams.ams.tray.remain"],
        ),
        ({"device": {"extruder": {"info": {"temp": 1}}}}, ["device.extruder.info"]),
        (
            {"device": {"extruder": {"info": [{"id": 0, "temp": "warm"}]}}},
            ["device.extruder.info.temp"],
        ),
        ({"device": []}, ["device"]),
    ],
)
@pytest.mark.parametrize("full", [False, True], ids=["delta", "full"])
def test_a_malformed_field_keeps_the_last_good_value(
    bad: dict[str, Any], names: list[str], full: bool
) -> None:
    stream = stream_of(P1S, GOOD, full=full)
    before = watched(state_of(stream))
    # An X1 sends the whole object every time: the good one with the one bad field in it.
    body = overlay(json.loads(GOOD)["print"], bad) if full else {"command": "push_status", **bad}
    incoming = stream.feed(json.dumps({"print": body}).encode())
    assert incoming.kind == "report"
    assert list(incoming.malformed) == names
    assert watched(state_of(stream)) == before
    assert stream.malformed == len(names)


def test_the_next_good_value_replaces_it_and_a_malformed_newcomer_is_left_out() -> None:
    stream = stream_of(P1S, GOOD)
    stream.feed(report(nozzle_temper="hot", chamber_temper="warm"))
    assert state_of(stream).nozzle_temp == 215.0
    assert "chamber_temper" not in stream.state, "nothing good to keep: left out"
    stream.feed(report(nozzle_temper="216.5", chamber_temper=30))
    # (A P1S has no chamber sensor, so its typed chamber_temp stays None: read the merge.)
    assert (state_of(stream).nozzle_temp, stream.state["chamber_temper"]) == (216.5, 30)
    # Numbers as strings are numbers, percentages too: not malformed.
    assert stream.feed(report(mc_percent="41%", bed_temper="61")).malformed == ()


def test_the_simulators_wrong_types_payload_blanks_nothing() -> None:
    stream = stream_of(P1S, GOOD)
    before = watched(state_of(stream))
    incoming = stream.feed(malformed_payload("wrong_types"))
    assert incoming.kind == "report"
    assert set(incoming.malformed) == {
        "nozzle_temper",
        "bed_temper",
        "mc_remaining_time",
        "gcode_state",
        "layer_num",
        "ams",
        "hms",
        "lights_report",
        "wifi_signal",
    }
    # "50%" is a number: the one value that changes.
    assert watched(state_of(stream)) == {**before, "percent": 50}
    assert "msg" not in stream.state and "sequence_id" not in stream.state


def test_the_earlier_states_are_not_touched_by_a_repair() -> None:
    stream = stream_of(P1S, GOOD)
    kept = stream.state
    copied = copy.deepcopy(kept)
    stream.feed(report(ams={"ams": [{"id": "0", "tray": [{"id": "1", "remain": "x"}]}]}))
    assert kept == copied
    assert state_of(stream).trays[1].remain == 80


# --- property: the merge states the AMS rules honestly -----------------------------------------

FILAMENT = st.fixed_dictionaries(
    {
        "tray_type": st.sampled_from(["PLA", "PETG", "ABS"]),
        "tray_color": st.sampled_from(["FF0000FF", "00FF00FF"]),
        "remain": st.integers(0, 100),
    }
)
# Older firmware (P1/A1): an empty tray is only its id. Current firmware sends ``state``
# with every tray (0 empty, 11 loaded here). One printer speaks one of the two.
OLD_TRAY = st.one_of(
    st.just({}),  # only the id: empty
    FILAMENT,  # a spool, whole
    st.fixed_dictionaries({"remain": st.integers(0, 100)}),  # one field changed
)
NEW_TRAY = st.one_of(
    st.just({"state": 0}),  # emptied
    FILAMENT.map(lambda f: {**f, "state": 11}),
    st.fixed_dictionaries({"remain": st.integers(0, 100)}),
)


def ams_report(tray: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    unit_update = st.fixed_dictionaries(
        {"humidity": st.sampled_from(["1", "3", "5"])},
        optional={"tray": st.dictionaries(st.sampled_from("0123"), tray, max_size=4)},
    )
    return st.one_of(
        st.dictionaries(st.sampled_from("0123"), unit_update, max_size=4).map(
            lambda u: {"units": u}
        ),
        st.fixed_dictionaries({"tray_now": st.sampled_from(["0", "5", "255"])}),
    )


AMS_STREAM = st.one_of(
    st.lists(ams_report(OLD_TRAY), min_size=1, max_size=8),
    st.lists(ams_report(NEW_TRAY), min_size=1, max_size=8),
)


def wire(update: dict[str, Any]) -> bytes:
    if "units" not in update:
        return report(ams=update)
    units = []
    for unit_id, fields in update["units"].items():
        body: dict[str, Any] = {"id": unit_id, "humidity": fields["humidity"]}
        if "tray" in fields:
            body["tray"] = [{"id": t, **v} for t, v in fields["tray"].items()]
        units.append(body)
    return report(ams={"ams": units})


@settings(max_examples=300, deadline=None)
@given(reports=AMS_STREAM, full=st.booleans())
def test_any_stream_of_ams_reports_reads_as_the_rules_say(
    reports: list[dict[str, Any]], full: bool
) -> None:
    """A model of the rules, written independently of the merge, read back through the state.

    Delta mode only: an X1 (full) report replaces the whole AMS block, which the
    rules reduce to when every report is complete; there the model is the last report.
    """
    if full:
        reports = [r for r in reports if "units" in r] or [{"units": {}}]
    model: dict[str, dict[str, Any]] = {}
    seen_list = False
    for update in reports:
        if "units" not in update:
            continue
        seen_list = True
        units: dict[str, dict[str, Any]] = {}
        for unit_id, fields in update["units"].items():
            old = {} if full else model.get(unit_id, {"trays": {}})
            trays = dict(old.get("trays", {}))
            if full:
                trays = {}
            for tray_id, tray_fields in fields.get("tray", {}).items():
                if not tray_fields or tray_fields.get("state") == 0:
                    trays[tray_id] = {}
                else:
                    trays[tray_id] = {**trays.get(tray_id, {}), **tray_fields}
            units[unit_id] = {"humidity": fields["humidity"], "trays": trays}
        model = units
    stream = ReportStream(P1S, full_reports=full)
    for update in reports:
        stream.feed(wire(update))
    state = state_of(stream)
    if not seen_list:
        assert state.ams_units == ()
        return
    assert [u.id for u in state.ams_units] == sorted(int(i) for i in model)
    for unit_ in state.ams_units:
        expected = model[str(unit_.id)]
        assert unit_.humidity_level == int(expected["humidity"])
        got = {str(t.id): t for t in unit_.trays}
        assert got.keys() == expected["trays"].keys()
        for tray_id, fields in expected["trays"].items():
            read = got[tray_id]
            assert read.type == fields.get("tray_type", "")
            assert read.empty == ("tray_type" not in fields or fields.get("state") == 0)
            assert read.remain == fields.get("remain")
