"""Render a :class:`~.state.PrinterState` as the wire's ``print.push_status`` body.

Every field is written from the facts of PROTOCOL.md §2.3 (names, units,
string-or-number types, packing), never from the client's parser: the
simulator is the other side of the contract and must not share its
interpretation. Field order and the string-typed values (fans, ids,
``wifi_signal``, ``nozzle_diameter``, AMS numbers) copy what printers send.

``home_flag`` bits follow Bambu Studio's ``MachineObject::parse_home_flag``:
bit 4 auto recovery, 5 camera recording, 7 AMS remain estimate, 8-9 SD card
state (0 none, 1 normal, 2 abnormal), 10 AMS auto switch, 17/18 prompt sound
on/supported, 19/20 tangle detection supported/on, 24/25 nozzle blob
detection on/supported, 28/29 air-print detection on/supported; the X1
reports its door in bit 23 (PROTOCOL.md §2.6.1).

H2/P2/X2 firmware also sends the newer hex bit sets Bambu Studio reads in
``MachineObject::parse_new_info`` when all four are present: ``cfg``
(settings), ``fun`` (features), ``aux`` (bits 12-13 the SD card state) and
``stat`` (bit 7 camera recording; the door in bit 23, PROTOCOL.md §2.6.1).
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from .ams import EXTERNAL, NO_TRAY
from .state import PrinterState
from .thermal import pack

# ``print.fun`` (PROTOCOL.md §2.7): a hex feature mask; bit 0x20000000 set
# means the printer requires signed control commands. FUN_BASE holds what
# every simulated model advertises; the model-dependent bits are added by
# :func:`fun_bits` (Bambu Studio ``parse_new_info``: 8 prompt sound, 9
# tangle detection, 12 door-open check, 13 nozzle blob detection).
FUN_BASE = 0x1C1AFF8CFF
FUN_SIGNATURE_REQUIRED = 0x20000000
FUN_PROMPT_SOUND = 1 << 8
FUN_TANGLE_DETECT = 1 << 9
FUN_DOOR_CHECK = 1 << 12
FUN_BLOB_DETECT = 1 << 13
# ``stat`` bits: 7 camera recording (Bambu Studio), 23 door open (PROTOCOL.md §2.6.1).
STAT_RECORDING = 1 << 7
STAT_DOOR_OPEN = 0x00800000
HOME_FLAG_DOOR_OPEN = 0x00800000  # X1 (PROTOCOL.md §2.6.1)
# Printers without a chamber sensor report this instead (PROTOCOL.md §2.6.1).
CHAMBER_PLACEHOLDER = 5
# SD card state in home_flag bits 8-9 / aux bits 12-13: 0 none, 1 normal.
SD_NONE, SD_NORMAL = 0, 1


def fan_level(pwm: int) -> str:
    """A fan as reports carry it: PWM 0-255 scaled to a string "0"-"15"."""
    return str(round(max(0, min(255, pwm)) * 15 / 255))


def ip_to_wire(ip: str) -> int:
    """``net.info[].ip``: the address as a uint32 in little-endian byte order."""
    return int.from_bytes(ipaddress.IPv4Address(ip).packed, "little")


def home_flag(state: PrinterState) -> int:
    """The feature/status bit set (see the module docstring for the bits)."""
    options = state.options
    flag = 0x7 if state.job is not None else 0  # X/Y/Z homed once a job has run
    profile = state.profile
    bits = (
        (4, options["auto_recovery"]),
        (5, state.ipcam_record == "enable"),
        (7, state.ams.calibrate_remain),
        (8, state.sdcard),  # SD card state 1 = present and normal
        (10, options["auto_switch_filament"]),
        (17, profile.prompt_sound and options["sound_enable"]),
        (18, profile.prompt_sound),
        (19, True),
        (20, options["filament_tangle_detect"]),
        (24, options["nozzle_blob_detect"]),
        (25, state.profile.family in ("H2", "X2")),
        (28, options["air_print_detect"]),
        (29, state.profile.family in ("H2", "X2")),
    )
    for bit, on in bits:
        if on:
            flag |= 1 << bit
    if profile.family == "X1" and state.door_open:
        flag |= HOME_FLAG_DOOR_OPEN
    return flag


def fun_bits(state: PrinterState) -> int:
    """``print.fun``: what this model's firmware says it supports."""
    profile = state.profile
    fun = FUN_BASE | FUN_TANGLE_DETECT
    if profile.prompt_sound:
        fun |= FUN_PROMPT_SOUND
    if profile.door_sensor:
        fun |= FUN_DOOR_CHECK
    if profile.family in ("H2", "X2"):
        fun |= FUN_BLOB_DETECT
    if state.requires_signature:
        fun |= FUN_SIGNATURE_REQUIRED
    return fun


