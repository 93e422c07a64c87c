"""Simulated printers that look real to other clients (issue 8, points 11, 12, 14, 15).

Every rule is checked over real sockets: a raw paho client on the printer's
own (LAN) broker, as a third-party LAN library connects, and plain httpx for
the cloud answers. The expected values are written here from PROTOCOL.md
§2.3/§2.6.1 and Bambu Studio's parsers (cited at each rule), never read back
from the library's own model code.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bambulab.sim import Simulator
from bambulab.sim.config import parse_fleet
from tests.conftest import wait_for
from tests.sim.mqtt_support import Probe, is_full_report, pushall, reply_to
from tests.sim.simtools import DEMO, SEED_DEVICE, UNLIMITED, assert_old

FLEET = ["seed", "x1c", "a1", "h2d", "x2d", "p1s", "a1mini:offline"]
_seq = itertools.count(1000)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = UNLIMITED.with_demo_fleet(parse_fleet(FLEET))
    with Simulator(config, tick_interval=0.2) as running:
        yield running


def serial_of(sim: Simulator, code: str) -> str:
    """The serial of the fleet's printer with this ``dev_model_name``."""
    return next(s for s, p in sim.printers.items() if p.model_code == code and s != SEED_DEVICE)


def cloud_http(sim: Simulator) -> httpx.Client:
    """An HTTP client of the simulated cloud as the demo account."""
    token = sim.issue_token(DEMO)
    return httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def lan(sim: Simulator, probes: list[Probe], serial: str) -> Probe:
    """A LAN client of ``serial`` (bblp + access code, CN = serial), subscribed to reports."""
    probe = Probe(
        sim.lan_address(serial),
        "bblp",
        sim.printers[serial].access_code,
        ca_file=sim.ca_file,
        server_name=serial,
    )
    probes.append(probe)
    probe.expect_connected()
    probe.subscribe(f"device/{serial}/report")
    return probe


def ask(probe: Probe, serial: str, family: str, name: str, /, **fields: Any) -> dict[str, Any]:
    """Send one command and return its reply body."""
    seq = str(next(_seq))
    mark = probe.mark()
    request = {family: {"command": name, "sequence_id": seq, **fields}}
    probe.publish(f"device/{serial}/request", request)
    body = probe.wait_for(reply_to(family, name, seq), after=mark).json()[family]
    assert isinstance(body, dict)
    return body


def full(probe: Probe, serial: str) -> dict[str, Any]:
    """A fresh full report (pushall)."""
    mark = probe.mark()
    probe.publish(f"device/{serial}/request", pushall(str(next(_seq))))
    body = probe.wait_for(is_full_report, after=mark).json()["print"]
    assert isinstance(body, dict)
    return body


def modules(probe: Probe, serial: str) -> dict[str, dict[str, Any]]:
    reply = ask(probe, serial, "info", "get_version")
    return {m["name"]: m for m in reply["module"]}


# --- 12: several families in one message ------------------------------------------------


def test_a_multi_family_request_is_answered_family_by_family(
    sim: Simulator, probes: list[Probe]
) -> None:
    serial = serial_of(sim, "BL-P001")
    probe = lan(sim, probes, serial)
    mark = probe.mark()
    # What a popular LAN library sends on every connect.
    probe.publish(
        f"device/{serial}/request",
        {
            "pushing": {"sequence_id": "0", "command": "pushall", "version": 1, "push_target": 1},
            "info": {"sequence_id": "0", "command": "get_version"},
            "upgrade": {"sequence_id": "0", "command": "get_history"},
        },
    )
    probe.wait_for(is_full_report, after=mark)
    probe.wait_for(reply_to("info", "get_version", "0"), after=mark)
    probe.wait_for(reply_to("upgrade", "get_history", "0"), after=mark)


# --- 11: get_version and the model behind every serial ----------------------------------


