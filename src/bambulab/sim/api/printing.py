"""Printing endpoints: live print status, cloud print jobs, projects for printing, history.

History pagination is a cursor: ``after`` is the ``id`` of the last hit the
client has seen, and ids grow with time, so "the hits after it" are the ones
with smaller ids in the newest-first order. A cloud print started through
``POST /user/print`` is refused when the printer is offline or busy;
otherwise it appears in the history at once (status 1, see
:mod:`bambulab.sim.records`) and, when the simulator runs printers, the
printer is sent the ``print.project_file`` the slicer would send (HTTPS URL,
MD5, the task's ids) and :mod:`bambulab.sim.follow` moves the records along.

``POST /user/project`` and ``PATCH /user/project/{id}`` are the slicer's
first steps of a cloud print (a project with model and profile ids, then the
sliced file's URL, MD5 and plate), as a clean-room client of the real cloud
records them.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..clock import iso
from ..errors import (
    DEVICE_OFFLINE,
    FILE_FAILED,
    PRINT_FAILED,
    SimError,
    bad_request,
    forbidden,
    not_found,
)
from ..records import (
    BUSY_STATES,
    TASK_CREATED,
    TASK_FAILED,
    CloudFile,
    CloudJob,
    Device,
    Project,
    ProjectFile,
    Task,
)
from ..s3 import BUCKET, S3_PREFIX
from ..wire import absolute, bare, old, task_hit
from ..world import World
from .deps import AccountDep, BaseUrlDep, WorldDep
from .paging import cursor_page, int_or_none

log = logging.getLogger("bambulab.sim")
router = APIRouter(tags=["printing"])


class PrintBody(BaseModel):
    """``{device_id, file_id?, file_name, file_url?, settings{...}}``."""

    model_config = ConfigDict(extra="allow")
    device_id: str
    file_id: str | int | None = None
    file_name: str | None = None
    file_url: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)


class TaskBody(BaseModel):
    """``{modelId, title, deviceId, profileId, ...}``; other fields are kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    model_id: str | None = Field(default=None, alias="modelId")
    title: str | None = None
    device_id: str | None = Field(default=None, alias="deviceId")
    profile_id: str | int | None = Field(default=None, alias="profileId")


# --- live status and cloud jobs --------------------------------------------------


@router.get("/v1/iot-service/api/user/print")
async def print_status(
    account: AccountDep,
    world: WorldDep,
    base: BaseUrlDep,
    device_id: str | None = None,
    status: str | None = None,
    force: str | None = None,  # accepted like the slicer sends it; answers are always fresh
) -> JSONResponse:
    """What each printer is doing, plus the cloud jobs started through the API."""
    del force
    devices = (
        [world.owned_device(account.uid, device_id)] if device_id else world.devices_of(account.uid)
    )
    entries = [_status_entry(world, device, base) for device in devices]
    jobs = [
        job
        for job in world.jobs.values()
        if job.owner == account.uid and (not device_id or job.device_id == device_id)
    ]
    if status:
        wanted = status.strip().upper()
        entries = [e for e in entries if str(e["task_status"]).upper() == wanted]
        jobs = [j for j in jobs if j.status.upper() == wanted]
    return old({"devices": entries, "jobs": [_job(job) for job in jobs]})


