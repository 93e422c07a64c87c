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
    model_from_modules,
    model_named,
    stage_name,
)

GCODE_STATES = frozenset(
    {"IDLE", "PREPARE", "RUNNING", "PAUSE", "FINISH", "FAILED", "SLICING", "INIT", "OFFLINE"}
)
# A stage id of 0 (printing) or -1/255 (none) in these states means the printer is idle
# (PROTOCOL.md §2.6.1): firmware leaves stg_cur at 0 after a job.
IDLE_GCODE_STATES = frozenset({"IDLE", "FINISH", "FAILED"})
_IDLE_STAGES = frozenset({0, -1, 255})
# SD card state, ``home_flag`` bits 8-9 (Bambu Studio ``MachineObject::parse_home_flag``
# -> ``DevStorage::SdcardState``: NO_SDCARD, HAS_SDCARD_NORMAL, _ABNORMAL, _READONLY).
SD_CARD_STATES = ("absent", "normal", "abnormal", "readonly")
# The door sensor bit, in ``home_flag`` (X1) or ``stat`` (H2/P2/X2) (PROTOCOL.md §2.6.1).
DOOR_OPEN_BIT = 0x00800000
# ``device.airduct.parts[].id``: bits 0-3 the part type, bits 4-11 the fan id; fan 10 is
# the second auxiliary fan (Bambu Studio DevFan.h ``AIR_FUN::FAN_REMOTE_COOLING_1_IDX``),
# ``state`` bits 0-7 its speed in % (``DevFan::ParseV3_0``).
AIRDUCT_AUX_FAN2 = 10
# Nozzle materials and flows (Bambu Studio ``DevNozzleSystem.cpp`` ``s_parse_nozzle_type``):
# a type code such as ``HS01`` or ``HH01-0.4`` has the flow in its second character and
# the material in the next two digits; the older firmware's names are taken as they are.
NOZZLE_MATERIALS = {"00": "stainless_steel", "01": "hardened_steel", "05": "tungsten_carbide"}
NOZZLE_NAMES = frozenset({"stainless_steel", "hardened_steel", "tungsten_carbide", "brass", "E3D"})
NOZZLE_FLOWS = {
    "S": "standard",
    "A": "standard",
    "X": "standard",
    "H": "high_flow",
    "E": "high_flow",
    "U": "tpu_high_flow",
    "B": "e3d_high_flow",
}
_WORDS = {
    "stainless_steel": "Stainless Steel",
    "hardened_steel": "Hardened Steel",
    "tungsten_carbide": "Tungsten Carbide",
    "brass": "Brass",
    "E3D": "E3D",
    "standard": "Standard",
    "high_flow": "High Flow",
    "tpu_high_flow": "TPU High Flow",
    "e3d_high_flow": "E3D High Flow",
}
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


def _flags(value: Any) -> int | None:
    """A bit field sent as an int or as a hex string (``stat``, ``fun``)."""
    if type(value) is int:
        return value
    if isinstance(value, str) and value.strip():
        try:
            return int(value.strip(), 16)
        except ValueError:
            return None
    return None


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
class NozzleKind:
    """A nozzle's material and flow, decoded from its type code (``HH01``) or name.

    ``material``: ``stainless_steel``, ``hardened_steel``, ``tungsten_carbide``,
    ``brass`` or ``""`` when unknown; ``flow``: ``standard``, ``high_flow``,
    ``tpu_high_flow``, ``e3d_high_flow`` or ``""`` when not told. ``code`` is
    what the printer sent. ``str()`` is the text for people.
    """

    code: str
    material: str
    flow: str

    def __str__(self) -> str:
        words = [_WORDS.get(self.material, self.material), _WORDS.get(self.flow, "")]
        return ", ".join(w for w in words if w) or self.code


def nozzle_kind(code: Any) -> NozzleKind | None:
    """Decode a nozzle type the way Bambu Studio does (``s_parse_nozzle_type``).

    A name the older firmware sends (``hardened_steel``) is the material;
    a code of four characters or more (``HS01``, ``HX05``, ``HS01-0.4``) has the
    flow in its second character and the material in its third and fourth.
    ``None`` for nothing, ``"N/A"`` or a non-string.
    """
    if not isinstance(code, str) or not code.strip() or code.strip() == "N/A":
        return None
    text = code.strip()
    if text in NOZZLE_NAMES:
        return NozzleKind(text, text, "")
    if len(text) >= 4:
        return NozzleKind(text, NOZZLE_MATERIALS.get(text[2:4], ""), NOZZLE_FLOWS.get(text[1], ""))
    return NozzleKind(text, "", "")