@pytest.mark.parametrize(
    ("code", "product", "board"),
    [
        ("BL-P001", "Bambu Lab X1-Carbon", "rv1126"),
        ("N2S", "Bambu Lab A1", "esp32"),
        ("C12", "Bambu Lab P1S", "esp32"),
        ("O1D", "Bambu Lab H2D", "ap"),
    ],
)
def test_get_version_names_the_product_like_current_firmware(
    sim: Simulator, probes: list[Probe], code: str, product: str, board: str
) -> None:
    serial = serial_of(sim, code)
    found = modules(lan(sim, probes, serial), serial)
    assert (found["ota"]["product_name"], found["ota"]["project_name"]) == (product, code)
    assert found[board]["product_name"] == product  # the main board names it too
    if code in ("N2S", "C12"):
        assert "esp32" in found  # P1/A1 report an esp32 module (PROTOCOL.md §2.6.1)
    else:
        assert "esp32" not in found


def test_the_seed_device_keeps_its_serial_and_tells_its_model(
    sim: Simulator, probes: list[Probe]
) -> None:
    with cloud_http(sim) as http:
        bound = assert_old(http.get("/v1/iot-service/api/user/bind"))["devices"]
    seed = next(d for d in bound if d["dev_id"] == SEED_DEVICE)
    assert seed["dev_model_name"] == "C11"
    ota = modules(lan(sim, probes, SEED_DEVICE), SEED_DEVICE)["ota"]
    assert (ota["product_name"], ota["project_name"]) == ("Bambu Lab P1P", "C11")


def test_ams_modules_and_units_name_their_kind(sim: Simulator, probes: list[Probe]) -> None:
    serial = serial_of(sim, "O1D")
    probe = lan(sim, probes, serial)
    found = modules(probe, serial)
    assert (found["n3f/0"]["product_name"], found["n3s/128"]["product_name"]) == (
        "AMS 2 Pro",
        "AMS HT",
    )
    ams = full(probe, serial)["ams"]
    # Bambu Studio ParseAmsInfo: type in bits 0-3 (3 AMS 2 Pro, 4 AMS HT), extruder 8-11.
    types = {u["id"]: int(u["info"], 16) & 0xF for u in ams["ams"]}
    assert types == {"0": 3, "128": 4}
    # ams_exist_bits: regular unit n is bit n, AMS HT 128+n is bit 4+n (DevFilaSystem).
    assert int(ams["ams_exist_bits"], 16) == 1 << 0 | 1 << 4


# --- 11: trays in the shape of each family ----------------------------------------------


def test_trays_carry_state_on_current_firmware_and_the_old_shape_on_p1_a1(
    sim: Simulator, probes: list[Probe]
) -> None:
    for code, with_state in (("BL-P001", True), ("O1D", True), ("N2S", False), ("C12", False)):
        serial = serial_of(sim, code)
        probe = lan(sim, probes, serial)
        ask(
            probe,
            serial,
            "print",
            "ams_filament_setting",
            ams_id=0,
            tray_id=0,
            tray_info_idx="GFA00",
            tray_type="PLA",
            tray_color="FFFFFFFF",
            nozzle_temp_min=190,
            nozzle_temp_max=230,
        )
        ask(probe, serial, "print", "ams_filament_setting", ams_id=0, tray_id=3, tray_type="")
        units = full(probe, serial)["ams"]["ams"]
        trays = {t["id"]: t for t in units[0]["tray"]}
        loaded, empty = trays["0"], trays["3"]
        assert loaded["tray_type"]
        if with_state:
            assert loaded["state"] == 11
            assert empty == {"id": "3", "state": 0}
        else:
            assert "state" not in loaded
            assert empty == {"id": "3"}


def test_ams_lite_humidity_is_zero(sim: Simulator, probes: list[Probe]) -> None:
    serial = serial_of(sim, "N2S")
    unit = full(lan(sim, probes, serial), serial)["ams"]["ams"][0]
    assert unit["humidity"] == "0"
    assert int(unit["info"], 16) & 0xF == 2  # AMS Lite


# --- 14 and 15: temperatures ---------------------------------------------------------------


