"""The JSON shapes of a printer's live state: one pydantic model per shape, one source.

:meth:`PrinterState.to_dict() <bambulab.models.state.PrinterState.to_dict>`,
``bambu status --json``, ``bambu watch --json`` (the ``state`` of each line),
``bambu ams --json`` and ``bambu hms --json`` all dump these models
(``model_dump(mode="json")``), so scripts, the servers and the farm see the
same keys whichever way they ask. Each ``from_state`` builds the model from
an immutable :class:`~bambulab.models.state.PrinterState`; the models are
frozen and refuse unknown keys, so ``model_validate`` of a dump gives the same
model back.

This module imports pydantic: the CLI imports it only where it writes JSON.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from .printer import HMSEntry, PrintError
from .state import AmsUnit, Extruder, NozzleKind, PrinterState, Tray

EXTERNAL = 254


class OutputModel(BaseModel):
    """Frozen, strict about keys: a dump validates back to an equal model."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class FansOut(OutputModel):
    """Fan speeds (%)."""

    part: int | None
    aux: int | None
    chamber: int | None


class NozzleOut(OutputModel):
    """A nozzle's kind: material and flow decoded, the printer's code, and the text for people."""

    material: str
    flow: str
    code: str
    text: str

    @classmethod
    def from_kind(cls, kind: NozzleKind | None) -> NozzleOut | None:
        """``None`` when the printer does not say."""
        if kind is None:
            return None
        return cls(material=kind.material, flow=kind.flow, code=kind.code, text=str(kind))


class ExtruderOut(OutputModel):
    """One extruder of ``device.extruder.info[]`` (``name``: right/left on dual-nozzle printers)."""

    id: int
    name: str
    active: bool
    nozzle_temp: float | None
    nozzle_target: float | None
    nozzle_diameter: float | None
    nozzle: NozzleOut | None
    tray_now: int | None

    @classmethod
    def from_extruder(cls, extruder: Extruder, active: bool) -> ExtruderOut:
        """From a typed extruder."""
        nozzle = extruder.nozzle
        return cls(
            id=extruder.index,
            name=extruder.name,
            active=active,
            nozzle_temp=extruder.temp,
            nozzle_target=extruder.target,
            nozzle_diameter=nozzle.diameter if nozzle is not None else None,
            nozzle=NozzleOut.from_kind(nozzle.kind if nozzle is not None else None),
            tray_now=extruder.tray_now,
        )


class TrayOut(OutputModel):
    """One slot in the state summary (``id`` is the global tray id)."""

    id: int
    type: str
    colour: str
    remain: int | None

    @classmethod
    def from_tray(cls, tray: Tray) -> TrayOut:
        """From a typed tray."""
        return cls(id=tray.global_id, type=tray.type, colour=tray.colour, remain=tray.remain)


class AmsUnitOut(OutputModel):
    """One AMS unit in the state summary."""

    id: int
    kind: str
    humidity_level: int | None
    humidity_percent: int | None
    temp: float | None
    trays: tuple[TrayOut, ...]

    @classmethod
    def from_unit(cls, unit: AmsUnit) -> AmsUnitOut:
        """From a typed unit."""
        return cls(
            id=unit.id,
            kind=unit.kind,
            humidity_level=unit.humidity_level,
            humidity_percent=unit.humidity_percent,
            temp=unit.temp,
            trays=tuple(TrayOut.from_tray(t) for t in unit.trays),
        )


class PrinterStateOut(OutputModel):
    """``PrinterState.to_dict()``, ``status --json`` and each ``watch --json`` state."""

    serial: str
    model: str
    gcode_state: str
    stage: str
    job: str
    percent: int | None
    layer: int | None
    total_layers: int | None
    remaining_minutes: int | None
    nozzle_temp: float | None
    nozzle_target: float | None
    bed_temp: float | None
    bed_target: float | None
    chamber_temp: float | None
    chamber_target: float | None
    nozzle_diameter: float | None
    nozzle_type: str
    nozzle: NozzleOut | None
    active_extruder: int | None
    extruders: tuple[ExtruderOut, ...]
    fans: FansOut
    aux_fan2: int | None
    sd_card: str | None
    door_open: bool | None
    timelapse: bool | None
    camera_recording: bool | None
    speed: str
    lights: dict[str, str]
    wifi_dbm: int | None
    print_error: str | None
    hms: tuple[str, ...]
    ams: tuple[AmsUnitOut, ...]
    external_spools: tuple[TrayOut, ...]
    active_tray: int | None

    @classmethod
    def from_state(cls, state: PrinterState) -> PrinterStateOut:
        """The summary of one state."""
        return cls(
            serial=state.serial,
            model=state.model.product,
            gcode_state=state.gcode_state,
            stage=state.stage_name,
            job=state.job_name,
            percent=state.percent,
            layer=state.layer,
            total_layers=state.total_layers,
            remaining_minutes=state.remaining_minutes,
            nozzle_temp=state.nozzle_temp,
            nozzle_target=state.nozzle_target,
            bed_temp=state.bed_temp,
            bed_target=state.bed_target,
            chamber_temp=state.chamber_temp,
            chamber_target=state.chamber_target,
            nozzle_diameter=state.nozzle_diameter,
            nozzle_type=state.nozzle_type,
            nozzle=NozzleOut.from_kind(state.nozzle),
            active_extruder=state.active_extruder,
            extruders=tuple(
                ExtruderOut.from_extruder(e, e.index == state.active_extruder)
                for e in state.extruders
            ),
            fans=FansOut(part=state.part_fan, aux=state.aux_fan, chamber=state.chamber_fan),
            aux_fan2=state.aux_fan2,
            sd_card=state.sd_card,
            door_open=state.door_open,
            timelapse=state.timelapse,
            camera_recording=state.camera_recording,
            speed=state.speed_name,
            lights=dict(state.lights),
            wifi_dbm=state.wifi_dbm,
            print_error=str(state.print_error) if state.print_error else None,
            hms=tuple(str(h) for h in state.hms),
            ams=tuple(AmsUnitOut.from_unit(u) for u in state.ams_units),
            external_spools=tuple(TrayOut.from_tray(t) for t in state.external_spools),
            active_tray=state.tray_now,
        )