@dataclass(frozen=True, slots=True)
class Nozzle:
    """One nozzle of ``device.nozzle.info[]``: where it sits, its diameter and kind."""

    id: int
    diameter: float | None
    kind: NozzleKind | None
    on_rack: bool = False  # H2C's nozzle changer rack (id 0x1N), not on an extruder


@dataclass(frozen=True, slots=True)
class Extruder:
    """One extruder of a (possibly dual-nozzle) printer (``device.extruder.info[]``).

    ``ams_id``/``slot`` are its ``snow`` (the loaded tray: AMS id in bits 8-15,
    slot in bits 0-7); ``tray_now`` is the same as a global tray id (255 none,
    254 an external spool, ``ams*4+slot``, or the AMS HT unit id). On a
    dual-nozzle printer extruder 0 is the right one and 1 the left (Bambu
    Studio ``DevExtder::GetDisplayLoc``: ``MAIN_EXTRUDER_ID`` 0 is "right").
    """

    index: int
    temp: float | None
    target: float | None
    ams_id: int | None
    slot: int | None
    name: str = ""
    nozzle: Nozzle | None = None

    @property
    def tray_now(self) -> int | None:
        """The loaded tray as a global tray id (``None`` when not reported)."""
        if self.ams_id is None or self.slot is None:
            return None
        return snow_tray(self.ams_id, self.slot)