@router.post("/v1/iot-service/api/user/print")
async def start_print(
    body: PrintBody, request: Request, account: AccountDep, world: WorldDep, base: BaseUrlDep
) -> JSONResponse:
    """Queue a print of an uploaded file on an online printer."""
    device = world.owned_device(account.uid, body.device_id)
    if not device.online:
        raise SimError(400, DEVICE_OFFLINE, "Device is offline")
    dispatch = getattr(request.app.state, "print_dispatch", None)
    # With printers behind it the cloud refuses a busy one, as the printer
    # would; a cloud alone (no printers) keeps the seed's queue of jobs.
    if dispatch is not None and device.state in BUSY_STATES:
        raise SimError(400, PRINT_FAILED, f"Device is busy ({device.state})")
    cloud_file = _resolve_file(world, account.uid, body)
    task = _new_task(
        world,
        account.uid,
        device,
        title=PurePosixPath(cloud_file.name).stem,
        model_id="",
        profile_id=0,
        extra={},
    )
    job = CloudJob(
        job_id=str(20_000_000 + world.next_serial()),
        owner=account.uid,
        device_id=device.dev_id,
        file_id=cloud_file.file_id,
        file_name=cloud_file.name,
        status="queued",
        create_time=world.clock.now(),
        settings=dict(body.settings),
        task_id=task.id,
    )
    world.jobs[job.job_id] = job
    log.info("print: job %s queued on %s (%s)", job.job_id, device.dev_id, cloud_file.name)
    url = world.presigned_url(base, "GET", cloud_file.key)
    if dispatch is not None:
        command = _project_file(job, task, cloud_file, url, body.settings)
        reply = await dispatch(device.dev_id, orjson.dumps({"print": command}))
        if reply is not None and str(reply.get("result", "")).lower() != "success":
            job.status = "failed"
            job.end_time = world.clock.now()
            task.status = TASK_FAILED
            task.end_time = job.end_time
            raise SimError(400, PRINT_FAILED, f"Printer refused the job: {reply.get('reason')}")
    return old(
        {
            "job_id": job.job_id,
            "status": job.status,
            "task_id": task.id,
            "device_id": device.dev_id,
            "file_id": cloud_file.file_id,
            "file_url": url,
        }
    )


# --- projects, as the slicer makes them for a cloud print -------------------------------


class ProjectBody(BaseModel):
    """``{name}``; other fields are kept."""

    model_config = ConfigDict(extra="allow")
    name: str = ""


class ProjectPatch(BaseModel):
    """``{profile_id, profile_print_3mf: [{md5, plate_idx, url}]}``."""

    model_config = ConfigDict(extra="allow")
    profile_id: str | int | None = None
    profile_print_3mf: list[dict[str, Any]] = Field(default_factory=list)


@router.post("/v1/iot-service/api/user/project")
async def create_project(body: ProjectBody, account: AccountDep, world: WorldDep) -> JSONResponse:
    """A new project: its project, model and profile ids."""
    name = body.name.strip()
    if not name:
        raise bad_request("name is required")
    serial = world.next_serial()
    now = world.clock.now()
    project = Project(
        project_id=str(40_000_000 + serial),
        owner=account.uid,
        name=name,
        model_id=f"US{serial:012d}",
        status="ACTIVE",
        create_time=now,
        update_time=now,
        cover=f"/sim-cdn/covers/project-{serial}.png",
        files=[],
        profile_id=str(60_000_000 + serial),
    )
    world.projects[project.project_id] = project
    return old(
        {
            "project_id": project.project_id,
            "model_id": project.model_id,
            "profile_id": project.profile_id,
            "status": project.status,
        }
    )


@router.patch("/v1/iot-service/api/user/project/{project_id}")
async def patch_project(
    project_id: str, body: ProjectPatch, account: AccountDep, world: WorldDep
) -> JSONResponse:
    """Record the sliced file of a project (URL, MD5, plate)."""
    project = world.projects.get(project_id)
    if project is None or project.owner != account.uid:
        raise not_found("Project not found")
    for entry in body.profile_print_3mf:
        url = str(entry.get("url") or "")
        cloud_file = _file_at(world, account.uid, url)
        if cloud_file is None:
            continue
        if all(f.file_id != cloud_file.file_id for f in project.files):
            project.files.append(
                ProjectFile(
                    file_id=cloud_file.file_id,
                    name=cloud_file.name,
                    size=cloud_file.size,
                    key=cloud_file.key,
                    md5=cloud_file.md5,
                )
            )
    project.update_time = world.clock.now()
    return old({"project_id": project.project_id})


# --- history -------------------------------------------------------------------------


