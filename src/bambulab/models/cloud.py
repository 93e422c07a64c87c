"""Typed results of the cloud HTTP API (PROTOCOL.md §1.2).

Attribute names are snake_case; camelCase wire keys are reached through
aliases, and ``model['wireKey']`` always reads the wire dict as received.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from .base import WireModel


class Device(WireModel):
    """A printer bound to the account (``GET /user/bind``)."""

    dev_id: str = ""
    name: str = ""
    online: bool = False
    print_status: str = ""
    dev_model_name: str = ""
    dev_product_name: str = ""
    dev_access_code: str = Field("", repr=False)
    nozzle_diameter: float | None = None
    dev_structure: str = ""
    print_job: dict[str, Any] | None = None

    @classmethod
    def from_wire(cls, data: Any) -> Device:
        # Servers sometimes append a newline to the access code: strip it in
        # the wire dict too, so ``device['dev_access_code']`` is usable as is.
        raw = dict(data) if isinstance(data, dict) else {}
        if isinstance(raw.get("dev_access_code"), str):
            raw["dev_access_code"] = raw["dev_access_code"].strip()
        return super().from_wire(raw)

    @property
    def serial(self) -> str:
        """The printer's serial number (the cloud calls it ``dev_id``)."""
        return self.dev_id

    @property
    def access_code(self) -> str:
        """The LAN access code, stripped of the stray newline some servers add."""
        return self.dev_access_code


class DeviceInfo(WireModel):
    """One device's details (``GET /user/device/info``)."""

    device_id: str = ""
    device_name: str = ""
    model: str = ""
    dev_model_name: str = ""
    status: str = ""
    online: bool | None = None
    firmware_version: str = ""
    nozzle_temp: float | None = None
    bed_temp: float | None = None
    nozzle_diameter: float | None = None


class FirmwareModule(WireModel):
    """One firmware module of a device (``ota`` is the printer itself)."""

    name: str = ""
    sw_ver: str = ""
    hw_ver: str = ""
    sn: str = ""


class FirmwareInfo(WireModel):
    """Firmware versions of a device (``GET /user/device/version``)."""

    current_version: str = ""
    latest_version: str = ""
    update_available: bool = False
    release_notes: str = ""
    devices: list[dict[str, Any]] = Field(default_factory=list)

    def modules(self, dev_id: str | None = None) -> list[FirmwareModule]:
        """The firmware modules reported for ``dev_id`` (or the first device)."""
        for entry in self.devices:
            if dev_id is None or entry.get("dev_id") == dev_id:
                mods = entry.get("firmware") or entry.get("module") or []
                return [FirmwareModule.from_wire(m) for m in mods if isinstance(m, dict)]
        return []


class PrintStatus(WireModel):
    """The live print status of one device (``GET /user/print``)."""

    dev_id: str = ""
    dev_name: str = ""
    dev_online: bool = False
    task_id: str | int | None = None
    task_name: str = ""
    task_status: str = ""
    progress: int | float | None = None
    start_time: str = ""
    prediction: int | float | None = None
    thumbnail: str = ""


class PrintJob(WireModel):
    """A cloud print job (``POST /user/print`` answer, or an entry of the job list)."""

    job_id: str = ""
    status: str = ""
    device_id: str = ""
    file_id: str = ""
    file_name: str = ""
    create_time: str = ""

    @field_validator("job_id", "file_id", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class ProjectFile(WireModel):
    """A file of a project."""

    file_id: str = ""
    name: str = ""
    size: int | None = None
    url: str = ""
    md5: str = ""


class Project(WireModel):
    """A cloud project (list entry or detail)."""

    project_id: str = ""
    name: str = ""
    create_time: str = ""
    update_time: str = ""
    model_id: str = ""
    status: str = ""
    files: list[ProjectFile] = Field(default_factory=list)

    @field_validator("project_id", "model_id", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class Page(WireModel):
    """One page of a paged list: ``items`` plus the server's totals."""

    total: int | None = None
    page: int | None = None
    items: list[Any] = Field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Any:  # iterate items, like a list
        return iter(self.items)


class Task(WireModel):
    """One print task of the account's history."""

    id: int | str = 0
    design_id: int | str | None = Field(None, alias="designId")
    design_title: str = Field("", alias="designTitle")
    model_id: str = Field("", alias="modelId")
    title: str = ""
    cover: str = ""
    status: int | str | None = None
    start_time: str = Field("", alias="startTime")
    end_time: str = Field("", alias="endTime")
    weight: float | None = None
    length: float | None = None
    cost_time: int | float | None = Field(None, alias="costTime")
    profile_id: int | str | None = Field(None, alias="profileId")
    plate_index: int | None = Field(None, alias="plateIndex")
    device_id: str = Field("", alias="deviceId")
    device_name: str = Field("", alias="deviceName")
    device_model: str = Field("", alias="deviceModel")
    mode: str = ""
    bed_type: str = Field("", alias="bedType")
    use_ams: bool | None = Field(None, alias="useAms")

    @property
    def status_text(self) -> str:
        """``finished``/``failed`` for the numeric codes, else the raw status."""
        return {2: "finished", 3: "failed", 1: "printing", 0: "created"}.get(
            self.status if isinstance(self.status, int) else -99, str(self.status or "")
        )


class Notification(WireModel):
    """A device or account notification."""

    id: int | str = 0
    type: str | int = ""
    title: str = ""
    content: str = ""
    read: bool = False
    create_time: str = ""


# ``my/messages`` types: the inbox's tabs (the ``type`` query parameter takes the number).
MESSAGE_TYPES: dict[int, str] = {1: "system", 2: "printing", 3: "community", 4: "makerworld"}


def message_type(value: str | int) -> int | None:
    """The number of a message type given by name (any case) or number; ``None`` if unknown."""
    text = str(value).strip().lower()
    if text.isdigit() and int(text) in MESSAGE_TYPES:
        return int(text)
    return next((number for number, name in MESSAGE_TYPES.items() if name == text), None)


class Message(WireModel):
    """A message of the account's inbox."""

    id: int | str = 0
    type: str | int = ""
    title: str = ""
    content: str = ""
    create_time: str = Field("", alias="createTime")
    read: bool | None = None

    @property
    def type_name(self) -> str:
        """``system``, ``printing``, ``community``, ``makerworld``; else the type as sent."""
        number = message_type(self.type)
        return MESSAGE_TYPES[number] if number is not None else str(self.type)


class Profile(WireModel):
    """The account's profile (``/my/profile``)."""

    uid: int | str = 0
    account: str = ""
    name: str = ""
    handle: str = ""
    avatar: str = ""
    bio: str = ""


class Preference(WireModel):
    """The design-service preference record; ``uid`` is the MQTT user id."""

    uid: int | str = 0
    name: str = ""
    handle: str = ""
    avatar: str = ""
    bio: str = ""
    links: list[Any] = Field(default_factory=list)
    background_url: str = Field("", alias="backgroundUrl")

    @property
    def mqtt_username(self) -> str:
        """The cloud MQTT user name, ``u_<uid>``."""
        return f"u_{self.uid}"


class SlicerSetting(WireModel):
    """A slicer preset (list entry or detail)."""

    setting_id: str = ""
    name: str = ""
    type: str = ""
    version: str = ""
    update_time: str = ""
    setting: dict[str, Any] = Field(default_factory=dict)


class SlicerSettings(WireModel):
    """The account's slicer presets grouped by kind: ``print``, ``printer``, ``filament``."""

    def presets(self, kind: str, scope: str | None = None) -> list[SlicerSetting]:
        """Presets of one kind; ``scope`` is ``public``, ``private`` or ``None`` for both."""
        group = self.get(kind) or {}
        scopes = [scope] if scope else ["public", "private"]
        out: list[SlicerSetting] = []
        for name in scopes:
            out.extend(
                SlicerSetting.from_wire(s) for s in group.get(name) or [] if isinstance(s, dict)
            )
        return out


class SlicerResources(WireModel):
    """Slicer resources (software version, plugins, presets bundles)."""

    software: dict[str, Any] = Field(default_factory=dict)
    resources: list[dict[str, Any]] = Field(default_factory=list)


class UploadTicket(WireModel):
    """The pre-signed URLs to upload one file (``GET /user/upload``)."""

    file_id: str = ""
    file_name: str = ""
    filename_url: str = Field("", repr=False)
    size_url: str = Field("", repr=False)


class UploadResult(WireModel):
    """What ``upload_file`` did: ``result['success']`` as in the seed's example."""

    success: bool = False
    file_id: str = ""
    file_name: str = ""
    file_url: str = Field("", repr=False)
    size: int = 0
    md5: str = ""


class CameraCredentials(WireModel):
    """TUTK P2P credentials of a printer's camera (``POST /user/ttcode``)."""

    ttcode: str = Field("", repr=False)
    authkey: str = Field("", repr=False)
    passwd: str = Field("", repr=False)
    region: str = ""
    type: str = ""

    @property
    def url(self) -> str:
        """The ``bambu:///tutk?...`` URL of Bambu's camera plugin (PROTOCOL.md §4.3).

        It holds the credentials: hand it to Bambu's own tools, never to a log.
        No open implementation of the TUTK P2P protocol exists, so this
        library stops at the URL. Values are percent-encoded.
        """
        return self._url(self.ttcode, self.authkey, self.passwd)

    @property
    def masked_url(self) -> str:
        """:attr:`url` with the uid, key and password replaced by ``***``: safe to show."""
        return self._url("***", "***", "***")

    def _url(self, uid: str, authkey: str, passwd: str) -> str:
        from urllib.parse import quote

        def q(value: str) -> str:
            return value if value == "***" else quote(value, safe="")

        return (
            f"bambu:///tutk?uid={q(uid)}&authkey={q(authkey)}"
            f"&passwd={q(passwd)}&region={q(self.region)}"
        )


class TokenResponse(WireModel):
    """A login or refresh answer."""

    access_token: str = Field("", alias="accessToken", repr=False)
    refresh_token: str = Field("", alias="refreshToken", repr=False)
    expires_in: int | None = Field(None, alias="expiresIn")
    refresh_expires_in: int | None = Field(None, alias="refreshExpiresIn")
    login_type: str = Field("", alias="loginType")
    tfa_key: str = Field("", alias="tfaKey", repr=False)
