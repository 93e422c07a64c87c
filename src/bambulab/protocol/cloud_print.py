"""Starting a print from the cloud, as the slicer does it: one sans-IO flow for both faces.

PROTOCOL.md §1.4: the slicer uploads the 3MF, creates a project and a task,
then sends ``print.project_file`` on the **cloud** broker with the file's
HTTPS URL, its MD5 and the real project/profile/task ids (signed, §2.8, when
the firmware wants it). :func:`cloud_print` is that flow as a generator: it
yields what to do (an :class:`~bambulab.protocol.http.ApiCall` to run, or a
:class:`Publish` to send on the cloud broker), is sent each answer back
(failures are thrown in), and returns the task. ``bambulab.cloud.printing``
drives it with the blocking or the asyncio face.

Before anything reaches the printer it checks, each a one-line
:class:`~bambulab.errors.PrintError`: the printer is bound and online, it is
not busy (the cloud's print status), the file exists (by id, else the newest
upload of that name), and, when the file is at hand (its metadata read by
:func:`bambulab.protocol.threemf.read_3mf`), that the plate is sliced and its
filaments can be fed from the loaded trays (the AMS mapping, computed or given).

A retried call never starts a print twice: the task carries a request key
(the file's MD5, the plate and the printer); a retry finds the task of the
first attempt in the printer's recent history and reuses its ids instead of
creating another, and when the printer is already printing that task it
returns it without sending anything. (Whether the real cloud keeps such an
extra task field is unknown; where it does not, a retry makes a second task
record but still never a second print: the printer is busy with the first,
and a refusal is checked against the cloud's view of the printer's task.)

Without a cloud broker to talk to (``live=False``) the flow ends with the
seed's ``POST /user/print`` instead of the MQTT command; the checks are the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..errors import (
    AmsMappingError,
    CommandError,
    NotFoundError,
    PrinterBusyError,
    PrinterOfflineError,
    PrintFileError,
    ThreeMFError,
)
from ..models import Device, PrintJob, PrintStatus, Task
from ..models.printing import PrintOptions
from ..models.state import Tray
from ..models.threemf import Plate, ThreeMF
from . import cloud_api as api
from . import mqtt as proto
from .ams_mapping import ams_mapping
from .http import ApiCall

# Cloud print states in which a printer takes no new job.
BUSY = frozenset({"RUNNING", "PREPARE", "PAUSE", "SLICING", "ACTIVE"})
TASK_OPEN = 1  # a task created (or printing) and not yet finished or failed
HISTORY_LOOKBACK = 10  # recent tasks searched for a retried request
EXTERNAL_SPOOLS = (254, 255)
SETTLE_ROUNDS = 6  # looks at the cloud's print status after a refusal...
SETTLE_SECONDS = 0.5  # ...this far apart


@dataclass(frozen=True, slots=True)
class Publish:
    """Send ``command`` to ``serial`` on the cloud broker; the answer is the reply."""

    serial: str
    command: proto.Command


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait ``seconds`` before the next step (the answer is ignored)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class CloudFile:
    """An uploaded file as a printer fetches it."""

    file_id: str
    name: str
    url: str
    md5: str


@dataclass(frozen=True, slots=True)
class CloudPrintRequest:
    """What to print where; ``known_uploads`` maps names to ids this client uploaded."""

    device_id: str
    file_id: str | None = None
    file_name: str | None = None
    options: PrintOptions = field(default_factory=PrintOptions)
    settings: Mapping[str, Any] = field(default_factory=dict)
    known_uploads: Mapping[str, str] = field(default_factory=dict)
    project: ThreeMF | None = None  # the file's metadata when it is at hand (read_3mf)
    live: bool = True  # send project_file on the cloud broker (else POST /user/print)


Step = ApiCall[Any] | Publish | Pause
Flow = Generator[Step, Any, Task]


def request_key(device_id: str, md5: str, plate: int) -> str:
    """The idempotency key of one print request (same file, plate and printer)."""
    text = f"{device_id}/{md5.lower()}/{plate}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cloud_print(request: CloudPrintRequest) -> Flow:
    """The flow (see the module docstring); returns the task."""
    serial = request.device_id.strip()
    options = request.options
    plate = options.plate
    devices: list[Device] = yield api.get_devices()
    device = next((d for d in devices if d.dev_id == serial), None)
    if device is None:
        raise PrintFileError(f"printer {serial} is not bound to this account", serial=serial)
    if not device.online:
        raise PrinterOfflineError(f"printer {serial} is offline; nothing was sent", serial=serial)
    status = yield from _status(serial)
    cloud_file = yield from _resolve(request)
    chosen: Plate | None = None
    if request.project is not None:
        try:
            chosen = request.project.plate(plate)
        except ThreeMFError as exc:
            raise PrintFileError(
                f"cannot print {cloud_file.name}: {exc}; nothing was sent",
                serial=serial,
                file=cloud_file.name,
                plate=plate,
            ) from None
    use_ams, mapping = check_mapping(serial, options.ams_mapping, status, request.project, chosen)
    key = request_key(serial, cloud_file.md5, plate)
    history = yield api.get_tasks(serial, None, HISTORY_LOOKBACK)
    earlier = _earlier_attempt(history.items, key)
    state = str(status.task_status or "").upper() if status else ""
    if state in BUSY:
        if earlier is not None and str(status.task_id if status else "") == str(earlier.id):
            return earlier  # a retry of a print that did start: nothing more to do
        raise PrinterBusyError(
            f"printer {serial} is busy ({state}); nothing was sent", serial=serial, state=state
        )
    if not request.live:
        job: PrintJob = yield api.start_cloud_print(
            serial,
            cloud_file.file_id,
            cloud_file.name,
            None,
            {**_settings(options, use_ams, mapping), **dict(request.settings)},
        )
        task_id = job.get("task_id")
        if task_id in (None, ""):
            return Task.from_wire({"id": 0, "deviceId": serial, "title": cloud_file.name})
        task: Task = yield api.get_task(str(task_id))
        return task
    if earlier is not None:
        task_id, project_id = str(earlier.id), str(earlier.get("projectId") or "0")
        profile_id = str(earlier.profile_id or "0")
    else:
        title = options.subtask_name or PurePosixPath(cloud_file.name).stem or cloud_file.name
        project = yield api.create_project(title)
        project_id, profile_id = project["project_id"], project["profile_id"] or "0"
        yield api.set_project_file(project_id, profile_id, cloud_file.md5, cloud_file.url, plate)
        created = yield api.create_task(
            project["model_id"],
            title,
            serial,
            int(profile_id) if profile_id.isdigit() else profile_id,
            **_task_fields(options, use_ams, mapping, project_id, key),
        )
        task_id = str(created)
    command = proto.project_file(
        cloud_file.url,
        plate,
        subtask_name=options.subtask_name or PurePosixPath(cloud_file.name).stem,
        file=cloud_file.name,
        md5=cloud_file.md5,
        project_id=project_id,
        profile_id=profile_id,
        task_id=task_id,
        subtask_id=task_id,
        use_ams=use_ams,
        ams_mapping=mapping,
        **options.switches(),
    )
    try:
        yield Publish(serial, command)
    except CommandError:
        # The printer said no; if it said so because it already prints this very
        # task (an earlier attempt's command got through after all), that is
        # success. The cloud learns the printer's state from its reports, so
        # give it a moment to catch up before deciding.
        for _ in range(SETTLE_ROUNDS):
            again = yield from _status(serial)
            if again and str(again.task_id) == task_id and str(again.task_status) in BUSY:
                break
            yield Pause(SETTLE_SECONDS)
        else:
            raise
    task = yield api.get_task(task_id)
    return task


def _status(serial: str) -> Generator[Step, Any, PrintStatus | None]:
    statuses: list[PrintStatus] = yield api.get_print_status(serial)
    return next((s for s in statuses if s.dev_id == serial), statuses[0] if statuses else None)


def _resolve(request: CloudPrintRequest) -> Generator[Step, Any, CloudFile]:
    """By id, else the newest upload of that name this client made; what the cloud confirms."""
    candidates: list[str] = []
    if request.file_id:
        candidates.append(str(request.file_id))
    if request.file_name and request.file_name in request.known_uploads:
        candidates.append(request.known_uploads[request.file_name])
    for file_id in candidates:
        try:
            answer = yield api.confirm_upload(file_id)
        except NotFoundError:
            continue
        url, md5 = str(answer.get("file_url") or ""), str(answer.get("md5") or "")
        if url and md5:
            name = str(answer.get("file_name") or request.file_name or file_id)
            return CloudFile(file_id, name, url, md5)
    shown = request.file_name or request.file_id or "?"
    raise PrintFileError(
        f"no uploaded file {shown!r} in the cloud (upload it first); nothing was sent",
        serial=request.device_id,
        file=shown,
    )


def check_mapping(
    serial: str,
    choice: Any,
    status: PrintStatus | None,
    project: ThreeMF | None = None,
    plate: Plate | None = None,
) -> tuple[bool, list[int]]:
    """``(use_ams, ams_mapping)`` for ``PrintOptions.ams_mapping``; raises when impossible.

    ``"none"`` prints from the external spool. ``"auto"`` maps the plate's
    filaments to the loaded trays by the slicer's rule (type first, then the
    nearest colour; :func:`bambulab.protocol.ams_mapping.ams_mapping`) when
    both are known, and otherwise leaves the choice to the printer (an empty
    mapping). An explicit list is checked against the trays the cloud reports
    (and against the file's filaments when the file is at hand).
    """
    if choice == "none":
        return False, []
    trays = _trays(status)
    explicit: list[int] | None = None
    if choice != "auto" and choice is not None:
        if isinstance(choice, str) or not isinstance(choice, Sequence):
            raise AmsMappingError(
                f"ams_mapping must be 'auto', 'none' or a list, not {choice!r}", serial=serial
            )
        explicit = [int(v) for v in choice]
    try:
        if project is not None and plate is not None and trays is not None:
            mapping = ams_mapping(
                plate.filaments, trays, length=project.mapping_length, explicit=explicit
            )
        elif explicit is not None:
            mapping = _check_loaded(explicit, trays)
        else:
            return True, []
    except AmsMappingError as exc:
        raise AmsMappingError(
            f"printer {serial}: {exc}; nothing was sent", filament=exc.filament, serial=serial
        ) from None
    return any(t not in (-1, *EXTERNAL_SPOOLS) for t in mapping), mapping


def _check_loaded(mapping: list[int], trays: list[Tray] | None) -> list[int]:
    """An explicit mapping without the file at hand: every tray it names holds filament."""
    if trays is None:
        return mapping
    loaded = {t.global_id for t in trays if not t.empty}
    for tray in mapping:
        if tray != -1 and tray not in EXTERNAL_SPOOLS and tray not in loaded:
            shown = ", ".join(str(t) for t in sorted(loaded)) or "none"
            raise AmsMappingError(f"no filament in tray {tray} (loaded: {shown})")
    return mapping


def _trays(status: PrintStatus | None) -> list[Tray] | None:
    """The trays of the printer's AMS units as the cloud reports them, or None if unknown."""
    units = status.get("ams") if status is not None else None
    if not isinstance(units, list):
        return None
    trays: list[Tray] = []
    for unit in units:
        if not isinstance(unit, dict):
            continue
        try:
            ams_id = int(str(unit.get("ams_id", unit.get("id", -1))))
        except ValueError:
            continue
        for tray in unit.get("tray") or []:
            if not isinstance(tray, dict):
                continue
            try:
                slot = int(str(tray.get("id", -1)))
            except ValueError:
                continue
            trays.append(
                Tray(
                    id=slot,
                    ams_id=ams_id,
                    global_id=ams_id if ams_id >= 128 else ams_id * 4 + slot,
                    type=str(tray.get("tray_type") or ""),
                    colour=str(tray.get("tray_color") or ""),
                    remain=None,
                    info_idx=str(tray.get("tray_info_idx") or ""),
                )
            )
    return trays


def _earlier_attempt(tasks: Sequence[Task], key: str) -> Task | None:
    for task in tasks:
        if task.get("requestKey") == key and str(task.status) == str(TASK_OPEN):
            return task
    return None


def _settings(options: PrintOptions, use_ams: bool, mapping: list[int]) -> dict[str, Any]:
    return {
        "plate": options.plate,
        "timelapse": options.timelapse,
        "bed_levelling": options.bed_levelling,
        "flow_cali": options.flow_cali,
        "vibration_cali": options.vibration_cali,
        "layer_inspect": options.layer_inspect,
        "bed_type": options.bed_type,
        "use_ams": use_ams,
        "ams_mapping": mapping,
    }


def _task_fields(
    options: PrintOptions, use_ams: bool, mapping: list[int], project_id: str, key: str
) -> dict[str, Any]:
    """The task body's other fields, named as the slicer's task body names them."""
    return {
        "plateIndex": options.plate,
        "mode": "cloud_file",
        "bedType": options.bed_type,
        "useAms": use_ams,
        "amsMapping": mapping or [-1],
        "timelapse": options.timelapse,
        "bedLeveling": options.bed_levelling,
        "flowCali": options.flow_cali,
        "vibrationCali": options.vibration_cali,
        "layerInspect": options.layer_inspect,
        "projectId": project_id,
        "requestKey": key,
    }
