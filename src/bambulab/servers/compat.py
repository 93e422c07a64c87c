"""The legacy compatibility API: the seed's ``/api/v1`` endpoints in the seed's JSON shape.

Home Assistant, OctoPrint-style and home-made integrations written for the
old local API read ``print.push_status``-style bodies (``mc_percent``,
``nozzle_temper``, ``gcode_state``...). This part serves them **live** from
the server's hub (the merged report of each printer, one MQTT connection for
all), and falls back on the cloud API (``GET /v1/iot-service/api/user/print``
with the server's account token) for a printer that has not reported since
the server started; fields the cloud does not give keep the seed's defaults.

* ``GET /api/version``: what this API is (no token: it says nothing about printers).
* ``GET /api/v1/status`` (``?device_id=``): one printer's legacy body, or every
  printer the token may see keyed by serial; ``GET /api/v1/print`` is the same.
* ``GET /api/v1/devices``: the printers, in the seed's ``Device`` shape. The
  access code is never served (``dev_access_code`` is always empty).
* ``POST /api/v1/printers/{serial}/pause|resume|stop|light`` (``control``
  token): what such integrations need to act; the answer is the printer's reply.

Every read needs a ``read`` token (``Authorization: Bearer``; legacy clients
can send a header). ``/`` and ``/health`` belong to every server (see
:mod:`bambulab.servers.app`). Who may see what follows the live API: a
printer outside the token's allowlist is 403 whether or not it exists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict

from ..errors import BambuError
from .api_v2 import (
    BEARER,
    COMMAND_ERRORS,
    ERRORS,
    PRINTER_ERRORS,
    SERIAL,
    command_routes,
    json_response,
    need_hub,
)
from .common import ApiError
from .runner import one_line

if TYPE_CHECKING:
    from ..cloud.client import AsyncBambuClient
    from ..models.cloud import Device, PrintStatus
    from ..models.state import PrinterState
    from .app import ServerContext
    from .live import LiveHub

__all__ = ["LegacyDevice", "LegacyPrint", "LegacyStatus", "compat_routes", "legacy_body"]

log = logging.getLogger("bambulab.servers.compat")

API_VERSION = "1.0.0"
CLOUD_TTL = 5.0  # seconds a cloud answer is reused (integrations poll every few seconds)
DEVICES_TTL = 30.0
CLOUD_TIMEOUT = 10.0

# gcode_state -> the cloud's print_status words (what the seed's clients saw there).
PRINT_STATUS = {
    "RUNNING": "ACTIVE",
    "PREPARE": "ACTIVE",
    "PAUSE": "ACTIVE",
    "SLICING": "ACTIVE",
    "FINISH": "SUCCESS",
    "FAILED": "FAILED",
    "IDLE": "IDLE",
}


DeviceQuery = Annotated[
    str | None,
    Query(description="One printer's serial (else every printer)", pattern=SERIAL, max_length=64),
]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LegacyPrint(_Out):
    """The seed's ``print`` object (a ``push_status`` report, flattened to these keys)."""

    command: str
    msg: int
    sequence_id: str
    mc_percent: int
    mc_remaining_time: int
    print_type: str
    print_status: str
    gcode_state: str
    gcode_file: str
    subtask_name: str
    nozzle_temper: float
    nozzle_target_temper: float
    bed_temper: float
    bed_target_temper: float
    chamber_temper: float
    spd_mag: int
    spd_lvl: int
    layer_num: int
    total_layer_num: int
    ams_status: int
    ams_rfid_status: int
    lights_report: list[dict[str, Any]]
    fan_gear: int
    wifi_signal: str
    dev_id: str
    name: str
    online: bool


class LegacyStatus(_Out):
    """One printer's legacy status: ``{"print": {...}}``."""

    print: LegacyPrint


class LegacyDevice(_Out):
    """A printer in the seed's ``Device.to_dict()`` shape (the access code is never served)."""

    dev_id: str
    name: str
    online: bool
    print_status: str
    dev_model_name: str
    dev_product_name: str
    dev_access_code: str
    nozzle_diameter: float
    dev_structure: str


