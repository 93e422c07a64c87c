"""Every cloud endpoint of PROTOCOL.md §1.2 as a sans-IO call builder.

Each function returns an :class:`ApiCall`: the request to send and the parser
of its unwrapped payload. ``BambuClient`` and ``AsyncBambuClient`` expose the
same functions as methods, so the two faces cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ConfigurationError, ProtocolError
from ..models import (
    CameraCredentials,
    Device,
    DeviceInfo,
    FirmwareInfo,
    Message,
    Notification,
    Page,
    Preference,
    PrintJob,
    PrintStatus,
    Profile,
    Project,
    SlicerResources,
    SlicerSetting,
    SlicerSettings,
    Task,
    UploadTicket,
    WireModel,
)
from .http import ApiCall, ApiRequest

M = TypeVar("M", bound=WireModel)

IOT = "/v1/iot-service/api"
USER = "/v1/user-service"
DESIGN = "/v1/design-user-service"

UPLOAD_TYPES = (".3mf", ".gcode", ".stl", ".step")
MAX_PAGE = 100


def _need(value: str | None, what: str) -> str:
    text = (value or "").strip() if isinstance(value, str) else str(value or "")
    if not text:
        raise ConfigurationError(f"{what} is required")
    return text


def _dict(payload: Any, what: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ProtocolError(f"expected an object for {what}, got {type(payload).__name__}")
    return payload


def _one(model: type[M]) -> Callable[[Any], M]:
    def parse(payload: Any) -> M:
        return model.from_wire(_dict(payload, model.__name__))

    return parse


def _many(model: type[M], key: str) -> Callable[[Any], list[M]]:
    def parse(payload: Any) -> list[M]:
        items = payload.get(key) if isinstance(payload, dict) else payload
        if items is None:
            return []
        if not isinstance(items, list):
            raise ProtocolError(f"expected a list in {key!r}, got {type(items).__name__}")
        return [model.from_wire(i) for i in items if isinstance(i, dict)]

    return parse


def _page(model: type[WireModel], *keys: str) -> Callable[[Any], Page]:
    """Parse a paged answer: items under the first present key of ``keys``.

    The tasks endpoint answers ``{total, hits[]}``; the seed also shows
    ``{tasks[], hits: {total: {value}}}``; both are accepted.
    """

    def parse(payload: Any) -> Page:
        data = _dict(payload, model.__name__ + " page")
        items: Any = []
        for key in keys:
            value = data.get(key)
            if isinstance(value, list):
                items = value
                break
        total = data.get("total")
        hits = data.get("hits")
        if total is None and isinstance(hits, dict):
            total = (hits.get("total") or {}).get("value")
        page = Page.from_wire(
            {k: v for k, v in data.items() if k in ("total", "page")} | {"total": total}
        )
        page.items = [model.from_wire(i) for i in items if isinstance(i, dict)]
        return page

    return parse


def _ok(payload: Any) -> bool:
    return True


def _limit(limit: int) -> str:
    if not 1 <= int(limit) <= MAX_PAGE:
        raise ConfigurationError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    return str(int(limit))


# --- devices ---------------------------------------------------------------


def get_devices() -> ApiCall[list[Device]]:
    """The printers bound to the account."""
    return ApiCall(ApiRequest("GET", f"{IOT}/user/bind"), _many(Device, "devices"))


def bind_device(device_id: str, bind_code: str, device_name: str | None = None) -> ApiCall[bool]:
    """Bind a printer to the account with the code the printer shows."""
    body = {
        "device_id": _need(device_id, "device_id"),
        "device_name": device_name or device_id,
        "bind_code": _need(bind_code, "bind_code"),
    }
    return ApiCall(ApiRequest("POST", f"{IOT}/user/bind", json=body), _ok)


def unbind_device(device_id: str) -> ApiCall[bool]:
    """Remove a printer from the account."""
    params = {"dev_id": _need(device_id, "device_id")}
    return ApiCall(ApiRequest("DELETE", f"{IOT}/user/bind", params=params), _ok)


def rename_device(device_id: str, name: str) -> ApiCall[bool]:
    """Give a printer a new name."""
    body = {"dev_id": _need(device_id, "device_id"), "name": _need(name, "name")}
    return ApiCall(ApiRequest("PATCH", f"{IOT}/user/device/info", json=body), _ok)


def get_device_info(device_id: str) -> ApiCall[DeviceInfo]:
    """Details of one printer (``info['status']`` is its print status)."""
    params = {"device_id": _need(device_id, "device_id")}
    return ApiCall(ApiRequest("GET", f"{IOT}/user/device/info", params=params), _one(DeviceInfo))


def get_firmware_version(device_id: str) -> ApiCall[FirmwareInfo]:
    """Firmware versions of one printer and its AMS units."""
    params = {"dev_id": _need(device_id, "device_id")}
    return ApiCall(
        ApiRequest("GET", f"{IOT}/user/device/version", params=params), _one(FirmwareInfo)
    )


# --- printing --------------------------------------------------------------


def get_print_status(
    device_id: str | None = None, force: bool = False
) -> ApiCall[list[PrintStatus]]:
    """The live print status of every printer (or of one)."""
    params: dict[str, str] = {}
    if device_id:
        params["device_id"] = device_id
    if force:
        params["force"] = "true"
    return ApiCall(
        ApiRequest("GET", f"{IOT}/user/print", params=params), _many(PrintStatus, "devices")
    )


def get_print_jobs(
    device_id: str | None = None, status: str | None = None
) -> ApiCall[list[PrintJob]]:
    """Cloud print jobs, optionally of one printer or in one status."""
    params: dict[str, str] = {}
    if device_id:
        params["device_id"] = device_id
    if status:
        params["status"] = status
    return ApiCall(ApiRequest("GET", f"{IOT}/user/print", params=params), _many(PrintJob, "jobs"))


def start_cloud_print(
    device_id: str,
    file_id: str | None = None,
    file_name: str | None = None,
    file_url: str | None = None,
    settings: dict[str, Any] | None = None,
) -> ApiCall[PrintJob]:
    """Start printing an uploaded file on a printer (the seed's ``POST /user/print``)."""
    if not (file_id or file_name or file_url):
        raise ConfigurationError("start_cloud_print needs file_id, file_name or file_url")
    body: dict[str, Any] = {"device_id": _need(device_id, "device_id")}
    if file_id:
        body["file_id"] = file_id
    if file_name:
        body["file_name"] = file_name
    if file_url:
        body["file_url"] = file_url
    body["settings"] = dict(settings or {})
    return ApiCall(ApiRequest("POST", f"{IOT}/user/print", json=body), _one(PrintJob))


# --- projects and tasks ------------------------------------------------------


def create_project(name: str) -> ApiCall[dict[str, Any]]:
    """A new project for a cloud print: ``project_id``, ``model_id``, ``profile_id``."""
    body = {"name": _need(name, "project name")}

    def parse(payload: Any) -> dict[str, Any]:
        data = _dict(payload, "created project")
        if not data.get("project_id"):
            raise ProtocolError("the created project has no project_id")
        return {k: str(data.get(k) or "") for k in ("project_id", "model_id", "profile_id")}

    return ApiCall(ApiRequest("POST", f"{IOT}/user/project", json=body), parse)


def set_project_file(
    project_id: str, profile_id: str, md5: str, url: str, plate: int = 1
) -> ApiCall[bool]:
    """Tell a project where its sliced file is (URL, MD5, plate), as the slicer does."""
    pid = _need(str(project_id), "project_id")
    body = {
        "profile_id": profile_id,
        "profile_print_3mf": [{"md5": md5, "plate_idx": max(1, int(plate)), "url": url}],
    }
    return ApiCall(ApiRequest("PATCH", f"{IOT}/user/project/{pid}", json=body), _ok)


def get_projects(page: int = 1, limit: int = 20) -> ApiCall[Page]:
    """One page of the account's projects."""
    params = {"page": str(max(1, int(page))), "limit": _limit(limit)}
    return ApiCall(
        ApiRequest("GET", f"{IOT}/user/project", params=params), _page(Project, "projects")
    )


def get_project(project_id: str) -> ApiCall[Project]:
    """One project with its files."""
    pid = _need(str(project_id), "project_id")
    return ApiCall(ApiRequest("GET", f"{IOT}/user/project/{pid}"), _one(Project))


def get_tasks(
    device_id: str | None = None, after: str | int | None = None, limit: int = 20
) -> ApiCall[Page]:
    """One page of print history, newest first; ``after`` is the last id already seen."""
    params = {"limit": _limit(limit)}
    if device_id:
        params["deviceId"] = device_id
    if after is not None:
        params["after"] = str(after)
    return ApiCall(
        ApiRequest("GET", f"{USER}/my/tasks", params=params), _page(Task, "hits", "tasks")
    )


def get_task(task_id: str | int) -> ApiCall[Task]:
    """One print task."""
    tid = _need(str(task_id), "task_id")
    return ApiCall(ApiRequest("GET", f"{IOT}/user/task/{tid}"), _one(Task))


def create_task(
    model_id: str,
    title: str,
    device_id: str,
    profile_id: str | int | None = None,
    **extra: Any,
) -> ApiCall[int | str]:
    """Create a print task record; returns its id."""
    body: dict[str, Any] = {
        "modelId": model_id,
        "title": _need(title, "title"),
        "deviceId": _need(device_id, "device_id"),
    }
    if profile_id is not None:
        body["profileId"] = profile_id
    body.update(extra)

    def parse(payload: Any) -> int | str:
        data = _dict(payload, "created task")
        if "id" not in data:
            raise ProtocolError("the created task has no id")
        task_id: int | str = data["id"]
        return task_id

    return ApiCall(ApiRequest("POST", f"{USER}/my/task", json=body), parse)


# --- notifications, messages, account -------------------------------------


def get_notifications(
    unread: bool = False, action: str | None = None, ticket: str | None = None
) -> ApiCall[list[Notification]]:
    """Device and account notifications."""
    params: dict[str, str] = {}
    if unread:
        params["unread"] = "true"
    if action:
        params["action"] = action
    if ticket:
        params["ticket"] = ticket
    return ApiCall(
        ApiRequest("GET", f"{IOT}/user/notification", params=params),
        _many(Notification, "notifications"),
    )


def mark_notification_read(notification_id: str | int, read: bool = True) -> ApiCall[bool]:
    """Mark one notification read (or unread)."""
    body = {"notification_id": notification_id, "read": bool(read)}
    return ApiCall(ApiRequest("PUT", f"{IOT}/user/notification", json=body), _ok)


def get_messages(
    type: str | None = None, after: str | int | None = None, limit: int = 20
) -> ApiCall[Page]:
    """One page of the account's messages, newest first."""
    params = {"limit": _limit(limit)}
    if type:
        params["type"] = type
    if after is not None:
        params["after"] = str(after)
    return ApiCall(ApiRequest("GET", f"{USER}/my/messages", params=params), _page(Message, "hits"))


def get_profile() -> ApiCall[Profile]:
    """The account's profile."""
    return ApiCall(ApiRequest("GET", f"{USER}/my/profile"), _one(Profile))


def update_profile(**fields: Any) -> ApiCall[Profile]:
    """Change profile fields (``name``, ``bio``, ``avatar``); returns the new profile."""
    if not fields:
        raise ConfigurationError("update_profile needs at least one field")
    return ApiCall(ApiRequest("PUT", f"{USER}/my/profile", json=fields), _one(Profile))


def get_preference() -> ApiCall[Preference]:
    """The design-service preference record; carries the ``uid`` MQTT needs."""
    return ApiCall(ApiRequest("GET", f"{DESIGN}/my/preference"), _one(Preference))


# --- slicer ------------------------------------------------------------------


def get_slicer_settings(version: str | None = None) -> ApiCall[SlicerSettings]:
    """The account's slicer presets."""
    params = {"version": version} if version else {}
    return ApiCall(ApiRequest("GET", f"{IOT}/slicer/setting", params=params), _one(SlicerSettings))


def get_slicer_setting(setting_id: str) -> ApiCall[SlicerSetting]:
    """One slicer preset with its content."""
    sid = _need(setting_id, "setting_id")
    return ApiCall(ApiRequest("GET", f"{IOT}/slicer/setting/{sid}"), _one(SlicerSetting))


def delete_slicer_setting(setting_id: str) -> ApiCall[bool]:
    """Delete one of the account's own slicer presets."""
    sid = _need(setting_id, "setting_id")
    return ApiCall(ApiRequest("DELETE", f"{IOT}/slicer/setting/{sid}"), _ok)


def get_slicer_resources(type: str | None = None) -> ApiCall[SlicerResources]:
    """Slicer software and resource bundles."""
    params = {"type": type} if type else {}
    return ApiCall(
        ApiRequest("GET", f"{IOT}/slicer/resource", params=params), _one(SlicerResources)
    )


# --- upload and camera -------------------------------------------------------


def check_upload_name(filename: str) -> str:
    """The file name, if the cloud accepts its type."""
    name = _need(filename, "file name")
    if not name.lower().endswith(UPLOAD_TYPES):
        raise ConfigurationError(
            f"cannot upload {name!r}: the cloud takes {', '.join(UPLOAD_TYPES)} files"
        )
    return name


def get_upload_urls(filename: str, size: int) -> ApiCall[UploadTicket]:
    """Pre-signed URLs to upload one file (bytes to one, decimal size to the other)."""
    name = check_upload_name(filename)
    if size <= 0:
        raise ConfigurationError(f"cannot upload {name!r}: the file is empty")

    def parse(payload: Any) -> UploadTicket:
        data = _dict(payload, "upload URLs")
        urls = {u.get("type"): u for u in data.get("urls") or [] if isinstance(u, dict)}
        if "filename" not in urls or "size" not in urls:
            raise ProtocolError("the upload answer lacks the filename or size URL")
        return UploadTicket.from_wire(
            {
                "file_id": str(data.get("file_id") or ""),
                "file_name": urls["filename"].get("file") or name,
                "filename_url": urls["filename"].get("url") or "",
                "size_url": urls["size"].get("url") or "",
            }
        )

    params = {"filename": name, "size": str(size)}
    return ApiCall(ApiRequest("GET", f"{IOT}/user/upload", params=params), parse)


def request_upload(filename: str, size: int) -> ApiCall[dict[str, Any]]:
    """The alternative upload flow, step 1: one upload URL and a file id."""
    body = {"filename": check_upload_name(filename), "size": size}

    def parse(payload: Any) -> dict[str, Any]:
        data = _dict(payload, "upload request")
        if not data.get("upload_url") or not data.get("file_id"):
            raise ProtocolError("the upload answer lacks upload_url or file_id")
        return data

    return ApiCall(ApiRequest("POST", f"{IOT}/user/upload", json=body), parse)


def confirm_upload(file_id: str) -> ApiCall[dict[str, Any]]:
    """The alternative upload flow, step 3: tell the cloud the bytes are there."""
    body = {"file_id": _need(file_id, "file_id")}
    return ApiCall(
        ApiRequest("POST", f"{IOT}/user/upload/confirm", json=body),
        lambda payload: _dict(payload, "upload confirmation"),
    )


def get_camera_credentials(device_id: str) -> ApiCall[CameraCredentials]:
    """TUTK P2P credentials for a printer's camera (``ttcode``)."""
    body = {"dev_id": _need(device_id, "device_id")}
    return ApiCall(ApiRequest("POST", f"{IOT}/user/ttcode", json=body), _one(CameraCredentials))
