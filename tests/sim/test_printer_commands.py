"""Every command of PROTOCOL.md §2.4 against the simulated printer.

Each test sends a command the way a client would (JSON bytes on the request
topic) and checks the reply and the effect in the client's merged view of
the following reports, never in the simulator's internals.
"""

from __future__ import annotations

import base64
import json

import pytest

from bambulab.sim.printer import ERR_VERIFY_FAILED, SimPrinter
from bambulab.sim.threemf_writer import threemf_bytes
from tests.sim.printer_helpers import SERIALS, Clock, Rig

LED = {"led_on_time": 500, "led_off_time": 500, "loop_times": 0, "interval_time": 0}


# --- print control ------------------------------------------------------------------


def test_stop_cancels_and_stays_failed_until_the_next_job() -> None:
    rig = Rig()
    assert "no print" in rig.refused("print", "stop", param="")
    rig.start()
    rig.run(30)
    rig.ok("print", "stop", param="")
    assert rig.view["gcode_state"] == "FAILED"
    assert rig.view["print_error"] == 0x0300400C
    assert rig.view["nozzle_target_temper"] == 0
    assert rig.view["bed_target_temper"] == 0
    rig.run(600, 30)
    assert rig.view["gcode_state"] == "FAILED"
    rig.start()
    assert rig.view["gcode_state"] == "PREPARE"
    assert rig.view["print_error"] == 0


def test_pause_and_resume() -> None:
    rig = Rig()
    assert rig.refused("print", "pause", param="")
    assert rig.refused("print", "resume", param="")
    rig.start()
    rig.run_until(lambda t: t["gcode_state"] == "RUNNING")
    rig.ok("print", "pause", param="")
    assert (rig.view["gcode_state"], rig.view["stg_cur"]) == ("PAUSE", 16)
    assert "already paused" in rig.refused("print", "pause", param="")
    layer = rig.view["layer_num"]
    rig.run(300, 30)
    assert rig.view["layer_num"] == layer  # nothing prints while paused
    rig.ok("print", "resume", param="")
    assert (rig.view["gcode_state"], rig.view["stg_cur"]) == ("RUNNING", 0)


def test_pause_during_prepare_resumes_into_the_same_stage() -> None:
    rig = Rig()
    rig.start()
    rig.run(20)
    stage = rig.view["stg_cur"]
    assert rig.view["gcode_state"] == "PREPARE"
    rig.ok("print", "pause", param="")
    rig.ok("print", "resume", param="")
    assert (rig.view["gcode_state"], rig.view["stg_cur"]) == ("PREPARE", stage)


def test_project_file_echoes_ids_and_names() -> None:
    rig = Rig()
    rig.ok(
        "print",
        "project_file",
        param="Metadata/plate_2.gcode",
        url="https://s3.example.com/upload/Dragon.3mf?sig=abc",
        file="Dragon.3mf",
        md5="0123456789abcdef0123456789abcdef",
        project_id="60000001",
        profile_id="51234",
        task_id="51234001",
        subtask_id="51234002",
        subtask_name="Dragon for Sam",
        use_ams=True,
        ams_mapping=[0, -1],
        bed_levelling=False,
        bed_leveling=False,
    )
    view = rig.view
    assert view["print_type"] == "cloud"
    assert (view["project_id"], view["profile_id"]) == ("60000001", "51234")
    assert (view["task_id"], view["subtask_id"]) == ("51234001", "51234002")
    assert view["subtask_name"] == "Dragon for Sam"
    assert view["gcode_file"] == "Dragon.3mf"
    assert 1 not in view["stg"]  # no bed levelling asked for
    assert view["gcode_file_prepare_percent"] == "0"  # a cloud file downloads first
    rig.run(12)
    assert rig.view["gcode_file_prepare_percent"] == "100"


@pytest.mark.parametrize(
    ("model", "url", "reason"),
    [
        ("C12", "file:///sdcard/Nope.3mf", "not found"),
        ("C12", "ftp:///Benchy.3mf", "file:///"),
        ("O1D", "file:///sdcard/Benchy.3mf", "ftp:///"),
        ("C12", "gopher://x/Benchy.3mf", "unsupported"),
        ("C12", "", "unsupported"),
    ],
)
def test_project_file_refusals(model: str, url: str, reason: str) -> None:
    rig = Rig(model)
    got = rig.refused("print", "project_file", param="Metadata/plate_1.gcode", url=url)
    assert reason in got
    assert rig.view["gcode_state"] == "IDLE"