class LegacyDevices(_Out):
    devices: list[LegacyDevice]


class VersionOut(_Out):
    api_version: str
    compatibility_layer: bool
    supported_clients: list[str]


STATUS_EXAMPLE = {
    "print": {
        "command": "push_status",
        "msg": 0,
        "sequence_id": "1764590000",
        "mc_percent": 42,
        "mc_remaining_time": 37,
        "print_type": "cloud",
        "print_status": "ACTIVE",
        "gcode_state": "RUNNING",
        "gcode_file": "benchy.gcode.3mf",
        "subtask_name": "benchy",
        "nozzle_temper": 219.8,
        "nozzle_target_temper": 220.0,
        "bed_temper": 55.1,
        "bed_target_temper": 55.0,
        "chamber_temper": 30.0,
        "spd_mag": 100,
        "spd_lvl": 2,
        "layer_num": 51,
        "total_layer_num": 120,
        "ams_status": 768,
        "ams_rfid_status": 6,
        "lights_report": [{"node": "chamber_light", "mode": "on"}],
        "fan_gear": 0,
        "wifi_signal": "-45dBm",
        "dev_id": "01P00A000000001",
        "name": "Workshop P1S",
        "online": True,
    }
}


# --- the legacy body ----------------------------------------------------------------------


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) < 2**53:
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value.strip()))
        except (ValueError, OverflowError):
            return default
    return default


def _float(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool):
        return default
    if isinstance(value, (int, float)):
        number = float(value)
        return number if number == number and abs(number) != float("inf") else default
    if isinstance(value, str):
        try:
            return _float(float(value.strip()), default)
        except ValueError:
            return default
    return default


def _str(value: Any, default: str = "") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return default