def snow_tray(ams_id: int, slot: int) -> int | None:
    """The global tray id of a ``snow``/``star`` pair (PROTOCOL.md §2.6.1).

    Slot 255 is nothing loaded (``0xFFFF``, ``0xFEFF``); AMS ids 254/255 are
    the external spools; 128-135 AMS HT units (one slot: the unit id).
    """
    if slot == 0xFF:
        return TRAY_NONE
    if ams_id in (TRAY_EXTERNAL, TRAY_NONE):
        return TRAY_EXTERNAL
    if 128 <= ams_id <= 135:
        return ams_id
    if ams_id < 64 and slot < 4:
        return ams_id * 4 + slot
    return None


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
    _hint_named: bool

    def __init__(
        self,
        serial: str = "",
        raw: dict[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
        dev_model_name: str | None = None,
    ) -> None:
        # A named model (dev_model_name) is the printer's word; a serial prefix only a
        # guess that the printer's own get_version reply overrides (see ``model``).
        named = model_named(dev_model_name)
        hint = named or (detect_model(serial) if serial else UNKNOWN_MODEL)
        self._set(serial, raw if raw is not None else {}, info, hint, named is not None)

    def _set(
        self,
        serial: str,
        raw: dict[str, Any],
        info: Mapping[str, Any] | None,
        hint: PrinterModel,
        hint_named: bool = False,
    ) -> None:
        self.__dict__.update(
            serial=serial,
            _raw=raw,
            raw=MappingProxyType(raw),
            _info=info if info is not None else _EMPTY,
            info=MappingProxyType(info) if info else _EMPTY,
            _hint=hint,
            _hint_named=hint_named,
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
            self._hint_named,
        )
        return state

    def __copy__(self) -> PrinterState:
        return self  # immutable: a copy would be the same thing

    def __deepcopy__(self, memo: dict[int, Any]) -> PrinterState:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # The read-only views do not pickle; the dicts under them do.
        return (
            _rebuild,
            (self.serial, self._raw, dict(self._info), self._hint, self._hint_named),
        )

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
        """The printer model: ``dev_model_name``, else ``get_version``, else the serial prefix.

        A model named by ``dev_model_name`` stands. Otherwise the printer's own
        ``get_version`` reply (``product_name`` of any module, ``project_name``,
        the X1 board's ``hw_ver``) wins over a serial-prefix guess: a prefix
        may be unknown (H2D Pro) or reused, the printer's answer is not.
        """
        if not self._hint_named:
            modules = [m for m in _list(self._info.get("module")) if isinstance(m, Mapping)]
            if modules:
                found = model_from_modules(modules, self.serial)
                if found is not None:
                    return found
        return self._hint

    @cached_property
    def firmware(self) -> str:
        """The printer firmware version (module ``ota`` of ``get_version``)."""
        for module in _list(self._info.get("module")):
            if isinstance(module, Mapping) and module.get("name") == "ota":
                return _str(module.get("sw_ver"))
        return ""

    # --- temperatures -----------------------------------------------------------------

    def _device(self, *path: str) -> Any:
        node: Any = self._raw.get("device")
        for key in path:
            node = _dict(node).get(key)
        return node

    def _device_temp(self, *path: str) -> tuple[float | None, float | None]:
        return unpack_temp(self._device(*path))

    @cached_property
    def _active(self) -> Extruder | None:
        """The active extruder of a dual-nozzle printer (``None`` on single-nozzle ones)."""
        if not self.dual_nozzle:
            return None
        active = self.active_extruder
        if active is None:
            return None
        for extruder in self.extruders:
            if extruder.index == active:
                return extruder
        return None

    @cached_property
    def nozzle_temp(self) -> float | None:
        """Current temperature (°C) of the nozzle in use.

        On dual-nozzle printers (H2D, H2D Pro, H2C, X2D) that is the active
        extruder's (``device.extruder.info[]``): the top-level
        ``nozzle_temper`` belongs to the idle one (PROTOCOL.md §2.6.1; Bambu
        Studio ``ExtderSystemParser``: ``ParseV1_0`` fills the top-level
        values only when there is one extruder).
        """
        active = self._active
        if active is not None and active.temp is not None:
            return active.temp
        value = _float(self._raw.get("nozzle_temper"))
        return value if value is not None else (self.extruders[0].temp if self.extruders else None)

    @cached_property
    def nozzle_target(self) -> float | None:
        """Target temperature (°C) of the nozzle in use (see :attr:`nozzle_temp`)."""
        active = self._active
        if active is not None and active.target is not None:
            return active.target
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
        """Chamber temperature (°C); ``None`` on printers without a chamber sensor.

        ``device.ctc.info.temp`` (low 16 bits) wins over ``chamber_temper``
        (Bambu Studio ``DevChamber::ParseChamber`` parses V2 after V1). The
        A1, A1 mini, A2L, P1P and P1S have no sensor and report a placeholder.
        """
        if not self.model.chamber_sensor:
            return None
        packed = self._device_temp("ctc", "info", "temp")[0]
        return packed if packed is not None else _float(self._raw.get("chamber_temper"))

    @cached_property
    def chamber_target(self) -> float | None:
        """Chamber target (°C), on printers with a heater (``ctc`` high 16 bits)."""
        if not self.model.chamber_sensor:
            return None
        return self._device_temp("ctc", "info", "temp")[1]

    @cached_property
    def extruder_count(self) -> int | None:
        """Extruders (``device.extruder.state`` bits 0-3), ``None`` when not reported."""
        state = _int(self._device("extruder", "state"))
        return state & 0xF if state is not None else None

    @cached_property
    def dual_nozzle(self) -> bool:
        """Whether this printer has two extruders (from the report, else the model)."""
        count = self.extruder_count
        if count:
            return count >= 2
        return len(self.extruders) >= 2 or self.model.dual_nozzle

    @cached_property
    def extruders(self) -> tuple[Extruder, ...]:
        """Extruders from ``device.extruder.info[]`` (dual-nozzle printers and newer firmware).

        Bambu Studio ``ExtderSystemParser::ParseV2_0``: ``temp`` packs current
        (low 16 bits) and target (high 16), ``snow`` the loaded tray, ``hnow``
        the id of the nozzle mounted on it.
        """
        info = _list(self._device("extruder", "info"))
        count = self.extruder_count
        two = (count or len(info)) == 2
        nozzles = {n.id: n for n in self.nozzles if not n.on_rack}
        out = []
        for position, item in enumerate(info):
            if not isinstance(item, Mapping):
                continue
            ext_id = _int(item.get("id"))
            index = ext_id if ext_id is not None else position
            temp, target = unpack_temp(item.get("temp"))
            snow = _int(item.get("snow"))
            ams_id = snow >> 8 & 0xFF if snow is not None else None
            slot = snow & 0xFF if snow is not None else None
            mounted = _int(item.get("hnow"))
            nozzle = nozzles.get(mounted if mounted is not None else index)
            name = ("right" if index == 0 else "left") if two else ""
            out.append(Extruder(index, temp, target, ams_id, slot, name, nozzle))
        return tuple(out)

    @cached_property
    def active_extruder(self) -> int | None:
        """Which extruder is in use (``device.extruder.state`` bits 4-7).

        ``None`` when not reported, and while switching (0xF: Bambu Studio's
        ``GetExtderById`` "the extruder maybe changing").
        """
        state = _int(self._device("extruder", "state"))
        if state is None:
            return None
        active = state >> 4 & 0xF
        return None if active == 0xF else active

    @cached_property
    def nozzles(self) -> tuple[Nozzle, ...]:
        """Nozzles of ``device.nozzle.info[]`` (Bambu Studio ``DevNozzleSystemParser``).

        ``id`` bits 0-3 are the nozzle id (0 right or only, 1 left), bits 4-7
        equal to 1 mean a nozzle parked on the H2C's rack.
        """
        out = []
        for item in _list(self._device("nozzle", "info")):
            if not isinstance(item, Mapping):
                continue
            raw_id = _int(item.get("id"))
            if raw_id is None:
                continue
            out.append(
                Nozzle(
                    id=raw_id & 0xF,
                    diameter=_float(item.get("diameter")),
                    kind=nozzle_kind(item.get("type")),
                    on_rack=(raw_id >> 4 & 0xF) == 1,
                )
            )
        return tuple(out)

    @cached_property
    def active_nozzle(self) -> Nozzle | None:
        """The nozzle in use, from ``device.nozzle.info[]`` (``None`` without that block)."""
        active = self._active
        if active is not None and active.nozzle is not None:
            return active.nozzle
        mounted = [n for n in self.nozzles if not n.on_rack]
        if not mounted:
            return None
        if self.extruders and self.extruders[0].nozzle is not None and not self.dual_nozzle:
            return self.extruders[0].nozzle
        want = self.active_extruder if self.active_extruder is not None else 0
        return next((n for n in mounted if n.id == want), mounted[0])

    # --- job ------------------------------------------------------------------------------

    @cached_property
    def gcode_state(self) -> str:
        """IDLE, PREPARE, RUNNING, PAUSE, FINISH, FAILED, ... or UNKNOWN."""
        value = _str(self._raw.get("gcode_state")).upper()
        return value if value in GCODE_STATES else ("UNKNOWN" if value else "")

    @cached_property
    def idle(self) -> bool:
        """No job: ``gcode_state`` IDLE, FINISH or FAILED with no stage (0, -1 or 255).

        Firmware leaves ``stg_cur`` at 0 ("printing") after a job (PROTOCOL.md §2.6.1).
        """
        stage = self.stage
        return self.gcode_state in IDLE_GCODE_STATES and (stage is None or stage in _IDLE_STAGES)

    @property
    def printing(self) -> bool:
        """A job is preparing or running (never while idle)."""
        return self.gcode_state in ("PREPARE", "RUNNING", "SLICING") and not self.idle

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
        """The current stage in words (``idle`` when idle, whatever ``stg_cur`` says)."""
        if self.idle and "stg_cur" in self._raw:
            return "idle"
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
    def aux_fan2(self) -> int | None:
        """Second auxiliary fan (%), X2D: ``device.airduct.parts[]`` fan 10; ``None`` elsewhere."""
        for part in _list(self._device("airduct", "parts")):
            part_id = _int(_dict(part).get("id"))
            if part_id is not None and (part_id >> 4 & 0xFF) == AIRDUCT_AUX_FAN2:
                state = _int(_dict(part).get("state"))
                return max(0, min(100, state & 0xFF)) if state is not None else None
        return None

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
        """Diameter (mm) of the nozzle in use: ``device.nozzle`` when present, else top level."""
        nozzle = self.active_nozzle
        if nozzle is not None and nozzle.diameter is not None:
            return nozzle.diameter
        return _float(self._raw.get("nozzle_diameter"))

    @cached_property
    def nozzle(self) -> NozzleKind | None:
        """Material and flow of the nozzle in use, decoded (see :func:`nozzle_kind`).

        From ``device.nozzle.info[]`` when the printer sends it (the top-level
        ``nozzle_type`` may then be stale), else the top-level ``nozzle_type``.
        """
        nozzle = self.active_nozzle
        if nozzle is not None and nozzle.kind is not None:
            return nozzle.kind
        return nozzle_kind(self._raw.get("nozzle_type"))

    @cached_property
    def nozzle_type(self) -> str:
        """Material of the nozzle in use (``hardened_steel``...), else what the printer sent."""
        kind = self.nozzle
        if kind is None:
            return ""
        return kind.material or kind.code

    @cached_property
    def sd_card(self) -> str | None:
        """SD card: ``normal``, ``absent``, ``abnormal`` or ``readonly``; ``None`` when unknown.

        ``home_flag`` bits 8-9 (Bambu Studio ``MachineObject::parse_home_flag``);
        without ``home_flag``, the older boolean ``sdcard`` says present or not.
        """
        flags = _int(self._raw.get("home_flag"))
        if flags is not None:
            return SD_CARD_STATES[flags >> 8 & 0x3]
        card = self._raw.get("sdcard")
        if isinstance(card, bool):
            return "normal" if card else "absent"
        return None

    @cached_property
    def door_open(self) -> bool | None:
        """Whether the front door is open; ``None`` where there is no door sensor or no report.

        Bit 0x00800000 of ``stat`` on H2/P2/X2, of ``home_flag`` on the X1
        series (PROTOCOL.md §2.6.1); P1 and A1 printers report no door. An
        unknown model is read from ``stat`` when it sends one.
        """
        source = self.model.door
        if not source and self.model.known:
            return None
        if not source:
            source = "stat" if "stat" in self._raw else ""
        if not source:
            return None
        flags = _flags(self._raw.get(source)) if source == "stat" else _int(self._raw.get(source))
        return bool(flags & DOOR_OPEN_BIT) if flags is not None else None

    def _ipcam(self, key: str) -> bool | None:
        value = _dict(self._raw.get("ipcam")).get(key)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("enable", "disable"):
            return value.strip().lower() == "enable"
        return None

    @cached_property
    def timelapse(self) -> bool | None:
        """Whether timelapse recording is enabled (``ipcam.timelapse``)."""
        return self._ipcam("timelapse")

    @cached_property
    def camera_recording(self) -> bool | None:
        """Whether the camera records while printing (``ipcam.ipcam_record``)."""
        return self._ipcam("ipcam_record")

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
        """Global id of the loaded tray: 255 none, 254 external, else ``ams*4+slot``.

        On dual-nozzle printers the active extruder's ``snow`` (``ams.tray_now``
        holds only a slot number there: PROTOCOL.md §2.6.1; Bambu Studio
        ``DevExtderSystem::GetCurrentAmsId``/``GetCurrentSlotId``).
        """
        active = self._active
        if active is not None and active.tray_now is not None:
            return active.tray_now
        return _int(self._ams_block().get("tray_now"))

    @cached_property
    def active_tray(self) -> Tray | None:
        """The tray currently feeding the nozzle in use."""
        now = self.tray_now
        if now is None or now == TRAY_NONE:
            return None
        if now == TRAY_EXTERNAL:
            spools = self.external_spools
            active = self._active
            if active is not None and active.tray_now == TRAY_EXTERNAL:
                # Dual-external printers: the spool whose id is the snow's AMS id (254/255).
                for spool in spools:
                    if spool.id == active.ams_id:
                        return spool
            return spools[0] if spools else None
        for tray in self.trays:
            if tray.global_id == now and tray.ams_id != TRAY_EXTERNAL:
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
    serial: str,
    raw: dict[str, Any],
    info: dict[str, Any],
    hint: PrinterModel,
    hint_named: bool = False,
) -> PrinterState:
    """Unpickle a :class:`PrinterState`."""
    state = PrinterState.__new__(PrinterState)
    state._set(serial, raw, info, hint, hint_named)
    return state
