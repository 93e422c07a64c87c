"""The simulated printer's filament system: AMS units, trays and external spools.

Shapes follow PROTOCOL.md §2.3 (``print.ams``): up to four AMS units of four
trays with ids 0-3, AMS HT units with ids 128-135 and one tray, the external
spool ``vt_tray`` (id 254) or, on dual-nozzle printers, ``vir_slot[]`` with
ids 254 (deputy) and 255 (main). Global tray ids (``tray_now``, ``ams_mapping``,
``ams_change_filament.target``) are ``ams_id*4 + slot`` for AMS units, the
unit id for AMS HT and 254 for an external spool; 255 means none.

Wire types copy what printers send: ids, humidity, temperatures and the
``tray_now`` family are strings, bit sets are hex strings, ``remain`` and
``version`` are ints. The state here is the simulator's own and mutable; the
cloud's :class:`~bambulab.sim.records.AmsUnit` records are copied, never
shared, so a printer can burn filament without another thread seeing a
half-updated record.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...vocabulary import TRAY_EXTERNAL, TRAY_NONE
from ..catalog import AMS_HARDWARE, COLOURS, FILAMENTS, AmsKind
from ..records import AmsUnit

NO_TRAY = TRAY_NONE
EXTERNAL = TRAY_EXTERNAL
EMPTY_TAG = "0" * 16
# Tray ``state`` on current firmware: 11 a spool is loaded and read, 0 empty.
TRAY_LOADED = 11
TRAY_EMPTY = 0
# ``ams[].info`` (Bambu Studio ``DevFilaSystemParser::ParseAmsInfo``): the unit
# type in bits 0-3, the drying status in bits 4-7, the extruder it feeds in
# bits 8-11. Bit 12 is set in every public capture; its meaning is not known.
AMS_TYPE_CODE: dict[AmsKind, int] = {"ams": 1, "ams_f1": 2, "n3f": 3, "n3s": 4}
DRY_OFF, DRY_DRYING = 0, 2
EMPTY_UUID = "0" * 32

# tray_type → (drying temperature, drying hours, bed temperature): printed on
# Bambu spool tags and echoed by the AMS as tray_temp / tray_time / bed_temp.
_TAG_DATA = {
    "PLA": (55, 8, 55),
    "PLA-CF": (55, 8, 55),
    "PLA-S": (55, 8, 55),
    "PETG": (65, 8, 70),
    "ABS": (80, 8, 90),
    "ASA": (80, 8, 90),
    "TPU": (70, 8, 35),
}
# Colour → letter and number of the ``tray_id_name`` printed on Bambu tags (A00-W1).
_COLOUR_CODES = {
    "FFFFFFFF": "W1",
    "000000FF": "K0",
    "F72323FF": "R0",
    "0A2989FF": "B0",
    "FEC600FF": "Y0",
    "00AE42FF": "G0",
    "898989FF": "D0",
    "FF6A13FF": "A0",
    "8E47A3FF": "P0",
    "F4A925FF": "Y2",
}


@dataclass(slots=True)
class Spool:
    """One tray (AMS slot or external spool holder) and what it holds."""

    tray_type: str = ""  # "" = empty
    colour: str = "00000000"  # RRGGBBAA
    remain: float = -1.0  # percent; -1 when unknown (no RFID tag)
    info_idx: str = ""
    sub_brand: str = ""
    temp_min: int = 0
    temp_max: int = 0
    tag_uid: str = EMPTY_TAG
    tray_uuid: str = EMPTY_UUID
    k: float = 0.02
    weight: int = 1000  # grams on a full spool
    cali_idx: int = -1  # the flow-dynamics profile chosen (``extrusion_cali_sel``)

    @property
    def loaded(self) -> bool:
        """Whether the tray holds filament."""
        return bool(self.tray_type)

    @property
    def tagged(self) -> bool:
        """Bambu spools carry an RFID tag; the AMS then knows ``remain``."""
        return self.tag_uid != EMPTY_TAG

    def clear(self) -> None:
        """The spool was taken out."""
        self.tray_type, self.colour, self.remain = "", "00000000", -1.0
        self.info_idx, self.sub_brand, self.temp_min, self.temp_max = "", "", 0, 0
        self.tag_uid, self.tray_uuid = EMPTY_TAG, EMPTY_UUID

    def wire(self, tray_id: int | str, *, with_state: bool = False) -> dict[str, Any]:
        """The tray object of a report.

        ``with_state`` is the current X1/P2/H2/X2 firmware's shape: a
        ``state`` (11 loaded, 0 empty), the drying keys also named
        ``drying_temp``/``drying_time``, and ``total_len``. An empty AMS tray
        is then only ``{"id", "state": 0}``; older P1/A1 firmware sends an
        empty tray as only ``{"id"}``. Both shapes are in public captures
        (PROTOCOL.md §2.6.1).
        """
        drying, hours, bed = _TAG_DATA.get(self.tray_type, (0, 0, 0)) if self.loaded else (0, 0, 0)
        code = _COLOUR_CODES.get(self.colour, "X0")
        tray: dict[str, Any] = {
            "id": str(tray_id),
            "remain": max(0, int(self.remain)) if self.remain >= 0 else -1,
            "k": self.k,
            "n": 1,
            "cali_idx": self.cali_idx,
            "tag_uid": self.tag_uid,
            "tray_id_name": f"{self.info_idx[2:]}-{code}" if self.tagged else "",
            "tray_info_idx": self.info_idx,
            "tray_type": self.tray_type,
            "tray_sub_brands": self.sub_brand,
            "tray_color": self.colour,
            "tray_weight": str(self.weight if self.loaded else 0),
            "tray_diameter": "1.75" if self.loaded else "0.00",
            "tray_temp": str(drying),
            "tray_time": str(hours),
            "bed_temp_type": "1" if self.loaded else "0",
            "bed_temp": str(bed),
            "nozzle_temp_max": str(self.temp_max),
            "nozzle_temp_min": str(self.temp_min),
            "xcam_info": "0" * 24,
            "tray_uuid": self.tray_uuid,
            "ctype": 0,
            "cols": [self.colour] if self.loaded else [],
        }
        if with_state:
            tray["state"] = TRAY_LOADED if self.loaded else TRAY_EMPTY
            # Captures of current firmware name the drying keys drying_temp/
            # drying_time, older ones tray_temp/tray_time, and widely used
            # clients still require the old pair: a tray carries both.
            tray["drying_temp"] = tray["tray_temp"]
            tray["drying_time"] = tray["tray_time"]
            tray["total_len"] = 330_000 if self.loaded else 0
        return tray

    def slot_wire(self, tray_id: int, *, with_state: bool) -> dict[str, Any]:
        """An AMS slot as a report lists it: the full tray, or the empty shape."""
        if self.loaded:
            return self.wire(tray_id, with_state=with_state)
        if with_state:
            return {"id": str(tray_id), "state": TRAY_EMPTY}
        return {"id": str(tray_id)}


@dataclass(slots=True)
class Unit:
    """One AMS, AMS Lite, AMS 2 Pro or AMS HT."""

    id: int
    kind: AmsKind
    humidity: int  # 1-5 level index
    humidity_raw: int  # percent
    temp: float
    sw_ver: str
    hw_ver: str
    sn: str
    trays: list[Spool]
    extruder: int = 0  # the nozzle this unit feeds (dual-nozzle printers)
    drying_left: float = 0.0  # seconds of drying left; 0 = not drying
    drying_temp: int = 0

    @property
    def module_name(self) -> str:
        """Firmware module name: ``ams/0``, ``ams_f1/0``, ``n3f/0``, ``n3s/128``."""
        return f"{self.kind}/{self.id}"

    @property
    def is_ht(self) -> bool:
        """AMS HT: ids 128-135, one tray."""
        return self.kind == "n3s"

    def global_id(self, slot: int) -> int:
        """The tray id ``tray_now`` and ``ams_mapping`` use."""
        return self.id if self.is_ht else self.id * 4 + slot

    @property
    def can_dry(self) -> bool:
        """AMS 2 Pro and AMS HT have a heater; AMS and AMS Lite do not."""
        return self.kind in ("n3f", "n3s")

    @property
    def info(self) -> str:
        """``ams[].info``: type, drying status and extruder bits, as hex."""
        status = DRY_DRYING if self.drying_left > 0 else DRY_OFF
        return f"{1 << 12 | self.extruder << 8 | status << 4 | AMS_TYPE_CODE[self.kind]:x}"

    def wire(self, *, tray_state: bool = False) -> dict[str, Any]:
        """The unit object of a report."""
        unit: dict[str, Any] = {
            "id": str(self.id),
            # An AMS Lite has no humidity sensor and says "0" (PROTOCOL.md §2.6.1).
            "humidity": "0" if self.kind == "ams_f1" else str(self.humidity),
            "humidity_raw": str(self.humidity_raw),
            "info": self.info,
            "temp": f"{self.temp:.1f}",
            "tray": [
                spool.slot_wire(slot, with_state=tray_state)
                for slot, spool in enumerate(self.trays)
            ],
        }
        if self.can_dry:
            # Minutes of drying left, as the drying AMS models report.
            unit["dry_time"] = math.ceil(self.drying_left / 60)
        return unit


@dataclass(slots=True)
class AmsBank:
    """Every filament source of one printer and which one feeds the nozzle."""

    units: list[Unit]
    external: dict[int, Spool]  # 254 (and 255 on dual-nozzle printers) → spool
    tray_now: int = NO_TRAY
    tray_pre: int = NO_TRAY
    tray_tar: int = NO_TRAY
    version: int = 1
    insert_flag: bool = True  # read RFID when a spool is inserted
    power_on_flag: bool = False  # read RFID at power-on
    calibrate_remain: bool = True
    consumed: dict[int, float] = field(default_factory=dict)  # global id → grams, for tests

    # --- lookups ----------------------------------------------------------------

    def unit(self, ams_id: int) -> Unit | None:
        """The unit with this id."""
        return next((u for u in self.units if u.id == ams_id), None)

    def locate(self, ams_id: int, slot: int) -> Spool | None:
        """A tray by (ams_id, slot); ams_id 255 with slot 254/255 is an external spool."""
        if ams_id in (NO_TRAY, EXTERNAL):
            return self.external.get(slot if slot in self.external else EXTERNAL)
        unit = self.unit(ams_id)
        if unit is None or not 0 <= slot < len(unit.trays):
            return None
        return unit.trays[slot]

    def spool(self, global_id: int) -> Spool | None:
        """A tray by global id (254 = external)."""
        if global_id in self.external:
            return self.external[global_id]
        for unit in self.units:
            for slot, spool in enumerate(unit.trays):
                if unit.global_id(slot) == global_id:
                    return spool
        return None

    def address(self, global_id: int) -> tuple[int, int] | None:
        """(ams_id, slot) of a global id; externals answer (254/255, 0)."""
        if global_id in self.external:
            return global_id, 0
        for unit in self.units:
            for slot in range(len(unit.trays)):
                if unit.global_id(slot) == global_id:
                    return unit.id, slot
        return None

    def first_loaded(self) -> int:
        """The global id of the first AMS tray holding filament, else the external spool."""
        for unit in self.units:
            for slot, spool in enumerate(unit.trays):
                if spool.loaded:
                    return unit.global_id(slot)
        ext = self.external.get(EXTERNAL)
        return EXTERNAL if ext is not None and ext.loaded else NO_TRAY

    # --- changes ------------------------------------------------------------------

    def switch_to(self, global_id: int) -> None:
        """Finish a load (or an unload with 255)."""
        if global_id != self.tray_now:
            self.tray_pre = self.tray_now
            self.tray_now = global_id
            self.version += 1
        self.tray_tar = global_id

    def consume(self, global_id: int, grams: float) -> bool:
        """Burn ``grams`` from a tray; True when it just ran empty."""
        self.consumed[global_id] = self.consumed.get(global_id, 0.0) + grams
        spool = self.spool(global_id)
        if spool is None or spool.remain < 0 or not spool.loaded:
            return False
        before = spool.remain
        spool.remain = max(0.0, before - grams * 100.0 / spool.weight)
        return before > 0 and spool.remain <= 0

    # --- wire ---------------------------------------------------------------------

    def _tray_field(self, global_id: int, slot_only: bool) -> str:
        if not slot_only or global_id in (NO_TRAY, EXTERNAL):
            return str(global_id)
        address = self.address(global_id)
        return str(address[1]) if address is not None else str(global_id)

    def wire(self, *, tray_state: bool = False, slot_only: bool = False) -> dict[str, Any]:
        """The ``print.ams`` object.

        ``slot_only``: dual-nozzle printers put only the slot number in
        ``tray_now``/``tray_pre``/``tray_tar`` (the AMS is in each extruder's
        ``snow``, PROTOCOL.md §2.6.1).

        Bit sets as Bambu Studio's ``DevFilaSystemParser`` reads them: a
        regular unit is bit ``id`` of ``ams_exist_bits`` and its trays bits
        ``id*4 + slot`` of the tray sets; an AMS HT (ids 128-135) is bit
        ``4 + id-128`` of ``ams_exist_bits`` and bit ``16 + id-128`` of the
        tray sets.
        """
        exist = present = tagged = 0
        for unit in self.units:
            if unit.is_ht:
                exist |= 1 << 4 + unit.id - 128
                bit = 1 << 16 + unit.id - 128
                present |= bit if unit.trays[0].loaded else 0
                tagged |= bit if unit.trays[0].tagged else 0
                continue
            exist |= 1 << unit.id
            for slot, spool in enumerate(unit.trays):
                bit = 1 << unit.global_id(slot)
                present |= bit if spool.loaded else 0
                tagged |= bit if spool.tagged else 0
        return {
            "ams": [unit.wire(tray_state=tray_state) for unit in self.units],
            "ams_exist_bits": f"{exist:x}",
            "tray_exist_bits": f"{present:x}",
            "tray_is_bbl_bits": f"{tagged:x}",
            "tray_tar": self._tray_field(self.tray_tar, slot_only),
            "tray_now": self._tray_field(self.tray_now, slot_only),
            "tray_pre": self._tray_field(self.tray_pre, slot_only),
            "tray_read_done_bits": f"{present:x}",
            "tray_reading_bits": "0",
            "version": self.version,
            "insert_flag": self.insert_flag,
            "power_on_flag": self.power_on_flag,
        }


# --- construction -------------------------------------------------------------------


def from_records(units: Sequence[AmsUnit]) -> list[Unit]:
    """Copy the cloud's AMS records, so the printer reports the same contents."""
    out: list[Unit] = []
    for record in units:
        trays = [
            Spool(
                tray_type=t.tray_type,
                colour=t.colour,
                remain=float(t.remain),
                info_idx=t.info_idx,
                sub_brand=t.sub_brand,
                temp_min=t.temp_min,
                temp_max=t.temp_max,
                tag_uid=t.tag_uid,
                tray_uuid=t.tray_uuid,
            )
            for t in record.trays
        ]
        out.append(
            Unit(
                id=record.id,
                kind=record.kind,
                humidity=record.humidity,
                humidity_raw=record.humidity_raw,
                temp=record.temp,
                sw_ver=record.sw_ver,
                hw_ver=record.hw_ver,
                sn=record.sn,
                trays=trays,
            )
        )
    return out