def _lights(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [dict(item) for item in value if isinstance(item, Mapping)]


def _print_status(gcode_state: str) -> str:
    return PRINT_STATUS.get(gcode_state.upper(), gcode_state.upper() or "UNKNOWN")


def legacy_body(
    raw: Mapping[str, Any],
    *,
    dev_id: str,
    name: str,
    online: bool,
    typed: PrinterState | None = None,
) -> dict[str, Any]:
    """The seed's ``{"print": {...}}`` of a ``push_status``-style ``raw`` report.

    Wire values pass through with the seed's defaults for what is missing and
    the declared types enforced (a printer that sends a number as text does
    not break the shape). ``typed``: the printer's state, for the temperatures
    of printers that report them only in the ``device`` block (H2D...).
    """

    def temp(key: str, fallback: float | None) -> float:
        if key in raw:
            return _float(raw[key])
        return fallback if fallback is not None else 0.0

    gcode_state = _str(raw.get("gcode_state"))
    return {
        "print": {
            "command": "push_status",
            "msg": 0,
            "sequence_id": str(int(time.time())),
            "mc_percent": _int(raw.get("mc_percent")),
            "mc_remaining_time": _int(raw.get("mc_remaining_time")),
            "print_type": _str(raw.get("print_type")),
            "print_status": _print_status(gcode_state),
            "gcode_state": gcode_state,
            "gcode_file": _str(raw.get("gcode_file")),
            "subtask_name": _str(raw.get("subtask_name")),
            "nozzle_temper": temp("nozzle_temper", typed.nozzle_temp if typed else None),
            "nozzle_target_temper": temp(
                "nozzle_target_temper", typed.nozzle_target if typed else None
            ),
            "bed_temper": temp("bed_temper", typed.bed_temp if typed else None),
            "bed_target_temper": temp("bed_target_temper", typed.bed_target if typed else None),
            "chamber_temper": temp("chamber_temper", typed.chamber_temp if typed else None),
            "spd_mag": _int(raw.get("spd_mag"), 100),
            "spd_lvl": _int(raw.get("spd_lvl"), 2),
            "layer_num": _int(raw.get("layer_num")),
            "total_layer_num": _int(raw.get("total_layer_num")),
            "ams_status": _int(raw.get("ams_status")),
            "ams_rfid_status": _int(raw.get("ams_rfid_status")),
            "lights_report": _lights(raw.get("lights_report")),
            "fan_gear": _int(raw.get("fan_gear")),
            "wifi_signal": _str(raw.get("wifi_signal"), "-50dBm"),
            "dev_id": dev_id,
            "name": name,
            "online": online,
        }
    }


def cloud_body(status: PrintStatus) -> dict[str, Any]:
    """The legacy body of a printer known only from the cloud's ``/user/print`` entry."""
    raw = {
        "mc_percent": status.progress,
        "gcode_state": status.task_status,
        "subtask_name": status.task_name,
    }
    return legacy_body(
        {k: v for k, v in raw.items() if v is not None},
        dev_id=status.dev_id,
        name=status.dev_name,
        online=status.dev_online,
    )


# --- the cloud fallback ---------------------------------------------------------------------


class CloudFallback:
    """The cloud API with the server's account token, answers reused for a few seconds.

    One request at a time per kind: integrations polling many printers at
    once share one upstream call instead of each making their own.
    """

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._client: AsyncBambuClient | None = None
        self._status: tuple[float, dict[str, PrintStatus]] | None = None
        self._devices: tuple[float, dict[str, Device]] | None = None
        self._lock = asyncio.Lock()

    def client(self) -> AsyncBambuClient:
        if not self.ctx.cloud_url or not self.ctx.account_token:
            raise ApiError(503, "this server has no cloud API configured to fall back on")
        if self._client is None:
            from ..cloud.client import AsyncBambuClient

            self._client = AsyncBambuClient(
                self.ctx.account_token, base_url=self.ctx.cloud_url, timeout=CLOUD_TIMEOUT
            )
        return self._client

    async def print_status(self) -> dict[str, PrintStatus]:
        """The cloud's ``/user/print?force=true``, by serial (ApiError 502 if it fails)."""
        async with self._lock:
            now = time.monotonic()
            if self._status is not None and now - self._status[0] < CLOUD_TTL:
                return self._status[1]
            try:
                found = await self.client().get_print_status(force=True)
            except BambuError as exc:
                raise ApiError(502, f"the cloud API did not answer: {one_line(exc)}") from None
            self._status = (time.monotonic(), {s.dev_id: s for s in found})
            return self._status[1]

    async def devices(self) -> dict[str, Device]:
        """The account's printers (``/user/bind``), by serial (ApiError 502 if it fails)."""
        async with self._lock:
            now = time.monotonic()
            if self._devices is not None and now - self._devices[0] < DEVICES_TTL:
                return self._devices[1]
            try:
                found = await self.client().get_devices()
            except BambuError as exc:
                raise ApiError(502, f"the cloud API did not answer: {one_line(exc)}") from None
            self._devices = (time.monotonic(), {d.dev_id: d for d in found})
            return self._devices[1]

    def forget(self) -> None:
        """Drop the answers kept: the next read asks the cloud again."""
        self._status = None
        self._devices = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


# --- the router ----------------------------------------------------------------------------


def compat_routes(ctx: ServerContext) -> APIRouter:
    """The ``compat`` part (see the module)."""
    router = APIRouter(tags=["compat"])
    cloud = CloudFallback(ctx)
    ctx.on_stop.append(cloud.aclose)
    ctx.extra["compat_cloud"] = cloud

    def live_body(hub: LiveHub, serial: str) -> dict[str, Any] | None:
        state = hub.state(serial)
        if state is None:
            return None
        entry = hub.entry(serial)
        return legacy_body(
            state.raw,
            dev_id=serial,
            name=entry.name if entry else "",
            online=hub.online(serial),
            typed=state,
        )

    async def status(request: Request, device_id: str | None) -> Response:
        token = await ctx.gate.check(request, "read", device_id)
        hub = need_hub(ctx)
        if device_id is not None:
            if hub.entry(device_id) is None:
                raise ApiError(404, "Device not found")
            body = live_body(hub, device_id)
            if body is None:
                found = (await cloud.print_status()).get(device_id)
                if found is None:
                    raise ApiError(404, "Device not found")
                body = cloud_body(found)
            return json_response(body)
        every: dict[str, Any] = {}
        missing: list[str] = []
        for entry in hub.printers():
            if token.printers and entry.serial not in token.printers:
                continue
            body = live_body(hub, entry.serial)
            if body is None:
                missing.append(entry.serial)
            every[entry.serial] = body
        if missing:
            try:
                known = await cloud.print_status()
            except ApiError as exc:  # the live ones are still worth serving
                log.warning("compat cloud fallback failed: %s", exc.detail)
                known = {}
            for serial in missing:
                if serial in known:
                    every[serial] = cloud_body(known[serial])
                else:
                    del every[serial]  # the seed leaves out what it cannot tell
        return json_response(every)

    status_responses: dict[int | str, dict[str, Any]] = {
        **PRINTER_ERRORS,
        502: {"description": "The printer has not reported and the cloud API did not answer"},
        200: {
            "description": "One printer's body (with device_id), else every printer's by serial",
            "content": {"application/json": {"example": STATUS_EXAMPLE}},
        },
    }

    @router.get(
        "/api/version",
        summary="What this API is (the seed's legacy version endpoint)",
        response_model=VersionOut,
    )
    async def api_version() -> VersionOut:
        return VersionOut(
            api_version=API_VERSION,
            compatibility_layer=True,
            supported_clients=["Home Assistant", "Octoprint", "Repetier", "Custom integrations"],
        )

    @router.get(
        "/api/v1/status",
        dependencies=[BEARER],
        summary="Legacy printer status (push_status shape), live",
        response_model=LegacyStatus | dict[str, LegacyStatus],
        responses=status_responses,
    )
    async def get_status(request: Request, device_id: DeviceQuery = None) -> Response:
        return await status(request, device_id)

    @router.get(
        "/api/v1/print",
        dependencies=[BEARER],
        summary="Legacy print status (the same as /api/v1/status)",
        response_model=LegacyStatus | dict[str, LegacyStatus],
        responses=status_responses,
    )
    async def get_print(request: Request, device_id: DeviceQuery = None) -> Response:
        return await status(request, device_id)

    @router.get(
        "/api/v1/devices",
        dependencies=[BEARER],
        summary="The printers, in the seed's Device shape",
        response_model=LegacyDevices,
        responses=ERRORS,
    )
    async def devices(request: Request) -> Response:
        token = await ctx.gate.check(request, "read")
        hub = need_hub(ctx)
        try:
            known = await cloud.devices()
        except ApiError as exc:  # the hub still knows serials, names and models
            log.warning("compat cloud devices failed: %s", exc.detail)
            known = {}
        rows = []
        for entry in hub.printers():
            if token.printers and entry.serial not in token.printers:
                continue
            device = known.get(entry.serial)
            state = hub.state(entry.serial)
            live_status = _print_status(state.gcode_state) if state is not None else None
            rows.append(
                {
                    "dev_id": entry.serial,
                    "name": entry.name or (device.name if device else "") or "Unknown",
                    "online": hub.online(entry.serial) or bool(device and device.online),
                    "print_status": live_status
                    or (device.print_status if device else "")
                    or "UNKNOWN",
                    "dev_model_name": entry.model or (device.dev_model_name if device else ""),
                    "dev_product_name": device.dev_product_name
                    if device
                    else (state.model.product if state else ""),
                    "dev_access_code": "",
                    "nozzle_diameter": _float(
                        device.nozzle_diameter if device else None,
                        (state.nozzle_diameter if state else None) or 0.4,
                    ),
                    "dev_structure": _str(device.dev_structure if device else ""),
                }
            )
        return json_response({"devices": rows})

    # pause, resume, stop and light, as the live API declares them
    command_routes(ctx, router, "/api/v1/printers/{serial}/{command}", COMMAND_ERRORS, [BEARER])

    return router
