"""The simulated cloud's state, as plain mutable records.

These are the simulator's own facts, not wire objects: times are Unix seconds
on the simulated clock, URLs are paths (the host is the one the request came
in on), and the wire shapes are produced by :mod:`bambulab.sim.wire`. The
printer part of the simulator (MQTT, FTPS, camera) will drive the same
:class:`Device` records, which is why they carry AMS and firmware details the
HTTP API itself never shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .catalog import AmsKind, PrinterModel
from .config import LoginMode

# gcode_state values the cloud can derive for a device (PROTOCOL.md §2.3); PREPARE
# and PAUSE come from the printer itself (see :mod:`bambulab.sim.follow`).
DeviceState = Literal["RUNNING", "PREPARE", "PAUSE", "FINISH", "FAILED", "IDLE"]
# States in which a printer takes no new print.
BUSY_STATES = frozenset({"RUNNING", "PREPARE", "PAUSE"})

# Task status codes in the history: 2 finished, 3 failed (PROTOCOL.md §1.2);
# 1 is the simulator's code for a task that was created or queued and has
# not finished yet.
TASK_CREATED = 1
TASK_FINISHED = 2
TASK_FAILED = 3


@dataclass(slots=True)
class Account:
    """A cloud user."""

    uid: int
    email: str | None
    phone: str | None
    password: str
    mode: LoginMode
    name: str
    handle: str
    bio: str
    avatar: str  # path on the simulator's CDN
    create_time: float
    tfa_secret: str | None
    demo: bool

    @property
    def login(self) -> str:
        """Email for email accounts, the phone number otherwise."""
        return self.email or self.phone or ""


@dataclass(slots=True)
class Tray:
    """One AMS slot."""

    id: int
    tray_type: str  # "" when the slot is empty
    colour: str  # RRGGBBAA
    remain: int  # percent, -1 when unknown (no RFID tag)
    info_idx: str
    sub_brand: str
    temp_min: int
    temp_max: int
    tag_uid: str
    tray_uuid: str


@dataclass(slots=True)
class AmsUnit:
    """One AMS (or AMS Lite / AMS 2 Pro / AMS HT)."""

    id: int
    kind: AmsKind
    humidity: int  # 1-5 level index, as reports carry it
    humidity_raw: int  # percent
    temp: float
    sw_ver: str
    hw_ver: str
    sn: str
    trays: list[Tray]

    @property
    def module_name(self) -> str:
        """Firmware module name, e.g. ``ams/0`` or ``n3s/128``."""
        return f"{self.kind}/{self.id}"


@dataclass(slots=True)
class FirmwareModule:
    """One entry of ``info.get_version`` / the cloud's version list."""

    name: str
    sw_ver: str
    hw_ver: str
    sn: str


@dataclass(slots=True)
class ActivePrint:
    """What a RUNNING device is printing right now."""

    task_id: int
    title: str
    progress: int  # percent
    start_time: float
    prediction: int  # remaining seconds
    model_id: str
    profile_id: int
    cover: str  # CDN path


@dataclass(slots=True)
class Device:
    """A printer the cloud knows about, bound or not."""

    dev_id: str
    name: str
    model: PrinterModel
    access_code: str  # 8 characters
    access_code_newline: bool  # the wire value gets a trailing "\n"
    online: bool
    state: DeviceState
    nozzle_diameter: float
    owner: int | None  # uid; None = unbound, claimable with bind_code
    bind_code: str
    ams: list[AmsUnit]
    firmware: list[FirmwareModule]
    active: ActivePrint | None = None
    nozzle_temp: float = 25.0
    bed_temp: float = 24.0

    @property
    def firmware_version(self) -> str:
        """The ``ota`` module's version, i.e. what users call "the firmware"."""
        for module in self.firmware:
            if module.name == "ota":
                return module.sw_ver
        return ""

    @property
    def print_status(self) -> str:
        """The bind list's ``print_status`` word for the current state."""
        return {
            "RUNNING": "ACTIVE",
            "PREPARE": "ACTIVE",
            "PAUSE": "ACTIVE",
            "FINISH": "SUCCESS",
            "FAILED": "FAILED",
            "IDLE": "IDLE",
        }[self.state]


