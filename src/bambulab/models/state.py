"""Typed, immutable views of a printer's merged report (``print.push_status``).

A :class:`PrinterState` is one moment of one printer: it holds one merged
wire dict (and one ``info`` dict) that nobody mutates, and computes each
typed property the first time it is read, then keeps it (a second read is an
attribute lookup). Making one costs nothing, reading costs only what is
read, and a state handed to another thread or carried by an event never
changes. Every reader tolerates absent fields, wrong types and unknown
values: it answers ``None``/``UNKNOWN``/empty, never raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, NoReturn

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
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is str and value.isdecimal():
        return int(value)
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
        """No filament in this slot: no filament type, or ``state`` 0 (current firmware)."""
        return not self.type or self.raw.get("state") == 0

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


# ``ams.ams[].info`` (a hex string) bits 0-3: the unit's type, as Bambu Studio's
# DevFilaSystemParser::ParseAmsInfo reads it (1 AMS, 2 AMS Lite, 3 N3F, 4 N3S).
AMS_INFO_KINDS = {1: "AMS", 2: "AMS Lite", 3: "AMS 2 Pro", 4: "AMS HT"}


def _ams_kind(raw: Mapping[str, Any], unit_id: int, modules: Mapping[int, str]) -> str:
    info = raw.get("info")
    if isinstance(info, str):
        try:
            kind = AMS_INFO_KINDS.get(int(info, 16) & 0xF)
        except ValueError:
            kind = None
        if kind:
            return kind
    if unit_id >= 128:
        return "AMS HT"
    return modules.get(unit_id, "AMS")


_EMPTY: Mapping[str, Any] = MappingProxyType({})


class PrinterState:
    """The state of one printer at one moment, read from its merged report.

    ``PrinterState(serial, report, info)``: ``report`` is the merged ``print``
    dict, ``info`` the latest ``info`` family body (``get_version``). The
    state takes them over as they are, without copying: whoever builds a
    state must never mutate them (or anything inside them) afterwards. The
    live client does not: its :class:`~bambulab.protocol.mqtt.ReportStream`
    builds a new dict per report by copy-on-write and the client swaps in a
    new state made with :meth:`evolve`.

    Immutable: assigning or deleting an attribute raises ``AttributeError``.
    :attr:`raw` and :attr:`info` are read-only views at the top level; the
    nested objects are plain dicts and lists that must not be mutated either.
    Typed properties are computed on first read and cached for the life of
    the state (the values they return are immutable, or fresh copies).
    """

    serial: str
    raw: Mapping[str, Any]
    info: Mapping[str, Any]
    _raw: dict[str, Any]
    _info: Mapping[str, Any]
    _hint: PrinterModel

    def __init__(
        self,
        serial: str = "",
        raw: dict[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
        dev_model_name: str | None = None,
    ) -> None:
        hint = detect_model(serial, dev_model_name) if serial or dev_model_name else UNKNOWN_MODEL
        self._set(serial, raw if raw is not None else {}, info, hint)

    def _set(
        self, serial: str, raw: dict[str, Any], info: Mapping[str, Any] | None, hint: PrinterModel
    ) -> None:
        self.__dict__.update(
            serial=serial,
            _raw=raw,
            raw=MappingProxyType(raw),
            _info=info if info is not None else _EMPTY,
            info=MappingProxyType(info) if info else _EMPTY,
            _hint=hint,
        )

    def evolve(
        self, *, raw: dict[str, Any] | None = None, info: Mapping[str, Any] | None = None
    ) -> PrinterState:
        """The next state: this one with a new merged report and/or ``info`` body.

        Same serial and model hint; nothing is computed until read. ``raw`` and
        ``info`` are taken over as they are (see the class).
        """
        state = PrinterState.__new__(PrinterState)
        state._set(
            self.serial,
            self._raw if raw is None else raw,
            self._info if info is None else info,
            self._hint,
        )
        return state

    def __copy__(self) -> PrinterState:
        return self  # immutable: a copy would be the same thing

    def __deepcopy__(self, memo: dict[int, Any]) -> PrinterState:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # The read-only views do not pickle; the dicts under them do.
        return (_rebuild, (self.serial, self._raw, dict(self._info), self._hint))

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"PrinterState is immutable (cannot set {name!r}): use evolve()")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"PrinterState is immutable (cannot delete {name!r})")

    def __repr__(self) -> str:
        return (
            f"PrinterState({self.serial!r}, model={self.model.product!r}, "
            f"state={self.gcode_state!r}, percent={self.percent!r})"
        )

    def __getitem__(self, key: str) -> Any:
        # The seed's examples read wire keys: status['ams']['ams'], data['mc_percent'].
        return self._raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        """A wire value of the merged report (nested values must not be mutated)."""
        return self._raw.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    # --- identity -------------------------------------------------------------------

    @cached_property
    def model(self) -> PrinterModel:
        """The printer model (from serial, ``dev_model_name`` or ``get_version``)."""
        if self._hint is UNKNOWN_MODEL:
            modules = [m for m in _list(self._info.get("module")) if isinstance(m, Mapping)]
            if modules:
                return detect_model(self.serial, None, modules)
        return self._hint

    @cached_property
    def firmware(self) -> str:
        """The printer firmware version (module ``ota`` of ``get_version``)."""
        for module in _list(self._info.get("module")):
            if isinstance(module, Mapping) and module.get("name") == "ota":
                return _str(module.get("sw_ver"))
        return ""

    # --- temperatures -----------------------------------------------------------------

    def _device_temp(self, *path: str) -> tuple[float | None, float | None]:
        node: Any = self._raw.get("device")
        for key in path:
            node = _dict(node).get(key)
        return unpack_temp(node)

    @cached_property
    def nozzle_temp(self) -> float | None:
        """Current nozzle temperature (°C)."""
        value = _float(self._raw.get("nozzle_temper"))
        return value if value is not None else (self.extruders[0].temp if self.extruders else None)

    @cached_property
    def nozzle_target(self) -> float | None:
        """Nozzle target temperature (°C)."""
        value = _float(self._raw.get("nozzle_target_temper"))
        return (
            value if value is not None else (self.extruders[0].target if self.extruders else None)
        )

    @cached_property
    def bed_temp(self) -> float | None:
        """Current bed temperature (°C)."""
        value = _float(self._raw.get("bed_temper"))
        return value if value is not None else self._device_temp("bed", "info", "temp")[0]

    @cached_property
    def bed_target(self) -> float | None:
        """Bed target temperature (°C)."""
        value = _float(self._raw.get("bed_target_temper"))
        return value if value is not None else self._device_temp("bed", "info", "temp")[1]

    @cached_property
    def chamber_temp(self) -> float | None:
        """Chamber temperature (°C), where measured."""
        value = _float(self._raw.get("chamber_temper"))
        return value if value is not None else self._device_temp("ctc", "info", "temp")[0]

    @cached_property
    def chamber_target(self) -> float | None:
        """Chamber target (°C), on printers with a heater."""
        return self._device_temp("ctc", "info", "temp")[1]

    @cached_property
    def extruders(self) -> tuple[Extruder, ...]:
        """Nozzles from ``device.extruder.info[]`` (dual-nozzle printers and newer firmware)."""
        info = _list(_dict(_dict(self._raw.get("device")).get("extruder")).get("info"))
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

    @cached_property
    def active_extruder(self) -> int | None:
        """Which nozzle is in use (``device.extruder.state`` bits 4-7)."""
        state = _int(_dict(_dict(self._raw.get("device")).get("extruder")).get("state"))
        return state >> 4 & 0xF if state is not None else None

    # --- job ------------------------------------------------------------------------------

    @cached_property
    def gcode_state(self) -> str:
        """IDLE, PREPARE, RUNNING, PAUSE, FINISH, FAILED, ... or UNKNOWN."""
        value = _str(self._raw.get("gcode_state")).upper()
        return value if value in GCODE_STATES else ("UNKNOWN" if value else "")

    @property
    def printing(self) -> bool:
        """A job is preparing or running."""
        return self.gcode_state in ("PREPARE", "RUNNING", "SLICING")

    @cached_property
    def percent(self) -> int | None:
        """Progress of the job (%)."""
        return _int(self._raw.get("mc_percent"))

    @cached_property
    def remaining_minutes(self) -> int | None:
        """Minutes left in the job."""
        return _int(self._raw.get("mc_remaining_time"))

    @cached_property
    def layer(self) -> int | None:
        """Current layer."""
        return _int(self._raw.get("layer_num"))

    @cached_property
    def total_layers(self) -> int | None:
        """Layers in the job."""
        return _int(self._raw.get("total_layer_num"))

    @cached_property
    def stage(self) -> int | None:
        """The current stage id (``stg_cur``)."""
        return _int(self._raw.get("stg_cur"))

    @cached_property
    def stage_name(self) -> str:
        """The current stage in words."""
        return stage_name(self._raw.get("stg_cur"))

    @cached_property
    def job_name(self) -> str:
        """The job's name (``subtask_name``, else the G-code file)."""
        return _str(self._raw.get("subtask_name")) or _str(self._raw.get("gcode_file"))

    @cached_property
    def print_type(self) -> str:
        """cloud, local, idle or system."""
        return _str(self._raw.get("print_type"))

    @cached_property
    def task_id(self) -> str:
        """The cloud task id of the job ("0" for LAN jobs)."""
        return _str(self._raw.get("task_id"))

    @cached_property
    def print_error(self) -> PrintError:
        """The decoded ``print_error`` (falsy when none)."""
        return PrintError(_int(self._raw.get("print_error")) or 0)

    @cached_property
    def hms(self) -> tuple[HMSEntry, ...]:
        """Active HMS entries, decoded."""
        return tuple(hms_entries(self._raw.get("hms")))

    @cached_property
    def _skipped(self) -> tuple[int, ...]:
        return tuple(v for v in (_int(x) for x in _list(self._raw.get("s_obj"))) if v is not None)

    @property
    def skipped_objects(self) -> list[int]:
        """Object ids skipped in this job (a new list each time)."""
        return list(self._skipped)

    # --- fans, speed, lights, network ------------------------------------------------------

    @cached_property
    def part_fan(self) -> int | None:
        """Part cooling fan (%)."""
        return fan_percent(self._raw.get("cooling_fan_speed"))

    @cached_property
    def aux_fan(self) -> int | None:
        """Auxiliary fan (%)."""
        return fan_percent(self._raw.get("big_fan1_speed"))

    @cached_property
    def chamber_fan(self) -> int | None:
        """Chamber fan (%)."""
        return fan_percent(self._raw.get("big_fan2_speed"))

    @cached_property
    def heatbreak_fan(self) -> int | None:
        """Heatbreak fan (%)."""
        return fan_percent(self._raw.get("heatbreak_fan_speed"))

    @cached_property
    def speed_level(self) -> int | None:
        """1 silent, 2 standard, 3 sport, 4 ludicrous."""
        return _int(self._raw.get("spd_lvl"))

    @cached_property
    def speed_name(self) -> str:
        """The speed level in words."""
        level = self.speed_level
        return SPEED_NAMES.get(level, "") if level is not None else ""

    @cached_property
    def speed_percent(self) -> int | None:
        """Speed magnitude (%)."""
        return _int(self._raw.get("spd_mag"))

    @cached_property
    def lights(self) -> Mapping[str, str]:
        """Light node → mode (on, off, flashing), read-only."""
        out = {}
        for item in _list(self._raw.get("lights_report")):
            if isinstance(item, Mapping) and item.get("node"):
                out[_str(item["node"])] = _str(item.get("mode"))
        return MappingProxyType(out)

    @cached_property
    def wifi_dbm(self) -> int | None:
        """Wi-Fi signal in dBm."""
        return _int(_str(self._raw.get("wifi_signal")).lower().replace("dbm", ""))

    @cached_property
    def nozzle_diameter(self) -> float | None:
        """Fitted nozzle diameter (mm)."""
        return _float(self._raw.get("nozzle_diameter"))

    @cached_property
    def nozzle_type(self) -> str:
        """Fitted nozzle material."""
        return _str(self._raw.get("nozzle_type"))

    @cached_property
    def ip_address(self) -> str | None:
        """The printer's IP (``net.info[].ip``, a little-endian uint32)."""
        for item in _list(_dict(self._raw.get("net")).get("info")):
            ip = _int(_dict(item).get("ip"))
            if ip:
                return ".".join(str(ip >> s & 0xFF) for s in (0, 8, 16, 24))
        return None

    # --- AMS --------------------------------------------------------------------------------

    def _ams_block(self) -> Mapping[str, Any]:
        return _dict(self._raw.get("ams"))

    @cached_property
    def ams_units(self) -> tuple[AmsUnit, ...]:
        """Every AMS unit with its trays (AMS HT units have ids 128-135 and one slot)."""
        modules: dict[int, str] = {}
        for module in _list(self._info.get("module")):
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
            # A unit without a sensor (AMS Lite) reports humidity "0": no reading, like
            # the bogus levels outside 1-5 of a unit powering up (PROTOCOL.md §2.3).
            level = _int(raw.get("humidity"))
            percent = _int(raw.get("humidity_raw"))
            trays = tuple(
                _tray(t, unit_id) for t in _list(raw.get("tray")) if isinstance(t, Mapping)
            )
            units.append(
                AmsUnit(
                    id=unit_id,
                    kind=_ams_kind(raw, unit_id, modules),
                    humidity_level=level if level is not None and 1 <= level <= 5 else None,
                    humidity_percent=percent
                    if percent is not None and 1 <= percent <= 100
                    else None,
                    temp=_float(raw.get("temp")),
                    trays=trays,
                )
            )
        return tuple(sorted(units, key=lambda u: u.id))

    @cached_property
    def external_spools(self) -> tuple[Tray, ...]:
        """The external spool (``vt_tray``) or, on dual-external printers, ``vir_slot[]``."""
        slots = [s for s in _list(self._raw.get("vir_slot")) if isinstance(s, Mapping)]
        if slots:
            return tuple(_tray(s, TRAY_EXTERNAL) for s in slots)
        vt = self._raw.get("vt_tray")
        return (_tray(vt, TRAY_EXTERNAL),) if isinstance(vt, Mapping) else ()

    @cached_property
    def trays(self) -> tuple[Tray, ...]:
        """Every slot: AMS trays then external spools."""
        return tuple(t for u in self.ams_units for t in u.trays) + self.external_spools

    @cached_property
    def tray_now(self) -> int | None:
        """Global id of the loaded tray: 255 none, 254 external, else ``ams*4+slot``."""
        return _int(self._ams_block().get("tray_now"))

    @cached_property
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
        """A state that never changes: this one (every state is immutable already).

        Kept for callers of the mutable state of earlier versions, which had
        to copy it away from the network thread.
        """
        return self

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready summary for scripts (``--json``): the shape of
        :class:`~bambulab.models.output.PrinterStateOut`."""
        from .output import PrinterStateOut  # pydantic: not at import time

        return PrinterStateOut.from_state(self).model_dump(mode="json")


def _rebuild(
    serial: str, raw: dict[str, Any], info: dict[str, Any], hint: PrinterModel
) -> PrinterState:
    """Unpickle a :class:`PrinterState`."""
    state = PrinterState.__new__(PrinterState)
    state._set(serial, raw, info, hint)
    return state
