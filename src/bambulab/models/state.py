"""Typed, cheap views of a printer's merged report (``print.push_status``).

:class:`PrinterState` holds the merged wire dict and computes each property
on access, so an update costs nothing and a read only what it reads. Every
reader tolerates absent fields, wrong types and unknown values: it answers
``None``/``UNKNOWN``/empty, never raises.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..vocabulary import SPEED_NAMES, TRAY_EXTERNAL, TRAY_NONE
from .printer import (
    UNKNOWN_MODEL,
    HMSEntry,
    PrinterModel,
    PrintError,
    detect_model,
    hms_entries,
    stage_name,
)

GCODE_STATES = frozenset(
    {"IDLE", "PREPARE", "RUNNING", "PAUSE", "FINISH", "FAILED", "SLICING", "INIT", "OFFLINE"}
)
# AMS kinds by firmware module prefix (``get_version`` module names like ``n3f/0``).
AMS_KINDS = {"ams": "AMS", "ams_f1": "AMS Lite", "n3f": "AMS 2 Pro", "n3s": "AMS HT"}


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().rstrip("%"))
        except ValueError:
            return None
    return None


def _int(value: Any) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def unpack_temp(value: Any) -> tuple[float | None, float | None]:
    """Newer firmware packs ``current | target << 16`` into one int."""
    packed = _int(value)
    if packed is None:
        return None, None
    return float(packed & 0xFFFF), float(packed >> 16 & 0xFFFF)


def fan_percent(value: Any) -> int | None:
    """Fan speeds travel as strings 0-15; as a percentage."""
    raw = _int(value)
    if raw is None:
        return None
    return max(0, min(100, round(raw * 100 / 15)))


@dataclass(frozen=True, slots=True)
class Tray:
    """One filament slot."""

    id: int
    ams_id: int
    global_id: int
    type: str
    colour: str
    remain: int | None
    info_idx: str = ""
    nozzle_temp_min: int | None = None
    nozzle_temp_max: int | None = None
    k: float | None = None
    tag_uid: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def empty(self) -> bool:
        """No filament loaded in this slot."""
        return not self.type

    @property
    def colour_rgb(self) -> str:
        """``#RRGGBB`` for display."""
        return f"#{self.colour[:6]}" if len(self.colour) >= 6 else ""


@dataclass(frozen=True, slots=True)
class AmsUnit:
    """One AMS unit (AMS, AMS Lite, AMS 2 Pro, AMS HT)."""

    id: int
    kind: str
    humidity_level: int | None
    humidity_percent: int | None
    temp: float | None
    trays: tuple[Tray, ...]


@dataclass(frozen=True, slots=True)
class Extruder:
    """One nozzle of a (possibly dual-nozzle) printer."""

    index: int
    temp: float | None
    target: float | None
    ams_id: int | None
    slot: int | None


def _tray(raw: Mapping[str, Any], ams_id: int) -> Tray:
    tray_id = _int(raw.get("id"))
    tid = tray_id if tray_id is not None else -1
    if ams_id in (TRAY_NONE, TRAY_EXTERNAL):
        global_id = tid
    elif ams_id >= 128:
        global_id = ams_id
    else:
        global_id = ams_id * 4 + tid
    remain = _int(raw.get("remain"))
    return Tray(
        id=tid,
        ams_id=ams_id,
        global_id=global_id,
        type=_str(raw.get("tray_type")),
        colour=_str(raw.get("tray_color")).upper(),
        remain=None if remain is None or remain < 0 else remain,
        info_idx=_str(raw.get("tray_info_idx")),
        nozzle_temp_min=_int(raw.get("nozzle_temp_min")),
        nozzle_temp_max=_int(raw.get("nozzle_temp_max")),
        k=_float(raw.get("k")),
        tag_uid=_str(raw.get("tag_uid")),
        raw=raw,
    )


def _tray_dict(tray: Tray) -> dict[str, Any]:
    return {"id": tray.global_id, "type": tray.type, "colour": tray.colour, "remain": tray.remain}


def _ams_kind(unit_id: int, modules: Mapping[int, str]) -> str:
    if unit_id >= 128:
        return "AMS HT"
    return modules.get(unit_id, "AMS")


