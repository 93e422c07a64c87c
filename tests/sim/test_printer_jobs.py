"""Jobs, heating, filament and faults on the simulated printer, with a fast clock."""

from __future__ import annotations

import math

import pytest

from bambulab.sim import SimConfig, World
from bambulab.sim.printer import SimPrinter
from tests.sim.printer_helpers import Clock, Rig

RUNOUT_CODE = 0x00020001


def _stages_seen(rig: Rig, until: str = "FINISH", step: float = 5.0) -> list[int]:
    seen: list[int] = []
    while rig.view["gcode_state"] != until:
        if not seen or seen[-1] != rig.view["stg_cur"]:
            seen.append(rig.view["stg_cur"])
        rig.run(step, step)
        assert rig.printer.sim_time < 20_000
    return seen


def test_job_lifecycle_from_prepare_to_finish() -> None:
    rig = Rig("C12")
    assert (rig.view["gcode_state"], rig.view["print_type"], rig.view["stg_cur"]) == (
        "IDLE",
        "idle",
        -1,
    )
    rig.start("Calibration Cube.3mf", use_ams=True, ams_mapping=[1])
    assert rig.view["gcode_state"] == "PREPARE"
    assert rig.view["mc_print_stage"] == "2"
    assert rig.view["total_layer_num"] == 100
    assert rig.view["mc_remaining_time"] == 25
    assert _stages_seen(rig, "RUNNING") == [13, 2, 1, 7, 4]
    assert rig.view["ams"]["tray_now"] == "1"
    assert rig.view["nozzle_temper"] >= 219.5  # PLA in tray 1
    layers, percents, remaining = [], [], []
    while rig.view["gcode_state"] == "RUNNING":
        layers.append(rig.view["layer_num"])
        percents.append(rig.view["mc_percent"])
        remaining.append(rig.view["mc_remaining_time"])
        rig.run(60, 30)
    assert layers == sorted(layers) and layers[-1] < 100
    assert percents == sorted(percents) and percents[-1] < 100
    assert remaining == sorted(remaining, reverse=True)
    assert 20 <= len(layers) <= 30  # 25 minutes at one sample a minute
    view = rig.view
    assert (view["gcode_state"], view["mc_percent"], view["mc_remaining_time"]) == (
        "FINISH",
        100,
        0,
    )
    assert view["layer_num"] == view["total_layer_num"] == 100
    assert view["stg_cur"] == -1
    assert view["mc_print_stage"] == "1"
    assert (view["nozzle_target_temper"], view["bed_target_temper"]) == (0, 0)
    assert view["cooling_fan_speed"] == "0"


def test_x1_idle_stage_is_255_and_stages_skip_what_is_not_needed() -> None:
    rig = Rig("BL-P001")
    assert rig.view["stg_cur"] == 255
    rig.start(bed_levelling=False, bed_leveling=False, flow_cali=True, vibration_cali=True)
    assert rig.view["stg"] == [13, 3, 2, 7, 8]  # tray 0 is already loaded: no change
    # The bed reached its target during the 90 s sweep, so stage 2 ends at once.
    assert _stages_seen(rig, "RUNNING") == [13, 3, 7, 8]


def test_speed_level_changes_the_remaining_time() -> None:
    rig = Rig("C12")
    rig.start("Articulated Dragon.3mf")
    rig.run_until(lambda t: t["gcode_state"] == "RUNNING")
    rig.run(600, 60)
    standard = rig.view["mc_remaining_time"]
    assert 155 <= standard <= 161
    rig.ok("print", "print_speed", param="4")
    assert rig.view["mc_remaining_time"] == math.ceil(standard * 100 / 166) or (
        abs(rig.view["mc_remaining_time"] - standard * 100 / 166) <= 1
    )
    rig.ok("print", "print_speed", param="1")
    assert abs(rig.view["mc_remaining_time"] - standard * 2) <= 1
    # Silent mode really is slower: ten minutes print five minutes of work.
    before = rig.view["mc_remaining_time"]
    rig.run(600, 60)
    assert abs((before - rig.view["mc_remaining_time"]) - 10) <= 1


