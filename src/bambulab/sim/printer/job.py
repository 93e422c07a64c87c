"""Print jobs: what a job is, which stages it runs through, and the sample files.

Stage ids are PROTOCOL.md §2.5's (0 printing, 1 auto bed levelling, 2
heatbed preheating, 4 changing filament, 7 heating hotend, 13 homing, ...).
A job walks its ``pending`` stages in order; heating stages end when the
heater reaches its target, the others after a fixed time, then it prints.
Durations are shortened versions of real ones (bed levelling takes minutes
on a real printer) so that a test with a fast clock gets through quickly.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

# stg_cur values this simulator produces.
PRINTING = 0
BED_LEVELLING = 1
HEATBED_PREHEATING = 2
SWEEPING_XY = 3  # vibration compensation
CHANGING_FILAMENT = 4
PAUSED_RUNOUT = 6
HEATING_HOTEND = 7
CALIBRATING_EXTRUSION = 8
CALIBRATING_LIDAR = 12
HOMING = 13
PAUSED_USER = 16
MOTOR_NOISE = 25

# Seconds a timed stage lasts (heating stages wait for their heater instead).
STAGE_SECONDS = {
    HOMING: 12.0,
    BED_LEVELLING: 60.0,
    CHANGING_FILAMENT: 25.0,
    CALIBRATING_EXTRUSION: 30.0,
    CALIBRATING_LIDAR: 40.0,
    SWEEPING_XY: 90.0,
    MOTOR_NOISE: 120.0,
}

# ``calibration.option`` bits (PROTOCOL.md §2.4) → the stage each one runs.
CALIBRATION_STAGES = (
    (0x1, CALIBRATING_LIDAR),
    (0x2, BED_LEVELLING),
    (0x4, SWEEPING_XY),
    (0x8, MOTOR_NOISE),
)
CALIBRATION_FILE = "/usr/etc/print/auto_cali_for_user.gcode"

# ``spd_lvl`` → ``spd_mag`` (%), PROTOCOL.md §2.3 levels 1-4.
SPEED_PERCENT = {1: 50, 2: 100, 3: 124, 4: 166}

# tray_type → (nozzle °C, bed °C) a sliced job of that filament asks for.
PRINT_TEMPS = {
    "PLA": (220, 55),
    "PLA-CF": (220, 55),
    "PLA-S": (220, 55),
    "PETG": (255, 70),
    "ABS": (260, 90),
    "ASA": (260, 90),
    "TPU": (230, 35),
}
DEFAULT_TEMPS = (220, 55)
PROBE_NOZZLE_TEMP = 140  # the nozzle waits lukewarm while the bed heats and is probed


# print_error a printer shows when it cannot build the AMS mapping table for a job:
# 0700_8012 "Failed to get AMS mapping table; please select Resume to retry"
# (Bambu's HMS wiki; users report it for a mapping shorter than the project's
# filaments). The simulator also raises it for a tray whose filament type is
# not the file's: Bambu Studio refuses such a mapping before sending
# (SelectMachine's type check), so only other clients reach the printer with one.
ERROR_AMS_MAPPING = 0x07008012
# print_error for a file the printer cannot open or parse. This one is the
# simulator's own choice (module 0x05 mainboard, "print file" class): no
# published table names a code for a corrupt 3MF.
ERROR_FILE = 0x0500C010
# The video a finished job leaves in /timelapse: X1 and H2 record MP4,
# the P1 and A1 families AVI (users' SD cards; the printers' FTPS listings).
TIMELAPSE_AVI_FAMILIES = frozenset({"P1", "A1"})
TIMELAPSE_BYTES = b"RIFF\x00\x00\x00\x00AVI LIST"  # a stand-in header, not a playable video
TIMELAPSE_MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
# Simulated seconds are counted from this wall-clock moment for file names.
SIM_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def timelapse_file(family: str, sim_time: float) -> tuple[str, bytes]:
    """(card name, bytes) of the timelapse a job finishing at ``sim_time`` leaves."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.gmtime(SIM_EPOCH + sim_time))
    if family in TIMELAPSE_AVI_FAMILIES:
        return f"timelapse/video_{stamp}.avi", TIMELAPSE_BYTES
    return f"timelapse/video_{stamp}.mp4", TIMELAPSE_MP4


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What the simulator pretends a sliced file contains."""

    layers: int
    minutes: float  # printing time at standard speed
    grams: float


# A few jobs on every simulated SD card (names relative to the card's root).
SAMPLE_FILES: dict[str, FileInfo] = {
    "Benchy.3mf": FileInfo(240, 47.0, 14.7),
    "Calibration Cube.3mf": FileInfo(100, 25.0, 9.8),
    "Articulated Dragon.3mf": FileInfo(380, 170.0, 96.0),
    "Cable Clips.3mf": FileInfo(60, 32.0, 12.5),
    "Spiral Vase.gcode": FileInfo(520, 88.0, 45.0),
}


def file_info(name: str) -> FileInfo:
    """The sample's data, or numbers derived from the name for any other file.

    Files uploaded over FTPS or printed from the cloud are unknown to the
    simulator; a CRC of the name keeps their size stable between runs.
    """
    base = name.rsplit("/", 1)[-1]
    if base in SAMPLE_FILES:
        return SAMPLE_FILES[base]
    h = zlib.crc32(base.encode())
    minutes = 15.0 + h % 180
    return FileInfo(layers=50 + (h >> 8) % 400, minutes=minutes, grams=round(minutes * 0.4, 1))


@dataclass(slots=True)
class Job:
    """One print (or calibration run) from start to its end state."""

    subtask_name: str
    gcode_file: str
    print_type: str  # "local", "cloud" or "system"
    layers: int
    work_total: float  # seconds of printing at 100 % speed
    grams: float
    tray: int  # global tray id feeding the job; 255 none
    nozzle_temp: int
    bed_temp: int
    pending: list[int]  # stages still ahead, in order
    plan: list[int]  # every stage the job runs (``stg[]``)
    project_id: str = "0"
    profile_id: str = "0"
    task_id: str = "0"
    subtask_id: str = "0"
    cloud: bool = False
    calibration: bool = False
    stage: int = HOMING  # current stage while active
    stage_time: float = 0.0
    elapsed: float = 0.0
    work_done: float = 0.0
    resume_stage: int | None = None  # where a paused job goes back to
    runout: tuple[int, int] | None = None  # (ams_id, slot) that ran out
    skipped: list[int] = field(default_factory=list)
    # (global tray id, grams over the whole print) per tray the file's filaments map to;
    # empty: everything comes from ``tray``.
    feeds: list[tuple[int, float]] = field(default_factory=list)
    timelapse: bool = False  # leave a video in /timelapse when it finishes

    def consumption(self) -> list[tuple[int, float]]:
        """(tray, grams over the whole print) for every tray the job draws from."""
        return self.feeds or [(self.tray, self.grams)]

    @property
    def fraction(self) -> float:
        """Share of the printing done, 0-1."""
        if self.work_total <= 0:
            return 1.0
        return min(1.0, self.work_done / self.work_total)

    @property
    def prepare_percent(self) -> int:
        """``gcode_file_prepare_percent``: cloud files download in about 10 s."""
        if not self.cloud:
            return 100
        return min(100, int(self.elapsed * 10))
