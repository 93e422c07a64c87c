"""The simulated printer's state and the physics and job logic that move it.

:class:`PrinterState` is plain data plus the rules of time: heaters approach
their targets, a job walks PREPARE stages into RUNNING and on to FINISH, the
feeding tray loses filament, a firmware upgrade progresses, the Wi-Fi signal
drifts. Commands (:mod:`.commands`) change it; :mod:`.report` renders it into
the wire's ``push_status`` object. Nothing here knows about JSON, MQTT or the
wall clock: :class:`~bambulab.sim.printer.machine.SimPrinter` feeds it
simulated seconds.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import BinaryIO

from ..records import FirmwareModule
from . import job as stages
from .ams import EXTERNAL, NO_TRAY, AmsBank
from .job import Job
from .profiles import Profile
from .sdcard import SdCard
from .thermal import Heater

# PROTOCOL.md §2.3: print_error 0x0300400C = cancelled by the user.
ERROR_CANCELLED = 0x0300400C
# AMS filament runout (PROTOCOL.md §2.3 module 0x07): the print error and the
# HMS code whose wiki text reads "AMS A Slot N filament has run out."
ERROR_RUNOUT = 0x07008011
HMS_RUNOUT_CODE = 0x00020001

# A clogged nozzle (the farm simulator's failure): the device error Bambu's
# tables word "The nozzle is clogged with filament" (0300_8016), and an HMS
# entry from the toolhead module with the same meaning. The HMS code is the
# simulator's choice: the published tables disagree on one for a clog met
# mid-print, so it is a serious (0002) toolhead (0x08) entry of its own.
ERROR_CLOG = 0x03008016
HMS_CLOG_ATTR = 0x08001A00
HMS_CLOG_CODE = 0x00020001

# A cloud print's file could not be downloaded (or its MD5 did not match): the
# printer shows "Failed to download print job" with code 0500-403F (a user's
# report in Bambu Studio's issue tracker, bambulab/BambuStudio#10770).
ERROR_DOWNLOAD_FAILED = 0x0500403F

ACTIVE_STATES = frozenset({"PREPARE", "RUNNING", "PAUSE"})
MAX_STEPS = 20_000  # substeps per advance; beyond that steps grow longer than 1 s
FILAMENT_CHANGE_SECONDS = 20.0
UPGRADE_SECONDS = 60.0
WIFI_PERIOD = 5.0  # the signal is re-measured this often (and deltas never go silent longer)
FAN_FULL = 255


def runout_attr(ams_id: int, slot: int) -> int:
    """HMS ``attr`` of a runout: 0x07002000 + (slot << 8), the unit id in bits 16-23.

    AMS A slot 1 is ``0700_2000``, slot 2 ``0700_2100``; AMS B slot 1
    ``0701_2000``; the external spool uses unit 0xFF.
    """
    return 0x07002000 | (ams_id & 0xFF) << 16 | (slot & 0xFF) << 8


@dataclass(frozen=True, slots=True)
class CloudDownload:
    """A cloud print's file as the printer downloaded it (PROTOCOL.md §1.4)."""

    name: str
    md5: str  # of the bytes served
    size: int
    open: Callable[[], BinaryIO]


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """A failure a job meets once ``at`` (0-1) of its printing is done: ``runout`` or ``clog``."""

    kind: str
    at: float


FAULT_KINDS = ("runout", "clog")


@dataclass(slots=True)
class FilamentChange:
    """A load or unload the AMS is busy with."""

    target: int  # global tray id, 255 = unload
    remaining: float


@dataclass(slots=True)
class Upgrade:
    """A firmware upgrade in progress (``upgrade.start``)."""

    module: str  # "ota" or "ams"
    version: str
    elapsed: float = 0.0

    @property
    def progress(self) -> int:
        """Percent done."""
        return min(100, int(self.elapsed * 100 / UPGRADE_SECONDS))