def test_heating_converges_exactly_and_cooling_returns_to_room() -> None:
    rig = Rig("C12")
    room = rig.view["nozzle_temper"]
    rig.ok("print", "gcode_line", param="M104 S220\nM140 S60\n")
    rig.run(30)
    assert 100 < rig.view["nozzle_temper"] < 220  # ~3 °C/s
    assert 45 < rig.view["bed_temper"] < 60  # ~1 °C/s
    rig.run(60)
    assert rig.view["nozzle_temper"] == 220.0
    assert rig.view["bed_temper"] == 60.0
    rig.run(120)
    assert (rig.view["nozzle_temper"], rig.view["bed_temper"]) == (220.0, 60.0)  # no noise
    rig.ok("print", "gcode_line", param="M104 S0\nM140 S0\n")
    rig.run(60)
    assert 50 < rig.view["nozzle_temper"] < 220
    rig.run(6000, 30)
    assert rig.view["nozzle_temper"] == rig.view["bed_temper"] == room
    # Quiet now: only keep-alive deltas with the Wi-Fi signal remain.
    for report in rig.run(60):
        assert set(report["print"]) <= {"wifi_signal", "command", "msg", "sequence_id"}


def test_enclosure_warms_with_the_bed_but_open_frames_do_not() -> None:
    for model, warms in (("C12", True), ("N2S", False)):
        rig = Rig(model)
        room = rig.printer.state.chamber.current
        rig.ok("print", "gcode_line", param="M140 S100\n")
        rig.run(3600, 60)
        assert (rig.printer.state.chamber.current > room + 10) is warms
        # Neither has a chamber sensor: the report carries the placeholder 5.
        assert rig.view["chamber_temper"] == 5
    rig = Rig("BL-P001")
    room = rig.view["chamber_temper"]
    rig.ok("print", "gcode_line", param="M140 S100\n")
    rig.run(3600, 60)
    assert rig.view["chamber_temper"] > room + 10


def test_active_tray_loses_filament_while_printing() -> None:
    rig = Rig("C12")
    trays = rig.view["ams"]["ams"][0]["tray"]
    before = [t["remain"] for t in trays]
    rig.start("Articulated Dragon.3mf", use_ams=True, ams_mapping=[0])
    rig.run_until(lambda t: t["gcode_state"] == "FINISH", step=120)
    after = [t["remain"] for t in rig.view["ams"]["ams"][0]["tray"]]
    # 96 g of a 1 kg spool: 9-10 % gone from tray 0, nothing from the others.
    assert 9 <= before[0] - after[0] <= 10
    assert after[1:] == before[1:]
    assert rig.printer.state.ams.consumed[0] == pytest.approx(96.0)


def test_runout_when_the_spool_empties_then_resume_with_ams_control() -> None:
    rig = Rig("C12")
    spool = rig.printer.state.ams.units[0].trays[2]
    spool.remain = 1.0  # 10 g left
    rig.start("Articulated Dragon.3mf", use_ams=True, ams_mapping=[2])
    rig.run_until(lambda t: t["gcode_state"] == "PAUSE", step=30)
    view = rig.view
    assert view["stg_cur"] == 6
    assert view["print_error"] == 0x07008011
    assert {"attr": 0x07002000 + (2 << 8), "code": RUNOUT_CODE} in view["hms"]
    assert view["ams"]["ams"][0]["tray"][2]["remain"] == 0
    layer = view["layer_num"]
    rig.run(600, 60)
    assert rig.view["layer_num"] == layer
    rig.ok("print", "ams_control", param="resume")
    view = rig.view
    assert (view["gcode_state"], view["stg_cur"], view["print_error"]) == ("RUNNING", 0, 0)
    assert view["hms"] == []
    assert view["ams"]["ams"][0]["tray"][2]["remain"] == 100  # a fresh spool went in
    rig.run_until(lambda t: t["gcode_state"] == "FINISH", step=300)


def test_runout_hook_pauses_a_job_and_print_resume_continues() -> None:
    rig = Rig("N2S")
    rig.start()
    rig.run_until(lambda t: t["gcode_state"] == "RUNNING")
    rig.printer.runout(0, 1)
    rig.receive(rig.printer.tick())
    assert (rig.view["gcode_state"], rig.view["stg_cur"]) == ("PAUSE", 6)
    assert {"attr": 0x07002100, "code": RUNOUT_CODE} in rig.view["hms"]
    rig.ok("print", "resume", param="")
    assert rig.view["gcode_state"] == "RUNNING"
    assert rig.view["hms"] == []


