"""Sans-IO MQTT engine: command builders, report merging, reply correlation.

No sockets here. Commands are data (:class:`Command`) that any transport
publishes to ``device/<serial>/request``; incoming payloads go through
:class:`ReportStream`, which merges partial reports field by field (P1/A1
printers send only what changed), recognises replies to our commands by
``sequence_id`` and cloud presence events, and never raises on garbage.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigurationError
from ..models.printer import PrinterModel
from ..vocabulary import FANS as FANS
from ..vocabulary import HEATER_LIMITS as HEATER_LIMITS
from ..vocabulary import LIGHT_MODES, LIGHT_NODES
from ..vocabulary import SPEED_LEVELS as SPEED_LEVELS
from .json_limits import MAX_DEPTH, nesting_exceeds

MAX_PAYLOAD = 4 * 1024 * 1024


def report_topic(serial: str) -> str:
    """Where a printer publishes: ``device/<serial>/report``."""
    return f"device/{serial}/report"


def request_topic(serial: str) -> str:
    """Where commands go: ``device/<serial>/request``."""
    return f"device/{serial}/request"


def serial_of(topic: str) -> str | None:
    """The serial in ``device/<serial>/report|request``, or ``None``."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "device" and parts[1]:
        return parts[1]
    return None


class SequenceCounter:
    """Decimal-string ``sequence_id`` values from one counter.

    Not thread-safe by contract: the connection that owns it numbers its
    commands on its own thread, so there is nothing to lock (this layer
    holds no locks and starts no threads).
    """

    def __init__(self, start: int = 1) -> None:
        self._next = itertools.count(start)

    def __call__(self) -> str:
        return str(next(self._next))


@dataclass(frozen=True, slots=True)
class Command:
    """One request to a printer: ``{"<family>": {"command": ..., "sequence_id": ..., ...}}``."""

    family: str
    command: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    qos: int = 0
    sequence_id: str = ""

    def with_sequence(self, sequence_id: str) -> Command:
        """A copy carrying ``sequence_id``."""
        return Command(self.family, self.command, self.fields, self.qos, sequence_id)

    def payload(self) -> dict[str, Any]:
        """The JSON object to publish."""
        body: dict[str, Any] = {"sequence_id": self.sequence_id, "command": self.command}
        body.update(self.fields)
        return {self.family: body}

    def encode(self) -> bytes:
        """The compact JSON bytes to publish."""
        return json.dumps(self.payload(), separators=(",", ":")).encode()


def _cmd(family: str, command: str, qos: int = 0, /, **fields: Any) -> Command:
    return Command(family, command, fields, qos)


# --- pushing / info ----------------------------------------------------------


def pushall() -> Command:
    """Ask for the full state (P1P: not more often than every ~5 minutes)."""
    return _cmd("pushing", "pushall", version=1, push_target=1)


def start_pushing() -> Command:
    """Resume periodic reports."""
    return _cmd("pushing", "start")


def stop_pushing() -> Command:
    """Halt periodic reports."""
    return _cmd("pushing", "stop")


def get_version() -> Command:
    """Ask for the firmware modules (reply ``info.module[]``)."""
    return _cmd("info", "get_version", 1)


# --- print control ---------------------------------------------------------------


def stop() -> Command:
    """Stop (cancel) the running print."""
    return _cmd("print", "stop", 1, param="")


def pause() -> Command:
    """Pause the running print."""
    return _cmd("print", "pause", 1, param="")


def resume() -> Command:
    """Resume a paused print."""
    return _cmd("print", "resume", 1, param="")


def project_file(
    url: str,
    plate: int = 1,
    *,
    subtask_name: str = "",
    file: str = "",
    md5: str = "",
    project_id: str = "0",
    profile_id: str = "0",
    task_id: str = "0",
    subtask_id: str = "0",
    timelapse: bool = False,
    bed_levelling: bool = True,
    flow_cali: bool = False,
    vibration_cali: bool = False,
    layer_inspect: bool = False,
    use_ams: bool = False,
    ams_mapping: Iterable[int] = (),
    bed_type: str = "auto",
) -> Command:
    """Print a sliced 3MF.

    ``url`` is a file on the printer's storage on LAN, in the form its model
    takes (``PrinterModel.lan_url``: ``file:///sdcard/...`` on X1/P1/A1,
    ``ftp:///...`` on H2), the HTTPS URL of the uploaded file for cloud prints.
    """
    if plate < 1:
        raise ConfigurationError(f"plate numbers start at 1, got {plate}")
    mapping = [int(v) for v in ams_mapping]
    for slot in mapping:
        if not (slot == -1 or 0 <= slot < 16 or 128 <= slot <= 135 or slot in (254, 255)):
            raise ConfigurationError(f"invalid AMS slot {slot} in ams_mapping")
    return _cmd(
        "print",
        "project_file",
        param=f"Metadata/plate_{plate}.gcode",
        url=url,
        file=file,
        md5=md5,
        project_id=project_id,
        profile_id=profile_id,
        task_id=task_id,
        subtask_id=subtask_id,
        subtask_name=subtask_name,
        timelapse=timelapse,
        bed_type=bed_type,
        # Firmware reads one spelling or the other; send both.
        bed_levelling=bed_levelling,
        bed_leveling=bed_levelling,
        flow_cali=flow_cali,
        vibration_cali=vibration_cali,
        layer_inspect=layer_inspect,
        use_ams=use_ams,
        ams_mapping=mapping,
    )


def gcode_file(path: str) -> Command:
    """Print a plain G-code file already on the SD card."""
    return _cmd("print", "gcode_file", param=path)