def test_project_file_from_the_sd_card_and_uploaded_files() -> None:
    rig = Rig("O1D")
    rig.start("Benchy.3mf")
    assert rig.view["print_type"] == "local"
    rig.ok("print", "stop", param="")
    # An empty upload is no 3MF: refused with a print error, the printer stays idle.
    rig.printer.card.write("uploads/part.3mf", b"")
    assert "not a 3MF" in rig.refused(
        "print", "project_file", param="Metadata/plate_1.gcode", url="ftp:///uploads/part.3mf"
    )
    assert rig.view["print_error"] != 0 and rig.view["gcode_state"] != "PREPARE"
    rig.printer.card.write("uploads/part.3mf", threemf_bytes(name="part"))
    rig.start("uploads/part.3mf")
    assert rig.view["gcode_file"] == "uploads/part.3mf"
    assert "busy" in rig.refused(
        "print", "project_file", param="Metadata/plate_1.gcode", url="ftp:///Benchy.3mf"
    )


def test_project_file_checks_the_ams_mapping() -> None:
    rig = Rig()
    rig.ok(
        "print",
        "ams_filament_setting",
        ams_id=0,
        tray_id=3,
        tray_info_idx="",
        tray_color="00000000",
        nozzle_temp_min=0,
        nozzle_temp_max=0,
        tray_type="",
    )
    reason = rig.refused(
        "print",
        "project_file",
        param="Metadata/plate_1.gcode",
        url="file:///sdcard/Benchy.3mf",
        use_ams=True,
        ams_mapping=[3],
    )
    assert "tray 3" in reason
    rig.start(use_ams=True, ams_mapping=[2])
    rig.run_until(lambda t: t["gcode_state"] == "RUNNING")
    assert rig.view["ams"]["tray_now"] == "2"
    assert 4 in rig.view["stg"]  # changing filament was part of the plan


def test_gcode_file() -> None:
    rig = Rig()
    assert rig.refused("print", "gcode_file", param="/sdcard/missing.gcode")
    rig.ok("print", "gcode_file", param="/sdcard/Spiral Vase.gcode")
    assert rig.view["gcode_state"] == "PREPARE"
    assert rig.view["gcode_file"] == "Spiral Vase.gcode"
    assert rig.view["total_layer_num"] == 520


def test_gcode_line_temperatures_and_fans() -> None:
    rig = Rig("C13")  # X1E: has a chamber heater
    reply = rig.ok(
        "print",
        "gcode_line",
        param="M104 S215\nM140 S60 ; bed\nM141 S40\nM106 P1 S255\nM106 P2 S128\n"
        "M106 P3 S51\nG28\nM900 K0.02\n",
    )
    assert reply["result"] == "SUCCESS"  # firmware answers gcode_line in capitals
    view = rig.view
    assert (view["nozzle_target_temper"], view["bed_target_temper"]) == (215, 60)
    assert view["cooling_fan_speed"] == "15"
    assert view["big_fan1_speed"] == "8"
    assert view["big_fan2_speed"] == "3"
    rig.run(300, 10)
    assert rig.view["chamber_temper"] > 30  # the heater is working on 40 °C
    rig.ok("print", "gcode_line", param="M107\nM106 P2 S0\n")
    assert (rig.view["cooling_fan_speed"], rig.view["big_fan1_speed"]) == ("0", "0")
    rig.ok("print", "gcode_line", param="M104 S999\n")
    assert rig.view["nozzle_target_temper"] == 300  # clamped like the firmware does
    rig.ok("print", "gcode_line", param="m140s45\nM104 Sx\n;M104 S1\n")
    assert (rig.view["bed_target_temper"], rig.view["nozzle_target_temper"]) == (45, 300)


def test_chamber_target_ignored_without_a_heater() -> None:
    rig = Rig("C12")
    rig.ok("print", "gcode_line", param="M141 S45\n")
    rig.run(600, 30)
    assert rig.view["chamber_temper"] < 30
    assert "no chamber heater" in rig.refused("print", "set_ctt", ctt_val=45)