def cfg_bits(state: PrinterState) -> int:
    """``print.cfg``: settings, at the bits Bambu Studio's ``parse_new_info`` reads."""
    options = state.options
    bits = (
        (0, state.ams.insert_flag),
        (1, state.ams.power_on_flag),
        (3, state.ipcam_record == "enable"),
        (4, state.profile.rtsp),  # 1080p
        (5, state.timelapse == "enable"),
        (7, state.lights.get("chamber_light") == "on"),
        (16, options["auto_recovery"]),
        (17, state.ams.calibrate_remain),
        (18, options["auto_switch_filament"]),
        (22, state.profile.prompt_sound and options["sound_enable"]),
        (23, options["filament_tangle_detect"]),
        (24, options["nozzle_blob_detect"]),
    )
    return sum(1 << bit for bit, on in bits if on)


def stat_bits(state: PrinterState) -> int:
    """``print.stat``: live status bits (camera recording, the door)."""
    stat = STAT_RECORDING if state.ipcam_record == "enable" else 0
    if state.door_open:
        stat |= STAT_DOOR_OPEN
    return stat


def _target(state: PrinterState, value: float) -> float | int:
    """A target temperature the way this family's firmware writes it."""
    return round(value) if state.profile.integer_targets else float(round(value))


def _shown_nozzle(state: PrinterState) -> int:
    """Which nozzle the top-level ``nozzle_temper`` fields describe.

    On dual-nozzle printers they belong to the idle nozzle (PROTOCOL.md
    §2.6.1); the active one is read from ``device.extruder``.
    """
    if state.profile.dual_nozzle:
        return 1 - state.active_extruder
    return state.active_extruder


def full_body(state: PrinterState) -> dict[str, Any]:
    """The complete ``push_status`` object, without ``command``/``msg``/``sequence_id``."""
    profile = state.profile
    job = state.job
    percent = 0
    layer = 0
    if job is not None and state.gcode_state == "FINISH":
        percent, layer = 100, job.layers
    elif job is not None and job.work_done > 0:
        percent = min(99, int(job.fraction * 100))
        layer = max(1, min(job.layers, math.ceil(job.fraction * job.layers)))
    nozzle = state.nozzles[_shown_nozzle(state)]
    chamber: float | int = state.chamber.reported if profile.chamber_sensor else CHAMBER_PLACEHOLDER
    body: dict[str, Any] = {
        "ipcam": _ipcam(state),
        "upload": {"status": "idle", "progress": 0, "message": ""},
        "nozzle_temper": nozzle.reported,
        "nozzle_target_temper": _target(state, nozzle.target),
        "bed_temper": state.bed.reported,
        "bed_target_temper": _target(state, state.bed.target),
        "chamber_temper": chamber,
        "mc_print_stage": "2" if state.active else "1",
        "heatbreak_fan_speed": "15" if max(h.current for h in state.nozzles) > 50 else "0",
        "cooling_fan_speed": fan_level(state.fans["part"]),
        "big_fan1_speed": fan_level(state.fans["aux"]),
        "big_fan2_speed": fan_level(state.fans["chamber"]),
        "mc_percent": percent,
        "mc_remaining_time": state.remaining_minutes(),
        "ams_status": 0x100 if state.change is not None else 0,
        "ams_rfid_status": 0,
        "hw_switch_state": 0 if state.ams.tray_now == NO_TRAY else 1,
        "spd_mag": state.speed_percent,
        "spd_lvl": state.speed_level,
        "print_error": state.print_error,
        "lifecycle": "product",
        "wifi_signal": f"{state.wifi}dBm",
        "gcode_state": state.gcode_state,
        "gcode_file_prepare_percent": str(job.prepare_percent if job is not None else 0),
        "queue_number": 0,
        "queue_total": 0,
        "queue_est": 0,
        "queue_sts": 0,
        "project_id": job.project_id if job is not None else "",
        "profile_id": job.profile_id if job is not None else "",
        "task_id": job.task_id if job is not None else "",
        "subtask_id": job.subtask_id if job is not None else "",
        "subtask_name": job.subtask_name if job is not None else "",
        "gcode_file": job.gcode_file if job is not None else "",
        "stg": list(job.plan) if job is not None else [],
        "stg_cur": state.stage,
        "print_type": job.print_type if job is not None else "idle",
        "home_flag": home_flag(state),
        "mc_print_line_number": str(int(job.fraction * job.layers * 400))
        if job is not None
        else "0",
        "mc_print_sub_stage": 0,
        "sdcard": state.sdcard,
        "force_upgrade": False,
        "mess_production_state": "active",
        "layer_num": layer,
        "total_layer_num": job.layers if job is not None else 0,
        "s_obj": list(job.skipped) if job is not None else [],
        "filam_bak": [],
        "fan_gear": state.fans["part"] | state.fans["aux"] << 8 | state.fans["chamber"] << 16,
        "nozzle_diameter": _diameter(state.nozzle_diameter[state.active_extruder]),
        "nozzle_type": state.nozzle_type[state.active_extruder],
        "cali_version": 0,
        "upgrade_state": _upgrade_state(state),
        "hms": [{"attr": attr, "code": code} for attr, code in state.hms],
        "online": {"ahb": False, "rfid": False, "version": 7},
        "ams": state.ams.wire(tray_state=profile.tray_state, slot_only=profile.dual_nozzle),
    }
    if profile.dual_nozzle:
        body["vir_slot"] = [spool.wire(i) for i, spool in sorted(state.ams.external.items())]
    else:
        body["vt_tray"] = state.ams.external[EXTERNAL].wire(EXTERNAL)
    body["xcam"] = dict(state.xcam)
    body["lights_report"] = [{"node": node, "mode": mode} for node, mode in state.lights.items()]
    body["net"] = {
        "conf": 16,
        "info": [
            {"ip": ip_to_wire(state.ip), "mask": ip_to_wire("255.255.255.0")},
            {"ip": 0, "mask": 0},
        ],
    }
    if profile.device_block:
        body["device"] = _device_block(state)
        body["cfg"] = f"{cfg_bits(state):X}"
        body["aux"] = f"{(SD_NORMAL if state.sdcard else SD_NONE) << 12:X}"
        body["stat"] = f"{stat_bits(state):X}"
    body["fun"] = f"{fun_bits(state):X}"
    return body


