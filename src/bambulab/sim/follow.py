"""The simulated cloud and its printers kept in step: downloads one way, records the other.

Two threads own the two halves of the simulator: the printer host owns every
:class:`~bambulab.sim.printer.SimPrinter`, the cloud's event loop owns the
:class:`~bambulab.sim.world.World`. This module is where they meet, without
either thread ever touching the other's objects:

* :class:`CloudStorage` is what a printer downloads a cloud print from
  (``print.project_file`` with an HTTPS URL, PROTOCOL.md §1.4). On the printer
  host thread it checks the pre-signed URL (signature and expiry: pure
  functions of the URL and the clock) and opens the object from the store,
  which is thread-safe; nothing goes over HTTP to ourselves.
* :class:`CloudFollower` makes the cloud's records follow what the printers
  actually do. Every ``interval`` seconds its thread takes an immutable
  :class:`PrinterSnapshot` of each printer on the host thread and hands the
  list to the event loop, where :func:`follow` updates the device (state,
  progress, remaining time, temperatures), the history task (start, then 2
  finished / 3 failed with end time, weight, length and cost time) and the
  ``POST /user/print`` job. The loop is never made to wait for the host.

Jobs started on the LAN (task id ``"0"``) move the device's state and
progress, since a printer reports to the cloud whatever started it, but make
no history entry: the history holds the tasks the cloud created.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from .records import (
    BUSY_STATES,
    TASK_CREATED,
    TASK_FAILED,
    TASK_FINISHED,
    ActivePrint,
    Device,
    DeviceState,
)
from .s3 import BUCKET, S3_PREFIX, S3Error

if TYPE_CHECKING:
    from .printer import SimPrinter
    from .printer.state import CloudDownload
    from .world import World

log = logging.getLogger("bambulab.sim")

FOLLOW_INTERVAL = 0.2  # seconds between two looks at the printers
# Grams of 1.75 mm filament per metre (PLA, 1.24 g/cm³): how the history's
# ``length`` (mm) follows from the weight.
GRAMS_PER_METRE = 2.98
_STATES: dict[str, DeviceState] = {
    "RUNNING": "RUNNING",
    "PREPARE": "PREPARE",
    "SLICING": "PREPARE",
    "PAUSE": "PAUSE",
    "FINISH": "FINISH",
    "FAILED": "FAILED",
    "IDLE": "IDLE",
}


class CloudStorage:
    """Downloads for printers: pre-signed GET URLs of the simulator's object store.

    The object store is safe to read from any thread (its records are
    replaced whole, its files never change), so the printer host reads it
    directly; the rest of the world stays the event loop's.
    """

    def __init__(self, world: World) -> None:
        self._world = world

    def fetch(self, url: str) -> CloudDownload | str:
        """The file behind ``url``, or why it cannot be had (printer host thread)."""
        from .printer.state import CloudDownload

        parts = urlsplit(url)
        path = unquote(parts.path)
        if not path.startswith(f"{S3_PREFIX}/{BUCKET}/"):
            return "the URL is not one of the cloud's storage"
        resource = path[len(S3_PREFIX) :]
        query = dict(parse_qsl(parts.query))
        try:
            self._world.presigner.check("GET", resource, query, {}, self._world.clock.now())
        except S3Error as exc:
            return f"the storage refused the URL ({exc.code})"
        key = resource[len(f"/{BUCKET}/") :]
        stored = self._world.objects.get(key)
        if stored is None:
            return "no such file in the cloud's storage"
        file = stored.path
        return CloudDownload(
            name=key.rsplit("/", 1)[-1],
            md5=stored.md5,
            size=stored.size,
            open=lambda: cast(BinaryIO, file.open("rb")),
        )


@dataclass(frozen=True, slots=True)
class PrinterSnapshot:
    """What the cloud learns from one printer's reports at one moment."""

    serial: str
    gcode_state: str
    percent: int
    remaining_minutes: int
    task_id: str
    subtask_name: str
    grams: float  # of the whole job
    fraction: float  # share of the printing done
    elapsed: float  # simulated seconds since the job started
    nozzle_temp: float
    bed_temp: float


def snapshot(printer: SimPrinter) -> PrinterSnapshot:
    """The printer's job as its reports tell it (printer host thread)."""
    state = printer.state
    job = state.job
    return PrinterSnapshot(
        serial=printer.serial,
        gcode_state=state.gcode_state,
        percent=int(job.fraction * 100) if job is not None else 0,
        remaining_minutes=state.remaining_minutes(),
        task_id=job.task_id if job is not None else "",
        subtask_name=job.subtask_name if job is not None else "",
        grams=job.grams if job is not None else 0.0,
        fraction=job.fraction if job is not None else 0.0,
        elapsed=job.elapsed if job is not None else 0.0,
        nozzle_temp=round(state.nozzle.current, 1),
        bed_temp=round(state.bed.current, 1),
    )