def test_newer_temperature_commands() -> None:
    rig = Rig("O1D")
    rig.ok("print", "set_bed_temp", temp=65)
    rig.ok("print", "set_nozzle_temp", extruder_index=1, target_temp=200)
    rig.ok("print", "set_ctt", ctt_val=45)
    device = rig.view["device"]
    assert device["bed"]["info"]["temp"] >> 16 == 65
    assert device["extruder"]["info"][1]["temp"] >> 16 == 200
    assert device["extruder"]["info"][0]["temp"] >> 16 == 0
    assert device["ctc"]["info"]["temp"] >> 16 == 45
    assert rig.refused("print", "set_nozzle_temp", extruder_index=2, target_temp=200)
    rig.ok("print", "set_airduct", modeId=1)
    assert rig.view["device"]["airduct"]["modeCur"] == 1
    assert "air duct" in Rig("C12").refused("print", "set_airduct", modeId=1)


def test_print_speed_levels() -> None:
    rig = Rig()
    assert "no print" in rig.refused("print", "print_speed", param="3")
    rig.start()
    for level, percent in ((1, 50), (3, 124), (4, 166), (2, 100)):
        rig.ok("print", "print_speed", param=str(level))
        assert (rig.view["spd_lvl"], rig.view["spd_mag"]) == (level, percent)
    assert rig.refused("print", "print_speed", param="5")
    assert rig.refused("print", "print_speed", param="fast")


def test_skip_objects() -> None:
    rig = Rig()
    assert rig.refused("print", "skip_objects", obj_list=[1])
    rig.start()
    rig.ok("print", "skip_objects", obj_list=[412, 398])
    rig.ok("print", "skip_objects", obj_list=[398, 77])
    assert rig.view["s_obj"] == [412, 398, 77]
    assert rig.refused("print", "skip_objects", obj_list=list(range(100, 170)))
    assert rig.refused("print", "skip_objects", obj_list="1,2")


def test_print_option_flags_show_in_home_flag() -> None:
    # Prompt sound (bits 17 on / 18 supported) only where there is a speaker (A1).
    assert not Rig().view["home_flag"] & (1 << 17 | 1 << 18)
    rig = Rig("N2S")
    assert rig.view["home_flag"] & 1 << 17
    assert rig.view["home_flag"] & 1 << 18
    rig.ok("print", "print_option", sound_enable=False)
    assert not rig.view["home_flag"] & 1 << 17
    rig.ok("print", "print_option", auto_switch_filament=False)
    assert not rig.view["home_flag"] & 1 << 10
    assert rig.refused("print", "print_option", warp_drive=True)


def test_calibration_runs_as_a_system_job() -> None:
    rig = Rig("BL-P001")
    assert rig.refused("print", "calibration", option=0)
    rig.ok("print", "calibration", option=0b0011)
    assert rig.view["print_type"] == "system"
    assert rig.view["stg"] == [13, 12, 1]
    assert rig.view["gcode_state"] == "RUNNING"
    seen = set()
    while rig.view["gcode_state"] == "RUNNING":
        seen.add(rig.view["stg_cur"])
        rig.run(5, 5)
    assert seen == {13, 12, 1}
    assert rig.view["gcode_state"] == "FINISH"
    assert "auto_cali_for_user" in rig.view["gcode_file"]


# --- AMS ------------------------------------------------------------------------------


def test_load_and_unload_filament() -> None:
    rig = Rig()
    ams = rig.view["ams"]
    assert ams["tray_now"] == "0"
    rig.ok(
        "print", "ams_change_filament", target=2, curr_temp=220, tar_temp=220, ams_id=0, slot_id=2
    )
    assert rig.view["ams"]["tray_tar"] == "2"
    assert rig.view["stg_cur"] == 24  # loading
    rig.run(30, 5)
    assert (rig.view["ams"]["tray_now"], rig.view["ams"]["tray_pre"]) == ("2", "0")
    rig.ok(
        "print",
        "ams_change_filament",
        target=255,
        curr_temp=220,
        tar_temp=220,
        ams_id=255,
        slot_id=255,
    )
    rig.run(30, 5)
    assert rig.view["ams"]["tray_now"] == "255"
    assert rig.view["hw_switch_state"] == 0
    assert "no tray" in rig.refused("print", "ams_change_filament", target=9)


def test_ams_ht_load_uses_the_unit_id() -> None:
    rig = Rig("O1D")
    rig.ok(
        "print",
        "ams_change_filament",
        target=128,
        curr_temp=220,
        tar_temp=250,
        ams_id=128,
        slot_id=0,
    )
    rig.run(30, 5)
    # A dual-nozzle printer puts only the slot in tray_now; the unit is in snow.
    assert rig.view["ams"]["tray_now"] == "0"
    assert rig.view["device"]["extruder"]["info"][0]["snow"] == 128 << 8