def gcode_line(lines: str | Iterable[str], user_id: str | None = None) -> Command:
    """Run G-code lines (joined by newlines)."""
    text = lines if isinstance(lines, str) else "\n".join(lines)
    if not text.strip():
        raise ConfigurationError("no G-code to send")
    if not text.endswith("\n"):
        text += "\n"
    extra = {"user_id": user_id} if user_id else {}
    return _cmd("print", "gcode_line", param=text, **extra)


def print_speed(level: int | str) -> Command:
    """Speed level 1 silent, 2 standard, 3 sport, 4 ludicrous (or those names)."""
    value = SPEED_LEVELS.get(str(level).lower(), level)
    if value not in (1, 2, 3, 4) and str(value) not in ("1", "2", "3", "4"):
        raise ConfigurationError(
            f"speed level must be 1-4 or {'/'.join(SPEED_LEVELS)}, got {level!r}"
        )
    return _cmd("print", "print_speed", param=str(value))


def skip_objects(object_ids: Iterable[int]) -> Command:
    """Skip objects of the running print (ids from the 3MF; firmware caps at 64)."""
    ids = [int(i) for i in object_ids]
    if not ids:
        raise ConfigurationError("no objects to skip")
    if len(ids) > 64:
        raise ConfigurationError("at most 64 objects can be skipped")
    return _cmd("print", "skip_objects", 1, obj_list=ids)


PRINT_OPTIONS = (
    "auto_recovery",
    "sound_enable",
    "filament_tangle_detect",
    "nozzle_blob_detect",
    "air_print_detect",
    "auto_switch_filament",
)


def print_option(option: str, enabled: bool) -> Command:
    """Set one printer option flag."""
    if option not in PRINT_OPTIONS:
        raise ConfigurationError(
            f"unknown print option {option!r}: one of {', '.join(PRINT_OPTIONS)}"
        )
    return _cmd("print", "print_option", **{option: bool(enabled)})


def calibration(
    lidar: bool = False, bed_level: bool = True, vibration: bool = False, motor_noise: bool = False
) -> Command:
    """Run calibrations (bit0 lidar, bit1 bed level, bit2 vibration, bit3 motor noise)."""
    option = int(lidar) | int(bed_level) << 1 | int(vibration) << 2 | int(motor_noise) << 3
    if not option:
        raise ConfigurationError("choose at least one calibration")
    return _cmd("print", "calibration", option=option)


# --- AMS ---------------------------------------------------------------------------


def _slot_check(ams_id: int, slot_id: int) -> None:
    if not (0 <= ams_id <= 3 or 128 <= ams_id <= 135 or ams_id == 255):
        raise ConfigurationError(f"invalid AMS id {ams_id}")
    if not (0 <= slot_id <= 3 or slot_id in (254, 255)):
        raise ConfigurationError(f"invalid AMS slot {slot_id}")


def ams_load(ams_id: int, slot_id: int, curr_temp: int = 215, tar_temp: int = 215) -> Command:
    """Load filament from one AMS slot (``ams_change_filament``, target = global tray id)."""
    _slot_check(ams_id, slot_id)
    target = ams_id if ams_id >= 128 else ams_id * 4 + slot_id
    if ams_id == 255:
        target = 254
    return _cmd(
        "print",
        "ams_change_filament",
        target=target,
        curr_temp=curr_temp,
        tar_temp=tar_temp,
        ams_id=ams_id,
        slot_id=slot_id,
    )


def ams_unload(curr_temp: int = 215, tar_temp: int = 215) -> Command:
    """Unload the current filament (``ams_change_filament`` with target 255)."""
    return _cmd(
        "print",
        "ams_change_filament",
        target=255,
        curr_temp=curr_temp,
        tar_temp=tar_temp,
        ams_id=255,
        slot_id=255,
    )


def ams_filament_setting(
    ams_id: int,
    tray_id: int,
    tray_type: str,
    tray_color: str,
    nozzle_temp_min: int,
    nozzle_temp_max: int,
    tray_info_idx: str = "",
) -> Command:
    """Describe the filament in a slot (external spool: ``ams_id`` 255, ``tray_id`` 254)."""
    _slot_check(ams_id, tray_id)
    colour = tray_color.lstrip("#").upper()
    if len(colour) == 6:
        colour += "FF"
    if len(colour) != 8 or any(c not in "0123456789ABCDEF" for c in colour):
        raise ConfigurationError(f"colour must be RRGGBB or RRGGBBAA, got {tray_color!r}")
    if nozzle_temp_min > nozzle_temp_max:
        raise ConfigurationError("nozzle_temp_min is above nozzle_temp_max")
    return _cmd(
        "print",
        "ams_filament_setting",
        ams_id=ams_id,
        tray_id=tray_id,
        tray_info_idx=tray_info_idx,
        tray_color=colour,
        nozzle_temp_min=nozzle_temp_min,
        nozzle_temp_max=nozzle_temp_max,
        tray_type=tray_type,
    )


AMS_CONTROL = ("resume", "reset", "pause", "done", "abort")


def ams_control(param: str) -> Command:
    """Control the AMS: resume, reset, pause, done, abort."""
    if param not in AMS_CONTROL:
        raise ConfigurationError(f"AMS control must be one of {', '.join(AMS_CONTROL)}")
    return _cmd("print", "ams_control", param=param)


