"""Device endpoints: the bind list, binding, device info, rename, firmware, camera.

A device that does not exist and a device of another account answer the same
404 with code 1003, as the cloud does: the API never confirms that someone
else's serial exists. Unbinding puts a printer back into the pool that
``POST bind`` can claim with its bind code (see ``GET /sim/devices``).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from ..errors import SimError, bad_request, device_not_found
from ..records import Account, AmsUnit, Device, FirmwareModule
from ..wire import device_summary, old
from ..world import World
from .deps import AccountDep, BaseUrlDep, WorldDep

log = logging.getLogger("bambulab.sim")
router = APIRouter(tags=["devices"])

NAME_MAX = 32
RELEASE_NOTES = (
    "Improved first-layer inspection; faster AMS filament changes; fixes for rare MQTT disconnects."
)


class BindBody(BaseModel):
    """``{device_id, device_name, bind_code}``."""

    model_config = ConfigDict(extra="allow")
    device_id: str
    device_name: str | None = None
    bind_code: str


class RenameBody(BaseModel):
    """``{dev_id, name}``."""

    model_config = ConfigDict(extra="allow")
    dev_id: str
    name: str


class TtcodeBody(BaseModel):
    """``{dev_id}``."""

    model_config = ConfigDict(extra="allow")
    dev_id: str


@router.get("/v1/iot-service/api/user/bind")
async def bound_devices(account: AccountDep, world: WorldDep, base: BaseUrlDep) -> JSONResponse:
    """Every printer bound to the caller."""
    return old({"devices": [device_summary(d, base) for d in world.devices_of(account.uid)]})


@router.post("/v1/iot-service/api/user/bind")
async def bind(body: BindBody, account: AccountDep, world: WorldDep) -> JSONResponse:
    """Claim an unbound printer with the code its screen shows."""
    device = world.devices.get(body.device_id.strip())
    if device is None:
        raise device_not_found()
    if device.owner is not None and device.owner != account.uid:
        raise bad_request("Device is bound to another account")
    if device.owner is None:
        if body.bind_code.strip().upper() != device.bind_code.upper():
            raise SimError(400, 1, "Bind code incorrect")
        world.set_owner(device, account.uid)
        log.info("bind: %s bound to %s", device.dev_id, account.login)
    if body.device_name is not None:
        device.name = _valid_name(body.device_name)
    return old({"dev_id": device.dev_id, "name": device.name})


@router.delete("/v1/iot-service/api/user/bind")
async def unbind(dev_id: str, account: AccountDep, world: WorldDep) -> JSONResponse:
    """Release a printer; it returns to the bindable pool."""
    device = world.owned_device(account.uid, dev_id)
    world.set_owner(device, None)
    log.info("bind: %s unbound from %s", device.dev_id, account.login)
    return old()


@router.get("/v1/iot-service/api/user/device/info")
async def device_info(device_id: str, account: AccountDep, world: WorldDep) -> JSONResponse:
    """One printer's state as the cloud last heard it."""
    device = world.owned_device(account.uid, device_id)
    return old(_info(device))


@router.patch("/v1/iot-service/api/user/device/info")
async def rename(body: RenameBody, account: AccountDep, world: WorldDep) -> JSONResponse:
    """Rename a printer (1-32 characters)."""
    device = world.owned_device(account.uid, body.dev_id)
    device.name = _valid_name(body.name)
    return old({"dev_id": device.dev_id, "name": device.name})


@router.get("/v1/iot-service/api/user/device/version")
async def firmware(account: AccountDep, world: WorldDep, dev_id: str | None = None) -> JSONResponse:
    """Firmware of one printer (``dev_id``) or of all the caller's printers."""
    devices = (
        [world.owned_device(account.uid, dev_id)]
        if dev_id is not None
        else world.devices_of(account.uid)
    )
    single = devices[0] if dev_id is not None else None
    update = any(d.firmware_version != d.model.firmware for d in devices)
    return old(
        {
            "current_version": single.firmware_version if single else "",
            "latest_version": single.model.firmware if single else "",
            "update_available": update,
            "release_notes": RELEASE_NOTES if update else "",
            "devices": [_version_entry(device) for device in devices],
        }
    )