@router.get("/v1/user-service/my/tasks")
async def task_history(
    account: AccountDep,
    world: WorldDep,
    base: BaseUrlDep,
    device_id: Annotated[str | None, Query(alias="deviceId")] = None,
    after: str | None = None,
    limit: str | None = None,
) -> JSONResponse:
    """The caller's print history, newest first, ``limit`` hits after ``after``."""
    tasks = sorted(
        (
            t
            for t in world.tasks.values()
            if t.owner == account.uid and (not device_id or t.device_id == device_id)
        ),
        key=lambda t: t.id,
        reverse=True,
    )
    page = cursor_page(tasks, after, limit, key=lambda t: t.id)
    return bare({"total": len(tasks), "hits": [task_hit(t, base) for t in page]})


@router.get("/v1/iot-service/api/user/task/{task_id}")
async def task_detail(
    task_id: str, account: AccountDep, world: WorldDep, base: BaseUrlDep
) -> JSONResponse:
    """One history entry; another account's task is "permission denied"."""
    task = world.tasks.get(int_or_none(task_id) or -1)
    if task is None:
        raise not_found("Task not found")
    if task.owner != account.uid:
        raise forbidden()
    return old(task_hit(task, base))


@router.post("/v1/user-service/my/task")
async def create_task(body: TaskBody, account: AccountDep, world: WorldDep) -> JSONResponse:
    """Record a task, as the slicer does before a cloud print."""
    if not body.device_id or not body.title:
        raise bad_request("deviceId and title are required")
    device = world.owned_device(account.uid, body.device_id)
    task = _new_task(
        world,
        account.uid,
        device,
        title=body.title,
        model_id=body.model_id or "",
        profile_id=int_or_none(body.profile_id) or 0,
        extra=dict(body.model_extra or {}),
    )
    return bare({"id": task.id})


# --- helpers ---------------------------------------------------------------------------


def _status_entry(world: World, device: Device, base: str) -> dict[str, Any]:
    """One device of ``/user/print``: the task, plus the device's version and AMS units."""
    entry = _task_entry(world, device, base)
    entry["dev_product_name"] = device.model.product
    entry["version"] = device.firmware_version
    entry["ams"] = [
        {
            "ams_id": str(unit.id),
            "humidity": str(unit.humidity),
            "temp": f"{unit.temp:.1f}",
            "tray": [
                {
                    "id": str(tray.id),
                    "tray_type": tray.tray_type,
                    "tray_color": tray.colour,
                    "tray_info_idx": tray.info_idx,
                }
                for tray in unit.trays
            ],
        }
        for unit in device.ams
    ]
    return entry


def _task_entry(world: World, device: Device, base: str) -> dict[str, Any]:
    active = device.active
    if active is not None:
        return {
            "dev_id": device.dev_id,
            "dev_name": device.name,
            "dev_online": device.online,
            "dev_model_name": device.model.model_name,
            "task_id": str(active.task_id),
            "task_name": active.title,
            "task_status": device.state,
            "progress": active.progress,
            "start_time": iso(active.start_time),
            "prediction": active.prediction,
            "thumbnail": absolute(base, active.cover),
            "model_id": active.model_id,
            "profile_id": str(active.profile_id),
        }
    last = max(
        (t for t in world.tasks.values() if t.device_id == device.dev_id),
        key=lambda t: t.id,
        default=None,
    )
    return {
        "dev_id": device.dev_id,
        "dev_name": device.name,
        "dev_online": device.online,
        "dev_model_name": device.model.model_name,
        "task_id": str(last.id) if last else "",
        "task_name": last.title if last else "",
        "task_status": device.state,
        "progress": 100 if device.state == "FINISH" else 0,
        "start_time": iso(last.start_time) if last else "",
        "prediction": 0,
        "thumbnail": absolute(base, last.cover) if last else "",
        "model_id": last.model_id if last else "",
        "profile_id": str(last.profile_id) if last else "",
    }


def _job(job: CloudJob) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "device_id": job.device_id,
        "file_id": job.file_id,
        "file_name": job.file_name,
        "status": job.status,
        "create_time": iso(job.create_time),
        "settings": job.settings,
        "task_id": job.task_id,
    }