def test_cannot_change_filament_while_printing() -> None:
    rig = Rig()
    rig.start()
    assert "busy" in rig.refused("print", "ams_change_filament", target=1)
    assert "busy" in rig.refused("print", "unload_filament")


def test_unload_filament() -> None:
    rig = Rig("N1")
    rig.ok("print", "unload_filament")
    rig.run(30, 5)
    assert rig.view["ams"]["tray_now"] == "255"


def test_ams_filament_setting() -> None:
    rig = Rig()
    rig.ok(
        "print",
        "ams_filament_setting",
        ams_id=0,
        tray_id=3,
        tray_info_idx="GFG02",
        tray_color="FF6A13",
        nozzle_temp_min=230,
        nozzle_temp_max=260,
        tray_type="PETG",
    )
    tray = rig.view["ams"]["ams"][0]["tray"][3]
    assert (tray["tray_type"], tray["tray_color"]) == ("PETG", "FF6A13FF")
    assert (tray["nozzle_temp_min"], tray["nozzle_temp_max"]) == ("230", "260")
    assert tray["tray_sub_brands"] == "PETG HF"
    rig.ok(
        "print",
        "ams_filament_setting",
        ams_id=255,
        tray_id=254,
        tray_info_idx="GFB00",
        tray_color="000000FF",
        nozzle_temp_min=240,
        nozzle_temp_max=270,
        tray_type="ABS",
    )
    assert rig.view["vt_tray"]["tray_type"] == "ABS"
    assert rig.refused(
        "print",
        "ams_filament_setting",
        ams_id=3,
        tray_id=0,
        tray_type="PLA",
        tray_color="FFFFFFFF",
        nozzle_temp_min=190,
        nozzle_temp_max=230,
    )
    assert rig.refused(
        "print",
        "ams_filament_setting",
        ams_id=0,
        tray_id=0,
        tray_type="PLA",
        tray_color="blue",
        nozzle_temp_min=190,
        nozzle_temp_max=230,
    )


def test_ams_filament_setting_on_an_h2d_external_spool() -> None:
    rig = Rig("O1D")
    rig.ok(
        "print",
        "ams_filament_setting",
        ams_id=255,
        tray_id=255,
        tray_info_idx="GFA00",
        tray_color="FFFFFFFF",
        nozzle_temp_min=190,
        nozzle_temp_max=230,
        tray_type="PLA",
    )
    slots = {slot["id"]: slot for slot in rig.view["vir_slot"]}
    assert slots["255"]["tray_type"] == "PLA"
    assert slots["254"]["tray_type"] == ""


def test_ams_user_setting_get_rfid_and_control() -> None:
    rig = Rig()
    rig.ok(
        "print",
        "ams_user_setting",
        ams_id=-1,
        startup_read_option=True,
        tray_read_option=False,
        calibrate_remain_flag=False,
    )
    ams = rig.view["ams"]
    assert (ams["power_on_flag"], ams["insert_flag"]) == (True, False)
    assert not rig.view["home_flag"] & 1 << 7
    assert rig.refused("print", "ams_user_setting", ams_id=2, tray_read_option=True)
    rig.ok("print", "ams_get_rfid", ams_id=0, slot_id=1)
    assert rig.refused("print", "ams_get_rfid", ams_id=0, slot_id=7)
    for param in ("pause", "done"):
        rig.ok("print", "ams_control", param=param)
    # reset and abort cancel a filament change under way: the target falls back.
    for param in ("reset", "abort"):
        assert rig.view["ams"]["tray_now"] == "0"
        rig.ok("print", "ams_change_filament", target=2, curr_temp=220, tar_temp=220)
        assert rig.view["ams"]["tray_tar"] == "2"
        rig.ok("print", "ams_control", param=param)
        assert rig.view["ams"]["tray_tar"] == "0", param
        rig.run(30, 5)
        assert rig.view["ams"]["tray_now"] == "0", f"{param}: the change never finished"
    assert rig.refused("print", "ams_control", param="explode")
    assert "no AMS" in Rig(ams=[]).refused("print", "ams_control", param="resume")


# --- system, camera, xcam, info, upgrade --------------------------------------------------