def test_runout_while_idle_only_raises_hms() -> None:
    rig = Rig("C12")
    rig.printer.runout(0, 3)
    rig.run(1)
    assert rig.view["gcode_state"] == "IDLE"
    assert rig.view["hms"] == [{"attr": 0x07002300, "code": RUNOUT_CODE}]


def test_inject_and_clear_hms() -> None:
    rig = Rig("C12")
    rig.printer.inject_hms(0x0C000300, 0x00020001)
    rig.printer.inject_hms(0x03001000, 0x00020001)
    rig.printer.inject_hms(0x0C000300, 0x00020001)  # same entry twice: listed once
    rig.run(1)
    assert rig.view["hms"] == [
        {"attr": 0x0C000300, "code": 0x00020001},
        {"attr": 0x03001000, "code": 0x00020001},
    ]
    rig.printer.clear_hms()
    reports = rig.run(1)
    assert reports[0]["print"]["hms"] == []
    assert rig.view["hms"] == []


def test_start_job_hook_and_joining_mid_print() -> None:
    rig = Rig("BL-P001")
    rig.printer.start_job("Widget", "/sdcard/Widget.3mf", layers=50, minutes=10, progress=0.5)
    rig.run(1)
    view = rig.view
    assert (view["gcode_state"], view["stg_cur"], view["subtask_name"]) == ("RUNNING", 0, "Widget")
    assert view["layer_num"] == 26  # half of 50 layers done: the 26th is printing
    assert view["mc_percent"] == 50
    assert view["nozzle_temper"] == 220.0
    with pytest.raises(RuntimeError):
        rig.printer.start_job()
    rig.run_until(lambda t: t["gcode_state"] == "FINISH")


def test_printers_from_the_cloud_world_match_its_records() -> None:
    world = World(SimConfig())
    for device in world.devices.values():
        printer = SimPrinter.from_device(device, clock=lambda: 1_750_000_000.0)
        truth = printer.truth()
        assert printer.serial == device.dev_id
        assert printer.name == device.name
        assert printer.access_code == device.access_code
        assert printer.model_code == device.model.model_name
        assert printer.online is device.online
        units = truth["ams"]["ams"]
        assert [u["id"] for u in units] == [str(u.id) for u in device.ams]
        for unit, record in zip(units, device.ams, strict=True):
            # An AMS Lite has no humidity sensor: "0" whatever the record holds.
            lite = record.kind == "ams_f1"
            assert unit["humidity"] == ("0" if lite else str(record.humidity))
            assert unit["humidity_raw"] == str(record.humidity_raw)
            for tray, expected in zip(unit["tray"], record.trays, strict=True):
                if not expected.tray_type:  # an empty slot: only its id (and state 0)
                    assert set(tray) <= {"id", "state"} and tray.get("state", 0) == 0
                    continue
                assert tray["tray_type"] == expected.tray_type
                assert tray["tray_color"] == expected.colour
                assert tray["remain"] == expected.remain
                assert tray["tag_uid"] == expected.tag_uid
        modules = (
            {
                m["name"]: m
                for m in printer.handle_request(
                    b'{"info": {"command": "get_version", "sequence_id": "1"}}'
                )[0]["info"]["module"]
            }
            if printer.online
            else {}
        )
        for module in device.firmware if printer.online else []:
            assert modules[module.name]["sw_ver"] == module.sw_ver
            assert modules[module.name]["sn"] == module.sn
        if device.state == "RUNNING" and device.active is not None:
            assert truth["gcode_state"] == "RUNNING"
            assert truth["subtask_name"] == device.active.title
            assert abs(truth["mc_percent"] - device.active.progress) <= 1
            assert abs(truth["mc_remaining_time"] - device.active.prediction / 60) <= 1
        else:
            assert truth["gcode_state"] == device.state


def test_time_scale_speeds_the_simulation_up() -> None:
    clock = Clock()
    printer = SimPrinter("01P09A350100001", "C12", clock=clock, time_scale=60.0)
    printer.start_job(minutes=10)
    for _ in range(20):  # 20 real seconds = 20 simulated minutes
        clock.now += 1
        printer.tick()
    assert printer.sim_time == pytest.approx(1200)
    assert printer.truth()["gcode_state"] == "FINISH"
