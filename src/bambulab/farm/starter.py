"""Starting one job on one printer over the LAN, and telling afterwards which job a printer runs.

:func:`start_job` is :func:`bambulab.local.lan_print.print_file_async` with
the farm's choices: the job's plate, the mapping the rules chose (checked
again against the trays the printer reports at that moment), and a **marker**
in the task name: ``[farm#42] Cube``. The printer echoes the task name in
every report (``subtask_name``), so a dispatcher that restarts can tell
whether the print a printer is running, or has just finished, is this exact
job (:func:`marked_job`) rather than starting it a second time. The marker
comes first so a printer's screen or a truncating client keeps it.

Every failure is one :class:`StartError` with a one-line reason: the printer
is busy, the access code is refused, the upload is refused (card full), the
printer is unreachable, the file changed, the deadline passed. The reason is
built from the library's own error messages, which never carry the access
code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import (
    AuthenticationError,
    BambuError,
    FTPError,
    PrinterBusyError,
    PrintError,
    ThreeMFError,
)
from ..local.lan_print import LanPrinter, print_file_async
from ..models.printing import PrintOptions
from ..models.state import PrinterState
from ..protocol.ams_mapping import UNUSED
from ..safetext import visible
from .models import Job

if TYPE_CHECKING:
    from ..cloud.client import AsyncBambuClient
    from ..mqtt.client import AsyncBambuMQTT

__all__ = [
    "DEFAULT_TIMEOUT",
    "StartError",
    "job_marker",
    "marked_job",
    "start_job",
    "start_job_cloud",
    "task_name",
]

DEFAULT_TIMEOUT = 120.0
_MARKER = re.compile(r"\[farm#(\d{1,18})\]")
_NAME_LIMIT = 80  # of the job's own name in the task name
_REASON_LIMIT = 240


class StartError(PrintError):
    """A job could not be started on a printer; ``str()`` is the one-line reason.

    ``uncertain`` is true when the deadline passed after the printer may have
    been told to print (the worker cannot be stopped half-way): look at the
    printer's :func:`marked_job` before giving the job to another printer.
    """

    def __init__(
        self,
        reason: str,
        *,
        serial: str | None = None,
        job_id: int | None = None,
        uncertain: bool = False,
    ) -> None:
        shown = visible(reason)
        if len(shown) > _REASON_LIMIT:
            shown = shown[: _REASON_LIMIT - 1] + "…"
        super().__init__(shown, serial=serial)
        self.reason = shown
        self.job_id = job_id
        self.uncertain = uncertain


def job_marker(job_id: int) -> str:
    """The mark a job carries in the printer's task name: ``[farm#42]``."""
    if job_id < 0:
        raise ValueError("a job id is not negative")
    return f"[farm#{job_id}]"


def task_name(job: Job) -> str:
    """The ``subtask_name`` a job is printed under: the marker, then the job's name."""
    name = " ".join(job.name.split())[:_NAME_LIMIT]
    return f"{job_marker(job.id)} {name}".rstrip()


def marked_job(state: PrinterState) -> int | None:
    """The id of the farm job the printer's last or current print is, or ``None``.

    Read from ``subtask_name``, then ``gcode_file`` (a file named after a
    job). It stays after the print ends: whether the job is still running is
    ``state.gcode_state``'s answer.
    """
    for key in ("subtask_name", "gcode_file"):
        value = state.get(key)
        if isinstance(value, str):
            found = _MARKER.search(value)
            if found:
                return int(found.group(1))
    return None


def _padded(mapping: Sequence[int], length: int) -> list[int]:
    values = [int(v) for v in mapping]
    return values + [UNUSED] * (length - len(values))


def _project_length(job: Job) -> int:
    """The file's ``ams_mapping`` length, after checking it is still the file queued."""
    from ..protocol.threemf import read_3mf

    try:
        with open(job.file, "rb") as handle:
            project = read_3mf(handle)
    except OSError as exc:
        raise StartError(
            f"cannot read the job's file: {exc.strerror or type(exc).__name__}", job_id=job.id
        ) from None
    if job.file_md5 and project.md5 != job.file_md5:
        raise StartError("the job's file changed since it was queued", job_id=job.id)
    return project.mapping_length