def ams_user_setting(
    ams_id: int = -1,
    startup_read_option: bool = True,
    tray_read_option: bool = True,
    calibrate_remain_flag: bool = True,
) -> Command:
    """AMS reading options (``ams_id`` -1 = all units)."""
    return _cmd(
        "print",
        "ams_user_setting",
        ams_id=ams_id,
        startup_read_option=startup_read_option,
        tray_read_option=tray_read_option,
        calibrate_remain_flag=calibrate_remain_flag,
    )


def ams_get_rfid(ams_id: int, slot_id: int) -> Command:
    """Re-read the RFID tag of one slot."""
    _slot_check(ams_id, slot_id)
    return _cmd("print", "ams_get_rfid", ams_id=ams_id, slot_id=slot_id)


def unload_filament() -> Command:
    """Unload filament (printers without an AMS)."""
    return _cmd("print", "unload_filament")


# --- system, camera, xcam, upgrade ----------------------------------------------------

LED_NODES = LIGHT_NODES
LED_MODES = LIGHT_MODES


def ledctrl(
    node: str = "chamber_light",
    mode: str = "on",
    *,
    on_time: int = 500,
    off_time: int = 500,
    loop_times: int = 0,
    interval_time: int = 0,
) -> Command:
    """Switch a light on, off or flashing (all four timing ints are always sent)."""
    if node not in LED_NODES:
        raise ConfigurationError(f"unknown light {node!r}: one of {', '.join(LED_NODES)}")
    if mode not in LED_MODES:
        raise ConfigurationError(f"light mode must be one of {', '.join(LED_MODES)}")
    return _cmd(
        "system",
        "ledctrl",
        led_node=node,
        led_mode=mode,
        led_on_time=on_time,
        led_off_time=off_time,
        loop_times=loop_times,
        interval_time=interval_time,
    )


def get_access_code() -> Command:
    """Ask for the LAN access code (reply ``system.access_code``)."""
    return _cmd("system", "get_access_code")


def set_accessories(nozzle_diameter: float, nozzle_type: str = "stainless_steel") -> Command:
    """Tell the printer which nozzle is fitted."""
    if nozzle_diameter not in (0.2, 0.4, 0.6, 0.8):
        raise ConfigurationError(
            f"nozzle diameter must be 0.2, 0.4, 0.6 or 0.8, got {nozzle_diameter}"
        )
    return _cmd(
        "system",
        "set_accessories",
        accessory_type="nozzle",
        nozzle_diameter=nozzle_diameter,
        nozzle_type=nozzle_type,
    )


def _switch(enabled: bool) -> str:
    return "enable" if enabled else "disable"


def ipcam_record(enabled: bool) -> Command:
    """Turn camera recording on or off."""
    return _cmd("camera", "ipcam_record_set", control=_switch(enabled))


def ipcam_timelapse(enabled: bool) -> Command:
    """Turn timelapse on or off."""
    return _cmd("camera", "ipcam_timelapse", control=_switch(enabled))


XCAM_MODULES = (
    "first_layer_inspector",
    "buildplate_marker_detector",
    "printing_monitor",
    "spaghetti_detector",
    "clump_detector",
    "pileup_detector",
    "airprint_detector",
)


def xcam_control(
    module: str, enabled: bool, print_halt: bool = True, sensitivity: str | None = None
) -> Command:
    """Switch an AI-camera detector (``spaghetti_detector``, ...)."""
    if module not in XCAM_MODULES:
        raise ConfigurationError(
            f"unknown xcam module {module!r}: one of {', '.join(XCAM_MODULES)}"
        )
    extra = {"halt_print_sensitivity": sensitivity} if sensitivity else {}
    return _cmd(
        "xcam",
        "xcam_control_set",
        module_name=module,
        control=bool(enabled),
        print_halt=bool(print_halt),
        **extra,
    )


def upgrade_history() -> Command:
    """Ask for the firmware upgrade history."""
    return _cmd("upgrade", "get_history")


def upgrade_confirm() -> Command:
    """Confirm an offered firmware upgrade."""
    return _cmd("upgrade", "upgrade_confirm", src_id=1)


def consistency_confirm() -> Command:
    """Confirm a module-consistency upgrade."""
    return _cmd("upgrade", "consistency_confirm", src_id=1)


def upgrade_start(url: str, version: str, module: str = "ota") -> Command:
    """Start a firmware upgrade from ``url`` (module ``ota`` or ``ams``)."""
    if module not in ("ota", "ams"):
        raise ConfigurationError("upgrade module must be 'ota' or 'ams'")
    return _cmd("upgrade", "start", url=url, module=module, version=version, src_id=1)


# --- the seed's named helpers, mapped to what printers accept ----------------------


def _temp(value: float, limit: int, what: str) -> int:
    t = round(float(value))
    if not 0 <= t <= limit:
        raise ConfigurationError(f"{what} temperature must be 0-{limit} °C, got {value}")
    return t


def set_nozzle_temp(temp: float, extruder: int | None = None) -> Command:
    """Nozzle target: ``M104 S<t>`` (``T<n>`` selects an extruder on dual-nozzle printers)."""
    t = _temp(temp, HEATER_LIMITS["nozzle"], "nozzle")
    tool = f" T{int(extruder)}" if extruder is not None else ""
    return gcode_line(f"M104{tool} S{t}")


def set_bed_temp(temp: float) -> Command:
    """Bed target: ``M140 S<t>``."""
    return gcode_line(f"M140 S{_temp(temp, HEATER_LIMITS['bed'], 'bed')}")


def set_chamber_temp(temp: float) -> Command:
    """Chamber target: ``M141 S<t>`` (X1E, H2 families)."""
    return gcode_line(f"M141 S{_temp(temp, HEATER_LIMITS['chamber'], 'chamber')}")


