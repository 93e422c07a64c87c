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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ThreeMFError
from ..protocol.threemf import read_3mf
from .models import Job, Requirements, Target
from .store import FarmStore
from .web import FarmInfo, TileFeed

if TYPE_CHECKING:
    from ..servers.app import ServerContext
    from .dispatcher import Dispatcher
    from .notify import Notifier

log = logging.getLogger("bambulab.farm")

__all__ = ["MAX_FILE", "Farm", "attach"]

MAX_FILE = 512 * 1024 * 1024  # a queued 3MF, at most


@dataclass
class Farm:
    """The queue's store and files, and (when running) its dispatcher and notifier."""

    store: FarmStore
    files: Path
    dispatcher: Dispatcher | None = None
    notifier: Notifier | None = None

    def __post_init__(self) -> None:
        self.files.mkdir(parents=True, exist_ok=True)

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

    def info(self, serial: str) -> FarmInfo:
        """What a printer's tile shows of the farm."""
        settings = self.store.settings(serial)
        job = self.store.active(serial)
        return FarmInfo(
            job_id=job.id if job else None,
            job_name=job.name if job else "",
            bed_clear_needed=settings.bed_clear_needed,
            tags=settings.tags,
        )


def attach(ctx: ServerContext, farm: Farm) -> TileFeed:
    """Mount ``farm`` on a server's context (before ``build_app`` with the ``farm`` part)."""
    tiles = TileFeed(ctx, info=farm.info)
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
            if dispatcher is not None:
                dispatcher.poke()

        hub.listeners.append(on_event)
    if notifier is not None:
        closing = notifier

        async def close_notifier() -> None:
            await asyncio.to_thread(closing.close)  # lets queued messages go, for a while

        ctx.on_stop.append(close_notifier)
    return tiles
