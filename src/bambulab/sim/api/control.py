"""The simulator's own endpoints under ``/sim/``: health, outbox, faults, clock, devices.

No authentication: they exist for tests and for a person driving the demo,
and they only ever run on loopback. Faults never apply to them, so whatever
a test breaks it can repair.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .. import totp
from ..clock import iso
from ..errors import bad_request
from ..faults import parse_fault
from ..records import Device
from ..wire import access_code_wire
from ..world import World, normalize_login
from .deps import WorldDep

router = APIRouter(prefix="/sim", tags=["simulator"])

OUTBOX_KINDS = ("email", "sms", "tfa")


@router.get("/health")
async def health() -> JSONResponse:
    """Liveness."""
    return JSONResponse({"ok": True})


@router.get("/outbox")
async def outbox(
    world: WorldDep, account: str | None = None, kind: str | None = None
) -> JSONResponse:
    """Codes "sent" so far (newest last); ``kind=tfa`` shows the current authenticator code."""
    if kind is not None and kind not in OUTBOX_KINDS:
        raise bad_request(f"kind must be one of {', '.join(OUTBOX_KINDS)}")
    if kind == "tfa":
        return JSONResponse({"messages": _authenticator(world, account)})
    wanted = normalize_login(account) if account else None
    messages = [
        {
            "to": m.to,
            "kind": m.kind,
            "code": m.code,
            "sent_at": iso(m.sent_at),
            "expires_at": iso(m.expires_at),
        }
        for m in world.outbox
        if (wanted is None or normalize_login(m.to) == wanted) and (kind is None or m.kind == kind)
    ]
    return JSONResponse({"messages": messages})


@router.post("/faults")
async def arm_fault(request: Request, world: WorldDep) -> JSONResponse:
    """Arm a fault for the next ``count`` matching requests."""
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("body must be JSON") from None
    world.faults.arm(parse_fault(body))
    return JSONResponse({"ok": True, "faults": world.faults.pending()})


@router.get("/faults")
async def list_faults(world: WorldDep) -> JSONResponse:
    """Faults still armed."""
    return JSONResponse({"faults": world.faults.pending()})


@router.delete("/faults")
async def clear_faults(world: WorldDep) -> JSONResponse:
    """Disarm every fault."""
    return JSONResponse({"ok": True, "cleared": world.faults.clear()})


@router.get("/clock")
async def clock(world: WorldDep) -> JSONResponse:
    """Simulated time and its offset from real time."""
    return JSONResponse(_clock(world))


@router.post("/clock")
async def advance_clock(request: Request, world: WorldDep) -> JSONResponse:
    """``{"advance": seconds}`` moves simulated time forward."""
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("body must be JSON") from None
    seconds = body.get("advance") if isinstance(body, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise bad_request("advance must be a non-negative number of seconds")
    world.clock.advance(float(seconds))
    return JSONResponse(_clock(world))


@router.get("/devices")
async def devices(world: WorldDep) -> JSONResponse:
    """Every printer with owner, bind code and access code: what a person could read off it."""
    return JSONResponse({"devices": [_device(world, d) for d in world.devices.values()]})


def _authenticator(world: World, login: str | None) -> list[dict[str, Any]]:
    account = world.find_account(login or "")
    if account is None or not account.tfa_secret:
        return []
    now = world.clock.now()
    start, end = totp.step_bounds(now)
    return [
        {
            "to": account.login,
            "kind": "tfa",
            "code": totp.totp(account.tfa_secret, now),
            "sent_at": iso(start),
            "expires_at": iso(end),
        }
    ]


def _clock(world: World) -> dict[str, Any]:
    now = world.clock.now()
    return {"now": iso(now), "unix": now, "offset": world.clock.offset}


def _device(world: World, device: Device) -> dict[str, Any]:
    owner = world.accounts.get(device.owner) if device.owner is not None else None
    return {
        "dev_id": device.dev_id,
        "name": device.name,
        "model": device.model.key,
        "dev_model_name": device.model.model_name,
        "owner": owner.login if owner else None,
        "bind_code": None if owner else device.bind_code,
        "access_code": device.access_code,
        "dev_access_code": access_code_wire(device),
        "online": device.online,
        "state": device.state,
        "firmware": {m.name: m.sw_ver for m in device.firmware},
        "ams": [
            {
                "id": unit.id,
                "kind": unit.kind,
                "humidity": unit.humidity,
                "temp": unit.temp,
                "trays": [
                    {
                        "id": tray.id,
                        "tray_type": tray.tray_type,
                        "tray_color": tray.colour,
                        "remain": tray.remain,
                    }
                    for tray in unit.trays
                ],
            }
            for unit in device.ams
        ],
    }
