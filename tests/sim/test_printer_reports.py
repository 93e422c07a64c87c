"""Report streams: X1 full, P1/A1/newer deltas that merge back to the truth, packing.

The facts checked here are PROTOCOL.md §2.3's: full versus delta style,
merge-by-id of AMS units and trays, the packed ``device.*`` temperatures of
newer firmware, ``snow`` and ``extruder.state`` encodings, the external
spool ids, the little-endian ``net.info[].ip``.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bambulab.sim.printer import SimPrinter
from tests.sim.printer_helpers import SERIALS, Clock, Rig

ENVELOPE = {"command", "msg", "sequence_id"}


def _body(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report["print"].items() if k not in ENVELOPE}


def test_x1_sends_the_full_object_every_tick() -> None:
    rig = Rig("BL-P001")
    keys = set(rig.truth)
    reports = rig.run(5)
    assert len(reports) == 5
    for report in reports:
        assert report["print"]["msg"] == 0
        assert set(_body(report)) == keys
    assert _body(reports[-1]) == rig.truth
    sequence = [int(r["print"]["sequence_id"]) for r in reports]
    assert sequence == list(range(sequence[0], sequence[0] + 5))


def test_p1_deltas_carry_only_changes_and_keep_alive() -> None:
    rig = Rig("C12")
    quiet = rig.run(30)
    # Nothing happens on an idle printer but the keep-alive every ~5 s.
    assert 5 <= len(quiet) <= 7
    for report in quiet:
        assert report["print"]["msg"] == 1
        assert set(_body(report)) == {"wifi_signal"}
    rig.ok("print", "gcode_line", param="M140 S60\n")
    delta = rig.reports[-1]["print"]
    assert set(delta) - ENVELOPE == {"bed_target_temper"}
    heating = rig.run(5)
    assert all("bed_temper" in r["print"] for r in heating)
    assert all("nozzle_temper" not in r["print"] for r in heating)


def test_ams_deltas_list_every_unit_whole() -> None:
    # ``ams.ams`` is the complete set of units (PROTOCOL.md §2.6.1: Bambu Studio drops a
    # unit a report leaves out), so a delta that touches the AMS sends the list whole.
    rig = Rig("C12")
    rig.start("Articulated Dragon.3mf", use_ams=True, ams_mapping=[1])
    rig.run_until(lambda t: t["gcode_state"] == "RUNNING")
    before = rig.truth["ams"]["ams"][0]["tray"][1]["remain"]
    rig.run_until(lambda t: t["ams"]["ams"][0]["tray"][1]["remain"] < before, step=30)
    deltas = [
        r["print"]["ams"] for r in rig.reports if "ams" in r["print"] and r is not rig.reports[0]
    ]
    last = deltas[-1]
    assert set(last) == {"ams"}
    assert last["ams"] == rig.truth["ams"]["ams"]  # every unit, whole
    (unit,) = last["ams"]
    assert unit["id"] == "0"
    assert unit["tray"][1] == rig.truth["ams"]["ams"][0]["tray"][1]
    assert rig.view == rig.truth


def test_scripted_job_merges_to_the_truth_at_every_step() -> None:
    for model in ("C12", "N2S", "O1D", "N7"):
        rig = Rig(model)
        rig.start(use_ams=True, ams_mapping=[1])
        for _ in range(40):
            rig.run(20, 5)
            assert rig.view == rig.truth, model
        rig.ok("print", "pause", param="")
        rig.ok("print", "skip_objects", obj_list=[7])
        rig.printer.inject_hms(0x0C000300, 0x00030001)
        rig.run(3)
        rig.ok("print", "resume", param="")
        rig.printer.clear_hms()
        rig.ok("print", "stop", param="")
        rig.run(3)
        assert rig.view == rig.truth, model


ACTIONS = st.one_of(
    st.tuples(st.just("tick"), st.sampled_from([0.5, 1.0, 3.0, 7.0, 60.0, 600.0])),
    st.tuples(
        st.just("cmd"),
        st.sampled_from(
            [
                ("print", {"command": "gcode_line", "param": "M104 S230\nM140 S65\n"}),
                ("print", {"command": "gcode_line", "param": "M104 S0\nM106 P1 S128\n"}),
                (
                    "print",
                    {
                        "command": "project_file",
                        "param": "Metadata/plate_1.gcode",
                        "url": "file:///sdcard/Calibration Cube.3mf",
                        "use_ams": True,
                        "ams_mapping": [2],
                    },
                ),
                ("print", {"command": "pause", "param": ""}),
                ("print", {"command": "resume", "param": ""}),
                ("print", {"command": "stop", "param": ""}),
                ("print", {"command": "print_speed", "param": "3"}),
                ("print", {"command": "skip_objects", "obj_list": [3, 4]}),
                ("print", {"command": "ams_change_filament", "target": 3}),
                (
                    "print",
                    {
                        "command": "ams_filament_setting",
                        "ams_id": 0,
                        "tray_id": 1,
                        "tray_info_idx": "GFB00",
                        "tray_color": "0A2989FF",
                        "nozzle_temp_min": 240,
                        "nozzle_temp_max": 270,
                        "tray_type": "ABS",
                    },
                ),
                (
                    "system",
                    {
                        "command": "ledctrl",
                        "led_node": "chamber_light",
                        "led_mode": "off",
                        "led_on_time": 500,
                        "led_off_time": 500,
                        "loop_times": 0,
                        "interval_time": 0,
                    },
                ),
                ("camera", {"command": "ipcam_timelapse", "control": "enable"}),
                (
                    "xcam",
                    {
                        "command": "xcam_control_set",
                        "module_name": "printing_monitor",
                        "control": False,
                        "print_halt": True,
                    },
                ),
                ("pushing", {"command": "stop"}),
                ("pushing", {"command": "start"}),
            ]
        ),
    ),
    st.tuples(st.just("hms"), st.sampled_from([(0x07002000, 0x00020001), (0x0C000300, 1)])),
    st.tuples(st.just("clear"), st.none()),
    st.tuples(st.just("runout"), st.sampled_from([(0, 0), (0, 2)])),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(["C12", "N2S", "O1D"]), actions=st.lists(ACTIONS, max_size=25))
def test_any_sequence_of_deltas_merges_to_the_truth(
    model: str, actions: list[tuple[str, Any]]
) -> None:
    rig = Rig(model)
    pushing = True
    for kind, arg in actions:
        if kind == "tick":
            rig.run(arg, arg)
        elif kind == "cmd":
            family, body = arg
            if family == "pushing":
                pushing = body["command"] == "start"
            rig.raw(json.dumps({family: {**body, "sequence_id": "1"}}).encode())
        elif kind == "hms":
            rig.printer.inject_hms(*arg)
        elif kind == "clear":
            rig.printer.clear_hms()
        else:
            rig.printer.runout(*arg)
    if not pushing:
        rig.ok("pushing", "start")
    rig.run(1)
    assert rig.view == rig.truth


def test_h2d_packs_temperatures_and_extruders() -> None:
    rig = Rig("O1D")
    rig.ok("print", "gcode_line", param="M104 T0 S250\nM104 T1 S180\nM140 S80\nM141 S40\n")
    rig.run(200, 5)
    device = rig.view["device"]
    right, left = device["extruder"]["info"]
    assert (right["id"], left["id"]) == (0, 1)
    assert (right["temp"] & 0xFFFF, right["temp"] >> 16) == (250, 250)
    assert (left["temp"] & 0xFFFF, left["temp"] >> 16) == (180, 180)
    assert device["bed"]["info"]["temp"] == 80 << 16 | 80
    assert device["ctc"]["info"]["temp"] >> 16 == 40
    assert device["ctc"]["info"]["temp"] & 0xFFFF == round(rig.view["chamber_temper"])
    state = device["extruder"]["state"]
    assert (state & 0xF, state >> 4 & 0xF) == (2, 0)  # two extruders, the first active
    # Plain fields stay beside the packed ones and, on a dual-nozzle printer,
    # show the IDLE nozzle (PROTOCOL.md §2.6.1): the active one is in device.extruder.
    assert (rig.view["nozzle_temper"], rig.view["nozzle_target_temper"]) == (180.0, 180.0)
    assert right["snow"] == 0 << 8 | 0  # AMS 0 slot 0 feeds the active nozzle
    assert left["snow"] == 0xFFFF
    assert [slot["id"] for slot in rig.view["vir_slot"]] == ["254", "255"]
    assert "vt_tray" not in rig.view
    assert device["nozzle"]["exist"] == 0b11


def test_older_families_have_no_device_block() -> None:
    for model in ("BL-P001", "C12", "N1"):
        truth = Rig(model).truth
        assert "device" not in truth
        assert truth["vt_tray"]["id"] == "254"


def test_wire_types_and_encodings() -> None:
    truth = Rig("C12").truth
    assert truth["net"]["info"][0]["ip"] == 0x0100007F  # 127.0.0.1, little-endian
    assert truth["wifi_signal"].endswith("dBm") and truth["wifi_signal"].startswith("-")
    for fan in ("cooling_fan_speed", "big_fan1_speed", "big_fan2_speed", "heatbreak_fan_speed"):
        assert truth[fan] in {str(n) for n in range(16)}
    assert isinstance(truth["nozzle_temper"], float)
    ams = truth["ams"]
    assert ams["ams_exist_bits"] == "1"
    assert int(ams["tray_exist_bits"], 16) == 0xF
    for tray in ams["ams"][0]["tray"]:
        assert len(tray["tray_color"]) == 8
        assert tray["cols"] == [tray["tray_color"]]
        assert tray["remain"] == -1 or 0 <= tray["remain"] <= 100
    ht = Rig("O1D").truth["ams"]["ams"][1]
    assert (ht["id"], len(ht["tray"])) == ("128", 1)


def test_same_seed_same_stream_and_other_seeds_differ() -> None:
    def stream(seed: int) -> list[Any]:
        rig = Rig("N2S", seed=seed)
        out: list[Any] = [rig.printer.full_report()]
        rig.start()
        out += rig.run(900, 7)
        rig.printer.runout(0, 0)
        out += rig.run(30, 3)
        out.append(rig.send("print", "resume", param=""))
        out += rig.run(300, 11)
        return out

    assert json.dumps(stream(4)) == json.dumps(stream(4))
    assert json.dumps(stream(4)) != json.dumps(stream(5))


def test_same_seed_and_serial_give_the_same_default_ams() -> None:
    def ams(serial: str, seed: int) -> Any:
        return SimPrinter(serial, "C12", clock=Clock(), seed=seed).truth()["ams"]

    serial = SERIALS["C12"]
    assert ams(serial, 1) == ams(serial, 1)
    assert ams(serial, 1) != ams(serial, 2)
    assert ams(serial, 1) != ams("01P09A350199999", 1)


def test_returned_messages_are_private_copies() -> None:
    rig = Rig("C12")
    report = rig.printer.full_report()
    report["print"]["ams"]["ams"][0]["tray"][0]["remain"] = 0
    report["print"]["hms"].append({"attr": 1, "code": 1})
    assert rig.run(6)
    assert rig.view == rig.truth
    assert rig.view["hms"] == []