def test_ledctrl() -> None:
    rig = Rig("BL-P001")
    rig.ok("system", "ledctrl", led_node="chamber_light", led_mode="off", **LED)
    rig.ok("system", "ledctrl", led_node="work_light", led_mode="flashing", **LED)
    lights = {light["node"]: light["mode"] for light in rig.view["lights_report"]}
    assert lights == {"chamber_light": "off", "work_light": "flashing"}
    assert rig.refused("system", "ledctrl", led_node="chamber_light", led_mode="on")  # no timings
    assert rig.refused("system", "ledctrl", led_node="chamber_light", led_mode="disco", **LED)
    p1 = Rig("C12")
    assert "work_light" in p1.refused(
        "system", "ledctrl", led_node="work_light", led_mode="on", **LED
    )
    h2 = Rig("O1D")
    h2.ok("system", "ledctrl", led_node="chamber_light2", led_mode="off", **LED)
    assert {"node": "chamber_light2", "mode": "off"} in h2.view["lights_report"]


def test_get_access_code() -> None:
    rig = Rig(access_code="87654321")
    out = rig.raw(b'{"system": {"command": "get_access_code", "sequence_id": "77"}}')
    assert out == [
        {
            "system": {
                "command": "get_access_code",
                "sequence_id": "77",
                "access_code": "87654321",
                "result": "success",
                "reason": "success",
            }
        }
    ]


def test_set_accessories() -> None:
    rig = Rig()
    rig.ok(
        "system",
        "set_accessories",
        accessory_type="nozzle",
        nozzle_diameter=0.6,
        nozzle_type="hardened_steel",
    )
    assert (rig.view["nozzle_diameter"], rig.view["nozzle_type"]) == ("0.6", "hardened_steel")
    assert rig.refused(
        "system",
        "set_accessories",
        accessory_type="nozzle",
        nozzle_diameter=0.5,
        nozzle_type="stainless_steel",
    )
    rig.start()
    assert "printing" in rig.refused(
        "system",
        "set_accessories",
        accessory_type="nozzle",
        nozzle_diameter=0.4,
        nozzle_type="stainless_steel",
    )


def test_camera_switches() -> None:
    rig = Rig("BL-P001")
    assert rig.view["ipcam"]["rtsp_url"] == "rtsps://127.0.0.1:322/streaming/live/1"
    rig.ok("camera", "ipcam_record_set", control="disable")
    rig.ok("camera", "ipcam_timelapse", control="enable")
    assert (rig.view["ipcam"]["ipcam_record"], rig.view["ipcam"]["timelapse"]) == (
        "disable",
        "enable",
    )
    assert not rig.view["home_flag"] & 1 << 5
    assert rig.refused("camera", "ipcam_timelapse", control="maybe")
    assert Rig("C12").view["ipcam"]["rtsp_url"] == "disable"
    assert Rig("O1D").view["ipcam"]["rtsp_url"] == "disable"


def test_xcam_control() -> None:
    rig = Rig("BL-P001")
    reply = rig.ok(
        "xcam",
        "xcam_control_set",
        module_name="spaghetti_detector",
        control=False,
        print_halt=False,
        halt_print_sensitivity="high",
    )
    assert reply["module_name"] == "spaghetti_detector"
    xcam = rig.view["xcam"]
    assert (xcam["spaghetti_detector"], xcam["print_halt"]) == (False, False)
    assert xcam["halt_print_sensitivity"] == "high"
    assert rig.refused("xcam", "xcam_control_set", module_name="clump_detector", control=True)


PRODUCT_NAMES = {"BL-P001": "Bambu Lab X1-Carbon", "N2S": "Bambu Lab A1", "O1D": "Bambu Lab H2D"}


@pytest.mark.parametrize(
    ("model", "ams_modules"),
    [("BL-P001", ["ams/0"]), ("N2S", ["ams_f1/0"]), ("O1D", ["n3f/0", "n3s/128"])],
)
def test_get_version(model: str, ams_modules: list[str]) -> None:
    rig = Rig(model)
    reply = rig.ok("info", "get_version")
    modules = {m["name"]: m for m in reply["module"]}
    ota = modules["ota"]
    assert ota["sn"] == SERIALS[model]
    # Current firmware names the product with Bambu's prefix and spelling.
    assert ota["product_name"] == PRODUCT_NAMES[model]
    assert ota["project_name"] == model
    assert ota["sw_ver"] == rig.printer.profile.model.firmware
    assert {"mc", "th"} <= modules.keys()
    assert [name for name in modules if "/" in name] == ams_modules
    for module in reply["module"]:
        assert {"name", "sw_ver", "hw_ver", "sn"} <= module.keys()


