"""The sans-IO MQTT engine: commands on the wire, merging, decoding, signing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bambulab.errors import ConfigurationError
from bambulab.protocol import mqtt as proto


def wire(command: proto.Command, seq: str = "7") -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(command.with_sequence(seq).encode())
    return decoded


def test_sequence_ids_are_decimal_strings_from_one_counter() -> None:
    counter = proto.SequenceCounter()
    assert [counter() for _ in range(3)] == ["1", "2", "3"]


@pytest.mark.parametrize(
    ("command", "expected", "qos"),
    [
        (proto.pushall(), {"pushing": {"command": "pushall", "version": 1, "push_target": 1}}, 0),
        (proto.get_version(), {"info": {"command": "get_version"}}, 1),
        (proto.pause(), {"print": {"command": "pause", "param": ""}}, 1),
        (proto.resume(), {"print": {"command": "resume", "param": ""}}, 1),
        (proto.stop(), {"print": {"command": "stop", "param": ""}}, 1),
        (proto.print_speed("sport"), {"print": {"command": "print_speed", "param": "3"}}, 0),
        (proto.skip_objects([3, 9]), {"print": {"command": "skip_objects", "obj_list": [3, 9]}}, 1),
        (proto.set_bed_temp(60), {"print": {"command": "gcode_line", "param": "M140 S60\n"}}, 0),
        (
            proto.set_nozzle_temp(215.4),
            {"print": {"command": "gcode_line", "param": "M104 S215\n"}},
            0,
        ),
        (
            proto.set_chamber_temp(40),
            {"print": {"command": "gcode_line", "param": "M141 S40\n"}},
            0,
        ),
        (
            proto.set_fan_speed("aux", 100),
            {"print": {"command": "gcode_line", "param": "M106 P2 S255\n"}},
            0,
        ),
        (proto.set_ctt(45), {"print": {"command": "set_ctt", "ctt_val": 45}}, 0),
        (
            proto.calibration(lidar=True, bed_level=True),
            {"print": {"command": "calibration", "option": 3}},
            0,
        ),
        (proto.ams_control("resume"), {"print": {"command": "ams_control", "param": "resume"}}, 0),
        (proto.get_access_code(), {"system": {"command": "get_access_code"}}, 0),
        (
            proto.ipcam_timelapse(True),
            {"camera": {"command": "ipcam_timelapse", "control": "enable"}},
            0,
        ),
        (
            proto.upgrade_start("https://x/y.bin", "01.08"),
            {
                "upgrade": {
                    "command": "start",
                    "url": "https://x/y.bin",
                    "module": "ota",
                    "version": "01.08",
                    "src_id": 1,
                }
            },
            0,
        ),
    ],
)
def test_command_payloads(command: proto.Command, expected: dict[str, Any], qos: int) -> None:
    payload = wire(command)
    family = next(iter(expected))
    assert payload[family]["sequence_id"] == "7"
    for key, value in expected[family].items():
        assert payload[family][key] == value
    assert command.qos == qos


def test_ledctrl_always_carries_the_four_timings() -> None:
    body = wire(proto.ledctrl("chamber_light", "off"))["system"]
    assert body["led_node"] == "chamber_light" and body["led_mode"] == "off"
    assert {"led_on_time", "led_off_time", "loop_times", "interval_time"} <= set(body)


def test_project_file_sends_both_levelling_spellings_and_lan_defaults() -> None:
    body = wire(
        proto.project_file(
            "file:///sdcard/cube.3mf", 2, subtask_name="cube", ams_mapping=[0, -1, 254]
        )
    )["print"]
    assert body["param"] == "Metadata/plate_2.gcode"
    assert body["bed_levelling"] is True and body["bed_leveling"] is True
    assert body["md5"] == "" and body["project_id"] == "0" and body["task_id"] == "0"
    assert body["ams_mapping"] == [0, -1, 254]


def test_ams_load_and_unload_targets() -> None:
    assert wire(proto.ams_load(1, 2))["print"]["target"] == 6
    assert wire(proto.ams_load(128, 0))["print"]["target"] == 128
    unload = wire(proto.ams_unload())["print"]
    assert unload["target"] == 255 and unload["slot_id"] == 255


@pytest.mark.parametrize(
    "bad",
    [
        lambda: proto.print_speed(7),
        lambda: proto.set_bed_temp(500),
        lambda: proto.set_fan_speed("turbo", 50),
        lambda: proto.ledctrl("disco", "on"),
        lambda: proto.gcode_line("   "),
        lambda: proto.skip_objects(range(65)),
        lambda: proto.ams_filament_setting(0, 0, "PLA", "zz", 190, 230),
        lambda: proto.project_file("file:///sdcard/x.3mf", 0),
        lambda: proto.print_option("warp_drive", True),
    ],
)
def test_bad_arguments_are_refused_before_sending(bad: Any) -> None:
    with pytest.raises(ConfigurationError):
        bad()


def test_merge_nested_objects_and_lists_by_id() -> None:
    state: dict[str, Any] = {}
    proto.merge(
        state,
        {
            "nozzle_temper": 20.0,
            "ams": {
                "ams": [
                    {
                        "id": "0",
                        "humidity": "4",
                        "tray": [{"id": "0", "remain": 80}, {"id": "1", "remain": 50}],
                    }
                ],
                "tray_now": "255",
            },
            "lights_report": [{"node": "chamber_light", "mode": "on"}],
        },
    )
    proto.merge(
        state,
        {"ams": {"ams": [{"id": "0", "tray": [{"id": "1", "remain": 49}]}]}, "nozzle_temper": 25.5},
    )
    proto.merge(state, {"lights_report": [{"node": "chamber_light", "mode": "off"}]})
    assert state["nozzle_temper"] == 25.5
    unit = state["ams"]["ams"][0]
    assert unit["humidity"] == "4" and state["ams"]["tray_now"] == "255"
    assert [t["remain"] for t in unit["tray"]] == [80, 49]
    assert state["lights_report"] == [{"node": "chamber_light", "mode": "off"}]


def test_merge_does_not_alias_the_update() -> None:
    update = {"ams": {"ams": [{"id": "0", "tray": []}]}}
    state: dict[str, Any] = {}
    proto.merge(state, update)
    update["ams"]["ams"][0]["id"] = "9"
    assert state["ams"]["ams"][0]["id"] == "0"


# --- property: any split of a full report merges back to it -------------------------------
#
# This is the generic merge (:func:`proto.merge`), for fields that have no rule of their
# own: the generated keys never spell ``ams``. A print report's AMS block has two rules a
# split would break on purpose (``ams.ams`` is the whole set of units; an empty tray
# replaces the old one): ReportStream applies them, and test_merge_rules.py states them
# as a property of their own.

json_leaf = st.one_of(
    st.integers(-1000, 1000),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, width=32),
)
key = st.text("abcdefgh_", min_size=1, max_size=6)


def report_strategy() -> st.SearchStrategy[dict[str, Any]]:
    def items(children: st.SearchStrategy[Any]) -> st.SearchStrategy[list[dict[str, Any]]]:
        return st.lists(st.dictionaries(key, children, max_size=3), max_size=3).map(
            lambda ds: [{**d, "id": str(i)} for i, d in enumerate(ds)]
        )

    return st.recursive(
        st.dictionaries(key, json_leaf, min_size=1, max_size=4),
        lambda children: st.dictionaries(
            key,
            st.one_of(json_leaf, children, items(children), st.lists(json_leaf, max_size=3)),
            min_size=1,
            max_size=4,
        ),
        max_leaves=30,
    )


def split(report: Any, choose: Any, parts: int) -> list[Any]:
    """Distribute the leaves of ``report`` over ``parts`` partial reports (each leaf in one)."""
    out: list[dict[str, Any]] = [{} for _ in range(parts)]
    for key_, value in report.items():
        if isinstance(value, dict) and value:
            for i, sub in enumerate(split(value, choose, parts)):
                if sub:
                    out[i][key_] = sub
        elif (
            value
            and isinstance(value, list)
            and all(isinstance(v, dict) and "id" in v for v in value)
        ):
            by_part: list[dict[str, dict[str, Any]]] = [{} for _ in range(parts)]
            for item in value:
                # every item exists in some partial; its fields are spread around
                by_part[choose(parts)].setdefault(item["id"], {"id": item["id"]})
                for i, sub in enumerate(split(item, choose, parts)):
                    if set(sub) - {"id"}:
                        by_part[i].setdefault(item["id"], {"id": item["id"]}).update(sub)
            for i, entries in enumerate(by_part):
                if entries:
                    out[i][key_] = list(entries.values())
        else:
            out[choose(parts)][key_] = value
    return out


@settings(max_examples=300, deadline=None)
@given(report=report_strategy(), parts=st.integers(1, 5), data=st.data())
def test_any_split_of_a_full_report_merges_to_the_same_state(
    report: dict[str, Any], parts: int, data: st.DataObject
) -> None:
    def choose(n: int) -> int:
        return data.draw(st.integers(0, n - 1))

    pieces = split(report, choose, parts)
    state: dict[str, Any] = {}
    for piece in pieces:
        proto.merge(state, piece)

    def normalise(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: normalise(v)
                for k, v in value.items()
                if not (isinstance(v, (dict, list)) and not v)
            }
        if (
            isinstance(value, list)
            and value
            and all(isinstance(v, dict) and "id" in v for v in value)
        ):
            return sorted((normalise(v) for v in value), key=lambda v: v["id"])
        return value

    assert normalise(state) == normalise(report)


# --- decoding hostile payloads ---------------------------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[1,2,3]", "not a JSON object"),
        (b'"string"', "not a JSON object"),
        (b"{}", "not a JSON object"),
        (b'{"print": 5}', "no message family"),
        (b"\xff\xfe\x00", "not JSON"),
        (("[" * 10000 + "]" * 10000).encode(), "nested deeper than 64"),
        (b"x" * (5 * 1024 * 1024), "too large"),
    ],
)
def test_hostile_payloads_are_ignored_never_raise(payload: bytes, problem: str) -> None:
    stream = proto.ReportStream("00M000000000001")
    incoming = stream.feed(payload)
    assert incoming.kind == "ignored"
    assert problem in (incoming.problem or "")
    assert (stream.problems, stream.reports, stream.state) == (1, 0, {})


def test_a_deep_but_allowed_report_is_merged() -> None:
    """40 levels is under the limit: a report like any other, not a problem."""
    stream = proto.ReportStream("00M000000000001")
    incoming = stream.feed(json.dumps({"print": nested(40)}).encode())
    assert incoming.kind == "report"
    assert (stream.problems, stream.reports) == (0, 1)
    node = stream.state
    for _ in range(40):
        node = node["n"]
    assert node == {"leaf": 1}


def test_replies_events_and_reports_are_told_apart() -> None:
    reply = proto.decode(
        "device/S/report",
        b'{"print": {"command": "pause", "sequence_id": "12", "result": "FAILED", "reason": "no job"}}',
    )
    assert (
        reply.kind == "reply"
        and reply.sequence_id == "12"
        and not reply.succeeded
        and reply.reason == "no job"
    )
    ok = proto.decode(
        "device/S/report",
        b'{"system": {"command": "ledctrl", "sequence_id": "3", "result": "success"}}',
    )
    assert ok.kind == "reply" and ok.succeeded
    coded = proto.decode(
        "device/S/report",
        b'{"print": {"command": "stop", "sequence_id": "4", "result": "success", "err_code": 84033543}}',
    )
    assert not coded.succeeded
    report = proto.decode(
        "device/S/report",
        b'{"print": {"command": "push_status", "sequence_id": "99", "mc_percent": 5}}',
    )
    assert report.kind == "report" and report.serial == "S"
    event = proto.decode("device/S/report", b'{"event": {"event": "client.disconnected"}}')
    assert event.kind == "event" and event.command == "client.disconnected"


def test_signed_envelope_signs_sorted_compact_json() -> None:
    seen: list[bytes] = []

    def signer(data: bytes) -> bytes:
        seen.append(data)
        return b"sig"

    envelope = proto.sign_envelope(
        proto.pause().with_sequence("5"), signer, "ABCD", "01P00A000000001"
    )
    assert seen == [b'{"print":{"command":"pause","param":"","sequence_id":"5"}}']
    header = envelope["header"]
    assert header["sign_string"] == base64.b64encode(b"sig").decode()
    assert header["cert_id"] == "ABCDCN=01P00A000000001.bambulab.com"
    assert header["payload_len"] == len(seen[0]) and envelope["print"]["command"] == "pause"


def test_nesting_that_parsers_accept_is_still_refused_before_parsing() -> None:
    # 200 levels: json and orjson both parse it, but merging it, modelling it
    # or dumping the state (orjson.dumps stops at 255) would recurse as deep.
    deep = json.dumps({"print": nested(200)}).encode()
    stream = proto.ReportStream("00M000000000001")
    incoming = stream.feed(deep)
    assert incoming.kind == "ignored" and "nested deeper than 64" in (incoming.problem or "")
    assert stream.state == {} and stream.problems == 1
    # Brackets inside strings are text, not nesting; the stream carries on.
    text = "[" * 500 + "{" * 500
    fine = stream.feed(json.dumps({"print": {"command": "push_status", "note": text}}).encode())
    assert fine.kind == "report" and stream.state["note"] == text