@dataclass(slots=True)
class Task:
    """One entry of the print history (``my/tasks``)."""

    id: int
    owner: int
    device_id: str
    device_name: str
    device_model: str  # product name, e.g. "X1 Carbon"
    design_id: int
    design_title: str
    model_id: str
    title: str
    cover: str  # CDN path
    status: int
    start_time: float
    end_time: float
    weight: float  # grams
    length: int  # millimetres of filament
    cost_time: int  # seconds
    profile_id: int
    plate_index: int
    bed_type: str
    use_ams: bool
    ams_detail_mapping: list[dict[str, Any]]
    ams_mapping: list[int]
    mode: str = "cloud_file"
    extra: dict[str, Any] = field(default_factory=dict)  # client-supplied fields kept as is


@dataclass(slots=True)
class ProjectFile:
    """A file inside a project; its bytes live in the object store under ``key``."""

    file_id: str
    name: str
    size: int
    key: str
    md5: str


@dataclass(slots=True)
class Project:
    """A cloud project (what the slicer creates before a cloud print)."""

    project_id: str
    owner: int
    name: str
    model_id: str
    status: str
    create_time: float
    update_time: float
    cover: str
    files: list[ProjectFile]
    profile_id: str = ""  # the slicer's print profile of a project made for printing


@dataclass(slots=True)
class Message:
    """An inbox message (``my/messages``)."""

    id: int
    owner: int
    type: int  # 1 system, 2 printing, 3 community, 4 MakerWorld
    title: str
    content: str
    create_time: float
    read: bool


@dataclass(slots=True)
class Notification:
    """A device/account notification."""

    id: int
    owner: int
    type: str
    title: str
    content: str
    read: bool
    create_time: float
    action: str
    ticket: str


@dataclass(slots=True)
class OutboxMessage:
    """A code the simulated cloud "sent" by email or SMS."""

    to: str
    kind: Literal["email", "sms", "tfa"]
    code: str
    sent_at: float
    expires_at: float


@dataclass(slots=True)
class PendingCode:
    """The one live login code of an account (a new one replaces it)."""

    uid: int
    code: str
    expires_at: float
    tries_left: int


@dataclass(slots=True)
class TfaTicket:
    """A ``tfaKey`` handed out by a password login, waiting for its TOTP code."""

    key: str
    uid: int
    expires_at: float
    tries_left: int


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object of the simulated object store: a complete file on disk.

    The file at ``path`` is never changed once the record exists (a new PUT to
    the same key writes a new file and swaps the record), so it can be read
    from any thread. ``data`` reads it whole: for small objects and tests.
    """

    key: str
    path: Path
    size: int
    md5: str

    @property
    def data(self) -> bytes:
        """The object's bytes (reads the whole file)."""
        return self.path.read_bytes()


@dataclass(slots=True)
class Upload:
    """An upload in progress: the URLs were handed out, bytes may not be here yet."""

    file_id: str
    owner: int
    filename: str
    size: int
    flow: Literal["urls", "single"]  # GET with two URLs, or POST + confirm
    data_key: str
    size_key: str
    data_received: bool = False
    size_received: bool = False


@dataclass(slots=True)
class CloudFile:
    """A file whose upload completed; prints can refer to it."""

    file_id: str
    owner: int
    name: str
    size: int
    md5: str
    key: str
    create_time: float


@dataclass(slots=True)
class CloudJob:
    """A print started through ``POST /user/print``."""

    job_id: str
    owner: int
    device_id: str
    file_id: str
    file_name: str
    status: str
    create_time: float
    settings: dict[str, Any]
    task_id: int
    end_time: float = 0.0  # when the printer finished or failed it; 0 while not done


@dataclass(slots=True)
class SlicerSetting:
    """A slicer preset; ``owner`` None means a public (system) preset."""

    setting_id: str
    name: str
    type: Literal["print", "printer", "filament"]
    version: str
    update_time: float
    nickname: str
    base_id: str
    filament_id: str | None
    owner: int | None
    values: dict[str, Any]