class PrinterState:
    """Everything a report shows, plus the job and the rules that move it."""

    def __init__(
        self,
        profile: Profile,
        serial: str,
        rng: random.Random,
        ams: AmsBank,
        firmware: list[FirmwareModule],
        *,
        nozzle_diameter: float,
        ip: str,
        rtsp_port: int,
    ) -> None:
        self.profile = profile
        self.serial = serial
        self.rng = rng
        self.ams = ams
        self.firmware = firmware
        self.ip = ip
        self.rtsp_port = rtsp_port
        # LAN liveview (X1/P2/H2): off means ipcam.rtsp_url "disable" (H2: off out of the box)
        self.liveview = profile.rtsp and profile.rtsp_on_by_default
        self.time = 0.0  # simulated seconds since power-on

        self.room = 22.0 + rng.randint(0, 40) / 10
        self.nozzles = [Heater(self.room, rate=3.0, tau=90.0) for _ in range(profile.extruders)]
        self.active_extruder = 0
        # Dual nozzles: the tray each idle extruder keeps loaded (ams.tray_now is the active one's).
        self.parked: dict[int, int] = {}
        self.bed = Heater(self.room, rate=1.0, tau=500.0)
        self.chamber = Heater(self.room, rate=0.1, tau=900.0)
        self.nozzle_diameter = [nozzle_diameter] * profile.extruders
        self.nozzle_type = [profile.default_nozzle_type] * profile.extruders

        self.fans = {"part": 0, "aux": 0, "chamber": 0}  # PWM 0-255
        self.speed_level = 2
        self.lights = dict.fromkeys(profile.lights, "on")
        if "work_light" in self.lights:
            self.lights["work_light"] = "off"
        self.sdcard = True
        self.door_open = False  # the door switch (printers with a door sensor)
        self.wifi_home = -rng.randint(38, 52)
        self.wifi = self.wifi_home
        self.airduct_mode = 0

        self.gcode_state = "IDLE"
        self.job: Job | None = None
        self.print_error = 0
        self.hms: list[tuple[int, int]] = []
        self.change: FilamentChange | None = None

        self.ipcam_record = "enable"
        self.timelapse = "disable"
        self.xcam: dict[str, bool | str] = dict.fromkeys(profile.xcam_modules, True)
        self.xcam["print_halt"] = True
        self.xcam["halt_print_sensitivity"] = "medium"
        self.options = {
            "auto_recovery": True,
            "sound_enable": True,
            "filament_tangle_detect": True,
            "nozzle_blob_detect": profile.family in ("H2", "X2"),
            "air_print_detect": profile.family in ("H2", "X2"),
            "auto_switch_filament": True,
        }
        self.upgrade: Upgrade | None = None
        self.upgrade_status = "IDLE"
        self.upgrade_seq = 0
        self.requires_signature = False
        self.access_code = ""
        # The SD card's files live on disk (FTPS writes there); SimPrinter sets it up.
        self.card = SdCard()
        # Downloads a cloud print's HTTPS URL (the simulator's own object store);
        # None: this printer cannot reach the cloud's storage.
        self.cloud_fetch: Callable[[str], CloudDownload | str] | None = None
        # Farm failures: what the running job will meet, the hook that draws one for
        # each job that starts, and one armed by hand for the next (or running) job.
        self.fault_plan: FaultPlan | None = None
        self.plan_faults: Callable[[Job], FaultPlan | None] | None = None
        self.next_fault: FaultPlan | None = None
        # True (a farm): resuming after a runout needs the slot refilled first
        # (:meth:`refill`); False: resuming means a fresh spool was fed.
        self.manual_refill = False
        self.ran_out: set[tuple[int, int]] = set()

    # --- derived values ------------------------------------------------------------

    @property
    def active(self) -> bool:
        """A job is under way (PREPARE, RUNNING or PAUSE)."""
        return self.gcode_state in ACTIVE_STATES

    @property
    def nozzle(self) -> Heater:
        """The nozzle in use (the only one on single-nozzle printers)."""
        return self.nozzles[self.active_extruder]

    @property
    def speed_percent(self) -> int:
        """``spd_mag``."""
        return stages.SPEED_PERCENT[self.speed_level]

    @property
    def ota_version(self) -> str:
        """The firmware version users see."""
        return next((m.sw_ver for m in self.firmware if m.name == "ota"), "")

    @property
    def stage(self) -> int:
        """``stg_cur``."""
        if self.job is not None and self.active:
            return self.job.stage
        if self.change is not None:
            return 22 if self.change.target == NO_TRAY else 24  # unloading / loading
        return self.profile.idle_stage

    def remaining_minutes(self) -> int:
        """``mc_remaining_time``: printing time left at the current speed."""
        job = self.job
        if job is None or self.gcode_state == "FINISH":
            return 0
        left = max(0.0, job.work_total - job.work_done) * 100 / self.speed_percent
        return math.ceil(left / 60)

    # --- time ------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Run the simulation ``seconds`` of simulated time forward."""
        if seconds <= 0:
            return
        steps = min(MAX_STEPS, max(1, math.ceil(seconds)))
        h = seconds / steps
        for _ in range(steps):
            self._step(h)

    def _step(self, h: float) -> None:
        before = self.time
        self.time += h
        for heater in self.nozzles:
            heater.step(h, self.room)
        self.bed.step(h, self.room)
        self.chamber.step(h, self._chamber_equilibrium())
        if self.change is not None:
            self.change.remaining -= h
            if self.change.remaining <= 0:
                self._finish_change(self.change.target)
        if self.job is not None and self.gcode_state in ("PREPARE", "RUNNING"):
            self._step_job(self.job, h)
        if self.upgrade is not None:
            self._step_upgrade(self.upgrade, h)
        for unit in self.ams.units:
            if unit.drying_left > 0:
                unit.drying_left = max(0.0, unit.drying_left - h)
        if int(self.time // WIFI_PERIOD) != int(before // WIFI_PERIOD):
            # Jitter around where the printer stands, like a real reading.
            self.wifi = self.wifi_home + self.rng.randint(-3, 3)

    def _chamber_equilibrium(self) -> float:
        if not self.profile.enclosed:
            return self.room
        # An enclosure settles at about a third of the way from room to bed temperature.
        return self.room + 0.3 * max(0.0, self.bed.current - self.room)

    # --- jobs ----------------------------------------------------------------------

    def start(self, job: Job) -> None:
        """Begin a job: PREPARE (a calibration run goes straight to RUNNING)."""
        self.job = job
        self.print_error = 0
        self.change = None
        # A new print means someone cleaned the nozzle that clogged the last one.
        self.hms = [e for e in self.hms if e != (HMS_CLOG_ATTR, HMS_CLOG_CODE)]
        self.fault_plan = None
        if not job.calibration:
            if self.next_fault is not None:
                self.fault_plan, self.next_fault = self.next_fault, None
            elif self.plan_faults is not None:
                self.fault_plan = self.plan_faults(job)
        job.stage = job.pending.pop(0) if job.pending else stages.PRINTING
        self.gcode_state = "RUNNING" if job.calibration else "PREPARE"
        if job.calibration:
            return
        if self.nozzle.target < stages.PROBE_NOZZLE_TEMP:
            self.nozzle.target = stages.PROBE_NOZZLE_TEMP
        self.bed.target = job.bed_temp
        self._enter(job, job.stage)

    def _enter(self, job: Job, stage: int) -> None:
        job.stage = stage
        job.stage_time = 0.0
        if stage == stages.HEATBED_PREHEATING:
            self.bed.target = job.bed_temp
        elif stage == stages.HEATING_HOTEND:
            self.nozzle.target = job.nozzle_temp
        elif stage == stages.CHANGING_FILAMENT:
            self.ams.tray_tar = job.tray
        elif stage == stages.PRINTING:
            self.gcode_state = "RUNNING"
            self.nozzle.target = job.nozzle_temp
            self.bed.target = job.bed_temp
            self.fans["part"] = FAN_FULL

    def _stage_done(self, job: Job) -> bool:
        if job.stage == stages.HEATBED_PREHEATING:
            return self.bed.current >= self.bed.target - 0.5
        if job.stage == stages.HEATING_HOTEND:
            return self.nozzle.current >= self.nozzle.target - 0.5
        return job.stage_time >= stages.STAGE_SECONDS.get(job.stage, 10.0)

    def _step_job(self, job: Job, h: float) -> None:
        job.elapsed += h
        if job.stage != stages.PRINTING:
            job.stage_time += h
            if not self._stage_done(job):
                return
            if job.stage == stages.CHANGING_FILAMENT:
                self.ams.switch_to(job.tray)
            if job.pending:
                self._enter(job, job.pending.pop(0))
            elif job.calibration:
                self.finish()
            else:
                self._enter(job, stages.PRINTING)
            return
        # The last step stops at the end: filament is burnt only for work actually done.
        work = min(h * self.speed_percent / 100, max(0.0, job.work_total - job.work_done))
        job.work_done += work
        for tray, total in job.consumption():  # each mapped tray by its filament's share
            if tray == NO_TRAY or job.work_total <= 0:
                continue
            if self.ams.consume(tray, total * work / job.work_total):
                self.runout(*self._slot_of(tray))
                return
        plan = self.fault_plan
        if plan is not None and job.fraction >= plan.at:
            self.fault_plan = None
            if plan.kind == "clog":
                self.clog()
            else:
                self.runout(*self._slot_of(job.consumption()[0][0]))
            return
        if job.work_done >= job.work_total:
            self.finish()

    def _slot_of(self, tray: int) -> tuple[int, int]:
        """(ams_id, slot) of a global tray id as runout HMS codes name it (0xFF: external)."""
        address = self.ams.address(tray) or (0, 0)
        return (0xFF if tray in (EXTERNAL, NO_TRAY) else address[0]), address[1]

    def clog(self) -> None:
        """The nozzle clogged: the clog HMS, and an active job fails with print_error 0300_8016."""
        entry = (HMS_CLOG_ATTR, HMS_CLOG_CODE)
        if entry not in self.hms:
            self.hms.append(entry)
        if self.active:
            self.gcode_state = "FAILED"
            self.print_error = ERROR_CLOG
            self._cool_down()

    def finish(self) -> None:
        """The job completed: FINISH, heaters and part fan off."""
        job = self.job
        if job is not None:
            job.work_done = job.work_total
            if job.timelapse and not job.calibration:
                # A full or missing card records no video; the print still finished.
                with contextlib.suppress(OSError, ValueError):
                    self.card.write(*stages.timelapse_file(self.profile.family, self.time))
        self.gcode_state = "FINISH"
        self._cool_down()

    def stop(self) -> None:
        """Cancelled by the user: FAILED with print_error 0x0300400C until the next job."""
        self.gcode_state = "FAILED"
        self.print_error = ERROR_CANCELLED
        self._cool_down()

    def _cool_down(self) -> None:
        for heater in self.nozzles:
            heater.target = 0.0
        self.bed.target = 0.0
        self.fans["part"] = 0
        self.fans["aux"] = 0

    def pause(self, stage: int = stages.PAUSED_USER) -> None:
        """Hold the job where it is (stage 16 by the user, 6 on runout)."""
        job = self.job
        if job is None:
            return
        if self.gcode_state != "PAUSE":
            job.resume_stage = job.stage
        job.stage = stage
        self.gcode_state = "PAUSE"

    def resume_blocked(self) -> str | None:
        """Why ``resume`` cannot continue now (a farm's slot still empty), else None."""
        job = self.job
        if not self.manual_refill or job is None or job.runout is None:
            return None
        if job.runout not in self.ran_out:
            return None
        ams_id, slot = job.runout
        where = "the external spool" if ams_id == 0xFF else f"AMS {ams_id} slot {slot + 1}"
        return f"{where} is still empty: refill it, then resume"

    def refill(self, ams_id: int, slot: int) -> bool:
        """A full spool in a slot (the person at the farm); False when there is no such slot."""
        spool = self.ams.locate(ams_id, slot)
        if spool is None:
            return False
        spool.remain = 100.0 if spool.remain >= 0 else spool.remain
        self.ran_out.discard((ams_id, slot))
        self.ams.version += 1
        return True

    def resume(self) -> None:
        """Continue a paused job; a runout pause clears its HMS and error first."""
        job = self.job
        if job is None or self.gcode_state != "PAUSE" or self.resume_blocked():
            return
        if job.runout is not None:
            ams_id, slot = job.runout
            attr = runout_attr(ams_id, slot)
            self.hms = [e for e in self.hms if e != (attr, HMS_RUNOUT_CODE)]
            self.print_error = 0
            spool = self.ams.locate(ams_id, slot)
            if spool is not None and spool.remain == 0:
                # Resuming means the user fed a fresh spool into the slot.
                spool.remain = 100.0
                self.ams.version += 1
            self.ran_out.discard((ams_id, slot))
            job.runout = None
        stage = job.resume_stage if job.resume_stage is not None else stages.PRINTING
        job.resume_stage = None
        job.stage = stage
        self.gcode_state = "RUNNING" if stage == stages.PRINTING or job.calibration else "PREPARE"

    def runout(self, ams_id: int, slot: int) -> None:
        """Filament ran out: the runout HMS, and an active job pauses at stage 6."""
        entry = (runout_attr(ams_id, slot), HMS_RUNOUT_CODE)
        if entry not in self.hms:
            self.hms.append(entry)
        spool = self.ams.locate(ams_id, slot)
        if spool is not None and spool.remain > 0:
            spool.remain = 0.0
        if spool is not None:
            self.ran_out.add((ams_id, slot))
        job = self.job
        if job is not None and self.gcode_state in ("PREPARE", "RUNNING"):
            job.runout = (ams_id, slot)
            self.print_error = ERROR_RUNOUT
            self.pause(stages.PAUSED_RUNOUT)

    # --- filament changes and upgrades ---------------------------------------------

    def begin_change(self, target: int) -> None:
        """Start loading ``target`` (global tray id) or unloading (255)."""
        self.ams.tray_tar = target
        self.change = FilamentChange(target, FILAMENT_CHANGE_SECONDS)

    def _finish_change(self, target: int) -> None:
        self.change = None
        self.ams.switch_to(target)

    def _step_upgrade(self, upgrade: Upgrade, h: float) -> None:
        upgrade.elapsed += h
        self.upgrade_status = "DOWNLOADING" if upgrade.progress < 50 else "FLASHING"
        if upgrade.progress < 100:
            return
        for index, module in enumerate(self.firmware):
            if upgrade.module == "ams" and "/" in module.name:
                self.firmware[index] = replace(module, sw_ver=upgrade.version)
                for unit in self.ams.units:
                    unit.sw_ver = upgrade.version
            elif upgrade.module == "ota" and "/" not in module.name:
                self.firmware[index] = replace(module, sw_ver=upgrade.version)
        self.upgrade = None
        self.upgrade_status = "UPGRADE_SUCCESS"