def follow(world: World, snap: PrinterSnapshot, previous: PrinterSnapshot | None) -> None:
    """Update the world's records from one printer's snapshot (event loop thread)."""
    device = world.devices.get(snap.serial)
    if device is None:
        return
    device.nozzle_temp, device.bed_temp = snap.nozzle_temp, snap.bed_temp
    state = _STATES.get(snap.gcode_state, "IDLE")
    now = world.clock.now()
    if state in BUSY_STATES:
        _running(world, device, snap, state, now)
        return
    if device.active is not None:
        _ended(world, device.active.task_id, snap, state, now)
    else:
        # Started and ended between two looks: the task still ends (only once:
        # _ended leaves finished tasks alone).
        _ended(world, _task_number(snap.task_id), snap, state, now)
    device.active = None
    device.state = state


def _running(
    world: World, device: Device, snap: PrinterSnapshot, state: DeviceState, now: float
) -> None:
    task_id = _task_number(snap.task_id)
    task = world.tasks.get(task_id) if task_id else None
    if task is not None and task.device_id != device.dev_id:
        task = None
    active = device.active
    if active is None or active.task_id != (task.id if task else 0):
        if active is not None:  # another job replaced it without an end we saw
            _ended(world, active.task_id, snap, "FAILED", now)
        start = now
        active = ActivePrint(
            task_id=task.id if task else 0,
            title=task.title if task else snap.subtask_name,
            progress=0,
            start_time=start,
            prediction=0,
            model_id=task.model_id if task else "",
            profile_id=task.profile_id if task else 0,
            cover=task.cover if task else "",
        )
        device.active = active
        if task is not None and task.status == TASK_CREATED:
            task.start_time = start
    active.progress = snap.percent
    active.prediction = snap.remaining_minutes * 60
    device.state = state
    for job in world.jobs.values():
        if task is not None and job.task_id == task.id and job.end_time == 0:
            job.status = "paused" if state == "PAUSE" else "running"


def _ended(
    world: World, task_id: int, snap: PrinterSnapshot, state: DeviceState, now: float
) -> None:
    """A job is over: its task and jobs take the end state (FINISH or FAILED only)."""
    if state not in ("FINISH", "FAILED"):
        return
    task = world.tasks.get(task_id) if task_id else None
    if task is not None and task.device_id == snap.serial and task.status == TASK_CREATED:
        finished = state == "FINISH"
        task.status = TASK_FINISHED if finished else TASK_FAILED
        task.end_time = now
        grams = snap.grams if finished else snap.grams * snap.fraction
        task.weight = round(grams, 2)
        task.length = int(grams / GRAMS_PER_METRE * 1000)
        task.cost_time = int(snap.elapsed)  # the printer's own seconds (time_scale applied)
    _end_jobs(world, task_id, state, now)


def _end_jobs(world: World, task_id: int, state: DeviceState, now: float) -> None:
    if not task_id or state not in ("FINISH", "FAILED"):
        return
    for job in world.jobs.values():
        if job.task_id == task_id and job.end_time == 0:
            job.status = "finished" if state == "FINISH" else "failed"
            job.end_time = now


def _task_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


class CloudFollower:
    """A thread that hands printer snapshots to the cloud's event loop (see the module doc).

    ``take(serials)`` returns snapshots of those printers, taken on the printer
    host thread; ``post(function)`` runs ``function`` on the event loop without
    waiting (False when the loop is gone).
    """

    def __init__(
        self,
        world: World,
        take: Callable[[], Iterable[PrinterSnapshot]],
        post: Callable[[Callable[[], None]], bool],
        interval: float = FOLLOW_INTERVAL,
    ) -> None:
        self._world = world
        self._take = take
        self._post = post
        self.interval = interval
        self._last: dict[str, PrinterSnapshot] = {}  # event loop thread only
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def start(self) -> None:
        """Start following (returns at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bambu-sim-follow", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop following (safe to call twice)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                snaps = tuple(self._take())
            except Exception as exc:  # the host is stopping, or a printer is broken
                log.debug("follow: no snapshot this round: %s", exc)
                continue
            self._post(_applier(self, snaps))

    def apply(self, snaps: Iterable[PrinterSnapshot]) -> None:
        """Bring the world up to date with ``snaps`` (event loop thread)."""
        for snap in snaps:
            previous = self._last.get(snap.serial)
            if previous == snap:
                continue
            self._last[snap.serial] = snap
            try:
                follow(self._world, snap, previous)
            except Exception:  # one odd printer must not stop the others
                log.exception("follow: could not apply %s", snap.serial)
        self.rounds += 1


def _applier(follower: CloudFollower, snaps: tuple[PrinterSnapshot, ...]) -> Callable[[], None]:
    return lambda: follower.apply(snaps)
