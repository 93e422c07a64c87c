"""One farm instance, put together: the queue's files, the dispatcher, notifications, the tiles.

:class:`Farm` owns the directory where queued 3MF files are kept (one copy per
content, named by MD5) and adds jobs from a file's bytes: the plate's
requirements come from the 3MF itself. :func:`attach` mounts a farm on a
server's context: the dispatcher starts and stops with the server, the
tiles show the farm's data (the job, the bed to clear, the location tags) and
are re-rendered when the farm changes something, and every live event of
the hub reaches the notifier.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..errors import ThreeMFError
from ..models.events import StateChanged
from ..protocol.threemf import read_3mf, thumbnail
from .models import ACTIVE_STATES, Job, Requirements, Target
from .store import FarmStore, PrinterSettings
from .web import FarmInfo, TileFeed

if TYPE_CHECKING:
    from ..servers.app import ServerContext
    from ..servers.camera import CameraHub
    from .dispatcher import Dispatcher
    from .notify import Notifier

log = logging.getLogger("bambulab.farm")

__all__ = ["MAX_FILE", "Farm", "attach"]

MAX_FILE = 512 * 1024 * 1024  # a queued 3MF, at most


THUMBNAIL_LIMIT = 1 << 20  # bytes: a tile's picture; a bigger one is not shown
THUMBNAILS_KEPT = 256  # plates whose picture is kept in memory
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Farm:
    """The queue's store and files, and (when running) its dispatcher and notifier."""

    store: FarmStore
    files: Path
    dispatcher: Dispatcher | None = None
    notifier: Notifier | None = None
    cameras: CameraHub | None = None  # the camera fan-out the tiles show (on the server's loop)

    _thumbnails: OrderedDict[tuple[str, int], bytes | None] = field(
        default_factory=OrderedDict, init=False, repr=False
    )
    _thumbnails_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.files.mkdir(parents=True, exist_ok=True)

    def thumbnail(self, job: Job) -> bytes | None:
        """The PNG of the job's plate from its 3MF, or None (none, too big, not a PNG).

        Read once per file and plate, then kept (the latest :data:`THUMBNAILS_KEPT`):
        every tile of a printer shows its job's picture on every redraw.
        """
        key = (job.file_md5, job.plate)
        with self._thumbnails_lock:
            if key in self._thumbnails:
                self._thumbnails.move_to_end(key)
                return self._thumbnails[key]
        try:
            with open(job.file, "rb") as file:
                data: bytes | None = thumbnail(file, job.plate)
        except (ThreeMFError, OSError):
            data = None
        if data is not None and (len(data) > THUMBNAIL_LIMIT or not data.startswith(PNG)):
            data = None
        with self._thumbnails_lock:
            self._thumbnails[key] = data
            while len(self._thumbnails) > THUMBNAILS_KEPT:
                self._thumbnails.popitem(last=False)
        return data

    def add(
        self,
        data: bytes,
        name: str,
        *,
        plate: int = 1,
        copies: int = 1,
        target: Target | None = None,
        priority: int = 0,
        held: bool = False,
    ) -> list[Job]:
        """Queue ``copies`` jobs of ``plate`` of the 3MF in ``data``; ThreeMFError if unusable."""
        if len(data) > MAX_FILE:
            raise ThreeMFError(f"the file is larger than {MAX_FILE >> 20} MiB")
        project = read_3mf(data)
        chosen = project.plate(plate)  # ThreeMFError when absent or not sliced
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        path = self.files / f"{digest}.3mf"
        if not path.exists():
            partial = path.with_suffix(".part")
            partial.write_bytes(data)
            os.replace(partial, path)
        jobs = self.store.add_jobs(
            str(path),
            project.md5,
            plate,
            name or chosen.name or "job",
            target or Target(),
            Requirements.of_plate(chosen),
            copies=copies,
            priority=priority,
            held=held,
        )
        if self.dispatcher is not None:
            self.dispatcher.poke()
        return jobs

    def infos(self) -> dict[str, FarmInfo]:
        """What every printer's tile shows of the farm, by serial (two queries in all)."""
        settings = {s.serial: s for s in self.store.all_settings()}
        active = {j.printer: j for j in self.store.jobs(ACTIVE_STATES)}
        return {
            serial: self._info(settings.get(serial), active.get(serial))
            for serial in settings.keys() | active.keys()
        }

    def info(self, serial: str) -> FarmInfo:
        """What a printer's tile shows of the farm."""
        return self._info(self.store.settings(serial), self.store.active(serial))

    def _info(self, settings: PrinterSettings | None, job: Job | None) -> FarmInfo:
        settings = settings or PrinterSettings("")
        picture = job is not None and self.thumbnail(job) is not None
        return FarmInfo(
            job_id=job.id if job else None,
            job_name=job.name if job else "",
            # the file's digest in the URL: a browser may keep the picture as long as it likes
            thumbnail=f"/farm/api/jobs/{job.id}/thumbnail?v={job.file_md5[:12]}"
            if job is not None and picture
            else "",
            bed_clear_needed=settings.bed_clear_needed,
            tags=settings.tags,
        )


# What a dispatcher turn reads of a printer's state: whether it is idle or done, which job
# it shows, its errors, its nozzle and its filaments. Progress and temperatures are not.
DISPATCH_KEYS = frozenset(
    {
        "gcode_state",
        "subtask_name",
        "gcode_file",
        "print_error",
        "hms",
        "ams",
        "vt_tray",
        "nozzle_diameter",
        "nozzle_type",
        "device",
    }
)


def _may_dispatch(event: object) -> bool:
    """Whether a hub event can change what the dispatcher does (a report of a thousand
    printing printers a second must not make it take a turn each)."""
    if isinstance(event, StateChanged):
        return not event.changed.isdisjoint(DISPATCH_KEYS)
    return True


def camera_url(serial: str) -> str:
    """Where the dashboard's tile of ``serial`` finds its camera (``farm_routes`` serves it)."""
    return f"/farm/camera/{quote(serial, safe='')}/stream.mjpg"


def attach(ctx: ServerContext, farm: Farm) -> TileFeed:
    """Mount ``farm`` on a server's context (before ``build_app`` with the ``farm`` part)."""
    cameras = farm.cameras
    tiles = TileFeed(
        ctx,
        infos=farm.infos,
        camera=None if cameras is None else (lambda s: camera_url(s) if cameras.knows(s) else ""),
    )
    if cameras is not None:
        ctx.on_stop.append(cameras.aclose)
    ctx.extra["farm"] = farm
    ctx.extra["farm_tiles"] = tiles
    dispatcher = farm.dispatcher
    if dispatcher is not None:
        dispatcher.on_change = tiles.touch
        ctx.on_start.append(dispatcher.start)
        ctx.on_stop.append(dispatcher.aclose)
    notifier = farm.notifier
    hub = ctx.hub
    if hub is not None and (notifier is not None or dispatcher is not None):

        def on_event(event: object) -> None:
            if notifier is not None:
                notifier.handle(event)
            if dispatcher is not None and _may_dispatch(event):
                dispatcher.poke()

        hub.listeners.append(on_event)
    if notifier is not None:
        closing = notifier

        async def close_notifier() -> None:
            await asyncio.to_thread(closing.close)  # lets queued messages go, for a while

        ctx.on_stop.append(close_notifier)
    return tiles