def test_target_types_and_the_chamber_placeholder_follow_each_family(
    sim: Simulator, probes: list[Probe]
) -> None:
    # Public captures: A1 "nozzle_target_temper": 240, "chamber_temper": 5; X1C 0.0.
    for code in ("N2S", "C12"):
        serial = serial_of(sim, code)
        probe = lan(sim, probes, serial)
        ask(probe, serial, "print", "gcode_line", param="M104 S215\nM140 S60\n")
        body = full(probe, serial)
        assert type(body["nozzle_target_temper"]) is int and body["nozzle_target_temper"] == 215
        assert type(body["bed_target_temper"]) is int and body["bed_target_temper"] == 60
        assert body["chamber_temper"] == 5  # no chamber sensor
        ask(probe, serial, "print", "gcode_line", param="M104 S0\nM140 S0\n")
    for code in ("BL-P001", "O1D"):
        serial = serial_of(sim, code)
        body = full(lan(sim, probes, serial), serial)
        assert type(body["nozzle_target_temper"]) is float
        assert type(body["bed_target_temper"]) is float
        assert type(body["chamber_temper"]) is float  # a real sensor reading


def test_h2d_top_level_nozzle_is_the_idle_one(sim: Simulator, probes: list[Probe]) -> None:
    serial = serial_of(sim, "O1D")
    probe = lan(sim, probes, serial)
    ask(probe, serial, "print", "gcode_line", param="M104 T0 S250\nM104 T1 S170\n")
    body = full(probe, serial)
    extruder = body["device"]["extruder"]
    active = extruder["state"] >> 4 & 0xF
    assert extruder["state"] & 0xF == 2
    targets = {e["id"]: e["temp"] >> 16 for e in extruder["info"]}
    assert targets == {0: 250, 1: 170}
    idle = 1 - active
    assert body["nozzle_target_temper"] == targets[idle]
    # The loaded tray is the active extruder's snow; tray_now holds only the slot.
    snow = extruder["info"][active]["snow"]
    assert snow != 0xFFFF
    assert body["ams"]["tray_now"] == str(snow & 0xFF)
    assert extruder["info"][idle]["snow"] == 0xFFFF
    # Nozzle type codes (Bambu Studio s_parse_nozzle_type) and the chamber in ctc.
    assert {n["type"] for n in body["device"]["nozzle"]["info"]} == {"HS01"}
    assert body["device"]["ctc"]["info"]["temp"] & 0xFFFF == round(body["chamber_temper"])


def test_select_extruder_switches_the_active_nozzle(sim: Simulator, probes: list[Probe]) -> None:
    serial = serial_of(sim, "O1D")
    probe = lan(sim, probes, serial)
    ask(probe, serial, "print", "gcode_line", param="M104 T0 S240\nM104 T1 S190\n")
    before = full(probe, serial)["device"]["extruder"]["state"] >> 4 & 0xF
    reply = ask(probe, serial, "print", "select_extruder", extruder_index=1 - before)
    assert reply["result"] == "success"
    body = full(probe, serial)
    info = body["device"]["extruder"]["info"]
    assert body["device"]["extruder"]["state"] >> 4 & 0xF == 1 - before
    # The top-level fields now describe the other (idle) nozzle.
    assert body["nozzle_target_temper"] == (240 if before == 0 else 190)
    # Each extruder keeps its own filament: the one switched away from still has its tray.
    loaded = info[before]["snow"]
    assert loaded != 0xFFFF and info[1 - before]["snow"] == 0xFFFF
    assert body["ams"]["tray_now"] == "255"
    ask(probe, serial, "print", "select_extruder", extruder_index=before)
    back = full(probe, serial)["device"]["extruder"]["info"]
    assert back[before]["snow"] == loaded
    single = serial_of(sim, "N2S")
    other = lan(sim, probes, single)
    assert ask(other, single, "print", "select_extruder", extruder_index=1)["result"] == "failed"


# --- 15: commands Bambu Studio sends -----------------------------------------------------


def test_refresh_nozzle_and_extrusion_cali_sel(sim: Simulator, probes: list[Probe]) -> None:
    h2d = serial_of(sim, "O1D")
    probe = lan(sim, probes, h2d)
    assert ask(probe, h2d, "print", "refresh_nozzle")["result"] == "success"
    reply = ask(
        probe, h2d, "print", "extrusion_cali_sel", ams_id=0, slot_id=1, cali_idx=7, filament_id=""
    )
    assert (reply["result"], reply["cali_idx"]) == ("success", 7)
    tray = next(t for t in full(probe, h2d)["ams"]["ams"][0]["tray"] if t["id"] == "1")
    assert tray["cali_idx"] == 7
    a1 = serial_of(sim, "N2S")
    assert ask(lan(sim, probes, a1), a1, "print", "refresh_nozzle")["result"] == "failed"


