"""Deterministic seeding of a fresh world: accounts, printers, history, files.

Everything random here draws from one ``random.Random(config.seed)`` in a
fixed order, so the same config always yields the same serials, access
codes, AMS contents, tasks and messages. Times are offsets before an anchor
(``config.epoch``, default the start time rounded to the minute), which keeps
the history "recent" whenever the simulator runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import assets
from .catalog import AMS_HARDWARE, BED_TYPES, COLOURS, FILAMENTS, MODELS, AmsKind, PrinterModel
from .config import AccountConfig, DeviceConfig
from .records import (
    TASK_CREATED,
    TASK_FAILED,
    TASK_FINISHED,
    Account,
    ActivePrint,
    AmsUnit,
    Device,
    DeviceState,
    FirmwareModule,
    Message,
    Notification,
    Project,
    ProjectFile,
    SlicerSetting,
    Task,
    Tray,
)

if TYPE_CHECKING:
    from .world import World

HOUR = 3600
DAY = 24 * HOUR
FIRST_TASK_ID = 51_234_001
PLA_MM_PER_GRAM = 330  # 1.75 mm PLA: about 330 mm of filament per gram

# (design title, MakerWorld design id or 0 for a local file, plates)
DESIGNS: tuple[tuple[str, int, int], ...] = (
    ("3DBenchy", 401_001, 1),
    ("Calibration Cube", 0, 1),
    ("Articulated Dragon", 401_002, 2),
    ("Cable Clips (set of 12)", 401_003, 1),
    ("Self-Watering Planter", 401_004, 2),
    ("Phone Stand", 401_005, 1),
    ("Gridfinity Bin 2x3", 401_006, 1),
    ("Headphone Hook", 401_007, 1),
    ("Spool Holder", 401_008, 1),
    ("Desk Organizer", 401_009, 3),
    ("Lithophane Lamp", 401_010, 1),
    ("Spiral Vase", 0, 1),
    ("Filament Clip", 401_011, 1),
    ("Raspberry Pi 4 Case", 401_012, 2),
    ("Hex Wall Shelf", 401_013, 1),
)


@dataclass(slots=True)
class _Draft:
    """A task before ids are handed out (ids follow time across all accounts)."""

    owner: int
    device: Device
    design: tuple[str, int, int]
    start: float
    planned: int
    failed: bool
    running: bool
    rng_seed: int


def populate(world: World) -> None:
    """Fill an empty world from its config."""
    config = world.config
    rng = random.Random(config.seed)
    anchor = config.epoch if config.epoch is not None else world.started_at // 60 * 60
    used_serials: set[str] = set()
    drafts: list[_Draft] = []
    printing: list[Device] = []
    idle: set[str] = set()

    for index, account_config in enumerate(config.accounts):
        account = _account(account_config, index, anchor, rng)
        world.accounts[account.uid] = account
        names: set[str] = set()
        for device_config in account_config.devices:
            device = _device(device_config, rng, account.uid, used_serials, names)
            world.devices[device.dev_id] = device
            if device_config.printing:
                printing.append(device)
            if device_config.idle:
                idle.add(device.dev_id)
        devices = world.devices_of(account.uid)
        count = account_config.tasks if account_config.tasks is not None else 7 * len(devices)
        drafts.extend(_drafts(account.uid, devices, count, anchor, rng))

    names = set()
    for device_config in config.bindable:
        device = _device(device_config, rng, None, used_serials, names)
        world.devices[device.dev_id] = device

    drafts.extend(_running_draft(device, anchor, rng) for device in printing)
    _tasks(world, drafts, anchor)
    for device in world.devices.values():
        _settle_state(world, device, device.dev_id in idle)
    _public_settings(world, anchor)
    for account in world.accounts.values():
        _projects(world, account, anchor, rng)
        _messages(world, account, anchor, rng)
        _notifications(world, account, anchor, rng)
        _private_settings(world, account, anchor, rng)


# --- accounts and devices ----------------------------------------------------


def _account(config: AccountConfig, index: int, anchor: float, rng: random.Random) -> Account:
    uid = config.uid or 1_873_420_516 + index
    handle = config.handle or (config.email or f"user{uid}").split("@")[0]
    secret = config.tfa_secret
    if config.mode == "tfa" and not secret:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
        secret = "".join(rng.choice(alphabet) for _ in range(32))
    return Account(
        uid=uid,
        email=config.email,
        phone=config.phone,
        password=config.password,
        mode=config.mode,
        name=config.name or handle,
        handle=handle,
        bio="Printing things, mostly benchies.",
        avatar=f"/sim-cdn/avatars/{uid}.png",
        create_time=anchor - (400 + index * 37) * DAY,
        tfa_secret=secret,
        demo=config.demo,
    )


def _serial(model: PrinterModel, rng: random.Random, used: set[str]) -> str:
    # Prefix (3) + production code (3) + unit number (9) = 15 characters,
    # e.g. 00M09A350100001.
    while True:
        serial = (
            f"{model.serial_prefix}{rng.randint(0, 9):02d}{rng.choice('ABC')}"
            f"{rng.randint(30, 47):02d}{rng.randint(0, 9_999_999):07d}"
        )
        if serial not in used:
            used.add(serial)
            return serial


def _device(
    config: DeviceConfig,
    rng: random.Random,
    owner: int | None,
    used_serials: set[str],
    names: set[str],
) -> Device:
    model = MODELS[config.model]
    dev_id = config.dev_id or _serial(model, rng, used_serials)
    used_serials.add(dev_id)
    name = config.name or _free_name(model.product, names)
    names.add(name)
    access_code = config.access_code or f"{rng.randrange(10**8):08d}"
    bind_code = config.bind_code or "".join(
        rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(8)
    )
    ams = _ams_units(model, config.ams_units, rng)
    return Device(
        dev_id=dev_id,
        name=name,
        model=model,
        access_code=access_code,
        access_code_newline=config.access_code_newline,
        online=config.online,
        state="IDLE",  # settled after the history exists
        nozzle_diameter=config.nozzle_diameter,
        owner=owner,
        bind_code=bind_code,
        ams=ams,
        firmware=_firmware(model, dev_id, config.outdated, ams, rng),
    )


def _free_name(product: str, names: set[str]) -> str:
    number = 1
    while f"{product} {number}" in names:
        number += 1
    return f"{product} {number}"


def _ams_units(model: PrinterModel, count: int | None, rng: random.Random) -> list[AmsUnit]:
    kinds: list[AmsKind]
    if count is None:
        kinds = list(model.ams_kinds)
    else:
        kinds = [model.ams_kinds[0]] * count if model.ams_kinds else []
    units: list[AmsUnit] = []
    next_id = {"regular": 0, "ht": 128}
    for kind in kinds:
        group = "ht" if kind == "n3s" else "regular"
        unit_id = next_id[group]
        next_id[group] += 1
        hw_ver, sw_ver, slots = AMS_HARDWARE[kind]
        humidity_raw = rng.randint(12, 48)
        units.append(
            AmsUnit(
                id=unit_id,
                kind=kind,
                humidity=max(1, min(5, 5 - humidity_raw // 10)),
                humidity_raw=humidity_raw,
                temp=round(rng.uniform(22.0, 29.0), 1),
                sw_ver=sw_ver,
                hw_ver=hw_ver,
                sn=_hex(rng, 15).upper(),
                trays=[_tray(slot, rng) for slot in range(slots)],
            )
        )
    return units


def _tray(slot: int, rng: random.Random) -> Tray:
    if rng.random() < 0.12:
        return Tray(slot, "", "00000000", -1, "", "", 0, 0, "0" * 16, "0" * 32)
    filament = rng.choice(FILAMENTS)
    tagged = rng.random() < 0.8  # Bambu spools carry an RFID tag; others report -1
    return Tray(
        id=slot,
        tray_type=filament.tray_type,
        colour=rng.choice(COLOURS),
        remain=rng.randint(3, 100) if tagged else -1,
        info_idx=filament.info_idx,
        sub_brand=filament.sub_brand,
        temp_min=filament.temp_min,
        temp_max=filament.temp_max,
        tag_uid=_hex(rng, 16).upper() if tagged else "0" * 16,
        tray_uuid=_hex(rng, 32).upper() if tagged else "0" * 32,
    )


def _firmware(
    model: PrinterModel, dev_id: str, outdated: bool, ams: list[AmsUnit], rng: random.Random
) -> list[FirmwareModule]:
    version = model.previous_firmware if outdated else model.firmware
    modules = [FirmwareModule("ota", version, "OTA", dev_id)]
    for name, hw_ver in model.board_modules:
        modules.append(FirmwareModule(name, version, hw_ver, _hex(rng, 15).upper()))
    for unit in ams:
        modules.append(FirmwareModule(unit.module_name, unit.sw_ver, unit.hw_ver, unit.sn))
    return modules


def _hex(rng: random.Random, length: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(length))


# --- history -------------------------------------------------------------------


def _drafts(
    owner: int, devices: list[Device], count: int, anchor: float, rng: random.Random
) -> list[_Draft]:
    if not devices:
        return []
    drafts: list[_Draft] = []
    end = anchor - rng.randint(2, 6) * HOUR
    for _ in range(count):
        design = rng.choice(DESIGNS)
        planned = rng.randint(20, 300) * 60
        start = end - planned - rng.randint(1, 30) * HOUR
        drafts.append(
            _Draft(
                owner=owner,
                device=rng.choice(devices),
                design=design,
                start=start,
                planned=planned,
                failed=rng.random() < 0.15,
                running=False,
                rng_seed=rng.randrange(2**32),
            )
        )
        end = start
    return drafts


def _running_draft(device: Device, anchor: float, rng: random.Random) -> _Draft:
    # The print in progress: started 72 minutes ago, planned for 170 minutes.
    assert device.owner is not None
    return _Draft(
        owner=device.owner,
        device=device,
        design=DESIGNS[2],
        start=anchor - 72 * 60,
        planned=170 * 60,
        failed=False,
        running=True,
        rng_seed=rng.randrange(2**32),
    )


def _tasks(world: World, drafts: list[_Draft], anchor: float) -> None:
    # Ids follow start times across all accounts, so "newer" always means "larger id".
    drafts.sort(key=lambda d: d.start)
    for offset, draft in enumerate(drafts):
        task = _task(FIRST_TASK_ID + offset, draft)
        world.tasks[task.id] = task
        if draft.running:
            elapsed = anchor - draft.start
            draft.device.active = ActivePrint(
                task_id=task.id,
                title=task.title,
                progress=int(elapsed * 100 / draft.planned),
                start_time=draft.start,
                prediction=int(draft.planned - elapsed),
                model_id=task.model_id,
                profile_id=task.profile_id,
                cover=task.cover,
            )


def _task(task_id: int, draft: _Draft) -> Task:
    rng = random.Random(draft.rng_seed)
    title, design_id, plates = draft.design
    device = draft.device
    weight = round(draft.planned / 60 * rng.uniform(0.35, 0.9), 1)
    cost = draft.planned
    status = TASK_FINISHED
    if draft.running:
        status = TASK_CREATED
    elif draft.failed:
        status = TASK_FAILED
        cost = int(draft.planned * rng.uniform(0.05, 0.7))
    trays = [(unit, tray) for unit in device.ams for tray in unit.trays if tray.tray_type]
    use_ams = bool(trays) and rng.random() < 0.8
    mapping: list[dict[str, Any]] = []
    ams_mapping: list[int] = []
    if use_ams:
        chosen = rng.sample(trays, k=min(len(trays), rng.randint(1, 3)))
        for unit, tray in chosen:
            global_id = unit.id if unit.kind == "n3s" else unit.id * 4 + tray.id
            ams_mapping.append(global_id)
            mapping.append(
                {
                    "ams": global_id,
                    "sourceColor": tray.colour,
                    "targetColor": tray.colour,
                    "filamentId": tray.info_idx,
                    "filamentType": tray.tray_type,
                    "targetFilamentType": "",
                    "weight": round(weight / len(chosen), 2),
                }
            )
    return Task(
        id=task_id,
        owner=draft.owner,
        device_id=device.dev_id,
        device_name=device.name,
        device_model=device.model.product,
        design_id=design_id,
        design_title=title if design_id else "",
        model_id=f"US{_hex(rng, 14)}",
        title=title,
        cover=f"/sim-cdn/covers/{task_id}.png",
        status=status,
        start_time=draft.start,
        end_time=draft.start + (0 if draft.running else cost),
        weight=weight,
        length=int(weight * PLA_MM_PER_GRAM),
        cost_time=0 if draft.running else cost,
        profile_id=rng.randint(10_000_000, 99_999_999),
        plate_index=rng.randint(1, plates),
        bed_type=rng.choice(BED_TYPES),
        use_ams=use_ams,
        ams_detail_mapping=mapping,
        ams_mapping=ams_mapping,
    )


def _settle_state(world: World, device: Device, force_idle: bool) -> None:
    """Derive state and temperatures from the config flags and the newest task."""
    state: DeviceState
    if device.active is not None:
        state = "RUNNING"
    elif force_idle:
        state = "IDLE"
    else:
        newest = max(
            (t for t in world.tasks.values() if t.device_id == device.dev_id),
            key=lambda t: t.id,
            default=None,
        )
        state = _outcome(newest)
    device.state = state
    if state == "RUNNING" and device.online:
        device.nozzle_temp, device.bed_temp = 220.0, 55.0
    elif state in ("FINISH", "FAILED") and device.online:
        device.nozzle_temp, device.bed_temp = 31.0, 28.0
    else:
        device.nozzle_temp, device.bed_temp = 25.0, 24.0


def _outcome(newest: Task | None) -> DeviceState:
    if newest is None:
        return "IDLE"
    return "FAILED" if newest.status == TASK_FAILED else "FINISH"


# --- projects, inbox, settings -------------------------------------------------


def _projects(world: World, account: Account, anchor: float, rng: random.Random) -> None:
    count = 4 if account.demo else (1 if world.devices_of(account.uid) else 0)
    for number in range(count):
        title, _design_id, plates = DESIGNS[(number * 4 + account.uid) % len(DESIGNS)]
        project_id = str(60_000_000 + world.next_serial())
        created = anchor - rng.randint(3, 120) * DAY
        files: list[ProjectFile] = []
        for version in range(1 + number % 2):
            name = f"{title}.3mf" if version == 0 else f"{title} v{version + 1}.3mf"
            data = assets.three_mf(title, plates)
            key = f"projects/{project_id}/{name}"
            stored = world.store(key, data)
            files.append(
                ProjectFile(
                    file_id=str(70_000_000 + world.next_serial()),
                    name=name,
                    size=len(data),
                    key=key,
                    md5=stored.md5,
                )
            )
        world.projects[project_id] = Project(
            project_id=project_id,
            owner=account.uid,
            name=title,
            model_id=f"US{_hex(rng, 14)}",
            status="ACTIVE",
            create_time=created,
            update_time=created + rng.randint(0, 30) * DAY,
            cover=f"/sim-cdn/projects/{project_id}.png",
            files=files,
        )


_MESSAGE_TEMPLATES: tuple[tuple[int, str, str], ...] = (
    (1, "Welcome to Bambu Lab", "Thanks for joining. Bind a printer to get started."),
    (1, "New sign-in to your account", "A new device signed in to your account."),
    (2, "Print finished: {title}", "{title} finished on {device}."),
    (2, "Print failed: {title}", "{title} stopped on {device}. Check the printer."),
    (3, "Someone liked your print profile", "Your profile for {title} got a new like."),
    (3, "New comment on {title}", "A maker commented on your make of {title}."),
    (4, "You earned 20 points", "Points for sharing a print profile of {title}."),
    (4, "Featured this week", "Fresh models picked by the MakerWorld team."),
)


def _messages(world: World, account: Account, anchor: float, rng: random.Random) -> None:
    count = 30 if account.demo else 3
    devices = world.devices_of(account.uid)
    when = anchor - rng.randint(1, 5) * HOUR
    items: list[tuple[float, int, str, str]] = []
    for _ in range(count):
        kind, title, content = rng.choice(_MESSAGE_TEMPLATES)
        design = rng.choice(DESIGNS)[0]
        device = rng.choice(devices).name if devices else "your printer"
        items.append(
            (
                when,
                kind,
                title.format(title=design, device=device),
                content.format(title=design, device=device),
            )
        )
        when -= rng.randint(2, 40) * HOUR
    items.reverse()  # oldest first, so ids grow with time like task ids
    for position, (created, kind, title, content) in enumerate(items):
        message_id = 80_000_000 + world.next_serial()
        world.messages[message_id] = Message(
            id=message_id,
            owner=account.uid,
            type=kind,
            title=title,
            content=content,
            create_time=created,
            read=position < len(items) - 5,  # the five newest are unread
        )


_NOTIFICATION_TEMPLATES: tuple[tuple[str, str, str, str], ...] = (
    ("print", "print_finished", "Print finished", "{title} finished on {device}."),
    ("print", "print_failed", "Print failed", "{title} failed on {device}."),
    ("device", "firmware_update", "Firmware update available", "{device} can be updated."),
    ("device", "device_bind", "Printer bound", "{device} was bound to your account."),
    ("account", "login_alert", "New login", "Your account signed in from a new device."),
)


def _notifications(world: World, account: Account, anchor: float, rng: random.Random) -> None:
    count = 8 if account.demo else 2
    devices = world.devices_of(account.uid)
    for number in range(count):
        kind, action, title, content = _NOTIFICATION_TEMPLATES[
            number % len(_NOTIFICATION_TEMPLATES)
        ]
        device = rng.choice(devices).name if devices else "your printer"
        notification_id = 90_000_000 + world.next_serial()
        world.notifications[notification_id] = Notification(
            id=notification_id,
            owner=account.uid,
            type=kind,
            title=title,
            content=content.format(title=rng.choice(DESIGNS)[0], device=device),
            read=number >= 3,  # the first three are unread
            create_time=anchor - (count - number) * 7 * HOUR,
            action=action,
            ticket=f"TK{notification_id}",
        )


_SETTING_VERSION = "01.09.00.12"


def _public_settings(world: World, anchor: float) -> None:
    public = (
        ("GP004", "print", "0.20mm Standard @BBL X1C", "", None, {"layer_height": "0.2"}),
        ("GP005", "print", "0.16mm Optimal @BBL X1C", "", None, {"layer_height": "0.16"}),
        ("GP006", "print", "0.24mm Draft @BBL P1P", "", None, {"layer_height": "0.24"}),
        ("GM001", "printer", "Bambu Lab X1 Carbon 0.4 nozzle", "", None, {"printer_model": "X1C"}),
        ("GM014", "printer", "Bambu Lab P1S 0.4 nozzle", "", None, {"printer_model": "P1S"}),
        ("GFSA00", "filament", "Bambu PLA Basic @BBL X1C", "", "GFA00", {"filament_type": ["PLA"]}),
        ("GFSG02", "filament", "Bambu PETG HF @BBL X1C", "", "GFG02", {"filament_type": ["PETG"]}),
        ("GFSB00", "filament", "Bambu ABS @BBL X1C", "", "GFB00", {"filament_type": ["ABS"]}),
    )  # fmt: skip
    for setting_id, kind, name, base, filament_id, values in public:
        world.settings[setting_id] = SlicerSetting(
            setting_id=setting_id,
            name=name,
            type=kind,  # type: ignore[arg-type]
            version=_SETTING_VERSION,
            update_time=anchor - 90 * DAY,
            nickname="",
            base_id=base,
            filament_id=filament_id,
            owner=None,
            values={"from": "system", "inherits": "", **values},
        )


def _private_settings(world: World, account: Account, anchor: float, rng: random.Random) -> None:
    if not world.devices_of(account.uid):
        return
    private = (
        ("PPUS", "print", "0.20mm Strong @BBL X1C", "GP004", None, {"wall_loops": "4"}),
        ("PFUS", "filament", "My PETG @BBL P1S", "GFSG02", "GFG02", {"nozzle_temp": ["245"]}),
        ("PFUS", "filament", "Silk PLA @BBL X1C", "GFSA00", "GFA00", {"nozzle_temp": ["225"]}),
        ("PMUS", "printer", "X1C 0.4 tuned", "GM001", None, {"z_offset": "0.02"}),
    )  # fmt: skip
    count = len(private) if account.demo else 1
    for prefix, kind, name, base, filament_id, values in private[:count]:
        setting_id = f"{prefix}{_hex(rng, 12)}"
        world.settings[setting_id] = SlicerSetting(
            setting_id=setting_id,
            name=name,
            type=kind,  # type: ignore[arg-type]
            version=_SETTING_VERSION,
            update_time=anchor - rng.randint(1, 60) * DAY,
            nickname=name.split(" @")[0],
            base_id=base,
            filament_id=filament_id,
            owner=account.uid,
            values={"from": "User", "inherits": world.settings[base].name, **values},
        )
