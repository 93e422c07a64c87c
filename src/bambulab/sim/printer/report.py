"""Render a :class:`~.state.PrinterState` as the wire's ``print.push_status`` body.

Every field is written from the facts of PROTOCOL.md §2.3 (names, units,
string-or-number types, packing), never from the client's parser: the
simulator is the other side of the contract and must not share its
interpretation. Field order and the string-typed values (fans, ids,
``wifi_signal``, ``nozzle_diameter``, AMS numbers) copy what printers send.

``home_flag`` bits are not in PROTOCOL.md; the simulator sets the ones the
community has decoded from the slicer (bit 4 auto recovery, 5 camera
recording, 7 AMS remain estimate, 8-9 SD card state, 10 AMS auto switch, 17
prompt sound, 19/20 tangle detection supported/on, 24/25 nozzle blob
detection on/supported, 28/29 air-print detection on/supported).
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from .ams import EXTERNAL, NO_TRAY
from .state import PrinterState
from .thermal import pack

# ``print.fun`` (PROTOCOL.md §2.7): a hex feature mask; bit 0x20000000 set
# means the printer requires signed control commands.
FUN_BASE = 0x1C1AFF9CFF
FUN_SIGNATURE_REQUIRED = 0x20000000


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
    bits = (
        (4, options["auto_recovery"]),
        (5, state.ipcam_record == "enable"),
        (7, state.ams.calibrate_remain),
        (8, state.sdcard),  # SD card state 1 = present and normal
        (10, options["auto_switch_filament"]),
        (17, options["sound_enable"]),
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
    return flag


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
    nozzle = state.nozzle
    body: dict[str, Any] = {
        "ipcam": _ipcam(state),
        "upload": {"status": "idle", "progress": 0, "message": ""},
        "nozzle_temper": nozzle.reported,
        "nozzle_target_temper": float(nozzle.target),
        "bed_temper": state.bed.reported,
        "bed_target_temper": float(state.bed.target),
        "chamber_temper": state.chamber.reported,
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
        "ams": state.ams.wire(),
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
    fun = FUN_BASE & ~FUN_SIGNATURE_REQUIRED
    if state.requires_signature:
        fun |= FUN_SIGNATURE_REQUIRED
    body["fun"] = f"{fun:X}"
    return body


def _diameter(value: float) -> str:
    return f"{value:g}"


def _ipcam(state: PrinterState) -> dict[str, Any]:
    profile = state.profile
    if profile.rtsp and profile.rtsp_on_by_default:
        rtsp_url = f"rtsps://{state.ip}:{state.rtsp_port}/streaming/live/1"
    else:
        rtsp_url = "disable"  # P1/A1 stream JPEG on port 6000; H2 LAN stream off by default
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
    """``ams_id << 8 | slot`` of a tray as an extruder sees it; 0xFFFF for none.

    Only the active extruder is fed in this simulator, so the other one
    reports none.
    """
    if extruder != state.active_extruder or global_id == NO_TRAY:
        return 0xFFFF
    address = state.ams.address(global_id)
    if address is None:
        return 0xFFFF
    ams_id, slot = address
    if state.profile.dual_nozzle and ams_id == EXTERNAL:
        ams_id = 0xFF if extruder == 0 else EXTERNAL  # main extruder feeds from vir_slot 255
    return ams_id << 8 | slot


def _device_block(state: PrinterState) -> dict[str, Any]:
    """Newer firmware's packed ``device`` object (PROTOCOL.md §2.3)."""
    extruders = []
    for index, heater in enumerate(state.nozzles):
        extruders.append(
            {
                "id": index,
                "temp": pack(heater.current, heater.target),
                "snow": _slot_code(state, index, state.ams.tray_now),  # now
                "spre": _slot_code(state, index, state.ams.tray_pre),  # previous
                "star": _slot_code(state, index, state.ams.tray_tar),  # target
                "stat": 0,
            }
        )
    nozzles = [
        {"id": index, "diameter": diameter, "type": state.nozzle_type[index]}
        for index, diameter in enumerate(state.nozzle_diameter)
    ]
    return {
        "bed": {"info": {"temp": pack(state.bed.current, state.bed.target)}, "state": 0},
        "ctc": {"info": {"temp": pack(state.chamber.current, state.chamber.target)}, "state": 0},
        "extruder": {
            "info": extruders,
            # low nibble: how many extruders; next nibble: the active one
            "state": len(state.nozzles) | state.active_extruder << 4,
        },
        "nozzle": {"info": nozzles, "exist": (1 << len(nozzles)) - 1, "state": 0},
        "airduct": {"modeCur": state.airduct_mode, "modeList": [0, 1]},
        "type": 1,
    }