def test_uiop_closing_the_error_dialog_clears_the_error(
    sim: Simulator, probes: list[Probe]
) -> None:
    serial = serial_of(sim, "BL-P001")
    probe = lan(sim, probes, serial)
    sim.with_printer(serial, lambda p: setattr(p.state, "print_error", 0x0300400C))
    # A report already on its way when the error was set still says 0 (a loaded CI
    # run saw one): the error shows in a full report soon after, as on a printer.
    wait_for(lambda: full(probe, serial)["print_error"] == 0x0300400C, 10, "the error shown")
    fields = {"name": "print_error", "action": "close", "source": 1, "type": "dialog"}
    assert ask(probe, serial, "system", "uiop", err="07004025", **fields)["result"] == "failed"
    assert ask(probe, serial, "system", "uiop", err="0300400C", **fields)["result"] == "success"
    assert full(probe, serial)["print_error"] == 0


def test_ams_drying_only_where_there_is_a_heater(sim: Simulator, probes: list[Probe]) -> None:
    drying = {"mode": 1, "filament": "PLA", "temp": 55, "duration": 4, "humidity": 0}
    drying |= {"rotate_tray": False, "cooling_temp": 45, "close_power_conflict": False}
    h2d = serial_of(sim, "O1D")
    probe = lan(sim, probes, h2d)
    assert ask(probe, h2d, "print", "ams_filament_drying", ams_id=0, **drying)["result"] == (
        "success"
    )
    unit = full(probe, h2d)["ams"]["ams"][0]
    assert int(unit["info"], 16) >> 4 & 0xF == 2  # drying (ParseAmsInfo bits 4-7)
    assert 0 < unit["dry_time"] <= 240
    stop = drying | {"mode": 0}
    assert ask(probe, h2d, "print", "ams_filament_drying", ams_id=0, **stop)["result"] == "success"
    assert int(full(probe, h2d)["ams"]["ams"][0]["info"], 16) >> 4 & 0xF == 0
    a1 = serial_of(sim, "N2S")
    reply = ask(lan(sim, probes, a1), a1, "print", "ams_filament_drying", ams_id=0, **drying)
    assert reply["result"] == "failed"


def test_external_spool_print_form_with_an_empty_mapping(
    sim: Simulator, probes: list[Probe]
) -> None:
    serial = serial_of(sim, "N2S")
    probe = lan(sim, probes, serial)
    reply = ask(
        probe,
        serial,
        "print",
        "project_file",
        param="Metadata/plate_1.gcode",
        url="file:///sdcard/Benchy.3mf",
        subtask_name="Benchy",
        md5="",
        use_ams=False,
        ams_mapping="",
        timelapse=False,
        bed_leveling=True,
        flow_cali=False,
        vibration_cali=False,
        layer_inspect=False,
        profile_id="0",
        project_id="0",
        subtask_id="0",
        task_id="0",
    )
    assert reply["result"] == "success", reply
    assert full(probe, serial)["gcode_state"] in ("PREPARE", "RUNNING")
    ask(probe, serial, "print", "stop", param="")


def test_fans_the_hardware_lacks_do_not_move(sim: Simulator, probes: list[Probe]) -> None:
    serial = serial_of(sim, "N2S")  # an A1: part fan only
    probe = lan(sim, probes, serial)
    ask(probe, serial, "print", "gcode_line", param="M106 P1 S255\nM106 P2 S255\nM106 P3 S255\n")
    body = full(probe, serial)
    assert body["cooling_fan_speed"] == "15"
    assert (body["big_fan1_speed"], body["big_fan2_speed"]) == ("0", "0")
    ask(probe, serial, "print", "gcode_line", param="M106 P1 S0\n")


# --- 15: home_flag, fun, stat and the door ------------------------------------------------


