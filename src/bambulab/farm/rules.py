"""Which printer may take which job: the dispatch rules, held against live state (pure, no I/O).

:func:`check` answers for one job and one printer with a :class:`Fit`: whether
the printer may take the job now, and if not, one line saying why (shown on
the dashboard and kept with the job). The rules, in the order a reason is
given:

1. the job's target allows this printer (any, this serial, this model code);
2. the printer is online and has reported;
3. it is not updating its firmware (``upgrade_state.dis_state`` 2: Bambu
   Studio's ``MachineObject::is_in_upgrading`` refuses to send then);
4. it is idle: ``gcode_state`` IDLE, FINISH or FAILED with no stage running.
   Bambu Studio counts PREPARE, RUNNING, PAUSE and SLICING as a print in
   progress (``MachineObject::is_in_printing_status``); a printer that says
   IDLE while a stage runs (loading filament from the screen, a calibration)
   is doing something too, so ``PrinterState.idle`` is the test;
5. no HMS alert of fatal or serious severity is active;
6. its SD card is usable (LAN printing uploads the file there; Bambu Studio
   refuses ``NO_SDCARD``);
7. its bed has been cleared since the last print (``bed_clear_needed``);
8. the file was sliced for its model (``Requirements.model_id`` against
   ``dev_model_name``; an unknown model on either side is allowed). Bambu
   Studio also accepts models its per-printer description lists as
   compatible; that list is not in this project, so only the same model fits;
9. its nozzle diameter is the file's (dual-nozzle printers: one of the
   mounted nozzles; the 3MF as read keeps only the first extruder's
   diameter);
10. every filament of the plate is loaded: type first, then the nearest
    colour, through :func:`bambulab.protocol.ams_mapping.ams_mapping`. An
    external spool feeds one filament (nobody is there to swap spools), so a
    multi-colour plate needs an AMS (or, on dual-external printers, at most
    one filament per spool).

:func:`rank` orders the printers that fit: the best colour match first
(smallest total colour distance), then the most filament left on the trays
the job would use (the lowest of them, since the emptiest tray ends the
print), then by serial so that the order never depends on the input's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from ..errors import AmsMappingError
from ..models.printer import Severity, model_named, model_of
from ..models.state import PrinterState, Tray
from ..protocol.ams_mapping import (
    UNUSED,
    ams_mapping,
    colour_distance,
    describe,
    same_type,
)
from ..safetext import visible
from .models import Job, Requirements, Target

__all__ = ["BLOCKING_SEVERITIES", "Fit", "check", "rank"]

# HMS severities that stop a printer from taking a job (common and info ones do not).
BLOCKING_SEVERITIES = frozenset({Severity.FATAL, Severity.SERIOUS})
# ``upgrade_state.dis_state`` while a firmware update runs (Bambu Studio's
# ``UpgradingInProgress``).
UPGRADING = 2
_UNUSABLE_CARDS = frozenset({"absent", "abnormal", "readonly"})
_BUSY_STATES = frozenset({"PREPARE", "RUNNING", "PAUSE", "SLICING"})
_NOZZLE_TOLERANCE = 0.01  # mm: 0.4 and "0.40" are the same nozzle
_EXTERNAL = 254  # global tray ids from here up are external spools
_REASON_LIMIT = 240


@dataclass(frozen=True, slots=True)
class Fit:
    """Whether one printer may take one job now.

    ``reason`` is one line: why not, or (when it fits) which trays feed the
    plate. ``mapping`` is the ``ams_mapping`` to send (one global tray id per
    filament slot up to the highest the plate uses, -1 for the others),
    ``use_ams`` whether any AMS tray feeds it, ``distance`` the total colour
    distance of the match (CIE76; 0 is exact) and ``remain`` the lowest
    remaining percentage among the trays used (``None``: not known).
    """

    ok: bool
    reason: str
    mapping: tuple[int, ...] = ()
    use_ams: bool = False
    distance: float = 0.0
    remain: int | None = None

    def __bool__(self) -> bool:
        return self.ok


def _no(reason: str) -> Fit:
    return Fit(False, _line(reason))


def _line(text: str) -> str:
    shown = visible(text)
    return shown if len(shown) <= _REASON_LIMIT else shown[: _REASON_LIMIT - 1] + "…"


def _model_name(code: str) -> str:
    """``"P1S (C12)"`` for a known code, the code itself otherwise."""
    found = model_of(code) or model_named(code)
    return f"{found.product} ({found.code})" if found else code


def check(
    job: Job, state: PrinterState, *, bed_clear_needed: bool = False, online: bool = True
) -> Fit:
    """Whether the printer whose state this is may take ``job`` now, and with which trays.

    ``online`` is whether the printer's connection is up (the live hub
    knows; a state alone cannot tell a silent printer from an idle one);
    ``bed_clear_needed`` whether its last print still waits for someone to
    confirm the bed was cleared.
    """
    serial = state.serial
    refused = _target(job.target, state)
    if refused:
        return _no(refused)
    gcode_state = state.gcode_state
    if not online or gcode_state == "OFFLINE":
        return _no(f"printer {serial} is offline")
    if not gcode_state:
        return _no(f"printer {serial} has not reported its state yet")
    upgrade = state.get("upgrade_state")
    if isinstance(upgrade, Mapping) and str(upgrade.get("dis_state")) == str(UPGRADING):
        return _no(f"printer {serial} is updating its firmware")
    if gcode_state in _BUSY_STATES:
        job_name = state.job_name
        what = f" ({job_name[:60]}, {state.percent or 0} %)" if job_name else ""
        return _no(f"printer {serial} is busy: {gcode_state.lower()}{what}")
    if not state.idle:
        doing = state.stage_name if gcode_state in ("IDLE", "FINISH", "FAILED") else ""
        return _no(f"printer {serial} is not ready: {doing or gcode_state.lower()}")
    blocking = [h for h in state.hms if h.severity in BLOCKING_SEVERITIES]
    if blocking:
        more = f" (and {len(blocking) - 1} more)" if len(blocking) > 1 else ""
        return _no(f"printer {serial} has an HMS alert: {blocking[0]}{more}")
    card = state.sd_card
    if card in _UNUSABLE_CARDS:
        return _no(f"printer {serial} has no usable SD card ({card})")
    if bed_clear_needed:
        return _no(f"printer {serial} waits for its bed to be cleared after the last print")
    req = job.requirements
    refused = _model(req, state) or _nozzle(req, state)
    if refused:
        return _no(refused)
    return _filaments(req, state)


def _target(target: Target, state: PrinterState) -> str:
    if target.kind == "printer" and target.value != state.serial:
        return f"the job is for printer {target.value}, not {state.serial}"
    if target.kind == "model":
        wanted = model_named(target.value)
        code = wanted.code if wanted else target.value
        if state.model.code != code:
            this = _model_name(state.model.code) if state.model.known else "of unknown model"
            return f"the job is for {_model_name(code)} printers; this is {_article(this)}"
    return ""


def _article(name: str) -> str:
    if name.startswith("of "):
        return f"a printer {name}"
    # "an A1", "an H2D", "an X1E", "a P1S": the letter as it is spoken.
    return f"an {name}" if name[:1] in "AEFHILMNORSX8" else f"a {name}"


def _model(req: Requirements, state: PrinterState) -> str:
    sliced = req.model_id.strip()
    if not sliced or not state.model.known:
        return ""
    wanted = model_of(sliced) or model_named(sliced)
    code = wanted.code if wanted else sliced
    if code == state.model.code:
        return ""
    return f"sliced for {_model_name(sliced)}, this is {_article(_model_name(state.model.code))}"


def _nozzle(req: Requirements, state: PrinterState) -> str:
    wanted = req.nozzle_diameter
    if wanted is None:
        return ""
    mounted = [n.diameter for n in state.nozzles if not n.on_rack and n.diameter is not None]
    if not (state.dual_nozzle and mounted):
        mounted = [state.nozzle_diameter] if state.nozzle_diameter is not None else []
    if not mounted or any(abs(d - wanted) < _NOZZLE_TOLERANCE for d in mounted):
        return ""
    have = " and ".join(f"{d:g} mm" for d in mounted)
    return f"sliced for a {wanted:g} mm nozzle, this printer has {have}"


def _filaments(req: Requirements, state: PrinterState) -> Fit:
    used = [f for f in req.filaments if f.slot > 0]
    if not used:
        return Fit(True, "fits (the plate names no filament)")
    loaded = [t for t in state.trays if not t.empty]
    for filament in used:
        if not any(same_type(filament.type, t.type) for t in loaded):
            return _no(
                f"no {filament.type} loaded (filament {filament.slot}, "
                f"{filament.colour[:7]}); loaded: {describe(loaded)}"
            )
    try:
        mapping = ams_mapping(used, state.trays)
    except AmsMappingError as exc:  # the type check above makes this rare
        return _no(str(exc))
    by_id = {t.global_id: t for t in loaded}
    external = Counter(t for t in mapping if t >= _EXTERNAL)
    shared = [t for t, n in external.items() if n > 1]
    if shared:
        if not any(0 <= t.global_id < _EXTERNAL for t in loaded):
            return _no(
                f"the plate uses {len(used)} filaments and this printer has no AMS loaded: "
                "one external spool feeds one filament"
            )
        return _no(
            f"{external[shared[0]]} filaments would share external spool {shared[0]}; "
            "load them into the AMS"
        )
    trays: list[Tray] = [by_id[mapping[f.slot - 1]] for f in used]
    distance = sum(colour_distance(f.colour, t.colour) for f, t in zip(used, trays, strict=True))
    remains = [t.remain for t in {t.global_id: t for t in trays}.values()]
    known = [r for r in remains if r is not None]
    feeds = ", ".join(
        f"{f.slot}→{t.global_id} {t.type} {t.colour_rgb}".rstrip()
        for f, t in zip(used, trays, strict=True)
    )
    return Fit(
        True,
        _line(f"fits: {feeds}"),
        tuple(mapping),
        use_ams=any(0 <= t < _EXTERNAL for t in mapping if t != UNUSED),
        distance=round(distance, 3),
        remain=min(known) if known else None,
    )


def rank(
    job: Job,
    candidates: Iterable[PrinterState],
    *,
    bed_clear_needed: Collection[str] = (),
    offline: Collection[str] = (),
) -> list[tuple[PrinterState, Fit]]:
    """The printers among ``candidates`` that may take ``job``, the best first.

    ``bed_clear_needed`` and ``offline`` are serials. Best is the smallest
    total colour distance, then the most filament left on the emptiest tray
    the job would use (unknown counts as none), then the serial.
    """
    fitting = []
    for state in candidates:
        fit = check(
            job,
            state,
            bed_clear_needed=state.serial in bed_clear_needed,
            online=state.serial not in offline,
        )
        if fit.ok:
            fitting.append((state, fit))
    fitting.sort(key=lambda p: (p[1].distance, -(p[1].remain or 0), p[0].serial))
    return fitting
