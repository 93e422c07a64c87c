"""Command handlers: one function per ``family.command`` of PROTOCOL.md §2.4.

Each handler checks its fields, changes the :class:`~.state.PrinterState`
and returns an :class:`Outcome`: success or a failure with a human reason,
extra reply fields, and whether the state changed (so the printer pushes a
report right away, as real ones do). A field of the wrong type raises
:class:`BadField`, which the dispatcher turns into a failed reply: a
simulator that crashed on bad input would hide client bugs instead of
showing them.

Commands that make no sense in the current state (pause while idle, a
project while printing...) fail with a reason instead of being ignored, so
a client's error handling gets exercised.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ...errors import ThreeMFError
from ...models.threemf import Plate
from ...protocol.ams_mapping import same_type
from ...protocol.threemf import read_3mf, read_gcode_info
from ...vocabulary import FANS
from ..catalog import AMS_PRODUCT, FILAMENTS, MAIN_BOARDS
from . import job as stages
from .ams import EXTERNAL, NO_TRAY
from .job import Job, file_info
from .state import (
    ERROR_DOWNLOAD_FAILED,
    ERROR_RUNOUT,
    HMS_RUNOUT_CODE,
    CloudDownload,
    PrinterState,
    Upgrade,
    runout_attr,
)

Body = Mapping[str, Any]

# M106/M107 P<n>: which fan.
_FAN_OF_INDEX = {index: name for name, index in FANS.items()}


class BadField(ValueError):
    """A command field is missing or of the wrong type."""


@dataclass(slots=True)
class Outcome:
    """What a handler did."""

    ok: bool = True
    reason: str = ""
    fields: dict[str, Any] = field(default_factory=dict)  # extra reply fields
    changed: bool = True  # push a report right after the reply


def fail(reason: str) -> Outcome:
    """A refused command; nothing changed."""
    return Outcome(ok=False, reason=reason, changed=False)


Handler = Callable[[PrinterState, Body], Outcome]
HANDLERS: dict[tuple[str, str], Handler] = {}


def handles(family: str, *commands: str) -> Callable[[Handler], Handler]:
    """Register a handler for one or more commands of a family."""

    def register(handler: Handler) -> Handler:
        for command in commands:
            HANDLERS[(family, command)] = handler
        return handler

    return register


# --- field readers ------------------------------------------------------------------


def _int(body: Body, key: str, default: int | None = None) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or value is None:
        raise BadField(f"{key} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise BadField(f"{key} must be an integer")


def _float(body: Body, key: str) -> float:
    value = body.get(key)
    if isinstance(value, bool) or value is None:
        raise BadField(f"{key} must be a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BadField(f"{key} must be a number") from None


def _bool(body: Body, key: str, default: bool | None = None) -> bool:
    value = body.get(key, default)
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "enable", "disable"):
        return value.lower() in ("true", "enable")
    raise BadField(f"{key} must be true or false")


def _str(body: Body, key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise BadField(f"{key} must be a string")
    return value


def _id(body: Body, key: str) -> str:
    # Ids are decimal strings on the wire; some clients send ints.
    value = body.get(key, "0")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadField(f"{key} must be a string")
    return str(value)


def _clamp(value: float, limit: int) -> float:
    return float(max(0, min(limit, round(value))))


# --- print control ------------------------------------------------------------------


@handles("print", "stop")
def stop(state: PrinterState, body: Body) -> Outcome:
    """Cancel the job: FAILED with print_error 0x0300400C."""
    if not state.active:
        return fail("no print to stop")
    state.stop()
    return Outcome()


@handles("print", "pause")
def pause(state: PrinterState, body: Body) -> Outcome:
    """Pause a preparing or running job (stage 16)."""
    if state.gcode_state == "PAUSE":
        return fail("the print is already paused")
    if not state.active:
        return fail("no print to pause")
    state.pause()
    return Outcome()


@handles("print", "resume")
def resume(state: PrinterState, body: Body) -> Outcome:
    """Resume a paused job (also after a filament runout)."""
    if state.gcode_state != "PAUSE":
        return fail("the print is not paused")
    blocked = state.resume_blocked()
    if blocked:
        return fail(blocked)
    state.resume()
    return Outcome()


@handles("print", "clean_print_error")
def clean_print_error(state: PrinterState, body: Body) -> Outcome:
    """Acknowledge the shown print error (the slicer's "dismiss")."""
    state.print_error = 0
    return Outcome()


def _on_card(state: PrinterState, path: str) -> str | None:
    return state.card.find(path)


def _choose_tray(state: PrinterState, body: Body) -> int | str:
    """The tray feeding a job, or a failure reason."""
    use_ams = _bool(body, "use_ams", bool(state.ams.units))
    if not use_ams:
        # Printing from the external spool: the mapping does not matter, and
        # OpenBambuAPI documents ``"ams_mapping": ""`` for this form.
        return EXTERNAL
    raw = body.get("ams_mapping", [])
    if raw == "":
        raw = []
    if not isinstance(raw, list):
        raise BadField("ams_mapping must be a list of integers")
    mapping = [_int({"v": v}, "v") for v in raw]
    for tray in mapping:
        if tray == -1:
            continue
        spool = state.ams.spool(tray)
        if spool is None or not spool.loaded:
            return f"ams_mapping refers to tray {tray}, which is empty or missing"
    chosen = next((t for t in mapping if t != -1), None)
    if chosen is not None:
        return chosen
    now = state.ams.spool(state.ams.tray_now)
    if now is not None and now.loaded:
        return state.ams.tray_now
    return state.ams.first_loaded()


def plan_job(
    state: PrinterState,
    *,
    name: str,
    gcode_file: str,
    print_type: str,
    tray: int,
    layers: int,
    minutes: float,
    grams: float,
    bed_levelling: bool = True,
    flow_cali: bool = False,
    vibration_cali: bool = False,
) -> Job:
    """A job with its stage plan: homing, bed, levelling, hotend, filament."""
    spool = state.ams.spool(tray)
    nozzle_temp, bed_temp = stages.PRINT_TEMPS.get(
        spool.tray_type if spool is not None else "", stages.DEFAULT_TEMPS
    )
    pending = [stages.HOMING]
    if vibration_cali:
        pending.append(stages.SWEEPING_XY)
    pending.append(stages.HEATBED_PREHEATING)
    if bed_levelling:
        pending.append(stages.BED_LEVELLING)
    pending.append(stages.HEATING_HOTEND)
    if tray not in (NO_TRAY, state.ams.tray_now):
        pending.append(stages.CHANGING_FILAMENT)
    if flow_cali:
        pending.append(stages.CALIBRATING_EXTRUSION)
    return Job(
        subtask_name=name,
        gcode_file=gcode_file,
        print_type=print_type,
        layers=max(1, layers),
        work_total=max(1.0, minutes * 60),
        grams=grams,
        tray=tray,
        nozzle_temp=nozzle_temp,
        bed_temp=bed_temp,
        pending=pending,
        plan=list(pending),
    )


_PLATE_PARAM = re.compile(r"^/?Metadata/plate_(\d{1,4})\.gcode$")


def _plate_of(body: Body) -> int | None:
    """The plate ``param`` names (``Metadata/plate_<N>.gcode``; absent: 1), None if malformed."""
    param = body.get("param", "")
    if param in ("", None):
        return 1
    if not isinstance(param, str):
        raise BadField("param must be a string")
    match = _PLATE_PARAM.match(param.strip())
    return int(match.group(1)) if match else None


def _url_name(body: Body, url: str) -> str:
    """The file a cloud URL names: ``file`` when given, else the URL's last path part."""
    return _str(body, "file", "") or url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _job_name(body: Body, name: str) -> str:
    return _str(body, "subtask_name", "") or name.rsplit(".3mf", 1)[0].rsplit(".gcode", 1)[0]


def _refuse(
    state: PrinterState, reason: str, error: int, hms: tuple[int, int] | None = None
) -> str:
    """Show a print error (and HMS entry) as a printer does when a job cannot start."""
    state.print_error = error
    if hms is not None and hms not in state.hms:
        state.hms.append(hms)
    return reason


def _feeds(
    state: PrinterState, plate: Plate, body: Body, *, check_types: bool
) -> list[tuple[int, float]] | str:
    """(tray, grams) per tray the plate's filaments come from, or why the job cannot start.

    ``ams_mapping`` entry ``slot - 1`` feeds filament ``slot`` (PROTOCOL.md §2.4).
    An empty mapping (or ``use_ams`` off) feeds everything from one tray, as
    :func:`_choose_tray` picks it.
    """
    used = [f for f in plate.filaments if f.slot > 0]
    grams = [f.grams for f in used] or [plate.weight]
    raw = body.get("ams_mapping", [])
    use_ams = _bool(body, "use_ams", bool(state.ams.units))
    if not use_ams or raw in ("", []) or not used:
        tray = _choose_tray(state, body)
        if isinstance(tray, str):
            return _refuse(state, tray, stages.ERROR_AMS_MAPPING)
        pairs = [(tray, g) for g in grams]
        chosen = [(tray, f) for f in used] if check_types else []
    else:
        if not isinstance(raw, list):
            raise BadField("ams_mapping must be a list of integers")
        mapping = [_int({"v": v}, "v") for v in raw]
        chosen = []
        for filament in used:
            index = filament.slot - 1
            tray = mapping[index] if index < len(mapping) else -1
            if tray == -1 or state.ams.spool(tray) is None:
                return _refuse(
                    state,
                    f"failed to get the AMS mapping table: filament {filament.slot} "
                    f"maps to {'no tray' if tray == -1 else f'tray {tray}, which is missing'}",
                    stages.ERROR_AMS_MAPPING,
                )
            chosen.append((tray, filament))
        pairs = [(tray, filament.grams) for tray, filament in chosen]
        if not check_types:
            chosen = []
    for tray, filament in chosen:
        spool = state.ams.spool(tray)
        if spool is not None and spool.loaded and not same_type(spool.tray_type, filament.type):
            return _refuse(
                state,
                f"filament {filament.slot} is {filament.type} but tray {tray} holds "
                f"{spool.tray_type}: failed to get the AMS mapping table",
                stages.ERROR_AMS_MAPPING,
            )
    for tray, _ in pairs:
        spool = state.ams.spool(tray)
        if tray in (NO_TRAY, EXTERNAL, EXTERNAL + 1):
            continue  # an external spool need not be described to the printer to feed it
        if spool is None or not spool.loaded or spool.remain == 0:
            # Loading from an empty slot: the runout error and HMS of that slot.
            address = state.ams.address(tray) or (0xFF, 0)
            attr = runout_attr(address[0], address[1])
            return _refuse(state, f"tray {tray} is empty", ERROR_RUNOUT, (attr, HMS_RUNOUT_CODE))
    merged: dict[int, float] = {}
    for tray, used_grams in pairs:
        merged[tray] = merged.get(tray, 0.0) + used_grams
    return list(merged.items())


def job_from_3mf(
    state: PrinterState,
    fileobj: BinaryIO,
    plate: int,
    body: Body,
    *,
    name: str = "",
    check_types: bool = True,
) -> Job | str:
    """The job printing ``plate`` of the 3MF in ``fileobj``, or why it cannot start.

    Layers, time and grams per filament come from the file's own metadata
    (:func:`bambulab.protocol.threemf.read_3mf`); the trays from
    ``ams_mapping``. A refusal also sets ``print_error`` (and the HMS entry
    of an empty tray) as a printer shows it, and leaves the printer idle.
    ``body`` is the ``project_file`` request (its url, ids, options);
    ``name`` the file's name for ``gcode_file`` (default: from the url).
    Used for SD-card files here and for files a cloud print fetched.
    """
    url = _str(body, "url", "")
    cloud = url.startswith(("https://", "http://"))
    if not name:
        name = _url_name(body, url)
    try:
        project = read_3mf(fileobj, md5=False)  # the printer checks a cloud file's MD5 itself
        chosen = project.plate(plate)
    except ThreeMFError as exc:
        return _refuse(state, f"cannot print {name}: {exc}", stages.ERROR_FILE)
    feeds = _feeds(state, chosen, body, check_types=check_types)
    if isinstance(feeds, str):
        return feeds
    seconds = chosen.seconds or 60.0
    layers = chosen.layers or max(1, int(seconds // 30))
    return _project_job(state, body, name, cloud, feeds, layers, seconds / 60)


def _project_job(
    state: PrinterState,
    body: Body,
    name: str,
    cloud: bool,
    feeds: list[tuple[int, float]],
    layers: int,
    minutes: float,
) -> Job:
    levelling_key = "bed_levelling" if "bed_levelling" in body else "bed_leveling"
    job = plan_job(
        state,
        name=_job_name(body, name),
        gcode_file=name,
        print_type="cloud" if cloud else "local",
        tray=feeds[0][0] if feeds else NO_TRAY,
        layers=layers,
        minutes=minutes,
        grams=round(sum(g for _, g in feeds), 2),
        bed_levelling=_bool(body, levelling_key, True),
        flow_cali=_bool(body, "flow_cali", False),
        vibration_cali=_bool(body, "vibration_cali", False),
    )
    job.feeds = feeds
    job.cloud = cloud
    job.timelapse = _bool(body, "timelapse", False)
    job.project_id = _id(body, "project_id")
    job.profile_id = _id(body, "profile_id")
    job.task_id = _id(body, "task_id")
    job.subtask_id = _id(body, "subtask_id")
    return job


def _legacy_job(state: PrinterState, body: Body, name: str, cloud: bool) -> Job | str:
    """A job for a file the simulator cannot read: numbers from :func:`file_info`.

    Only for cloud URLs of a printer with no simulated cloud behind it (nothing
    to fetch), cloud G-code, and the sample jobs of the cards, whose
    scenarios map their one filament to any tray.
    """
    tray = _choose_tray(state, body)
    if isinstance(tray, str):
        return tray
    info = file_info(name)
    return _project_job(state, body, name, cloud, [(tray, info.grams)], info.layers, info.minutes)


def _is_sample(name: str) -> bool:
    return name in stages.SAMPLE_FILES


def _download(state: PrinterState, url: str, md5: str) -> CloudDownload | str:
    """Fetch a cloud print's file and check its MD5, as the printer does; or why not."""
    assert state.cloud_fetch is not None
    fetched = state.cloud_fetch(url)
    if isinstance(fetched, str):
        return f"failed to download the print file: {fetched}"
    if md5 and md5.strip().lower() != fetched.md5.lower():
        return "failed to download the print file: MD5 mismatch"
    return fetched


def _cloud_job(state: PrinterState, body: Body, url: str, plate: int) -> Job | str:
    """A cloud print: download the file (signature, expiry, MD5), then run it from its metadata.

    A failed download shows print error 0500-403F, as printers do. A printer
    simulated without a cloud behind it takes the URL on trust.
    """
    name = _url_name(body, url)
    if state.cloud_fetch is None:
        return _legacy_job(state, body, name, cloud=True)
    downloaded = _download(state, url, _str(body, "md5", ""))
    if isinstance(downloaded, str):
        return _refuse(state, downloaded, ERROR_DOWNLOAD_FAILED)
    if name.lower().endswith(".gcode"):
        return _legacy_job(state, body, name, cloud=True)
    try:
        with downloaded.open() as fileobj:
            return job_from_3mf(state, fileobj, plate, body, name=name)
    except OSError as exc:
        return _refuse(state, f"cannot read {name}: {type(exc).__name__}", stages.ERROR_FILE)


@handles("print", "project_file")
def project_file(state: PrinterState, body: Body) -> Outcome:
    """Start a plate of a sliced 3MF from the SD card (LAN) or a URL (cloud).

    A file on the card is read and run from its own metadata (layers, time,
    grams per filament); trays come from ``ams_mapping``. A file that cannot
    be printed (unreadable, no such plate, an empty or wrong tray) is refused
    with the print error a printer shows, and the printer stays idle.
    """
    if state.active:
        return fail("the printer is busy with another print")
    url = _str(body, "url", "")
    plate = _plate_of(body)
    if plate is None:
        shown = body.get("param")
        return fail(f"param must be a plate's G-code (Metadata/plate_<N>.gcode), not {shown!r}")
    if url.startswith(("https://", "http://")):
        job: Job | str = _cloud_job(state, body, url, plate)
    else:
        scheme, _, path = url.partition("://")
        if scheme not in ("file", "ftp") or not path:
            return fail(f"unsupported url {url!r}")
        # Every family takes both forms: LAN libraries send ftp:/// to all models and
        # users report it working on P1S; the slicer and Home Assistant send file:///sdcard/
        # to X1/P1/A1. The client still picks per model (PrinterModel.lan_url).
        if not state.sdcard:
            return fail("no SD card")
        found = _on_card(state, path)
        if found is None:
            return fail(f"file not found: {path}")
        job = _card_job(state, body, found, plate)
    if isinstance(job, str):
        return Outcome(ok=False, reason=job, changed=True)  # print_error shows in the report
    if job.timelapse:
        state.timelapse = "enable"
    state.start(job)
    return Outcome()


def _card_job(state: PrinterState, body: Body, found: str, plate: int) -> Job | str:
    """The job for a file on the card (3MF or plain G-code)."""
    if found.lower().endswith(".gcode"):
        return _gcode_job(state, found, body)
    sample = _is_sample(found)
    try:
        with state.card.open(found) as fileobj:
            job = job_from_3mf(state, fileobj, plate, body, name=found, check_types=not sample)
    except OSError as exc:
        return _refuse(state, f"cannot read {found}: {type(exc).__name__}", stages.ERROR_FILE)
    if isinstance(job, str) and sample and state.print_error == stages.ERROR_FILE:
        state.print_error = 0  # a placeholder sample from before the cards held real files
        return _legacy_job(state, body, found, cloud=False)
    return job


def _gcode_job(state: PrinterState, found: str, body: Body | None = None) -> Job | str:
    """A plain G-code file: layers and time from its header, fed from the loaded tray."""
    try:
        with state.card.open(found) as fileobj:
            layers, seconds = read_gcode_info(fileobj)
    except OSError as exc:
        return _refuse(state, f"cannot read {found}: {type(exc).__name__}", stages.ERROR_FILE)
    if not layers or not seconds:
        if not _is_sample(found):
            return _refuse(
                state,
                f"cannot print {found}: no layer count or time in its header",
                stages.ERROR_FILE,
            )
        info = file_info(found)
        layers, seconds = info.layers, info.minutes * 60
    tray = state.ams.tray_now if state.ams.tray_now != NO_TRAY else state.ams.first_loaded()
    info = file_info(found)
    grams = info.grams if _is_sample(found) else round(seconds / 60 * 0.4, 1)
    job = plan_job(
        state,
        name=found.rsplit("/", 1)[-1].rsplit(".", 1)[0],
        gcode_file=found,
        print_type="local",
        tray=tray,
        layers=layers,
        minutes=seconds / 60,
        grams=grams,
        bed_levelling=False,
    )
    if body is not None:
        job.timelapse = _bool(body, "timelapse", False)
    return job


@handles("print", "gcode_file")
def gcode_file(state: PrinterState, body: Body) -> Outcome:
    """Print a plain G-code file from the SD card (layers and time from its header)."""
    if state.active:
        return fail("the printer is busy with another print")
    path = _str(body, "param")
    found = _on_card(state, path) if state.sdcard else None
    if found is None:
        return fail(f"file not found: {path}")
    job = _gcode_job(state, found)
    if isinstance(job, str):
        return Outcome(ok=False, reason=job, changed=True)
    state.start(job)
    return Outcome()


@handles("print", "print_speed")
def print_speed(state: PrinterState, body: Body) -> Outcome:
    """Speed level 1-4 → ``spd_lvl``, ``spd_mag`` and the remaining time."""
    level = _int(body, "param")
    if level not in stages.SPEED_PERCENT:
        return fail(f"speed level must be 1-4, got {level}")
    if not state.active:
        return fail("no print in progress")
    state.speed_level = level
    return Outcome()


@handles("print", "skip_objects")
def skip_objects(state: PrinterState, body: Body) -> Outcome:
    """Add object ids to ``s_obj``."""
    job = state.job
    if job is None or not state.active:
        return fail("no print in progress")
    raw = body.get("obj_list")
    if not isinstance(raw, list) or not raw:
        raise BadField("obj_list must be a non-empty list of integers")
    ids = [_int({"v": v}, "v") for v in raw]
    merged = job.skipped + [i for i in dict.fromkeys(ids) if i not in job.skipped]
    if len(merged) > 64:
        return fail("at most 64 objects can be skipped")
    job.skipped = merged
    return Outcome()


@handles("print", "print_option")
def print_option(state: PrinterState, body: Body) -> Outcome:
    """Set one or more option flags (shown in ``home_flag``)."""
    known = [key for key in state.options if key in body]
    if not known:
        return fail("no known option in the command")
    for key in known:
        state.options[key] = _bool(body, key)
    return Outcome()


@handles("print", "calibration")
def calibration(state: PrinterState, body: Body) -> Outcome:
    """Run the chosen calibrations as a ``system`` job."""
    if state.active:
        return fail("the printer is busy")
    option = _int(body, "option")
    chosen = [stage for bit, stage in stages.CALIBRATION_STAGES if option & bit]
    if not chosen:
        return fail("choose at least one calibration")
    job = Job(
        subtask_name="auto_cali_for_user",
        gcode_file=stages.CALIBRATION_FILE,
        print_type="system",
        layers=0,
        work_total=0.0,
        grams=0.0,
        tray=NO_TRAY,
        nozzle_temp=0,
        bed_temp=0,
        pending=[stages.HOMING, *chosen],
        plan=[stages.HOMING, *chosen],
        calibration=True,
    )
    state.start(job)
    return Outcome()


# --- temperatures, fans, G-code -------------------------------------------------------

_COMMAND = re.compile(r"[GMT]\d+")  # "M104S220" needs no space, as on the firmware
_WORD = re.compile(r"([A-Z])(-?\d+(?:\.\d*)?)")


def run_gcode(state: PrinterState, text: str) -> None:
    """Apply the temperature and fan commands of G-code lines; ignore the rest."""
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip().upper()
        if not line:
            continue
        head = _COMMAND.match(line)
        if head is None:
            continue
        command, rest = head.group(0), line[head.end() :]
        words = {letter: float(number) for letter, number in _WORD.findall(rest)}
        if command in ("M104", "M109") and "S" in words:
            index = int(words.get("T", state.active_extruder))
            if 0 <= index < len(state.nozzles):
                state.nozzles[index].target = _clamp(words["S"], state.profile.nozzle_max)
        elif command in ("M140", "M190") and "S" in words:
            state.bed.target = _clamp(words["S"], state.profile.bed_max)
        elif command in ("M141", "M191") and "S" in words:
            if state.profile.chamber_heater:  # others have nothing to heat the chamber with
                state.chamber.target = _clamp(words["S"], state.profile.chamber_max)
        elif command in ("M106", "M107"):
            fan = _FAN_OF_INDEX.get(int(words.get("P", 1)))
            if fan is not None and _has_fan(state, fan):
                speed = words.get("S", 255) if command == "M106" else 0
                state.fans[fan] = int(_clamp(speed, 255))


def _has_fan(state: PrinterState, fan: str) -> bool:
    """Whether the hardware has this fan: ``M106 P2``/``P3`` move nothing where it has not."""
    if fan == "aux":
        return state.profile.aux_fan
    if fan == "chamber":
        return state.profile.chamber_fan
    return True


@handles("print", "gcode_line")
def gcode_line(state: PrinterState, body: Body) -> Outcome:
    """Run G-code; unknown commands are accepted like the firmware does."""
    run_gcode(state, _str(body, "param"))
    return Outcome()


@handles("print", "set_bed_temp")
def set_bed_temp(state: PrinterState, body: Body) -> Outcome:
    """Newer firmware's bed target command."""
    state.bed.target = _clamp(_float(body, "temp"), state.profile.bed_max)
    return Outcome()


@handles("print", "set_nozzle_temp")
def set_nozzle_temp(state: PrinterState, body: Body) -> Outcome:
    """Newer firmware's nozzle target command (``extruder_index`` on dual nozzles)."""
    index = _int(body, "extruder_index", state.active_extruder)
    if not 0 <= index < len(state.nozzles):
        return fail(f"no extruder {index}")
    state.nozzles[index].target = _clamp(_float(body, "target_temp"), state.profile.nozzle_max)
    return Outcome()


@handles("print", "set_ctt")
def set_ctt(state: PrinterState, body: Body) -> Outcome:
    """Chamber target, on printers with a chamber heater."""
    if not state.profile.chamber_heater:
        return fail(f"{state.profile.product} has no chamber heater")
    state.chamber.target = _clamp(_float(body, "ctt_val"), state.profile.chamber_max)
    return Outcome()


@handles("print", "set_airduct")
def set_airduct(state: PrinterState, body: Body) -> Outcome:
    """Air-duct mode (0 cooling, 1 heating) on printers that have one."""
    if not state.profile.device_block:
        return fail(f"{state.profile.product} has no switchable air duct")
    mode = _int(body, "modeId")
    if mode not in (0, 1):
        return fail("modeId must be 0 or 1")
    state.airduct_mode = mode
    return Outcome()


@handles("print", "select_extruder")
def select_extruder(state: PrinterState, body: Body) -> Outcome:
    """Switch the active nozzle (Bambu Studio ``command_select_extruder``: ``extruder_index``).

    Only dual-nozzle printers have another nozzle to switch to; the switch
    shows in ``device.extruder.state`` bits 4-7 and moves the top-level
    nozzle fields to the other (now idle) nozzle.
    """
    if not state.profile.dual_nozzle:
        return fail(f"{state.profile.product} has one nozzle")
    if state.gcode_state in ("PREPARE", "RUNNING"):
        return fail("the printer is busy printing")
    index = _int(body, "extruder_index")
    if not 0 <= index < len(state.nozzles):
        return fail(f"no extruder {index}")
    if index != state.active_extruder:
        # Each extruder keeps its own filament: park the active one's, take the other's.
        state.parked[state.active_extruder] = state.ams.tray_now
        state.active_extruder = index
        now = state.parked.pop(index, NO_TRAY)
        if now != state.ams.tray_now:
            state.ams.switch_to(now)
    return Outcome()


@handles("print", "refresh_nozzle")
def refresh_nozzle(state: PrinterState, body: Body) -> Outcome:
    """Re-read the nozzles' tags (``support_refresh_nozzle``: H2 printers only).

    The simulated nozzles never change behind the printer's back, so the
    reading finds what ``device.nozzle`` already says.
    """
    if state.profile.family != "H2":
        return fail(f"{state.profile.product} cannot read its nozzle")
    return Outcome(changed=False)


@handles("print", "extrusion_cali_sel")
def extrusion_cali_sel(state: PrinterState, body: Body) -> Outcome:
    """Choose a tray's flow-dynamics profile (``cali_idx``; -1 the default).

    Bambu Studio sends ``ams_id``/``slot_id`` (newer) or ``tray_id``
    (``ams*4 + slot``, 254/255 external) and reads the choice back from the
    reply and the tray's ``cali_idx``.
    """
    if "ams_id" in body:
        spool = state.ams.locate(_int(body, "ams_id"), _int(body, "slot_id", 0))
    else:
        spool = state.ams.spool(_int(body, "tray_id"))
    if spool is None:
        return fail("no such tray")
    cali_idx = _int(body, "cali_idx")
    if cali_idx < -1:
        return fail(f"invalid cali_idx {cali_idx}")
    spool.cali_idx = cali_idx
    state.ams.version += 1
    return Outcome()


# --- AMS --------------------------------------------------------------------------------


@handles("print", "ams_filament_drying")
def ams_filament_drying(state: PrinterState, body: Body) -> Outcome:
    """Start (``mode`` 1 timed, 2 to a humidity) or stop (``mode`` 0) drying a unit.

    Fields as Bambu Studio's ``DevFilaSystem`` drying control sends them:
    ``ams_id, mode, filament, temp, duration`` (hours), ``humidity``,
    ``rotate_tray``, ``cooling_temp``. Only the AMS 2 Pro and AMS HT have a
    heater; the drying shows in ``ams[].info`` bits 4-7 and ``dry_time``.
    """
    ams_id = _int(body, "ams_id")
    unit = state.ams.unit(ams_id)
    if unit is None:
        return fail(f"no AMS {ams_id}")
    if not unit.can_dry:
        return fail(f"AMS {ams_id} has no heater to dry with")
    mode = _int(body, "mode")
    if mode not in (0, 1, 2):
        return fail(f"unknown drying mode {mode}")
    if mode == 0:
        unit.drying_left, unit.drying_temp = 0.0, 0
        return Outcome()
    temp = _int(body, "temp")
    hours = _int(body, "duration")
    if not 45 <= temp <= (85 if unit.is_ht else 65):
        return fail(f"drying temperature {temp} is out of range")
    if not 1 <= hours <= 24:
        return fail(f"drying duration {hours} h is out of range")
    unit.drying_temp = temp
    unit.drying_left = hours * 3600.0
    return Outcome()


@handles("print", "ams_change_filament")
def ams_change_filament(state: PrinterState, body: Body) -> Outcome:
    """Load a tray (target = global id) or unload (target 255)."""
    if state.gcode_state in ("PREPARE", "RUNNING"):
        return fail("the printer is busy printing")
    target = _int(body, "target")
    if target != NO_TRAY:
        spool = state.ams.spool(target)
        if spool is None:
            return fail(f"no tray {target}")
        if not spool.loaded:
            return fail(f"tray {target} is empty")
    state.begin_change(target)
    return Outcome()


@handles("print", "unload_filament")
def unload_filament(state: PrinterState, body: Body) -> Outcome:
    """Unload whatever is in the toolhead."""
    if state.gcode_state in ("PREPARE", "RUNNING"):
        return fail("the printer is busy printing")
    state.begin_change(NO_TRAY)
    return Outcome()


def _colour(value: str) -> str:
    colour = value.lstrip("#").upper()
    if len(colour) == 6:
        colour += "FF"
    if len(colour) != 8 or any(c not in "0123456789ABCDEF" for c in colour):
        raise BadField("tray_color must be RRGGBBAA")
    return colour


@handles("print", "ams_filament_setting")
def ams_filament_setting(state: PrinterState, body: Body) -> Outcome:
    """Describe the filament in a tray (external spool: ams_id 255, tray_id 254)."""
    spool = state.ams.locate(_int(body, "ams_id"), _int(body, "tray_id"))
    if spool is None:
        return fail("no such tray")
    tray_type = _str(body, "tray_type", "")
    if not tray_type:
        spool.clear()
    else:
        info_idx = _str(body, "tray_info_idx", "")
        spool.tray_type = tray_type
        spool.colour = _colour(_str(body, "tray_color"))
        spool.info_idx = info_idx
        spool.temp_min = _int(body, "nozzle_temp_min")
        spool.temp_max = _int(body, "nozzle_temp_max")
        spool.sub_brand = next((f.sub_brand for f in FILAMENTS if f.info_idx == info_idx), "")
    state.ams.version += 1
    return Outcome()


@handles("print", "ams_control")
def ams_control(state: PrinterState, body: Body) -> Outcome:
    """resume (continues a runout pause), pause, reset/abort (cancel a change), done."""
    param = _str(body, "param")
    if param not in ("resume", "reset", "pause", "done", "abort"):
        return fail(f"unknown AMS control {param!r}")
    if not state.ams.units:
        return fail("no AMS connected")
    if param == "resume" and state.gcode_state == "PAUSE":
        blocked = state.resume_blocked()
        if blocked:
            return fail(blocked)
        state.resume()
    elif param in ("reset", "abort") and state.change is not None:
        state.change = None
        state.ams.tray_tar = state.ams.tray_now
    return Outcome()


@handles("print", "ams_user_setting")
def ams_user_setting(state: PrinterState, body: Body) -> Outcome:
    """RFID reading options and the remaining-filament estimate."""
    ams_id = _int(body, "ams_id", -1)
    if ams_id != -1 and state.ams.unit(ams_id) is None:
        return fail(f"no AMS {ams_id}")
    if "startup_read_option" in body:
        state.ams.power_on_flag = _bool(body, "startup_read_option")
    if "tray_read_option" in body:
        state.ams.insert_flag = _bool(body, "tray_read_option")
    if "calibrate_remain_flag" in body:
        state.ams.calibrate_remain = _bool(body, "calibrate_remain_flag")
    return Outcome()


@handles("print", "ams_get_rfid")
def ams_get_rfid(state: PrinterState, body: Body) -> Outcome:
    """Re-read a tray's tag; the simulated tags never change, so neither does the state."""
    if state.ams.locate(_int(body, "ams_id"), _int(body, "slot_id")) is None:
        return fail("no such tray")
    return Outcome(changed=False)


# --- system, camera, xcam ---------------------------------------------------------------


@handles("system", "ledctrl")
def ledctrl(state: PrinterState, body: Body) -> Outcome:
    """Switch a light on, off or flashing."""
    node = _str(body, "led_node")
    mode = _str(body, "led_mode")
    if node not in state.lights:
        return fail(f"{state.profile.product} has no {node}")
    if mode not in ("on", "off", "flashing"):
        return fail(f"unknown led_mode {mode!r}")
    for key in ("led_on_time", "led_off_time", "loop_times", "interval_time"):
        _int(body, key)  # firmware wants all four, even for on/off
    state.lights[node] = mode
    return Outcome()


@handles("system", "uiop")
def uiop(state: PrinterState, body: Body) -> Outcome:
    """A UI operation from the slicer: closing the print-error dialog clears the error.

    Bambu Studio's ``command_clean_print_error_uiop`` sends ``name
    "print_error", action "close", source 1, type "dialog", err "%08X"``.
    """
    name = _str(body, "name")
    action = _str(body, "action")
    if (name, action) != ("print_error", "close"):
        return fail(f"unknown ui operation {name}/{action}")
    err = _str(body, "err", "")
    if err and state.print_error and err.upper() != f"{state.print_error:08X}":
        return fail(f"error {err} is not the one shown")
    state.print_error = 0
    return Outcome()


@handles("system", "get_access_code")
def get_access_code(state: PrinterState, body: Body) -> Outcome:
    """Reply with the LAN access code."""
    return Outcome(fields={"access_code": state.access_code}, changed=False)


@handles("system", "set_accessories")
def set_accessories(state: PrinterState, body: Body) -> Outcome:
    """Record which nozzle is fitted."""
    if _str(body, "accessory_type", "nozzle") != "nozzle":
        return fail("only the nozzle can be set")
    if state.active:
        return fail("cannot change the nozzle while printing")
    diameter = _float(body, "nozzle_diameter")
    if diameter not in (0.2, 0.4, 0.6, 0.8):
        return fail(f"unsupported nozzle diameter {diameter}")
    nozzle_type = _str(body, "nozzle_type", state.nozzle_type[state.active_extruder])
    if not nozzle_type:
        raise BadField("nozzle_type must not be empty")
    index = _int(body, "extruder_index", state.active_extruder)
    if not 0 <= index < len(state.nozzles):
        return fail(f"no extruder {index}")
    state.nozzle_diameter[index] = diameter
    state.nozzle_type[index] = nozzle_type
    return Outcome()


@handles("camera", "ipcam_record_set", "ipcam_timelapse")
def camera(state: PrinterState, body: Body) -> Outcome:
    """Recording and timelapse switches (``ipcam.ipcam_record`` / ``ipcam.timelapse``)."""
    control = _str(body, "control")
    if control not in ("enable", "disable"):
        return fail("control must be enable or disable")
    if body.get("command") == "ipcam_record_set":
        state.ipcam_record = control
    else:
        state.timelapse = control
    return Outcome(fields={"control": control})


@handles("xcam", "xcam_control_set")
def xcam_control_set(state: PrinterState, body: Body) -> Outcome:
    """Switch an AI-camera detector."""
    module = _str(body, "module_name")
    if module not in state.profile.xcam_modules:
        return fail(f"{state.profile.product} has no {module}")
    state.xcam[module] = _bool(body, "control")
    if "print_halt" in body:
        state.xcam["print_halt"] = _bool(body, "print_halt")
    if "halt_print_sensitivity" in body:
        sensitivity = _str(body, "halt_print_sensitivity")
        if sensitivity not in ("low", "medium", "high", "never_halt"):
            return fail(f"unknown sensitivity {sensitivity!r}")
        state.xcam["halt_print_sensitivity"] = sensitivity
    return Outcome(
        fields={k: body[k] for k in ("module_name", "control", "print_halt") if k in body}
    )


# --- firmware -----------------------------------------------------------------------------


def version_modules(state: PrinterState) -> list[dict[str, Any]]:
    """``info.module[]``: ota first, boards, then AMS units.

    ``ota`` and the main board (``rv1126``/``esp32``/``ap``) name the printer:
    ``product_name`` with the "Bambu Lab " prefix and ``project_name`` the
    model code; AMS modules name their kind (PROTOCOL.md §2.4, §2.6.1).
    """
    profile = state.profile
    kinds = {unit.module_name: unit.kind for unit in state.ams.units}
    out: list[dict[str, Any]] = []
    for module in state.firmware:
        entry: dict[str, Any] = {
            "name": module.name,
            "project_name": "",
            "product_name": "",
            "sw_ver": module.sw_ver,
            "hw_ver": module.hw_ver,
            "sn": module.sn,
            "flag": 0,
        }
        if module.name == "ota" or module.name in MAIN_BOARDS:
            entry["product_name"] = profile.product_name
            entry["project_name"] = profile.code
        kind = kinds.get(module.name)
        if kind is not None:
            entry["product_name"] = AMS_PRODUCT[kind]
        if module.name == "ota":
            entry["visible"] = True
        out.append(entry)
    return out


@handles("info", "get_version")
def get_version(state: PrinterState, body: Body) -> Outcome:
    """The firmware modules."""
    return Outcome(fields={"module": version_modules(state)}, changed=False)


@handles("upgrade", "get_history")
def upgrade_history(state: PrinterState, body: Body) -> Outcome:
    """Firmware the printer ran before (the simulator keeps only the current one)."""
    history = [{"module": "ota", "version": state.ota_version}]
    return Outcome(fields={"firmware_optional": history}, changed=False)


@handles("upgrade", "upgrade_confirm", "consistency_confirm")
def upgrade_confirm(state: PrinterState, body: Body) -> Outcome:
    """Acknowledge an offered upgrade."""
    state.upgrade_seq += 1
    return Outcome()


@handles("upgrade", "start")
def upgrade_start(state: PrinterState, body: Body) -> Outcome:
    """Download and flash a module: DOWNLOADING → FLASHING → UPGRADE_SUCCESS."""
    _str(body, "url")
    module = _str(body, "module", "ota")
    version = _str(body, "version")
    if module not in ("ota", "ams"):
        return fail(f"unknown module {module!r}")
    if state.active:
        return fail("cannot upgrade while printing")
    if state.upgrade is not None:
        return fail("an upgrade is already running")
    state.upgrade = Upgrade(module, version)
    state.upgrade_status = "DOWNLOADING"
    state.upgrade_seq += 1
    return Outcome()