def test_feature_bits_differ_per_model(sim: Simulator, probes: list[Probe]) -> None:
    door_check, prompt_sound = 1 << 12, 1 << 8  # fun bits, Bambu Studio parse_new_info
    bodies = {
        code: full(lan(sim, probes, serial_of(sim, code)), serial_of(sim, code))
        for code in ("BL-P001", "N2S", "C12", "O1D")
    }
    fun = {code: int(body["fun"], 16) for code, body in bodies.items()}
    assert fun["BL-P001"] & door_check and fun["O1D"] & door_check
    assert not fun["N2S"] & door_check and not fun["C12"] & door_check
    assert fun["N2S"] & prompt_sound and not fun["BL-P001"] & prompt_sound
    # home_flag bit 18: prompt sound supported; bits 8-9: SD card normal.
    assert bodies["N2S"]["home_flag"] & 1 << 18 and not bodies["C12"]["home_flag"] & 1 << 18
    assert all(body["home_flag"] >> 8 & 3 == 1 for body in bodies.values())
    # The newer bit sets come as a group on H2 (Bambu Studio check_enable_np).
    assert {"cfg", "aux", "stat"} <= bodies["O1D"].keys()
    assert int(bodies["O1D"]["aux"], 16) >> 12 & 3 == 1
    assert not {"cfg", "aux", "stat"} & bodies["BL-P001"].keys()


def test_the_door_shows_in_home_flag_on_x1_and_in_stat_on_h2(
    sim: Simulator, probes: list[Probe]
) -> None:
    door = 0x00800000
    x1c, h2d = serial_of(sim, "BL-P001"), serial_of(sim, "O1D")
    x1_probe, h2_probe = lan(sim, probes, x1c), lan(sim, probes, h2d)
    assert not full(x1_probe, x1c)["home_flag"] & door
    assert not int(full(h2_probe, h2d)["stat"], 16) & door
    for serial in (x1c, h2d):
        sim.with_printer(serial, lambda p: setattr(p.state, "door_open", True))
    try:
        assert full(x1_probe, x1c)["home_flag"] & door
        assert int(full(h2_probe, h2d)["stat"], 16) & door
    finally:
        for serial in (x1c, h2d):
            sim.with_printer(serial, lambda p: setattr(p.state, "door_open", False))


def test_h2d_airduct_lists_each_fan(sim: Simulator, probes: list[Probe]) -> None:
    serial = serial_of(sim, "O1D")
    probe = lan(sim, probes, serial)
    ask(probe, serial, "print", "gcode_line", param="M106 P1 S255\n")
    airduct = full(probe, serial)["device"]["airduct"]
    # DevFan::ParseV3_0: id = fan << 4 | type; state in %; range packs 0-100.
    parts = {p["id"]: p for p in airduct["parts"]}
    assert {0x10, 0x20, 0x30} <= parts.keys()
    assert parts[0x10]["state"] == 100 and parts[0x10]["range"] == 100 << 16
    assert parts[0x30]["state"] == 0
    ask(probe, serial, "print", "gcode_line", param="M106 P1 S0\n")
    x2d = serial_of(sim, "N6")
    x2_parts = {p["id"] for p in full(lan(sim, probes, x2d), x2d)["device"]["airduct"]["parts"]}
    assert 0xA0 in x2_parts  # the X2D's second aux fan


# --- 15: an offline printer is unreachable on the LAN --------------------------------------


def test_an_offline_printer_refuses_lan_connections(sim: Simulator, probes: list[Probe]) -> None:
    serial = serial_of(sim, "N1")  # the fleet's offline A1 mini
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(sim.lan_address(serial), timeout=5).close()
    sim.bring_online(serial)
    try:
        probe = lan(sim, probes, serial)
        assert full(probe, serial)["gcode_state"]
    finally:
        sim.take_offline(serial)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(sim.lan_address(serial), timeout=5).close()


# --- 11: cloud answers -----------------------------------------------------------------------


def test_device_version_and_print_status_carry_version_and_ams(sim: Simulator) -> None:
    serial = serial_of(sim, "O1D")
    with cloud_http(sim) as http:
        version = assert_old(
            http.get("/v1/iot-service/api/user/device/version", params={"dev_id": serial})
        )
        status = assert_old(
            http.get("/v1/iot-service/api/user/print", params={"device_id": serial})
        )
    [entry] = version["devices"]
    assert entry["version"] == version["current_version"]
    assert [a["name"] for a in entry["ams"]] == ["n3f/0", "n3s/128"]
    assert all(a["sw_ver"] and a["hw_ver"] for a in entry["ams"])
    [device] = status["devices"]
    assert device["version"] == entry["version"]
    assert [a["ams_id"] for a in device["ams"]] == ["0", "128"]