def _resolve_file(world: World, uid: int, body: PrintBody) -> CloudFile:
    """By ``file_id``, else by ``file_name`` (newest upload), else by ``file_url``."""
    mine = [f for f in world.files.values() if f.owner == uid]
    if body.file_id is not None:
        for cloud_file in mine:
            if cloud_file.file_id == str(body.file_id):
                return cloud_file
    if body.file_name:
        named = [f for f in mine if f.name == body.file_name]
        if named:
            return max(named, key=lambda f: f.create_time)
    if body.file_url:
        found = _file_at(world, uid, body.file_url)
        if found is not None:
            return found
    raise not_found("file not found", code=FILE_FAILED)


def _file_at(world: World, uid: int, url: str) -> CloudFile | None:
    """The caller's file that a storage URL points at."""
    path = unquote(urlsplit(url).path)
    prefix = f"{S3_PREFIX}/{BUCKET}/"
    if not path.startswith(prefix):
        return None
    key = path[len(prefix) :]
    for cloud_file in world.files.values():
        if cloud_file.owner == uid and cloud_file.key == key:
            return cloud_file
    return None


def _project_file(
    job: CloudJob, task: Task, cloud_file: CloudFile, url: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """The ``print.project_file`` the slicer sends for a cloud print (PROTOCOL.md §2.4)."""
    plate = int_or_none(settings.get("plate")) or 1
    levelling = bool(settings.get("bed_levelling", settings.get("bed_leveling", True)))
    return {
        "command": "project_file",
        "sequence_id": f"cloud-{job.job_id}",
        "param": f"Metadata/plate_{plate}.gcode",
        "url": url,
        "file": cloud_file.name,
        "md5": cloud_file.md5,
        "project_id": "0",
        "profile_id": str(task.profile_id),
        "task_id": str(task.id),
        "subtask_id": job.job_id,
        "subtask_name": task.title,
        "timelapse": bool(settings.get("timelapse", False)),
        "bed_type": str(settings.get("bed_type", "auto")),
        "bed_levelling": levelling,
        "bed_leveling": levelling,
        "flow_cali": bool(settings.get("flow_cali", False)),
        "vibration_cali": bool(settings.get("vibration_cali", False)),
        "layer_inspect": bool(settings.get("layer_inspect", False)),
        "use_ams": bool(settings.get("use_ams", True)),
        "ams_mapping": [i for i in settings.get("ams_mapping", []) if isinstance(i, int)]
        if isinstance(settings.get("ams_mapping"), list)
        else [],
    }


def _new_task(
    world: World,
    uid: int,
    device: Device,
    *,
    title: str,
    model_id: str,
    profile_id: int,
    extra: dict[str, Any],
) -> Task:
    now = world.clock.now()
    task_id = world.next_task_id()
    task = Task(
        id=task_id,
        owner=uid,
        device_id=device.dev_id,
        device_name=device.name,
        device_model=device.model.product,
        design_id=int_or_none(extra.pop("designId", 0)) or 0,
        design_title=str(extra.pop("designTitle", "")),
        model_id=model_id,
        title=title,
        cover=str(extra.pop("cover", f"/sim-cdn/covers/{task_id}.png")),
        status=TASK_CREATED,
        start_time=now,
        end_time=now,
        weight=0.0,
        length=0,
        cost_time=0,
        profile_id=profile_id,
        plate_index=int_or_none(extra.pop("plateIndex", 1)) or 1,
        bed_type=str(extra.pop("bedType", "auto")),
        use_ams=bool(extra.pop("useAms", False)),
        ams_detail_mapping=_list(extra.pop("amsDetailMapping", [])),
        ams_mapping=[i for i in _list(extra.pop("amsMapping", [])) if isinstance(i, int)],
        mode=str(extra.pop("mode", "cloud_file")),
        extra=extra,
    )
    world.tasks[task.id] = task
    return task


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []
