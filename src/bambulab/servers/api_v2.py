"""The live printer API v2: printers, their typed state, an event stream and commands.

Mounted as the ``live`` part of :func:`bambulab.servers.app.build_app`; it
reads the server's :class:`~bambulab.servers.live.LiveHub` (one upstream MQTT
connection for every client) and its :class:`~bambulab.servers.common.EventBus`.

* ``GET /api/v2/printers``: every printer the token may see (its allowlist),
  with whether it is online, when it last reported and a summary of its state.
* ``GET /api/v2/printers/{serial}``: the typed state
  (:class:`~bambulab.models.output.PrinterStateOut`, the JSON of
  ``PrinterState.to_dict()`` and ``bambu status --json``). A printer that has
  not reported since the server started answers with a state that knows
  nothing (every value ``null``); ``online`` in the list says why.
* ``GET /api/v2/events``: Server-Sent Events of the bus, resumable with
  ``Last-Event-ID`` (or ``?last_event_id=`` for clients that cannot set
  headers), filtered to the token's printers (and ``?serial=``); a ``retry:``
  hint first, a keep-alive comment every :data:`KEEPALIVE` seconds, and a
  ``reset`` event when the id asked for is older than what the bus keeps (the
  client should read the state again).
* ``POST /api/v2/printers/{serial}/commands/<command>`` (``control`` scope):
  pause, resume, stop, light, speed, temperatures, fans, G-code and a few
  more; the answer is the printer's reply (504 when none came in time, 409
  when the printer is offline, refused, or its model cannot do it, 503 when
  the upstream connection is down).

Who may see what: a token's printer allowlist is checked before anything
else, so a serial outside it is 403 whether or not such a printer exists (a
token learns nothing about printers it may not see); a serial the token may
see that the server does not serve is 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from annotated_types import Interval
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from ..errors import (
    CommandError,
    CommandInterruptedError,
    CommandTimeoutError,
    ConfigurationError,
    MQTTError,
    PrinterOfflineError,
    UnsupportedCommandError,
)
from ..models.output import PrinterStateOut
from ..models.state import PrinterState
from ..protocol import mqtt as proto
from ..vocabulary import HEATER_LIMITS, LIGHT_MODES, LIGHT_NODES
from .common import ApiError, BusEvent, EventBus
from .tokens import IssuedToken

if TYPE_CHECKING:
    from .app import ServerContext
    from .live import LiveHub

__all__ = [
    "BEARER",
    "KEEPALIVE",
    "CommandReplyOut",
    "PrinterSummaryOut",
    "PrintersOut",
    "SummaryOut",
    "command_reply",
    "live_routes",
    "summary",
]

KEEPALIVE = 15.0  # seconds between keep-alive comments on a quiet stream
RETRY_MS = 3000  # the reconnect delay the stream suggests to EventSource clients
BATCH_INTERVAL = 0.05  # seconds between two writes to one event stream, at most
EVENT_ID = re.compile(r"[0-9A-Za-z._:-]{1,64}")
SERIAL = r"^[0-9A-Za-z_-]{1,64}$"

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No token, or not a valid one"},
    403: {"description": "The token's scope or printer allowlist does not allow this"},
    429: {"description": "The token's rate limit was reached (see Retry-After)"},
}
PRINTER_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: {"description": "This server serves no such printer"},
}
COMMAND_ERRORS: dict[int | str, dict[str, Any]] = {
    **PRINTER_ERRORS,
    400: {"description": "The body is not JSON"},
    409: {
        "description": "The printer is offline, its model cannot do this (nothing was sent), "
        "or it refused the command"
    },
    503: {"description": "The upstream MQTT connection is down (nothing was sent)"},
    504: {"description": "The printer did not answer in time"},
}


Handler = Callable[..., Awaitable[Response]]
# Declares the Bearer scheme in the OpenAPI schema (/docs gets an Authorize button); the
# check itself is Gate.check's, in each route (scope and printer differ per route).
BEARER = Depends(
    HTTPBearer(
        auto_error=False,
        scheme_name="token",
        description="A token this server issued (bambu serve token create)",
    )
)
SerialPath = Annotated[
    str, Path(description="The printer's serial number", pattern=SERIAL, max_length=64)
]

# --- response models ------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SummaryOut(_Out):
    """What a printer is doing, in a few fields (the list's ``state``)."""

    gcode_state: str
    stage: str
    job: str
    percent: int | None
    layer: int | None
    total_layers: int | None
    remaining_minutes: int | None
    nozzle_temp: float | None
    nozzle_target: float | None
    bed_temp: float | None
    bed_target: float | None
    chamber_temp: float | None
    speed: str
    print_error: str | None
    hms_count: int


class PrinterSummaryOut(_Out):
    """One printer of ``GET /api/v2/printers``.

    ``last_report``: when it last reported (Unix seconds; ``null``: not since
    the server started). ``state``: ``null`` until its first report.
    """

    serial: str
    name: str
    model: str
    online: bool
    last_report: float | None
    state: SummaryOut | None


class PrintersOut(_Out):
    """Every printer the token may see, in the server's order."""

    printers: list[PrinterSummaryOut]


class CommandReplyOut(_Out):
    """The printer's answer to a command: ``reply`` is the body of its reply message."""

    serial: str
    command: str
    sequence_id: str | None
    result: str
    reply: dict[str, Any]


PRINTERS_EXAMPLE = {
    "printers": [
        {
            "serial": "01P00A000000001",
            "name": "Workshop P1S",
            "model": "P1S",
            "online": True,
            "last_report": 1764590000.5,
            "state": {
                "gcode_state": "RUNNING",
                "stage": "printing",
                "job": "benchy",
                "percent": 42,
                "layer": 51,
                "total_layers": 120,
                "remaining_minutes": 37,
                "nozzle_temp": 219.8,
                "nozzle_target": 220.0,
                "bed_temp": 55.1,
                "bed_target": 55.0,
                "chamber_temp": None,
                "speed": "standard",
                "print_error": None,
                "hms_count": 0,
            },
        }
    ]
}
COMMAND_EXAMPLE = {
    "serial": "01P00A000000001",
    "command": "pause",
    "sequence_id": "20004",
    "result": "success",
    "reply": {"command": "pause", "sequence_id": "20004", "result": "success", "reason": ""},
}
SSE_EXAMPLE = (
    "retry: 3000\n\n"
    "id: 41\nevent: state_changed\n"
    'data: {"serial":"01P00A000000001","time":1764590000.5,"changed":["mc_percent"],'
    '"values":{"percent":42}}\n\n'
    ": keep-alive\n\n"
)


# --- summaries -----------------------------------------------------------------------------


def summary(state: PrinterState) -> dict[str, Any]:
    """The :class:`SummaryOut` of a state, as a dict (no pydantic per printer: lists are long)."""
    error = state.print_error
    return {
        "gcode_state": state.gcode_state,
        "stage": state.stage_name,
        "job": state.job_name,
        "percent": state.percent,
        "layer": state.layer,
        "total_layers": state.total_layers,
        "remaining_minutes": state.remaining_minutes,
        "nozzle_temp": state.nozzle_temp,
        "nozzle_target": state.nozzle_target,
        "bed_temp": state.bed_temp,
        "bed_target": state.bed_target,
        "chamber_temp": state.chamber_temp,
        "speed": state.speed_name,
        "print_error": str(error) if error else None,
        "hms_count": len(state.hms),
    }


def blank_state(hub: LiveHub, serial: str) -> PrinterState:
    """A state that knows nothing yet (but the model, when the server was told it)."""
    entry = hub.entry(serial)
    return PrinterState(serial, {}, dev_model_name=(entry.model if entry else None) or None)


def printer_row(hub: LiveHub, serial: str) -> dict[str, Any]:
    """One :class:`PrinterSummaryOut` as a dict."""
    entry = hub.entry(serial)
    state = hub.state(serial)
    model = (state or blank_state(hub, serial)).model.product
    return {
        "serial": serial,
        "name": entry.name if entry else "",
        "model": model,
        "online": hub.online(serial),
        "last_report": hub.last_report(serial),
        "state": summary(state) if state is not None else None,
    }


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def need_hub(ctx: ServerContext) -> LiveHub:
    if ctx.hub is None:
        raise ApiError(503, "this server follows no printers (no MQTT source configured)")
    return ctx.hub


def known(hub: LiveHub, serial: str) -> None:
    if hub.entry(serial) is None:
        raise ApiError(404, f"no printer {serial} on this server")


# --- commands ------------------------------------------------------------------------------


async def command_reply(hub: LiveHub, serial: str, build: Callable[[], proto.Command]) -> Response:
    """Send a command built by ``build`` to ``serial`` and answer with the printer's reply.

    The caller has checked the token. Errors become :class:`ApiError` (see the module).
    """
    known(hub, serial)
    try:
        command = build()
    except ConfigurationError as exc:
        raise ApiError(422, str(exc)) from None
    try:
        reply = await hub.command(serial, command)
    except PrinterOfflineError:
        raise ApiError(
            409, f"printer {serial} is offline; {command.command} was not sent"
        ) from None
    except UnsupportedCommandError as exc:
        raise ApiError(409, str(exc)) from None
    except CommandTimeoutError:
        raise ApiError(504, f"printer {serial} did not answer {command.command} in time") from None
    except CommandInterruptedError:
        raise ApiError(
            503,
            f"the connection to printer {serial} dropped before it answered {command.command}; "
            "check its state before sending it again",
        ) from None
    except CommandError as exc:
        raise ApiError(409, str(exc)) from None
    except MQTTError as exc:  # not connected, gave up: nothing was sent
        raise ApiError(503, str(exc)) from None
    return json_response(
        {
            "serial": serial,
            "command": command.command,
            "sequence_id": reply.sequence_id,
            "result": "success",
            "reply": reply.body,
        }
    )


def _json_number(value: Any) -> Any:
    # A JSON false is not a slot 0, nor "60" a temperature: pydantic's lax mode would
    # send them. (Strict mode would also refuse 2.0 for an integer, which JSON allows.)
    if isinstance(value, (bool, str)):
        raise ValueError("must be a JSON number")
    return value


Int = Annotated[int, BeforeValidator(_json_number)]
Number = Annotated[float, BeforeValidator(_json_number)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LightBody(_Body):
    """Switch a light: ``on`` true/false, or ``mode`` on/off/flashing (``mode`` wins)."""

    on: StrictBool = True
    mode: Literal["on", "off", "flashing"] | None = None
    node: Literal["chamber_light", "work_light", "chamber_light2", "heatbed_light"] = (
        "chamber_light"
    )


class SpeedBody(_Body):
    """1 silent, 2 standard, 3 sport, 4 ludicrous (or the name)."""

    level: Literal[1, 2, 3, 4, "silent", "standard", "sport", "ludicrous"]


class NozzleTempBody(_Body):
    """Nozzle target °C (``extruder``: 0 right, 1 left on dual-nozzle printers)."""

    temp: Number = Field(ge=0, le=HEATER_LIMITS["nozzle"])
    extruder: Annotated[Literal[0, 1], BeforeValidator(_json_number)] | None = None


class BedTempBody(_Body):
    temp: Number = Field(ge=0, le=HEATER_LIMITS["bed"])


class ChamberTempBody(_Body):
    temp: Number = Field(ge=0, le=HEATER_LIMITS["chamber"])


class FanBody(_Body):
    fan: Literal["part", "aux", "chamber"]
    percent: Number = Field(ge=0, le=100)


class GcodeBody(_Body):
    """G-code lines (newline-separated), at most 4 KiB (files go through a print)."""

    gcode: str = Field(min_length=1, max_length=4096, pattern=r"\S")


class SwitchBody(_Body):
    enabled: StrictBool


class SkipBody(_Body):
    object_ids: list[
        Annotated[int, Interval(ge=0, le=2**31 - 1), BeforeValidator(_json_number)]
    ] = Field(min_length=1, max_length=64)


class AmsLoadBody(_Body):
    """AMS unit (0-3; 128-135 for an AMS HT; 255 the external spool) and slot (0-3)."""

    ams_id: Annotated[
        Literal[0, 1, 2, 3, 128, 129, 130, 131, 132, 133, 134, 135, 255],
        BeforeValidator(_json_number),
    ]
    slot: Int = Field(ge=0, le=3)


assert set(LIGHT_NODES) == {"chamber_light", "work_light", "chamber_light2", "heatbed_light"}
assert set(LIGHT_MODES) == {"on", "off", "flashing"}


# --- the router ----------------------------------------------------------------------------


def _visible(token: IssuedToken, event: BusEvent, serial: str | None) -> bool:
    if event.serial is None:  # reset, and events about no printer
        return True
    if token.printers and event.serial not in token.printers:
        return False
    return serial is None or event.serial == serial


def _field(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


async def _disconnected(request: Request) -> None:
    """Return when the client goes away (the request has no body left to read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class StreamCounter:
    """How many event streams are open now, and in all (``ctx.extra["sse"]``)."""

    def __init__(self) -> None:
        self.open = 0
        self.total = 0


def command_routes(
    ctx: ServerContext,
    router: APIRouter,
    template: str,
    responses: dict[int | str, dict[str, Any]],
    dependencies: list[Any] | None = None,
    *,
    cookie: bool = False,
) -> tuple[Callable[[str, str], Callable[[Handler], Handler]], Callable[..., Awaitable[Response]]]:
    """Declare pause, resume, stop and light on ``router``: the commands both this API
    and the compatibility API offer, at ``template`` (``{serial}`` and ``{command}``).

    Returns the route decorator and the runner (token check for ``control`` on the
    printer, then :func:`command_reply`) for the commands only one API has.
    ``cookie``: the token may come from the dashboard's session cookie.
    """

    def control(path: str, summary_text: str) -> Callable[[Handler], Handler]:
        return router.post(
            template.replace("{command}", path),
            dependencies=dependencies or [],
            summary=summary_text,
            response_model=CommandReplyOut,
            responses=responses,
        )

    async def run(request: Request, serial: str, build: Callable[[], proto.Command]) -> Response:
        await ctx.gate.check(request, "control", serial, cookie=cookie)
        return await command_reply(need_hub(ctx), serial, build)

    @control("pause", "Pause the running print")
    async def pause(request: Request, serial: SerialPath) -> Response:
        return await run(request, serial, proto.pause)

    @control("resume", "Resume a paused print")
    async def resume(request: Request, serial: SerialPath) -> Response:
        return await run(request, serial, proto.resume)

    @control("stop", "Stop (cancel) the running print")
    async def stop(request: Request, serial: SerialPath) -> Response:
        return await run(request, serial, proto.stop)

    @control("light", 'Switch a light on, off or flashing ({"on": true}: the chamber light)')
    async def light(request: Request, serial: SerialPath, body: LightBody) -> Response:
        mode = body.mode or ("on" if body.on else "off")
        return await run(request, serial, lambda: proto.ledctrl(body.node, mode))

    return control, run


def live_routes(ctx: ServerContext) -> APIRouter:
    """The ``live`` part (see the module)."""
    router = APIRouter(prefix="/api/v2", tags=["live"], dependencies=[BEARER])
    streams = ctx.extra.setdefault("sse", StreamCounter())

    @router.get(
        "/printers",
        summary="Every printer this token may see",
        response_model=PrintersOut,
        responses={**ERRORS, 200: {"content": {"application/json": {"example": PRINTERS_EXAMPLE}}}},
    )
    async def printers(request: Request) -> Response:
        token = await ctx.gate.check(request, "read")
        hub = need_hub(ctx)
        rows = [
            printer_row(hub, e.serial)
            for e in hub.printers()
            if not token.printers or e.serial in token.printers
        ]
        return json_response({"printers": rows})

    @router.get(
        "/printers/{serial}",
        summary="One printer's typed state",
        response_model=PrinterStateOut,
        responses=PRINTER_ERRORS,
    )
    async def printer_state(request: Request, serial: SerialPath) -> Response:
        await ctx.gate.check(request, "read", serial)
        hub = need_hub(ctx)
        known(hub, serial)
        state = hub.state(serial) or blank_state(hub, serial)
        return json_response(state.to_dict())

    @router.get(
        "/events",
        summary="Server-Sent Events of state changes, prints and HMS (resumable)",
        response_class=StreamingResponse,
        responses={
            **ERRORS,
            400: {"description": "Last-Event-ID is not an id this server hands out"},
            200: {
                "description": (
                    "A text/event-stream: `id:`, `event:` (state_changed, print_started, "
                    "print_paused, print_resumed, print_finished, print_failed, hms_raised, "
                    "hms_cleared, printer_online, printer_offline, reset) and `data:` (JSON) "
                    "per event; a keep-alive comment on quiet streams."
                ),
                "content": {
                    "text/event-stream": {"schema": {"type": "string"}, "example": SSE_EXAMPLE}
                },
            },
        },
    )
    async def events(
        request: Request,
        serial: Annotated[
            str | None,
            Query(description="Only this printer's events", pattern=SERIAL, max_length=64),
        ] = None,
        last_event_id: Annotated[
            str | None,
            Query(description="Resume after this id (for clients that cannot send the header)"),
        ] = None,
        last_event_id_header: Annotated[
            str | None,
            Header(alias="Last-Event-ID", description="Resume after this id"),
        ] = None,
    ) -> StreamingResponse:
        token = await ctx.gate.check(request, "read", serial)
        after = last_event_id_header if last_event_id_header is not None else last_event_id
        if after is not None:
            after = after.strip()
            if not EVENT_ID.fullmatch(after):
                raise ApiError(400, "Last-Event-ID is not an event id of this server")
        keepalive = float(ctx.extra.get("sse_keepalive", KEEPALIVE))
        return StreamingResponse(
            stream_events(ctx, request, token, serial, after or None, keepalive, streams),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    control, run = command_routes(
        ctx,
        router,
        "/printers/{serial}/commands/{command}",
        {
            **COMMAND_ERRORS,
            200: {"content": {"application/json": {"example": COMMAND_EXAMPLE}}},
        },
    )

    @control("speed", "Set the print speed level")
    async def speed(request: Request, serial: SerialPath, body: SpeedBody) -> Response:
        return await run(request, serial, lambda: proto.print_speed(body.level))

    @control("nozzle_temperature", "Set the nozzle target temperature")
    async def nozzle_temperature(
        request: Request, serial: SerialPath, body: NozzleTempBody
    ) -> Response:
        return await run(request, serial, lambda: proto.set_nozzle_temp(body.temp, body.extruder))

    @control("bed_temperature", "Set the bed target temperature")
    async def bed_temperature(request: Request, serial: SerialPath, body: BedTempBody) -> Response:
        return await run(request, serial, lambda: proto.set_bed_temp(body.temp))

    @control("chamber_temperature", "Set the chamber target (printers with a chamber heater)")
    async def chamber_temperature(
        request: Request, serial: SerialPath, body: ChamberTempBody
    ) -> Response:
        return await run(request, serial, lambda: proto.set_chamber_temp(body.temp))

    @control("fan", "Set a fan's speed")
    async def fan(request: Request, serial: SerialPath, body: FanBody) -> Response:
        return await run(request, serial, lambda: proto.set_fan_speed(body.fan, body.percent))

    @control("gcode", "Run G-code lines")
    async def gcode(request: Request, serial: SerialPath, body: GcodeBody) -> Response:
        return await run(request, serial, lambda: proto.gcode_line(body.gcode))

    @control("skip_objects", "Skip objects of the running print")
    async def skip(request: Request, serial: SerialPath, body: SkipBody) -> Response:
        return await run(request, serial, lambda: proto.skip_objects(body.object_ids))

    @control("timelapse", "Timelapse on or off")
    async def timelapse(request: Request, serial: SerialPath, body: SwitchBody) -> Response:
        return await run(request, serial, lambda: proto.ipcam_timelapse(body.enabled))

    @control("camera_recording", "Camera recording on or off")
    async def recording(request: Request, serial: SerialPath, body: SwitchBody) -> Response:
        return await run(request, serial, lambda: proto.ipcam_record(body.enabled))

    @control("ams_load", "Load filament from an AMS slot")
    async def ams_load(request: Request, serial: SerialPath, body: AmsLoadBody) -> Response:
        return await run(request, serial, lambda: proto.ams_load(body.ams_id, body.slot))

    @control("ams_unload", "Unload the current filament")
    async def ams_unload(request: Request, serial: SerialPath) -> Response:
        return await run(request, serial, proto.ams_unload)

    return router


async def stream_events(
    ctx: ServerContext,
    request: Request,
    token: IssuedToken,
    serial: str | None,
    after: str | None,
    keepalive: float,
    streams: StreamCounter,
    bus: EventBus | None = None,
) -> AsyncIterator[bytes]:
    """The event stream of one client, until it goes away or the server stops.

    Events come from the bus in batches and go out as one write per batch,
    at most one every ``ctx.extra["sse_interval"]`` seconds (:data:`BATCH_INTERVAL`):
    a fleet's thousand reports a second reach each of hundreds of clients in
    a few writes a second, not in a wake-up and a write per event. The frames
    were encoded once, on the bus; a client only picks those it may see.
    """
    batches = (bus or ctx.bus).batches(after)
    gone: asyncio.Future[Any] = asyncio.ensure_future(_disconnected(request))
    pending: asyncio.Future[Any] | None = None
    loop = asyncio.get_running_loop()
    interval = float(ctx.extra.get("sse_interval", BATCH_INTERVAL))
    everything = not token.printers and serial is None
    streams.open += 1
    streams.total += 1
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        # The keep-alive is due after ``keepalive`` seconds of nothing *sent*: a client
        # whose printers are quiet while others talk must hear from us too.
        quiet_until = loop.time() + keepalive
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(batches))
            done, _ = await asyncio.wait(
                {pending, gone},
                timeout=max(0.0, quiet_until - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if gone in done:
                return
            if pending in done:
                try:
                    batch = pending.result()
                except StopAsyncIteration:  # the bus closed: the server is stopping
                    return
                finally:
                    pending = None
                frames = [e.frame for e in batch if everything or _visible(token, e, serial)]
                if frames:
                    yield b"".join(frames)
                    quiet_until = loop.time() + keepalive
                    if interval > 0:  # let the next events gather into one write
                        sleeper = asyncio.ensure_future(asyncio.sleep(interval))
                        await asyncio.wait({sleeper, gone}, return_when=asyncio.FIRST_COMPLETED)
                        sleeper.cancel()
                    continue
            if loop.time() >= quiet_until:
                yield b": keep-alive\n\n"
                quiet_until = loop.time() + keepalive
    finally:
        streams.open -= 1
        for task in (pending, gone):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        with contextlib.suppress(Exception):
            await batches.aclose()  # type: ignore[attr-defined]