# --- bambu ams --json ---------------------------------------------------------------------


class SlotOut(OutputModel):
    """One slot in ``ams --json``: where it is and whether it feeds the nozzle."""

    id: int
    ams_id: int
    slot: int
    type: str
    colour: str
    remain: int | None
    active: bool

    @classmethod
    def from_tray(cls, tray: Tray, active: bool) -> SlotOut:
        """From a typed tray."""
        return cls(
            id=tray.global_id,
            ams_id=tray.ams_id,
            slot=tray.id,
            type=tray.type,
            colour=tray.colour,
            remain=tray.remain,
            active=active,
        )


class AmsViewUnitOut(OutputModel):
    """One unit in ``ams --json``."""

    id: int
    kind: str
    humidity_level: int | None
    humidity_percent: int | None
    temp: float | None
    trays: tuple[SlotOut, ...]


class AmsOut(OutputModel):
    """``bambu ams --json``: the units, their slots and the external spools."""

    serial: str
    tray_now: int | None
    units: tuple[AmsViewUnitOut, ...]
    external: tuple[SlotOut, ...]

    @classmethod
    def from_state(cls, state: PrinterState, serial: str | None = None) -> AmsOut:
        """The AMS of one state (``serial`` as the caller named the printer)."""
        now = state.tray_now
        loaded = state.active_tray
        return cls(
            serial=state.serial if serial is None else serial,
            tray_now=now,
            units=tuple(
                AmsViewUnitOut(
                    id=unit.id,
                    kind=unit.kind,
                    humidity_level=unit.humidity_level,
                    humidity_percent=unit.humidity_percent,
                    temp=unit.temp,
                    trays=tuple(SlotOut.from_tray(t, t is loaded) for t in unit.trays),
                )
                for unit in state.ams_units
            ),
            external=tuple(SlotOut.from_tray(t, t is loaded) for t in state.external_spools),
        )


# --- bambu hms --json ---------------------------------------------------------------------


class HmsEntryOut(OutputModel):
    """One decoded HMS entry."""

    code: str
    severity: str
    module: str
    text: str
    wiki_url: str
    attr: int
    hms_code: int

    @classmethod
    def from_entry(cls, entry: HMSEntry) -> HmsEntryOut:
        """From a decoded entry."""
        return cls(
            code=entry.code_string,
            severity=entry.severity.name.lower(),
            module=entry.module,
            text=entry.text,
            wiki_url=entry.wiki_url,
            attr=entry.attr,
            hms_code=entry.code,
        )


class PrintErrorOut(OutputModel):
    """The decoded ``print_error``."""

    code: str
    text: str
    value: int

    @classmethod
    def from_error(cls, error: PrintError) -> PrintErrorOut | None:
        """``None`` when there is no error."""
        if not error:
            return None
        return cls(code=error.code_string, text=error.text, value=error.value)


class HmsOut(OutputModel):
    """``bambu hms --json``: the active HMS entries and the print error."""

    serial: str
    hms: tuple[HmsEntryOut, ...]
    print_error: PrintErrorOut | None

    @classmethod
    def from_state(cls, state: PrinterState, serial: str | None = None) -> HmsOut:
        """The health of one state (``serial`` as the caller named the printer)."""
        return cls(
            serial=state.serial if serial is None else serial,
            hms=tuple(HmsEntryOut.from_entry(e) for e in state.hms),
            print_error=PrintErrorOut.from_error(state.print_error),
        )