def test_firmware_upgrade() -> None:
    rig = Rig("C12")
    rig.ok("upgrade", "get_history")
    rig.ok("upgrade", "upgrade_confirm", src_id=1)
    rig.ok(
        "upgrade",
        "start",
        url="https://fw.example.com/p1s.bin",
        module="ota",
        version="01.09.00.00",
        src_id=1,
    )
    assert rig.view["upgrade_state"]["status"] == "DOWNLOADING"
    assert rig.refused("upgrade", "start", url="x", module="ota", version="01.09.00.01")
    rig.run(40, 10)
    assert rig.view["upgrade_state"]["status"] == "FLASHING"
    rig.run(30, 10)
    assert rig.view["upgrade_state"]["status"] == "UPGRADE_SUCCESS"
    modules = {m["name"]: m["sw_ver"] for m in rig.ok("info", "get_version")["module"]}
    assert modules["ota"] == modules["mc"] == "01.09.00.00"


def test_outdated_firmware_offers_the_latest() -> None:
    clock = Clock()
    from bambulab.sim.records import FirmwareModule

    printer = SimPrinter(
        SERIALS["C12"],
        "C12",
        clock=clock,
        firmware=[FirmwareModule("ota", "01.07.00.00", "OTA", SERIALS["C12"])],
    )
    state = printer.truth()["upgrade_state"]
    assert state["new_version_state"] == 1
    assert state["new_ver_list"] == [
        {"name": "ota", "cur_ver": "01.07.00.00", "new_ver": "01.08.00.00"}
    ]


# --- pushing ---------------------------------------------------------------------------


def test_pushall_answers_with_a_full_report() -> None:
    rig = Rig("C12")
    out = rig.raw(
        b'{"pushing": {"command": "pushall", "sequence_id": "9", "version": 1, "push_target": 1}}'
    )
    assert len(out) == 1
    body = out[0]["print"]
    assert (body["command"], body["msg"]) == ("push_status", 0)
    assert {k: v for k, v in body.items() if k not in ("command", "msg", "sequence_id")} == (
        rig.truth
    )


def test_pushing_stop_and_start() -> None:
    rig = Rig("BL-P001")
    rig.ok("pushing", "stop")
    assert rig.run(10) == []
    reply = rig.send("print", "gcode_line", param="M140 S50\n")
    assert reply["result"] == "SUCCESS"
    assert (
        len(
            rig.printer.handle_request(
                b'{"print":{"command":"gcode_line","sequence_id":"1","param":"M140 S40"}}'
            )
        )
        == 1
    )
    rig.ok("pushing", "start")
    assert len(rig.run(3)) == 3


# --- robustness -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"42",
        b'{"print": "pause"}',
        b'{"print": {"sequence_id": "1"}}',
        b'{"print": {"command": 5, "sequence_id": "1"}}',
        b"{}",
        b'{"print": {"command": "pause", "sequence_id": "1"}',
    ],
)
def test_malformed_requests_are_ignored(payload: bytes) -> None:
    rig = Rig()
    before = rig.truth
    assert rig.printer.handle_request(payload) == []
    assert rig.truth == before


@pytest.mark.parametrize(
    "fields",
    [
        {"command": "print_speed", "param": None},
        {"command": "print_speed", "param": [2]},
        {"command": "ams_change_filament", "target": "two"},
        {"command": "ams_filament_setting", "ams_id": {}, "tray_id": 0},
        {"command": "gcode_line", "param": 17},
        {"command": "project_file", "url": "file:///sdcard/Benchy.3mf", "ams_mapping": "0"},
        {"command": "set_bed_temp", "temp": True},
    ],
)
def test_wrong_field_types_fail_politely(fields: dict[str, object]) -> None:
    rig = Rig()
    out = rig.printer.handle_request(json.dumps({"print": {**fields, "sequence_id": "3"}}).encode())
    assert len(out) == 1
    assert out[0]["print"]["result"] == "failed"
    assert out[0]["print"]["sequence_id"] == "3"