def _diameter(value: float) -> str:
    return f"{value:g}"


def _ipcam(state: PrinterState) -> dict[str, Any]:
    profile = state.profile
    if profile.rtsp and state.liveview:
        rtsp_url = f"rtsps://{state.ip}:{state.rtsp_port}/streaming/live/1"
    else:
        rtsp_url = "disable"  # P1/A1 stream JPEG on port 6000; liveview off (H2 by default)
    return {
        "ipcam_dev": "1",
        "ipcam_record": state.ipcam_record,
        "timelapse": state.timelapse,
        "resolution": "1080p" if profile.rtsp else "720p",
        "tutk_server": "disable",
        "mode_bits": 3,
        "rtsp_url": rtsp_url,
    }


def _upgrade_state(state: PrinterState) -> dict[str, Any]:
    latest = state.profile.model.firmware
    current = state.ota_version
    newer = _version_key(latest) > _version_key(current)
    upgrade = state.upgrade
    return {
        "sequence_id": state.upgrade_seq,
        "progress": str(upgrade.progress) if upgrade is not None else "0",
        "status": state.upgrade_status,
        "consistency_request": False,
        "dis_state": 0,
        "err_code": 0,
        "force_upgrade": False,
        "message": "",
        "module": upgrade.module if upgrade is not None else "null",
        "new_version_state": 1 if newer else 2,
        "cur_state_code": 0,
        "idx2": 0,
        "new_ver_list": ([{"name": "ota", "cur_ver": current, "new_ver": latest}] if newer else []),
    }


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return ()


def _slot_code(state: PrinterState, extruder: int, global_id: int) -> int:
    """``ams_id << 8 | slot`` of a tray as ``extruder`` sees it; 0xFFFF for none."""
    if global_id == NO_TRAY:
        return 0xFFFF
    address = state.ams.address(global_id)
    if address is None:
        return 0xFFFF
    ams_id, slot = address
    if state.profile.dual_nozzle and ams_id == EXTERNAL:
        ams_id = 0xFF if extruder == 0 else EXTERNAL  # main extruder feeds from vir_slot 255
    return ams_id << 8 | slot