def set_fan_speed(fan: str | int, percent: float) -> Command:
    """Fan speed in %: ``M106 P1|P2|P3 S<0-255>`` (part, aux, chamber)."""
    index = FANS.get(str(fan).lower(), fan)
    if index not in (1, 2, 3):
        raise ConfigurationError(f"fan must be part, aux or chamber (or 1-3), got {fan!r}")
    if not 0 <= float(percent) <= 100:
        raise ConfigurationError(f"fan speed must be 0-100 %, got {percent}")
    return gcode_line(f"M106 P{index} S{round(float(percent) * 255 / 100)}")


def set_airduct(mode: int) -> Command:
    """Air-duct mode on printers that have one (0 cooling, 1 heating)."""
    if mode not in (0, 1):
        raise ConfigurationError("air-duct mode must be 0 (cooling) or 1 (heating)")
    return _cmd("print", "set_airduct", modeId=mode)


def set_ctt(temp: float) -> Command:
    """Chamber temperature target on newer firmware (``set_ctt{ctt_val}``)."""
    return _cmd("print", "set_ctt", ctt_val=_temp(temp, HEATER_LIMITS["chamber"], "chamber"))


# --- what a model cannot do ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command cannot work on a model: ``command`` by the library's name, and ``reason``."""

    command: str
    reason: str


_GCODE_WORD = re.compile(r"([A-Z])\s*(-?\d+(?:\.\d*)?)")
_GCODE_HEAD = re.compile(r"[GMT]\d+")
_FAN_NAMES = {value: name for name, value in FANS.items()}


def refusal(model: PrinterModel, command: Command) -> Refusal | None:
    """Why ``model`` cannot do ``command``, from the model table; ``None`` when it can.

    A printer without the hardware answers "success" and does nothing (the
    firmware ignores ``M141`` without a chamber heater), so the client must
    refuse first. An unknown model is allowed everything: it may be newer
    than this table.
    """
    if not model.known:
        return None
    name = model.product
    if command.family == "print" and command.command == "set_ctt" and not model.chamber_heater:
        return Refusal("set_ctt", f"the {name} has no chamber heater")
    if command.family == "system" and command.command == "ledctrl":
        node = str(command.fields.get("led_node", ""))
        if node not in model.lights:
            return Refusal(
                "set_light", f"the {name} has no {node} (its lights: {', '.join(model.lights)})"
            )
    if command.family == "print" and command.command == "gcode_line":
        return _gcode_refusal(model, str(command.fields.get("param", "")))
    return None


def _gcode_refusal(model: PrinterModel, text: str) -> Refusal | None:
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip().upper()
        head = _GCODE_HEAD.match(line)
        if head is None:
            continue
        word = head.group(0)
        args = dict(_GCODE_WORD.findall(line[head.end() :]))
        if word in ("M141", "M191") and not model.chamber_heater:
            return Refusal("set_chamber_temp", f"the {model.product} has no chamber heater")
        if word in ("M106", "M107"):
            try:
                fan = _FAN_NAMES.get(int(float(args.get("P", "1"))))
            except ValueError:
                continue
            if (fan == "aux" and not model.aux_fan) or (fan == "chamber" and not model.chamber_fan):
                return Refusal("set_fan_speed", f"the {model.product} has no {fan} fan")
    return None


# --- merging reports -------------------------------------------------------------------


def merged(
    base: Mapping[str, Any],
    update: Mapping[str, Any],
    *,
    skip: tuple[str, ...] = (),
    owned: bool = False,
) -> dict[str, Any]:
    """A new dict: ``base`` with a (partial) report merged in, field by field.

    Copy-on-write: ``base`` and everything under it are left untouched; only
    the objects on the paths ``update`` touches are copied, every untouched
    subtree is shared with ``base``. So a state that has been handed out is
    never mutated again, and a merge costs what the update touches, not what
    the state holds.

    Nested objects merge recursively; lists of objects that all carry an
    ``id`` (AMS units, trays) merge item by item by ``id`` (a new list, new
    items only where touched); anything else is replaced. ``owned`` says
    nobody else holds ``update`` (freshly parsed): its values are adopted
    as they are instead of copied. Keys in ``skip`` are left out.
    """
    if owned:
        return _merged_owned(base, update, skip)
    out = dict(base)
    for key, value in update.items():
        if key in skip:
            continue
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            out[key] = merged(current, value, owned=owned)
        elif (
            isinstance(value, list)
            and isinstance(current, list)
            and _by_id(value)
            and _by_id(current)
        ):
            out[key] = _merged_list(current, value, owned)
        else:
            out[key] = value if owned else _copy(value)
    return out