def test_unknown_commands_fail_with_a_reason() -> None:
    rig = Rig()
    assert "unsupported" in rig.refused("print", "self_destruct")
    assert "unsupported" in rig.refused("security", "get_cert")


def test_integer_sequence_ids_are_echoed_as_strings() -> None:
    rig = Rig()
    out = rig.printer.handle_request(b'{"info": {"command": "get_version", "sequence_id": 12}}')
    assert out[0]["info"]["sequence_id"] == "12"


def test_offline_printer_is_silent() -> None:
    rig = Rig(online=False)
    assert rig.printer.handle_request(b'{"pushing": {"command": "pushall"}}') == []
    assert rig.run(10) == []
    rig.printer.online = True
    assert rig.printer.sim_time == 0  # powered off, time did not pass for the printer
    assert rig.run(6)  # the keep-alive delta at the latest


def test_a_command_executed_twice_is_counted() -> None:
    rig = Rig()
    pause = json.dumps({"print": {"command": "pause", "sequence_id": "41", "param": ""}}).encode()
    light = {"led_node": "chamber_light", "led_mode": "off", **LED}
    rig.ok("system", "ledctrl", **light)
    rig.raw(pause)
    assert (rig.printer.executed, rig.printer.duplicates) == (2, 0)
    rig.raw(pause)  # the same request again: a replay
    rig.raw(json.dumps({"print": {"command": "resume", "sequence_id": "41"}}).encode())
    rig.raw(json.dumps({"print": {"command": "pause"}}).encode())  # no sequence_id
    rig.raw(json.dumps({"print": {"command": "pause"}}).encode())
    assert rig.printer.executed == 6
    assert rig.printer.duplicates == 1
    assert list(rig.printer.duplicated) == [("print.pause", "41")]
    assert rig.printer.received_sequence_ids()[-4:] == ["41", "41", "", ""]


# --- signatures (PROTOCOL.md §2.7, §2.8) ------------------------------------------------


def _signed(family: str, body: dict[str, object], serial: str) -> bytes:
    signed = json.dumps({family: body}, separators=(",", ":"), sort_keys=True).encode()
    header = {
        "sign_ver": "v1.0",
        "sign_alg": "RSA_SHA256",
        "sign_string": base64.b64encode(b"sig:" + signed[:16]).decode(),
        "cert_id": f"0a1b2cCN={serial}.bambulab.com",
        "payload_len": len(signed),
    }
    return json.dumps({family: body, "header": header}).encode()


def test_signature_required_refuses_unsigned_control() -> None:
    rig = Rig("BL-P001", requires_signature=True)
    assert int(rig.view["fun"], 16) & 0x20000000
    assert not int(Rig("BL-P001").view["fun"], 16) & 0x20000000
    reply = rig.send("print", "pause", param="")
    assert reply["result"] == "failed"
    assert reply["err_code"] == ERR_VERIFY_FAILED
    assert reply["reason"] == "mqtt message verify failed"
    reply = rig.send("system", "ledctrl", led_node="chamber_light", led_mode="off", **LED)
    assert reply["err_code"] == ERR_VERIFY_FAILED
    rig.ok("info", "get_version")
    assert rig.raw(b'{"pushing": {"command": "pushall", "sequence_id": "1"}}')


def test_signed_commands_pass_and_the_verifier_decides() -> None:
    seen: list[tuple[bytes, bytes, str]] = []

    def verifier(signed: bytes, signature: bytes, cert_id: str) -> bool:
        seen.append((signed, signature, cert_id))
        return signature.startswith(b"sig:")

    rig = Rig("BL-P001", requires_signature=True, signature_verifier=verifier)
    serial = SERIALS["BL-P001"]
    body = {
        "command": "ledctrl",
        "sequence_id": "5",
        "led_node": "chamber_light",
        "led_mode": "off",
        **LED,
    }
    out = rig.raw(_signed("system", body, serial))
    assert out[0]["system"]["result"] == "success"
    assert (
        seen[0][0] == json.dumps({"system": body}, separators=(",", ":"), sort_keys=True).encode()
    )
    wrong_printer = _signed("system", body, "00M000000000000")
    assert rig.raw(wrong_printer)[0]["system"]["err_code"] == ERR_VERIFY_FAILED
    tampered = json.loads(_signed("system", body, serial))
    tampered["system"]["led_mode"] = "on"  # payload_len no longer matches
    assert rig.raw(json.dumps(tampered).encode())[0]["system"]["result"] == "failed"