def _device_block(state: PrinterState) -> dict[str, Any]:
    """Newer firmware's packed ``device`` object (PROTOCOL.md §2.3, §2.6.1).

    Encodings as Bambu Studio reads them: ``ExtderSystemParser::ParseV2_0``
    (``extruder.state`` bits 0-3 the count, 4-7 the active extruder, 8-11
    the target one; per extruder ``temp`` packed, ``snow``/``spre``/``star``
    as ``ams_id << 8 | slot``, ``info`` bit 1 filament present and bit 3
    nozzle fitted, ``hnow`` the nozzle in it), ``DevNozzleSystemParser::
    ParseV2_0`` (``nozzle.info[]`` with ``id``, float ``diameter`` and a
    ``type`` code) and ``DevFan::ParseV3_0`` (``airduct``).
    """
    extruders = []
    ams = state.ams
    for index, heater in enumerate(state.nozzles):
        # ams.tray_now/pre/tar are the active extruder's; an idle one keeps the
        # tray it had loaded when the printer switched away from it.
        if index == state.active_extruder:
            now, pre, tar = ams.tray_now, ams.tray_pre, ams.tray_tar
        else:
            now = pre = tar = state.parked.get(index, NO_TRAY)
        snow = _slot_code(state, index, now)
        extruders.append(
            {
                "id": index,
                "temp": pack(heater.current, heater.target),
                "snow": snow,  # now
                "spre": _slot_code(state, index, pre),  # previous
                "star": _slot_code(state, index, tar),  # target
                "stat": 0,
                "info": (0x2 if snow != 0xFFFF else 0) | 0x8,
                "hnow": index,
                "hpre": index,
                "htar": index,
                "filam_bak": [],
            }
        )
    nozzles = [
        {
            "id": index,
            "diameter": diameter,
            "type": nozzle_code(state.nozzle_type[index]),
            "stat": 0,
            "wear": 0,
        }
        for index, diameter in enumerate(state.nozzle_diameter)
    ]
    active = state.active_extruder
    device: dict[str, Any] = {
        "bed": {"info": {"temp": pack(state.bed.current, state.bed.target)}, "state": 0},
        "extruder": {
            "info": extruders,
            "state": len(state.nozzles) | active << 4 | active << 8,
        },
        "nozzle": {"info": nozzles, "exist": (1 << len(nozzles)) - 1, "state": 0},
        "airduct": _airduct(state),
        "type": 1,
    }
    if state.profile.chamber_sensor:
        device["ctc"] = {
            "info": {"temp": pack(state.chamber.current, state.chamber.target)},
            "state": 0,
        }
    return device


# Fans in ``device.airduct.parts[].id``: fan index << 4 | type (0 fan, 1 door),
# per Bambu Studio's ``AIR_FUN`` (1 part cooling, 2 aux, 3 chamber, 10 the
# second aux fan of the X2D); ``range`` packs 0-100 %, ``state`` is the speed in %.
AIRDUCT_PART, AIRDUCT_AUX, AIRDUCT_CHAMBER, AIRDUCT_AUX2 = 0x10, 0x20, 0x30, 0xA0
_PERCENT_RANGE = 100 << 16


def _airduct(state: PrinterState) -> dict[str, Any]:
    """``device.airduct``: the duct mode and each fan's state."""
    profile = state.profile
    fans: list[tuple[int, int, str]] = [(AIRDUCT_PART, 0, "part")]
    if profile.aux_fan:
        fans.append((AIRDUCT_AUX, 1, "aux"))
    if profile.family == "X2":
        fans.append((AIRDUCT_AUX2, 1, "aux"))
    if profile.chamber_fan:
        fans.append((AIRDUCT_CHAMBER, 2, "chamber"))
    parts = [
        {
            "id": part,
            "func": func,
            "state": round(state.fans[fan] * 100 / 255),
            "range": _PERCENT_RANGE,
        }
        for part, func, fan in fans
    ]
    ids = [part["id"] for part in parts]
    return {
        "modeCur": state.airduct_mode,
        "modeList": [
            {"modeId": 0, "ctrl": ids, "off": []},  # cooling
            {"modeId": 1, "ctrl": [i for i in ids if i != AIRDUCT_AUX], "off": []},  # heating
        ],
        "parts": parts,
    }


# Nozzle type codes of ``device.nozzle.info[].type`` (Bambu Studio
# ``s_parse_nozzle_type``): character 1 the flow (S standard, H high flow),
# characters 2-3 the material (00 stainless, 01 hardened, 05 tungsten carbide).
_MATERIAL_CODES = {"stainless_steel": "00", "hardened_steel": "01", "tungsten_carbide": "05"}


def nozzle_code(nozzle_type: str) -> str:
    """The ``HS01``-style code of a nozzle type (codes pass through)."""
    if nozzle_type in _MATERIAL_CODES:
        return f"HS{_MATERIAL_CODES[nozzle_type]}"
    return nozzle_type
