"""The dispatcher: starts queued jobs on idle, compatible printers and follows them to their end.

One dispatcher per farm instance; several may share one PostgreSQL queue
(the store's claim is what keeps them from starting a job twice). Each turn
(every :attr:`Dispatcher.interval`, sooner when the hub has news):

1. **Recover** jobs left ``starting`` by a dispatcher that died: a printer
   that shows the job's marker (:func:`~bambulab.farm.starter.marked_job`)
   is printing it (``started``); one that reports and shows no marker after
   the start's deadline has passed never got it (``requeue``). A printer
   that does not report yet decides nothing: the job waits.
2. **Follow** printing jobs: the printer's marker and ``gcode_state`` end
   them (``finished``, or ``failed`` with the printer's error); a printer
   no longer running the job at all fails it with that reason.
3. **Stop** cancelled jobs that still print.
4. **Dispatch**: every online printer without a job claims the first queued
   job the rules (:func:`~bambulab.farm.rules.check`) let it take, and the
   start runs as its own task; a start that fails puts the job back in the
   queue with the reason (or fails it after the last attempt).

Store calls run on worker threads: the server's loop never waits on the
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import BambuError
from ..local.lan_print import LanPrinter
from ..protocol import mqtt as proto
from ..servers.runner import one_line
from .models import Job, JobState
from .rules import Fit, check
from .starter import DEFAULT_TIMEOUT, StartError, marked_job, start_job
from .store import FarmStore, QueueError

if TYPE_CHECKING:
    from ..servers.live import LiveHub
    from .notify import Notifier

log = logging.getLogger("bambulab.farm")

__all__ = ["Dispatcher"]

# A printing job whose printer shows another task this long after it started has ended.
LOST_AFTER = 60.0
MIN_GAP = 0.1  # seconds between the starts of two turns, however often the dispatcher is woken


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# (job, serial, mapping or None, timeout): start a job through the cloud (starter.start_job_cloud)
CloudStart = Callable[[Job, str, Sequence[int] | None, float], Awaitable[None]]


@dataclass
class Dispatcher:
    """See the module. ``reach(serial)``: how to reach a printer on the LAN (``None``: cannot);
    ``cloud``: how to start a job on a printer it cannot reach (``None``: such a start fails).
    """

    store: FarmStore
    hub: LiveHub
    reach: Callable[[str], LanPrinter | None]
    cloud: CloudStart | None = None
    owner: str = field(default_factory=default_owner)
    notifier: Notifier | None = None
    on_change: Callable[[str], None] | None = None
    interval: float = 1.0
    start_timeout: float = DEFAULT_TIMEOUT
    max_attempts: int = 3
    _starts: dict[int, asyncio.Task[None]] = field(default_factory=dict, init=False)
    _starting_on: set[str] = field(default_factory=set, init=False)  # printers being started
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    turns: int = field(default=0, init=False)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *self._starts.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def poke(self) -> None:
        """Take a turn now (a printer changed, a job was added)."""
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await self.turn()
            except BambuError as exc:
                log.warning("farm: dispatching failed this turn: %s", one_line(exc))
            except Exception:
                log.exception("farm: dispatching failed this turn")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            # woken often (many printers changing): turns stay MIN_GAP apart
            await asyncio.sleep(max(0.0, began + MIN_GAP - loop.time()))

    async def turn(self) -> None:
        """One pass of recover, follow, stop and dispatch (see the module).

        A few reads a turn whatever the fleet's size (the active jobs, the
        cancelled ones, whether anything waits); a claim, a write, only for
        an idle printer while jobs wait.
        """
        self.turns += 1
        # A start of ours may end while the jobs are read: it is no dead dispatcher's to recover.
        ours = set(self._starts)
        active = await asyncio.to_thread(self.store.jobs, (JobState.STARTING, JobState.PRINTING))
        for job in active:
            if job.state == JobState.STARTING:
                if job.id not in self._starts and job.id not in ours:
                    await self._recover(job)
            else:
                await self._follow(job)
        for cancelled in await asyncio.to_thread(self.store.to_stop):
            await self._stop(cancelled)
        if not await asyncio.to_thread(self.store.jobs, (JobState.QUEUED,)):
            return
        busy = {job.printer for job in active}
        for serial in self._serials():
            if serial not in busy:
                await self._dispatch(serial)

    def _serials(self) -> list[str]:
        return [e.serial for e in self.hub.printers()]

    def _changed(self, serial: str) -> None:
        if self.on_change is not None:
            self.on_change(serial)

    async def _recover(self, job: Job) -> None:
        try:
            await self._recover_one(job)
        except QueueError as exc:  # our own start, or another instance, recorded it meanwhile
            log.debug("farm: job %d changed while recovering: %s", job.id, one_line(exc))

    async def _recover_one(self, job: Job) -> None:
        state = self.hub.state(job.printer)
        if state is None or not self.hub.online(job.printer):
            return
        if marked_job(state) == job.id and state.gcode_state not in ("IDLE", ""):
            await asyncio.to_thread(self.store.started, job.id)
            log.info("farm: job %d was started on %s before a restart", job.id, job.printer)
        elif time.time() - job.updated_at > self.start_timeout + 5:
            await asyncio.to_thread(
                self.store.requeue, job.id, "the farm stopped before the print began"
            )
            log.info("farm: job %d back in the queue (never reached %s)", job.id, job.printer)
        else:
            return
        self._changed(job.printer)

    async def _follow(self, job: Job) -> None:
        state = self.hub.state(job.printer)
        if state is None or not self.hub.online(job.printer):
            return
        gcode = state.gcode_state
        if marked_job(state) == job.id:
            if gcode == "FINISH":
                await asyncio.to_thread(self.store.finished, job.id)
            elif gcode == "FAILED":
                error = state.print_error
                # the code kept in a form the statistics read back (farm.stats.failure_code)
                reason = (
                    f"HMS {error.code_string}: {error.text}"
                    if error
                    else "the printer reported the print failed"
                )
                await asyncio.to_thread(self.store.failed, job.id, reason)
            else:
                return
        elif gcode in ("IDLE", "FINISH", "FAILED") and (
            job.started_at is None or time.time() - job.started_at > LOST_AFTER
        ):
            await asyncio.to_thread(
                self.store.failed, job.id, "the printer is no longer printing this job"
            )
        else:
            return
        log.info("farm: job %d on %s ended (%s)", job.id, job.printer, gcode)
        self._changed(job.printer)

    async def _stop(self, job: Job) -> None:
        state = self.hub.state(job.printer)
        if state is not None and marked_job(state) == job.id and not state.idle:
            try:
                await self.hub.command(job.printer, proto.stop())
            except BambuError as exc:
                log.warning(
                    "farm: could not stop job %d on %s: %s", job.id, job.printer, one_line(exc)
                )
                return
        await asyncio.to_thread(self.store.stopped, job.id)
        self._changed(job.printer)

    async def _dispatch(self, serial: str) -> None:
        state = self.hub.state(serial)
        if state is None or not self.hub.online(serial) or not state.idle:
            return
        if serial in self._starting_on:
            return
        fits: dict[int, Fit] = {}

        def fit(job: Job) -> bool:
            found = fits[job.id] = check(job, state)
            return found.ok

        job = await asyncio.to_thread(self.store.claim, serial, fit, self.owner)
        if job is None:
            return
        self._changed(serial)
        task = asyncio.create_task(self._start(job, fits[job.id]))
        self._starts[job.id] = task
        self._starting_on.add(serial)

        def done(_: asyncio.Task[None]) -> None:
            self._starts.pop(job.id, None)
            self._starting_on.discard(serial)

        task.add_done_callback(done)

    async def _start(self, job: Job, fit: Fit) -> None:
        try:
            await self._start_and_record(job, fit)
        except QueueError as exc:
            # Another instance's recovery saw the printer take the job and recorded it
            # first (several farm servers on one queue): the job is in good hands.
            log.info("farm: job %d was recorded meanwhile: %s", job.id, one_line(exc))
            self._changed(job.printer)

    async def _start_and_record(self, job: Job, fit: Fit) -> None:
        printer = self.reach(job.printer)
        mapping = fit.mapping or None
        try:
            if printer is not None:
                await start_job(job, printer, mapping=mapping, timeout=self.start_timeout)
            elif self.cloud is not None:
                await self.cloud(job, job.printer, mapping, self.start_timeout)
            else:
                raise StartError(f"no LAN address or access code known for {job.printer}")
        except StartError as exc:
            if exc.uncertain:
                log.warning("farm: start of job %d uncertain: %s", job.id, exc.reason)
                return  # left starting: recovery decides from the printer's marker
            ended = await asyncio.to_thread(
                self.store.start_failed, job.id, exc.reason, self.max_attempts
            )
            log.warning("farm: job %d did not start on %s: %s", job.id, job.printer, exc.reason)
            if self.notifier is not None:
                from .notify import JobFailedToStart

                self.notifier.handle(JobFailedToStart(ended, exc.reason))
        else:
            await asyncio.to_thread(self.store.started, job.id)
            log.info("farm: job %d started on %s", job.id, job.printer)
        self._changed(job.printer)