def default_units(kinds: Sequence[AmsKind], rng: random.Random) -> list[Unit]:
    """Deterministic AMS contents for a printer created without cloud records.

    Every tray holds filament (tests want something to print with); the
    first AMS tray always has a tagged spool so ``remain`` is known.
    """
    units: list[Unit] = []
    next_id = {"regular": 0, "ht": 128}
    for kind in kinds:
        group = "ht" if kind == "n3s" else "regular"
        unit_id = next_id[group]
        next_id[group] += 1
        hw_ver, sw_ver, slots = AMS_HARDWARE[kind]
        humidity_raw = rng.randint(12, 48)
        trays = []
        for slot in range(slots):
            filament = FILAMENTS[(unit_id + slot) % 3] if slot < 2 else rng.choice(FILAMENTS)
            tagged = slot == 0 or rng.random() < 0.7
            trays.append(
                Spool(
                    tray_type=filament.tray_type,
                    colour=rng.choice(COLOURS),
                    remain=float(rng.randint(40, 100)) if tagged else -1.0,
                    info_idx=filament.info_idx,
                    sub_brand=filament.sub_brand,
                    temp_min=filament.temp_min,
                    temp_max=filament.temp_max,
                    tag_uid=_hex(rng, 16) if tagged else EMPTY_TAG,
                    tray_uuid=_hex(rng, 32) if tagged else EMPTY_UUID,
                )
            )
        units.append(
            Unit(
                id=unit_id,
                kind=kind,
                humidity=max(1, min(5, 5 - humidity_raw // 10)),
                humidity_raw=humidity_raw,
                temp=round(rng.uniform(22.0, 29.0), 1),
                sw_ver=sw_ver,
                hw_ver=hw_ver,
                sn=_hex(rng, 15),
                trays=trays,
            )
        )
    return units


def generic_pla() -> Spool:
    """A third-party PLA spool on the external holder (no tag, remain unknown)."""
    return Spool(
        tray_type="PLA",
        colour="FFFFFFFF",
        remain=-1.0,
        info_idx="GFL99",
        sub_brand="",
        temp_min=190,
        temp_max=240,
    )


def _hex(rng: random.Random, length: int) -> str:
    return "".join(rng.choice("0123456789ABCDEF") for _ in range(length))