@router.post("/v1/iot-service/api/user/ttcode")
async def ttcode(body: TtcodeBody, account: AccountDep, world: WorldDep) -> JSONResponse:
    """Fresh P2P camera credentials (TUTK) for a printer."""
    device = world.owned_device(account.uid, body.dev_id)
    return old(_camera_credentials(world, account, device))


# --- helpers ---------------------------------------------------------------------


def _valid_name(name: str) -> str:
    cleaned = name.strip()
    if not 1 <= len(cleaned) <= NAME_MAX:
        raise bad_request(f"name must be 1-{NAME_MAX} characters")
    return cleaned


def _version_entry(device: Device) -> dict[str, Any]:
    """One device of ``/user/device/version``: its modules, its version, its AMS units.

    ``firmware`` lists every module (PROTOCOL.md §1.2 "per-device module list
    incl. AMS sw_ver/hw_ver"); ``version`` is what users call the firmware
    (the ``ota`` module) and ``ams`` one entry per unit with its own module
    versions (Bambu Studio's ``get_firmware_info`` reads a per-device ``ams``
    list, each entry with a ``firmware`` list of offered updates).
    """
    modules = {m.name: m for m in device.firmware}
    return {
        "dev_id": device.dev_id,
        "dev_model_name": device.model.model_name,
        "version": device.firmware_version,
        "firmware": [
            {"name": m.name, "sw_ver": m.sw_ver, "hw_ver": m.hw_ver, "sn": m.sn}
            for m in device.firmware
        ],
        "ams": [_ams_version(unit, modules.get(unit.module_name)) for unit in device.ams],
    }


def _ams_version(unit: AmsUnit, module: FirmwareModule | None) -> dict[str, Any]:
    return {
        "ams_id": str(unit.id),
        "name": unit.module_name,
        "sw_ver": module.sw_ver if module is not None else unit.sw_ver,
        "hw_ver": module.hw_ver if module is not None else unit.hw_ver,
        "sn": unit.sn,
        "firmware": [],  # updates on offer: the simulated AMS firmware is current
    }


def _info(device: Device) -> dict[str, Any]:
    return {
        "device_id": device.dev_id,
        "device_name": device.name,
        "model": device.model.product,
        "dev_model_name": device.model.model_name,
        "dev_product_name": device.model.product,
        "status": device.state if device.online else "OFFLINE",
        "print_status": device.print_status,
        "online": device.online,
        "firmware_version": device.firmware_version,
        "nozzle_temp": device.nozzle_temp,
        "bed_temp": device.bed_temp,
        "nozzle_diameter": device.nozzle_diameter,
        "dev_structure": device.model.structure,
    }


def _camera_credentials(world: World, account: Account, device: Device) -> dict[str, Any]:
    alphabet = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
    now = int(world.clock.now())
    return {
        "ttcode": "".join(secrets.choice(alphabet) for _ in range(20)),
        "authkey": secrets.token_hex(4),
        "passwd": f"{secrets.randbelow(10**6):06d}",
        "region": "us",
        "type": "tutk",
        "streams": [
            {"channel": 0, "type": "video", "codec": "h264", "resolution": "1920x1080"},
        ],
        "peers": [{"dev_id": device.dev_id, "role": "device", "online": device.online}],
        "stream_key": secrets.token_hex(16),
        "stream_salt": secrets.token_hex(8),
        "channel_name": f"bbl_{device.dev_id}",
        "app_id": "bambu-sim-p2p",
        "rtm": {"uid": str(account.uid), "token": secrets.token_hex(16), "expire": now + 3600},
    }