def _reason(exc: BaseException, printer: LanPrinter) -> str:
    """One line naming the printer once, and what kind of failure it was."""
    serial = printer.serial
    text = " ".join(str(exc).split()) or type(exc).__name__
    named = text if serial in text else f"printer {serial}: {text}"
    if isinstance(exc, PrinterBusyError):
        return named
    if isinstance(exc, AuthenticationError):
        # The library's message is safe, but the point is one: the code is wrong.
        return f"printer {serial} refused the access code"
    if isinstance(exc, FTPError):
        return f"upload refused: {named}"
    if isinstance(exc, (PrintError, ThreeMFError)):
        return f"cannot print: {named}"
    if isinstance(exc, OSError):
        return f"printer {serial} is unreachable at {printer.host}: {exc.strerror or text}"
    return named


async def start_job(
    job: Job,
    printer: LanPrinter,
    *,
    mapping: Sequence[int] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Upload ``job``'s 3MF to ``printer`` (unless its card holds it) and start the plate.

    ``mapping`` is the ``ams_mapping`` the rules chose (:attr:`Fit.mapping`);
    it is padded to the file's length and checked against the trays again;
    ``None`` maps automatically. ``timeout`` bounds the whole start; each
    connection's own deadline is at most that. Raises :class:`StartError`.
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    target = dataclasses.replace(printer, timeout=min(printer.timeout, timeout))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sent = False
    try:
        async with asyncio.timeout_at(deadline):
            length = await asyncio.to_thread(_project_length, job)
            options = PrintOptions(
                plate=job.plate,
                ams_mapping=_padded(mapping, length) if mapping is not None else "auto",
                subtask_name=task_name(job),
            )
            sent = True  # from here the printer may be told to print
            await print_file_async(job.file, printer=target, options=options)
    except StartError as exc:
        exc.serial = printer.serial
        raise
    except TimeoutError:
        raise StartError(
            f"printer {printer.serial} did not take the job within {timeout:g} s",
            serial=printer.serial,
            job_id=job.id,
            uncertain=sent,
        ) from None
    except (BambuError, OSError) as exc:
        raise StartError(_reason(exc, printer), serial=printer.serial, job_id=job.id) from exc


async def start_job_cloud(
    job: Job,
    serial: str,
    client: AsyncBambuClient,
    *,
    mqtt: AsyncBambuMQTT | None = None,
    mapping: Sequence[int] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Start ``job`` on ``serial`` through the cloud, as the slicer does: for a printer
    the farm cannot reach on the LAN (no LAN mode, another network).

    The 3MF goes to the account's cloud storage, then the print starts with
    the same plate, mapping and marked task name as :func:`start_job`;
    ``mqtt`` is the farm's own connection to the cloud broker (None: the
    client's own way). Raises :class:`StartError`.
    """
    from ..cloud.printing import read_local

    if timeout <= 0:
        raise ValueError("timeout must be positive")
    deadline = asyncio.get_running_loop().time() + timeout
    sent = False
    try:
        async with asyncio.timeout_at(deadline):
            length = await asyncio.to_thread(_project_length, job)
            project = await asyncio.to_thread(read_local, job.file)
            options = PrintOptions(
                plate=job.plate,
                ams_mapping=_padded(mapping, length) if mapping is not None else "auto",
                subtask_name=task_name(job),
            )
            uploaded = await client.upload_file(_cloud_file_name(job), job.file)
            sent = True  # from here the printer may be told to print
            await client.start_cloud_print(
                serial,
                uploaded.file_id,
                uploaded.file_name,
                options=options,
                project=project,
                mqtt=mqtt,
            )
    except StartError as exc:
        exc.serial = serial
        raise
    except TimeoutError:
        raise StartError(
            f"printer {serial} did not take the job through the cloud within {timeout:g} s",
            serial=serial,
            job_id=job.id,
            uncertain=sent,
        ) from None
    except (BambuError, OSError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise StartError(
            f"cloud start on printer {serial} refused: {text}", serial=serial, job_id=job.id
        ) from exc


def _cloud_file_name(job: Job) -> str:
    """The name the file gets in the account's cloud storage: the job's, made file-safe."""
    stem = re.sub(r"[^\w .-]+", "_", " ".join(job.name.split()))[:_NAME_LIMIT].strip(" .")
    return f"{stem or f'farm-job-{job.id}'}.3mf"
