"""Slicer presets and resources (PROTOCOL.md §1.2, [field]).

Public presets belong to nobody and cannot be deleted (403); private ones
are visible only to their owner, and another account's preset is simply
"not found".
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from ..clock import iso
from ..errors import forbidden, not_found
from ..records import SlicerSetting
from ..wire import absolute, old
from ..world import World
from .deps import AccountDep, BaseUrlDep, WorldDep

router = APIRouter(tags=["slicer"])

SOFTWARE_VERSION = "02.01.01.52"
RESOURCES: tuple[tuple[str, str, str], ...] = (
    ("slicer/plugins/cloud", "02.01.01.52", "Bambu network plug-in"),
    ("slicer/printer/bbl", "02.01.00.10", "Bambu printer presets"),
    ("slicer/hms", "02.00.00.20", "HMS error texts"),
)


@router.get("/v1/iot-service/api/slicer/setting")
async def settings(
    account: AccountDep, world: WorldDep, version: str | None = None
) -> JSONResponse:
    """Every preset the caller can see, grouped by type and public/private."""
    del version  # real clients always send their slicer version; the list does not vary
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {
        kind: {"public": [], "private": []} for kind in ("print", "printer", "filament")
    }
    for setting in world.settings.values():
        if setting.owner is None:
            grouped[setting.type]["public"].append(_item(setting))
        elif setting.owner == account.uid:
            grouped[setting.type]["private"].append(_item(setting, world))
    return old(grouped)


@router.get("/v1/iot-service/api/slicer/setting/{setting_id}")
async def setting(setting_id: str, account: AccountDep, world: WorldDep) -> JSONResponse:
    """One preset with its values."""
    item = _visible(world, setting_id, account.uid)
    return old({**_item(item, world), "type": item.type, "setting": item.values})


@router.delete("/v1/iot-service/api/slicer/setting/{setting_id}")
async def delete_setting(setting_id: str, account: AccountDep, world: WorldDep) -> JSONResponse:
    """Delete one of the caller's private presets."""
    item = _visible(world, setting_id, account.uid)
    if item.owner is None:
        raise forbidden("public presets cannot be deleted")
    del world.settings[item.setting_id]
    return old()


@router.get("/v1/iot-service/api/slicer/resource")
async def resources(
    account: AccountDep,
    base: BaseUrlDep,
    kind: Annotated[str | None, Query(alias="type")] = None,
) -> JSONResponse:
    """Download locations of the slicer and its plug-ins."""
    del account
    items = [
        {
            "type": name,
            "version": version,
            "url": absolute(base, f"/sim-cdn/resources/{name.replace('/', '_')}-{version}.zip"),
            "description": description,
        }
        for name, version, description in RESOURCES
        if not kind or name == kind
    ]
    return old(
        {
            "software": {
                "version": SOFTWARE_VERSION,
                "url": absolute(base, f"/sim-cdn/software/BambuStudio-{SOFTWARE_VERSION}.zip"),
                "description": "Bambu Studio",
            },
            "resources": items,
        }
    )


def _visible(world: World, setting_id: str, uid: int) -> SlicerSetting:
    item = world.settings.get(setting_id)
    if item is None or (item.owner is not None and item.owner != uid):
        raise not_found("Setting not found")
    return item


# Nozzle temperature range (°C) by filament type, for presets whose values do not say.
NOZZLE_RANGES = {"PLA": (190, 230), "PETG": (230, 260), "ABS": (240, 270), "TPU": (200, 250)}


def _item(item: SlicerSetting, world: World | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "setting_id": item.setting_id,
        "name": item.name,
        "version": item.version,
        "update_time": iso(item.update_time),
        "nickname": item.nickname,
        "base_id": item.base_id,
    }
    if item.filament_id is not None:
        data["filament_id"] = item.filament_id
    if item.type == "filament" and item.owner is not None:
        data.update(_filament_keys(item, world))
    return data


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _filament_keys(item: SlicerSetting, world: World | None) -> dict[str, Any]:
    """What a private filament preset carries in the list besides its ids.

    Observed in the real list (a widely used integration documents one):
    ``filament_type``, ``filament_is_support`` ("0"/"1"), ``nozzle_temperature``
    ([low, high], ints), ``nozzle_hrc`` and ``filament_vendor``; that
    integration does not finish its cloud set-up without them. Values come
    from the preset, else from the public preset it inherits from.
    """
    base = world.settings.get(item.base_id) if world is not None and item.base_id else None
    values = {**(base.values if base is not None else {}), **item.values}
    kind = str(_first(values.get("filament_type")) or "PLA")
    low, high = NOZZLE_RANGES.get(kind.split("-")[0], (190, 250))
    low = int(_first(values.get("nozzle_temperature_range_low")) or low)
    high = int(_first(values.get("nozzle_temperature_range_high")) or high)
    support = kind.endswith("-S") or "Support" in item.name
    vendor = _first(values.get("filament_vendor")) or (
        "Bambu Lab" if item.name.startswith("Bambu") else "Generic"
    )
    return {
        "filament_type": kind,
        "filament_is_support": "1" if support else "0",
        "nozzle_temperature": [low, high],
        "nozzle_hrc": str(_first(values.get("required_nozzle_HRC")) or 3),
        "filament_vendor": str(vendor),
    }