def _merged_owned(
    base: Mapping[str, Any], update: Mapping[str, Any], skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    # merged(owned=True) for freshly parsed JSON (only dict, list and scalars):
    # exact type checks, no copies of the update. The hot path of every report.
    out = dict(base)
    for key, value in update.items():
        if key in skip:
            continue
        current = out.get(key)
        kind = type(value)
        if kind is dict and type(current) is dict:
            out[key] = _merged_owned(current, value)
        elif kind is list and type(current) is list and _by_id(value) and _by_id(current):
            out[key] = _merged_list(current, value, True)
        else:
            out[key] = value
    return out


def merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Merge ``update`` into a dict the caller owns, in place (see :func:`merged`).

    The nested objects of ``into`` that ``update`` touches are replaced by
    merged copies, never mutated; ``update`` is copied, not aliased.
    """
    into.update(merged(into, update))


def _by_id(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, Mapping) and "id" in i for i in items)


def _merged_list(current: list[Any], update: list[Any], owned: bool) -> list[Any]:
    out = list(current)
    index = {str(item["id"]): i for i, item in enumerate(out)}
    for item in update:
        at = index.get(str(item["id"]))
        if at is None:
            index[str(item["id"])] = len(out)
            out.append(item if owned else _copy(item))
        else:
            out[at] = merged(out[at], item, owned=owned)
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


# --- the rules of a print report ------------------------------------------------------------
#
# Two things a plain field-by-field merge gets wrong (PROTOCOL.md §2.6.1):
#
# * AMS: a report that carries ``ams.ams`` lists every unit: a unit missing
#   from it was removed (Bambu Studio's DevFilaSystemParser::ParseV1_0 erases
#   every unit whose id is not in the list). And a tray that comes back as only
#   ``{"id": ...}`` or with ``state`` 0 is empty: Bambu Studio's
#   ParseAmsTrayInfo clears the filament type and setting id of a tray sent
#   without ``tray_type``/``tray_info_idx`` (DevAmsTray::reset lists what a
#   filament is made of), so none of the old filament may survive the merge.
#   Everywhere else (fields of a unit, other trays) the merge stays field by
#   field, as the P1/A1 deltas need.
# * A known field whose value has the wrong shape (a string that is not a
#   number where a number belongs, an object where a list belongs, ...) must
#   not blank the last good value: it is left out (the old value stays) and
#   named in ``Incoming.malformed``; the next good value replaces it.

NUMBER = "number"
TEXT = "text"
OBJECT = "object"
LIST = "list"


@dataclass(frozen=True, slots=True)
class Shape:
    """What a known report field looks like.

    ``kind``: ``number`` (an int or float, or a string holding one, as
    ``"25.0"`` or ``"80%"``), ``text``, ``object`` or ``list``. ``fields``:
    the known fields of the object, or of each object in the list (then every
    item must be an object).
    """

    kind: str
    fields: Mapping[str, Shape] | None = None


def _is_number(value: Any) -> bool:
    kind = type(value)
    if kind is int or kind is float:
        return True
    if kind is str:
        try:
            float(value)  # surrounding blanks are allowed
        except ValueError:
            try:
                float(value.rstrip().removesuffix("%"))  # "80%"
            except ValueError:
                return False
        return True
    return False


def _fits(shape: Shape, value: Any) -> bool:
    kind = shape.kind
    if kind == NUMBER:
        return _is_number(value)
    if kind == OBJECT:
        return type(value) is dict
    if kind == LIST:
        if type(value) is not list:
            return False
        return shape.fields is None or all(type(item) is dict for item in value)
    return type(value) is str


_N = Shape(NUMBER)
_T = Shape(TEXT)
_L = Shape(LIST)
_O = Shape(OBJECT)


def _obj(**fields: Shape) -> Shape:
    return Shape(OBJECT, fields)


def _items(**fields: Shape) -> Shape:
    return Shape(LIST, fields)


_PACKED = _obj(info=_obj(temp=_N))  # device.bed / device.ctc: ``temp`` packs current | target << 16

# What a user reads of a tray and a wrong type would blank (few fields: an X1 report
# carries 16 trays or more, and each costs on every report). A colour or ``state`` of
# the wrong type blanks nothing: it reads as some other colour, as "not empty".
TRAY_SHAPE: Mapping[str, Shape] = {"tray_type": _T, "remain": _N}

# The fields of ``print.push_status`` that the typed state reads (PROTOCOL.md §2.3,
# §2.6.1). Hex strings (``fun``, ``stat``, ``*_exist_bits``) are left alone: they
# are not numbers in the sense checked here.
REPORT_SHAPE: Mapping[str, Shape] = {
    **dict.fromkeys(
        (
            "nozzle_temper",
            "nozzle_target_temper",
            "bed_temper",
            "bed_target_temper",
            "chamber_temper",
            "mc_percent",
            "mc_remaining_time",
            "layer_num",
            "total_layer_num",
            "stg_cur",
            "spd_lvl",
            "spd_mag",
            "cooling_fan_speed",
            "big_fan1_speed",
            "big_fan2_speed",
            "heatbreak_fan_speed",
            "print_error",
            "home_flag",
            "nozzle_diameter",
            "mc_print_stage",
            "gcode_file_prepare_percent",
        ),
        _N,
    ),
    **dict.fromkeys(
        ("gcode_state", "print_type", "subtask_name", "gcode_file", "wifi_signal", "nozzle_type"),
        _T,
    ),
    **dict.fromkeys(("hms", "lights_report", "s_obj", "stg"), _L),
    **dict.fromkeys(("ipcam", "xcam", "upgrade_state", "upload", "online"), _O),
    "net": _obj(info=_items(ip=_N)),
    "vt_tray": Shape(OBJECT, TRAY_SHAPE),
    "vir_slot": Shape(LIST, TRAY_SHAPE),
    "ams": _obj(
        ams=_items(humidity=_N, humidity_raw=_N, temp=_N, tray=Shape(LIST, TRAY_SHAPE)),
        tray_now=_N,
        tray_pre=_N,
        tray_tar=_N,
    ),
    "device": _obj(
        extruder=_obj(state=_N, info=_items(temp=_N, snow=_N)),
        nozzle=_obj(info=_items(diameter=_N, type=_T)),
        bed=_PACKED,
        ctc=_PACKED,
        airduct=_obj(parts=_L),
    ),
}


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A shape table grouped by kind for the hot path: keys of numbers, of text,
    of objects and of lists (the last two with their compiled fields, or None)."""

    numbers: tuple[str, ...]
    texts: tuple[str, ...]
    objects: tuple[tuple[str, _Compiled | None], ...]
    lists: tuple[tuple[str, _Compiled | None], ...]
    # key -> (kind, fields): for a delta, which names a few of the many known keys
    kinds: Mapping[str, tuple[str, _Compiled | None]]


def _compile(shapes: Mapping[str, Shape]) -> _Compiled:
    def sub(shape: Shape) -> _Compiled | None:
        return _compile(shape.fields) if shape.fields is not None else None

    objects = tuple((k, sub(s)) for k, s in shapes.items() if s.kind == OBJECT)
    lists = tuple((k, sub(s)) for k, s in shapes.items() if s.kind == LIST)
    kinds: dict[str, tuple[str, _Compiled | None]] = {
        k: (s.kind, None) for k, s in shapes.items() if s.kind in (NUMBER, TEXT)
    }
    kinds.update((k, (OBJECT, c)) for k, c in objects)
    kinds.update((k, (LIST, c)) for k, c in lists)
    return _Compiled(
        tuple(k for k, s in shapes.items() if s.kind == NUMBER),
        tuple(k for k, s in shapes.items() if s.kind == TEXT),
        objects,
        lists,
        kinds,
    )


def _delta_fits(node: dict[str, Any], shapes: _Compiled) -> bool:
    """:func:`_all_fit` for a node with few keys: one lookup per key it has."""
    kinds = shapes.kinds
    for key, value in node.items():
        entry = kinds.get(key)
        if entry is None:
            continue
        kind, fields = entry
        vtype = type(value)
        if kind == NUMBER:
            if not (
                vtype is float
                or vtype is int
                or (vtype is str and (value.isdigit() or _is_number(value)))
            ):
                return False
        elif kind == TEXT:
            if vtype is not str:
                return False
        elif kind == OBJECT:
            if vtype is not dict or (fields is not None and not _all_fit(value, fields)):
                return False
        elif vtype is not list:
            return False
        elif fields is not None:
            for item in value:
                if type(item) is not dict or not _all_fit(item, fields):
                    return False
    return True


_ABSENT = object()


def _all_fit(node: dict[str, Any], shapes: _Compiled) -> bool:
    # The hot path of every report: one lookup per known field, nothing built. Only
    # when it finds something wrong does the slower _check name the culprits.
    if len(node) < len(shapes.kinds):  # fewer keys than known (a P1/A1 delta, a tray)
        return _delta_fits(node, shapes)
    get = node.get
    for key in shapes.numbers:
        value = get(key, 0)
        kind = type(value)
        if kind is float or kind is int:
            continue
        if kind is str and (value.isdigit() or _is_number(value)):
            continue
        return False
    for key in shapes.texts:
        if type(get(key, "")) is not str:
            return False
    for key, fields in shapes.objects:
        value = get(key, _ABSENT)
        if value is _ABSENT:
            continue
        if type(value) is not dict or (fields is not None and not _all_fit(value, fields)):
            return False
    for key, fields in shapes.lists:
        value = get(key, _ABSENT)
        if value is _ABSENT:
            continue
        if type(value) is not list:
            return False
        if fields is None:
            continue
        if fields.objects or fields.lists:
            for item in value:
                if type(item) is not dict or not _all_fit(item, fields):
                    return False
            continue
        # Items of numbers and text only (trays): checked here, without a call per item.
        numbers, texts = fields.numbers, fields.texts
        for item in value:
            if type(item) is not dict:
                return False
            get = item.get
            for name in numbers:
                number = get(name, 0)
                kind = type(number)
                if not (
                    kind is int
                    or kind is float
                    or (kind is str and (number.isdigit() or _is_number(number)))
                ):
                    return False
            for name in texts:
                if type(get(name, "")) is not str:
                    return False
    return True


_REPORT_COMPILED = _compile(REPORT_SHAPE)


@dataclass(frozen=True, slots=True)
class _At:
    """A step into a list: the item's position in the update and its ``id``."""

    index: int
    id: Any


def _check(
    node: dict[str, Any],
    shapes: Mapping[str, Shape],
    trail: tuple[Any, ...],
    bad: list[tuple[Any, ...]],
) -> None:
    for key, value in node.items():
        shape = shapes.get(key)
        if shape is None:
            continue
        if not _fits(shape, value):
            bad.append((*trail, key))
            continue
        fields = shape.fields
        if fields is None:
            continue
        if shape.kind == OBJECT:
            _check(value, fields, (*trail, key), bad)
        else:
            for index, item in enumerate(value):
                _check(item, fields, (*trail, key, _At(index, item.get("id"))), bad)


def _find(items: Any, item_id: Any) -> Any:
    if type(items) is not list or item_id is None:
        return None
    for item in items:
        if type(item) is dict and str(item.get("id")) == str(item_id):
            return item
    return None


def _restore(update: dict[str, Any], base: Mapping[str, Any], trail: tuple[Any, ...]) -> None:
    """Put the last good value (or nothing) where ``update`` has a malformed one."""
    node: Any = update
    old: Any = base
    for step in trail[:-1]:
        if isinstance(step, _At):
            node = node[step.index]
            old = _find(old, step.id)
        else:
            node = node[step]
            old = old.get(step) if isinstance(old, Mapping) else None
    key = trail[-1]
    previous = old.get(key) if isinstance(old, Mapping) else None
    if previous is None:
        del node[key]
    else:
        node[key] = previous


def _field_name(trail: tuple[Any, ...]) -> str:
    return ".".join(step for step in trail if not isinstance(step, _At))


def repair_report(base: Mapping[str, Any], update: dict[str, Any]) -> tuple[str, ...]:
    """Keep the last good value of every malformed known field of ``update`` (in place).

    ``update`` is a freshly parsed ``print`` report that the caller owns;
    ``base`` the merged state it goes into (read, never changed). A field of
    :data:`REPORT_SHAPE` whose value has the wrong shape gets the value
    ``base`` holds at the same place (list items found by ``id``), or is
    removed when ``base`` has none. Returns the names of the fields repaired
    (``ams.ams.tray.remain``: ids left out, so a name stands for one field of
    every unit or tray).
    """
    if _all_fit(update, _REPORT_COMPILED):
        return ()
    bad: list[tuple[Any, ...]] = []
    _check(update, REPORT_SHAPE, (), bad)
    for trail in bad:
        _restore(update, base, trail)
    return tuple(dict.fromkeys(_field_name(trail) for trail in bad))


def tray_is_empty(tray: Mapping[str, Any]) -> bool:
    """A tray sent as only ``{"id": ...}`` or with ``state`` 0 holds no filament."""
    return len(tray) == 1 or tray.get("state") == 0


def _merged_trays(current: list[Any], update: list[Any]) -> list[Any]:
    # By id like _merged_list, except that an empty tray replaces the old one whole.
    out = list(current)
    index = {str(item.get("id")): i for i, item in enumerate(out) if type(item) is dict}
    for tray in update:
        if type(tray) is not dict or "id" not in tray:
            continue
        at = index.get(str(tray["id"]))
        if at is None:
            index[str(tray["id"])] = len(out)
            out.append(tray)
        elif tray_is_empty(tray) or tray.keys() >= out[at].keys():
            # Empty, or sent whole (firmware writes a tray as one unit): taken as sent,
            # which is what a field-by-field merge would give, without the walk.
            out[at] = tray
        else:
            out[at] = _merged_owned(out[at], tray)
    return out


def _merged_unit(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    trays, old = update.get("tray"), current.get("tray")
    if type(trays) is list and type(old) is list:
        unit = _merged_owned(current, update, ("tray",))
        unit["tray"] = _merged_trays(old, trays)
        return unit
    return _merged_owned(current, update)


def _merged_ams(current: Any, update: dict[str, Any]) -> dict[str, Any]:
    units = update.get("ams")
    if type(current) is not dict:
        return update
    if type(units) is not list:
        return _merged_owned(current, update)
    out = _merged_owned(current, update, ("ams",))
    old_units = current.get("ams")
    by_id = (
        {str(u.get("id")): u for u in old_units if type(u) is dict}
        if type(old_units) is list
        else {}
    )
    fresh = []
    for unit in units:
        if type(unit) is not dict or "id" not in unit:
            continue
        old = by_id.get(str(unit["id"]))
        fresh.append(unit if old is None else _merged_unit(old, unit))
    # Only the units listed: one missing from the list was taken away.
    out["ams"] = fresh
    return out


_REPORT_SKIP = ("command", "sequence_id", "msg", "ams")  # the envelope, and the AMS block


def merged_report(base: Mapping[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with a partial ``print`` report merged in, by the report's rules.

    :func:`merged` (copy-on-write, ``update`` owned) plus the AMS rules above:
    ``ams.ams`` is the whole set of units, an empty tray replaces the old one.
    The envelope keys (``command``, ``sequence_id``, ``msg``) are left out.
    """
    ams = update.get("ams")
    if type(ams) is not dict:
        return _merged_owned(base, update, ENVELOPE_KEYS)
    out = _merged_owned(base, update, _REPORT_SKIP)
    out["ams"] = _merged_ams(base.get("ams"), ams)
    return out


# --- reading messages ------------------------------------------------------------------

MessageKind = Literal["report", "reply", "event", "ignored"]


@dataclass(slots=True)
class Incoming:
    """What one message on a report topic turned out to be."""

    kind: MessageKind
    serial: str | None
    family: str = ""
    command: str = ""
    sequence_id: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    # Known fields of a report that had the wrong shape (their last good value was kept).
    malformed: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        """For replies: ``result`` is ``success`` (any case) and no error code."""
        result = str(self.body.get("result", "success")).lower()
        return result in ("success", "ok", "") and not _nonzero(self.body.get("err_code"))

    @property
    def reason(self) -> str:
        """For replies: the printer's explanation, if any."""
        for key in ("reason", "error", "errmsg", "result"):
            value = self.body.get(key)
            if value and str(value).lower() not in ("success", "failed", "fail"):
                return str(value)
        return ""


def _nonzero(value: Any) -> bool:
    try:
        return int(value) != 0
    except (TypeError, ValueError):
        return False


REPORT_COMMANDS = frozenset({"push_status"})

# How old a printer's last report may get before it is no longer current
# (PROTOCOL.md §2.3), by report style. X1 printers ("full") send the whole
# state every second or two whatever happens: ten seconds is several missed
# reports. P1/A1 and newer ("delta") send only what changed: while printing
# that is still every few seconds (temperatures, progress), but an idle one
# may legitimately say nothing for tens of seconds, so only a minute of
# silence means something is wrong.
STALE_AFTER = {"full": 10.0, "delta": 60.0}


def stale_after(report_style: str) -> float:
    """Seconds without a report after which a printer of ``report_style`` counts as stale."""
    return STALE_AFTER.get(report_style, STALE_AFTER["delta"])


def decode(topic: str, payload: bytes, *, loads: Callable[[bytes], Any] = json.loads) -> Incoming:
    """Classify one message; never raises (a bad payload is ``ignored`` with a ``problem``)."""
    serial = serial_of(topic)
    if len(payload) > MAX_PAYLOAD:
        return Incoming("ignored", serial, problem=f"payload of {len(payload)} bytes is too large")
    if nesting_exceeds(payload):
        # Parsers may accept it (orjson up to 1024 levels), but the merge, the
        # models and any later dump of the state would recurse that deep too.
        return Incoming("ignored", serial, problem=f"nested deeper than {MAX_DEPTH} levels")
    try:
        data = loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return Incoming("ignored", serial, problem=f"not JSON ({type(exc).__name__})")
    if not isinstance(data, dict) or not data:
        return Incoming("ignored", serial, problem="not a JSON object")
    if "event" in data and isinstance(data["event"], dict):
        return Incoming(
            "event", serial, "event", str(data["event"].get("event", "")), None, data["event"]
        )
    for family, body in data.items():
        if not isinstance(body, dict):
            continue
        command = str(body.get("command", ""))
        seq = body.get("sequence_id")
        seq_text = str(seq) if isinstance(seq, (str, int)) and not isinstance(seq, bool) else None
        is_reply = command not in REPORT_COMMANDS and ("result" in body or family != "print")
        if family == "print" and command == "push_status":
            return Incoming("report", serial, family, command, seq_text, body)
        if is_reply and command:
            return Incoming("reply", serial, family, command, seq_text, body)
        return Incoming("report", serial, family, command, seq_text, body)
    return Incoming("ignored", serial, problem="no message family")


ENVELOPE_KEYS = ("command", "sequence_id", "msg")


class ReportStream:
    """The merged state of one printer, fed message by message.

    ``feed(payload)`` merges ``print`` reports into :attr:`state` (the wire
    dict, as if the printer had sent everything every time) and keeps the
    latest body of every other family under its own key of :attr:`families`
    (``info``, ``system``, ...). Returns the :class:`Incoming` it saw.

    Copy-on-write: every message that changes something produces a *new*
    :attr:`state` (or :attr:`families`) dict, built by :func:`merged` from the
    previous one, and rebinds the attribute in one assignment. A dict once
    exposed through :attr:`state` or :attr:`families` (and every object under
    it) is never mutated again, so another thread may read the one it got
    while later reports arrive. Readers must not mutate it either.

    ``full_reports`` says the printer sends the whole object every time (X1
    family): then a report replaces the top-level keys it carries instead of
    being merged leaf by leaf, which is what keeps a 12 KB report cheap. The
    first report is always adopted that way: there is nothing to merge into.

    Partial reports merge by :func:`merged_report` (``ams.ams`` is the whole
    set of units; an empty tray replaces the old one). In both modes a known
    field with the wrong shape keeps its last good value
    (:func:`repair_report`); the fields are named in ``Incoming.malformed``
    and counted in :attr:`malformed`.
    """

    def __init__(
        self,
        serial: str,
        *,
        loads: Callable[[bytes], Any] = json.loads,
        full_reports: bool = False,
    ) -> None:
        self.serial = serial
        self.state: dict[str, Any] = {}
        self.families: dict[str, dict[str, Any]] = {}
        self.reports = 0
        self.problems = 0
        self.malformed = 0  # known fields that came with the wrong shape (last good value kept)
        self.full_reports = full_reports
        self._loads = loads

    def feed(self, payload: bytes, topic: str | None = None) -> Incoming:
        """Take one message from ``device/<serial>/report``."""
        incoming = decode(topic or report_topic(self.serial), payload, loads=self._loads)
        self.apply(incoming)
        return incoming

    def apply(self, incoming: Incoming) -> None:
        """Merge an already-decoded message (whose body this stream now owns)."""
        if incoming.kind == "ignored":
            self.problems += 1
            return
        body = incoming.body
        try:
            if incoming.kind == "report" and incoming.family == "print":
                malformed = repair_report(self.state, body)
                if malformed:
                    incoming.malformed = malformed
                    self.malformed += len(malformed)
                if self.full_reports or not self.state:
                    state = {**self.state, **body}
                    for key in ENVELOPE_KEYS:
                        state.pop(key, None)
                else:
                    state = merged_report(self.state, body)
                self.state = state
                self.reports += 1
            elif incoming.kind in ("report", "reply") and incoming.family:
                # Not owned: a reply's body also goes to whoever waited for it.
                family = merged(self.families.get(incoming.family, {}), body)
                self.families = {**self.families, incoming.family: family}
        except RecursionError:
            # Only a hostile payload nests deeper than the interpreter recurses;
            # nothing was assigned, so the state is what it was.
            self.problems += 1
            incoming.kind = "ignored"
            incoming.problem = "nested too deeply"


# --- signed commands (PROTOCOL.md §2.8) --------------------------------------------------


def signing_bytes(payload: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the family object as compact JSON with sorted keys."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def sign_envelope(
    command: Command, sign: Callable[[bytes], bytes], cert_serial_hex: str, printer_serial: str
) -> dict[str, Any]:
    """The signed form of ``command``: its payload plus a ``header`` block.

    ``sign`` is an RSA-SHA256 signer over the caller's own key (this project
    ships none).
    """
    payload = command.payload()
    signed = signing_bytes(payload)
    signature = base64.b64encode(sign(signed)).decode()
    return {
        **payload,
        "header": {
            "sign_ver": "v1.0",
            "sign_alg": "RSA_SHA256",
            "sign_string": signature,
            "cert_id": f"{cert_serial_hex}CN={printer_serial}.bambulab.com",
            "payload_len": len(signed),
        },
    }