class PrinterState:
    """The state of one printer, read from its merged report.

    ``PrinterState(serial, report)``; ``report`` is the merged ``print`` dict
    (kept by reference, not copied: updating it updates the state).
    """

    __slots__ = ("_model", "info", "raw", "serial")

    def __init__(
        self,
        serial: str = "",
        raw: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
        dev_model_name: str | None = None,
    ) -> None:
        self.serial = serial
        self.raw: dict[str, Any] = raw if raw is not None else {}
        self.info: dict[str, Any] = info if info is not None else {}
        self._model = (
            detect_model(serial, dev_model_name) if serial or dev_model_name else UNKNOWN_MODEL
        )

    def __repr__(self) -> str:
        return (
            f"PrinterState({self.serial!r}, model={self.model.product!r}, "
            f"state={self.gcode_state!r}, percent={self.percent!r})"
        )

    def __getitem__(self, key: str) -> Any:
        # The seed's examples read wire keys: status['ams']['ams'], data['mc_percent'].
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        """A wire value of the merged report."""
        return self.raw.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.raw

    # --- identity -------------------------------------------------------------------

    @property
    def model(self) -> PrinterModel:
        """The printer model (from serial, ``dev_model_name`` or ``get_version``)."""
        if self._model is UNKNOWN_MODEL:
            modules = [m for m in _list(self.info.get("module")) if isinstance(m, Mapping)]
            if modules:
                self._model = detect_model(self.serial, None, modules)
        return self._model

    @property
    def firmware(self) -> str:
        """The printer firmware version (module ``ota`` of ``get_version``)."""
        for module in _list(self.info.get("module")):
            if isinstance(module, Mapping) and module.get("name") == "ota":
                return _str(module.get("sw_ver"))
        return ""

    # --- temperatures -----------------------------------------------------------------

    def _device_temp(self, *path: str) -> tuple[float | None, float | None]:
        node: Any = self.raw.get("device")
        for key in path:
            node = _dict(node).get(key)
        return unpack_temp(node)

    @property
    def nozzle_temp(self) -> float | None:
        """Current nozzle temperature (°C)."""
        value = _float(self.raw.get("nozzle_temper"))
        return value if value is not None else (self.extruders[0].temp if self.extruders else None)

    @property
    def nozzle_target(self) -> float | None:
        """Nozzle target temperature (°C)."""
        value = _float(self.raw.get("nozzle_target_temper"))
        return (
            value if value is not None else (self.extruders[0].target if self.extruders else None)
        )

    @property
    def bed_temp(self) -> float | None:
        """Current bed temperature (°C)."""
        value = _float(self.raw.get("bed_temper"))
        return value if value is not None else self._device_temp("bed", "info", "temp")[0]

    @property
    def bed_target(self) -> float | None:
        """Bed target temperature (°C)."""
        value = _float(self.raw.get("bed_target_temper"))
        return value if value is not None else self._device_temp("bed", "info", "temp")[1]

    @property
    def chamber_temp(self) -> float | None:
        """Chamber temperature (°C), where measured."""
        value = _float(self.raw.get("chamber_temper"))
        return value if value is not None else self._device_temp("ctc", "info", "temp")[0]

    @property
    def chamber_target(self) -> float | None:
        """Chamber target (°C), on printers with a heater."""
        return self._device_temp("ctc", "info", "temp")[1]

    @property
    def extruders(self) -> tuple[Extruder, ...]:
        """Nozzles from ``device.extruder.info[]`` (dual-nozzle printers and newer firmware)."""
        info = _list(_dict(_dict(self.raw.get("device")).get("extruder")).get("info"))
        out = []
        for index, item in enumerate(info):
            if not isinstance(item, Mapping):
                continue
            temp, target = unpack_temp(item.get("temp"))
            snow = _int(item.get("snow"))
            ams_id = snow >> 8 & 0xFF if snow is not None else None
            slot = snow & 0xFF if snow is not None else None
            out.append(Extruder(_int(item.get("id")) or index, temp, target, ams_id, slot))
        return tuple(out)

    @property
    def active_extruder(self) -> int | None:
        """Which nozzle is in use (``device.extruder.state`` bits 4-7)."""
        state = _int(_dict(_dict(self.raw.get("device")).get("extruder")).get("state"))
        return state >> 4 & 0xF if state is not None else None

    # --- job ------------------------------------------------------------------------------

    @property
    def gcode_state(self) -> str:
        """IDLE, PREPARE, RUNNING, PAUSE, FINISH, FAILED, ... or UNKNOWN."""
        value = _str(self.raw.get("gcode_state")).upper()
        return value if value in GCODE_STATES else ("UNKNOWN" if value else "")

    @property
    def printing(self) -> bool:
        """A job is preparing or running."""
        return self.gcode_state in ("PREPARE", "RUNNING", "SLICING")

    @property
    def percent(self) -> int | None:
        """Progress of the job (%)."""
        return _int(self.raw.get("mc_percent"))

    @property
    def remaining_minutes(self) -> int | None:
        """Minutes left in the job."""
        return _int(self.raw.get("mc_remaining_time"))

    @property
    def layer(self) -> int | None:
        """Current layer."""
        return _int(self.raw.get("layer_num"))

    @property
    def total_layers(self) -> int | None:
        """Layers in the job."""
        return _int(self.raw.get("total_layer_num"))

    @property
    def stage(self) -> int | None:
        """The current stage id (``stg_cur``)."""
        return _int(self.raw.get("stg_cur"))

    @property
    def stage_name(self) -> str:
        """The current stage in words."""
        return stage_name(self.raw.get("stg_cur"))

    @property
    def job_name(self) -> str:
        """The job's name (``subtask_name``, else the G-code file)."""
        return _str(self.raw.get("subtask_name")) or _str(self.raw.get("gcode_file"))

    @property
    def print_type(self) -> str:
        """cloud, local, idle or system."""
        return _str(self.raw.get("print_type"))

    @property
    def task_id(self) -> str:
        """The cloud task id of the job ("0" for LAN jobs)."""
        return _str(self.raw.get("task_id"))

    @property
    def print_error(self) -> PrintError:
        """The decoded ``print_error`` (falsy when none)."""
        return PrintError(_int(self.raw.get("print_error")) or 0)

    @property
    def hms(self) -> list[HMSEntry]:
        """Active HMS entries, decoded."""
        return hms_entries(self.raw.get("hms"))

    @property
    def skipped_objects(self) -> list[int]:
        """Object ids skipped in this job."""
        return [v for v in (_int(x) for x in _list(self.raw.get("s_obj"))) if v is not None]

    # --- fans, speed, lights, network ------------------------------------------------------

    @property
    def part_fan(self) -> int | None:
        """Part cooling fan (%)."""
        return fan_percent(self.raw.get("cooling_fan_speed"))

    @property
    def aux_fan(self) -> int | None:
        """Auxiliary fan (%)."""
        return fan_percent(self.raw.get("big_fan1_speed"))

    @property
    def chamber_fan(self) -> int | None:
        """Chamber fan (%)."""
        return fan_percent(self.raw.get("big_fan2_speed"))

    @property
    def heatbreak_fan(self) -> int | None:
        """Heatbreak fan (%)."""
        return fan_percent(self.raw.get("heatbreak_fan_speed"))

    @property
    def speed_level(self) -> int | None:
        """1 silent, 2 standard, 3 sport, 4 ludicrous."""
        return _int(self.raw.get("spd_lvl"))

    @property
    def speed_name(self) -> str:
        """The speed level in words."""
        level = self.speed_level
        return SPEED_NAMES.get(level, "") if level is not None else ""

    @property
    def speed_percent(self) -> int | None:
        """Speed magnitude (%)."""
        return _int(self.raw.get("spd_mag"))

    @property
    def lights(self) -> dict[str, str]:
        """Light node → mode (on, off, flashing)."""
        out = {}
        for item in _list(self.raw.get("lights_report")):
            if isinstance(item, Mapping) and item.get("node"):
                out[_str(item["node"])] = _str(item.get("mode"))
        return out

    @property
    def wifi_dbm(self) -> int | None:
        """Wi-Fi signal in dBm."""
        return _int(_str(self.raw.get("wifi_signal")).lower().replace("dbm", ""))

    @property
    def nozzle_diameter(self) -> float | None:
        """Fitted nozzle diameter (mm)."""
        return _float(self.raw.get("nozzle_diameter"))

    @property
    def nozzle_type(self) -> str:
        """Fitted nozzle material."""
        return _str(self.raw.get("nozzle_type"))

    @property
    def ip_address(self) -> str | None:
        """The printer's IP (``net.info[].ip``, a little-endian uint32)."""
        for item in _list(_dict(self.raw.get("net")).get("info")):
            ip = _int(_dict(item).get("ip"))
            if ip:
                return ".".join(str(ip >> s & 0xFF) for s in (0, 8, 16, 24))
        return None

    # --- AMS --------------------------------------------------------------------------------

    def _ams_block(self) -> Mapping[str, Any]:
        return _dict(self.raw.get("ams"))

    @property
    def ams_units(self) -> tuple[AmsUnit, ...]:
        """Every AMS unit with its trays (AMS HT units have ids 128-135 and one slot)."""
        modules: dict[int, str] = {}
        for module in _list(self.info.get("module")):
            name = _str(_dict(module).get("name"))
            prefix, _, number = name.partition("/")
            kind = AMS_KINDS.get(prefix)
            if kind and number.isdigit():
                modules[int(number)] = kind
        units = []
        for raw in _list(self._ams_block().get("ams")):
            if not isinstance(raw, Mapping):
                continue
            unit_id = _int(raw.get("id"))
            if unit_id is None:
                continue
            level = _int(raw.get("humidity"))
            trays = tuple(
                _tray(t, unit_id) for t in _list(raw.get("tray")) if isinstance(t, Mapping)
            )
            units.append(
                AmsUnit(
                    id=unit_id,
                    kind=_ams_kind(unit_id, modules),
                    humidity_level=level if level is not None and 1 <= level <= 5 else None,
                    humidity_percent=_int(raw.get("humidity_raw")),
                    temp=_float(raw.get("temp")),
                    trays=trays,
                )
            )
        return tuple(sorted(units, key=lambda u: u.id))

    @property
    def external_spools(self) -> tuple[Tray, ...]:
        """The external spool (``vt_tray``) or, on dual-external printers, ``vir_slot[]``."""
        slots = [s for s in _list(self.raw.get("vir_slot")) if isinstance(s, Mapping)]
        if slots:
            return tuple(_tray(s, TRAY_EXTERNAL) for s in slots)
        vt = self.raw.get("vt_tray")
        return (_tray(vt, TRAY_EXTERNAL),) if isinstance(vt, Mapping) else ()

    @property
    def trays(self) -> tuple[Tray, ...]:
        """Every slot: AMS trays then external spools."""
        return tuple(t for u in self.ams_units for t in u.trays) + self.external_spools

    @property
    def tray_now(self) -> int | None:
        """Global id of the loaded tray: 255 none, 254 external, else ``ams*4+slot``."""
        return _int(self._ams_block().get("tray_now"))

    @property
    def active_tray(self) -> Tray | None:
        """The tray currently feeding the nozzle."""
        now = self.tray_now
        if now is None or now == TRAY_NONE:
            return None
        for tray in self.trays:
            if tray.global_id == now or (now == TRAY_EXTERNAL and tray.ams_id == TRAY_EXTERNAL):
                return tray
        return None

    def snapshot(self) -> PrinterState:
        """A frozen copy: the live state keeps changing on the network thread."""
        return PrinterState(
            self.serial, copy.deepcopy(self.raw), copy.deepcopy(self.info), self._model.code or None
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary for scripts (``--json``)."""
        return {
            "serial": self.serial,
            "model": self.model.product,
            "gcode_state": self.gcode_state,
            "stage": self.stage_name,
            "job": self.job_name,
            "percent": self.percent,
            "layer": self.layer,
            "total_layers": self.total_layers,
            "remaining_minutes": self.remaining_minutes,
            "nozzle_temp": self.nozzle_temp,
            "nozzle_target": self.nozzle_target,
            "bed_temp": self.bed_temp,
            "bed_target": self.bed_target,
            "chamber_temp": self.chamber_temp,
            "chamber_target": self.chamber_target,
            "fans": {"part": self.part_fan, "aux": self.aux_fan, "chamber": self.chamber_fan},
            "speed": self.speed_name,
            "lights": self.lights,
            "wifi_dbm": self.wifi_dbm,
            "print_error": str(self.print_error) if self.print_error else None,
            "hms": [str(h) for h in self.hms],
            "ams": [
                {
                    "id": u.id,
                    "kind": u.kind,
                    "humidity_level": u.humidity_level,
                    "humidity_percent": u.humidity_percent,
                    "temp": u.temp,
                    "trays": [_tray_dict(t) for t in u.trays],
                }
                for u in self.ams_units
            ],
            "external_spools": [_tray_dict(t) for t in self.external_spools],
            "active_tray": self.tray_now,
        }
