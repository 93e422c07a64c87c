"""The farm dashboard: one page with a tile per printer, live through Server-Sent Events.

``GET /farm`` is server-rendered HTML: a tile per printer the token may see
(name, model, state in colour, job and plate thumbnail, progress, time left
and the clock time it ends, layer, temperatures, AMS trays as colour swatches
with type, remaining and humidity, the active tray, HMS alerts with their text
and wiki link, the camera when the server has one) and a "needs attention"
band. Its script (``/farm/static/dashboard.js``, no build step, no
third-party code) opens one ``EventSource`` on ``/farm/api/events``, replaces
a tile by the HTML the server sends for it, and filters, groups and sorts
the tiles in the browser. Controls (pause, resume, stop with a confirmation,
light, speed) are on the page only for a ``control`` token.

Tiles are rendered once per change, not once per client: :class:`TileFeed`
follows the server's event bus, re-renders the tile of a printer that had
events (at most every :data:`TILE_INTERVAL`), and publishes it on its own bus
only when the HTML changed; every dashboard reads the same encoded frames.

A browser cannot send an ``Authorization`` header with ``EventSource``: the
login form (``/farm/login``) puts the token in an HttpOnly, SameSite=Strict
cookie, and a change made with the cookie needs the header the page's script
sends (:data:`~bambulab.servers.common.CSRF_HEADER`).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from ..errors import BambuError, ThreeMFError
from ..models.printer import Severity
from ..models.state import PrinterState
from ..safetext import visible
from ..servers.api_v2 import (
    COMMAND_ERRORS,
    SerialPath,
    StreamCounter,
    command_routes,
    stream_events,
)
from ..servers.common import (
    SESSION_COOKIE,
    ApiError,
    MemoryEventBus,
)
from ..servers.runner import one_line
from ..servers.tokens import IssuedToken, ServerTokenError
from .models import ACTIVE_STATES, END_STATES, Job, JobState, Target

if TYPE_CHECKING:
    from ..servers.app import ServerContext

log = logging.getLogger("bambulab.farm")

__all__ = ["FarmInfo", "TileFeed", "attention", "farm_routes", "render_tile"]

TILE_INTERVAL = 0.5  # seconds between two renderings of one printer's tile at most
RENDER_BATCH = 25  # tiles rendered between two yields to the event loop
ARRIVAL_GRACE = 2.0  # seconds a new event stream counts as watching before it is counted
UPLOAD_PATH = "/farm/api/jobs"  # POST: a 3MF to queue (the one route that takes large bodies)
UPLOAD_LIMIT = 512 * 1024 * 1024
JOB_ACTIONS = ("hold", "release", "cancel")
# What the queue page lists: what prints and what waits.
QUEUE_PAGE_STATES = (
    JobState.STARTING,
    JobState.PRINTING,
    JobState.QUEUED,
    JobState.HELD,
)
STATIC = {
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    "queue.js": "text/javascript",
}
_HEX = re.compile(r"^[0-9A-Fa-f]{6}")
# gcode_state -> the colour class of a tile
STATE_CLASS = {
    "RUNNING": "printing",
    "PREPARE": "printing",
    "SLICING": "printing",
    "PAUSE": "paused",
    "FAILED": "failed",
    "FINISH": "finished",
    "IDLE": "idle",
}


@dataclass(frozen=True, slots=True)
class FarmInfo:
    """What the farm knows of a printer beyond its live state (from the queue)."""

    job_id: int | None = None
    job_name: str = ""
    thumbnail: str = ""  # URL of the plate's thumbnail
    bed_clear_needed: bool = False
    tags: tuple[str, ...] = ()


NO_INFO = FarmInfo()
FarmInfos = Callable[[], Mapping[str, FarmInfo]]  # by serial; called off the loop


def _e(text: Any) -> str:
    """Text from elsewhere, for HTML: control characters shown, markup escaped."""
    return html.escape(visible(str(text)), quote=True)


def _state_class(state: PrinterState | None, online: bool) -> str:
    if not online or state is None:
        return "offline"
    return STATE_CLASS.get(state.gcode_state, "idle")


def attention(state: PrinterState | None, online: bool, info: FarmInfo = NO_INFO) -> str:
    """Why a printer needs someone ("" when it does not): failed, paused, HMS, bed to clear."""
    if not online or state is None:
        return ""
    gcode = state.gcode_state
    hms = [h for h in state.hms if h.severity != Severity.INFO]
    if gcode == "FAILED":
        error = state.print_error
        return f"failed: {error.text}" if error else "failed"
    if gcode == "PAUSE":
        return f"paused: {hms[0].text}" if hms else "paused"
    if hms:
        return f"HMS: {hms[0].text}"
    if gcode == "FINISH" and info.bed_clear_needed:
        return "finished: clear the bed"
    return ""


def _temp(now: float | None, target: float | None) -> str:
    if now is None:
        return "–"
    shown = f"{now:.0f}"
    return f"{shown}/{target:.0f}" if target else shown


def _swatch(colour: str) -> str:
    return f"#{colour[:6]}" if _HEX.match(colour) else "transparent"


def _ams(state: PrinterState) -> str:
    active = state.active_tray
    active_id = active.global_id if active is not None else None
    units = []
    for unit in state.ams_units:
        trays = []
        for tray in unit.trays:
            if tray.empty:
                label, title = "empty", f"slot {tray.id + 1}: empty"
            else:
                remain = f" {tray.remain}%" if tray.remain is not None and tray.remain >= 0 else ""
                label = f"{tray.type}{remain}"
                title = f"slot {tray.id + 1}: {tray.type} #{tray.colour[:6]}{remain}"
            cls = "tray active" if tray.global_id == active_id else "tray"
            trays.append(
                f'<li class="{cls}" title="{_e(title)}">'
                f'<span class="sw" style="background:{_swatch(tray.colour)}"></span>'
                f"{_e(label)}</li>"
            )
        humidity = (
            f'<span class="hum" title="humidity">{unit.humidity_percent}%</span>'
            if unit.humidity_percent is not None
            else (
                f'<span class="hum" title="humidity level (5 dry .. 1 wet)">'
                f"H{unit.humidity_level}</span>"
                if unit.humidity_level is not None
                else ""
            )
        )
        units.append(
            f'<div class="unit"><span class="uname">AMS {unit.id + 1}</span>{humidity}'
            f"<ul>{''.join(trays)}</ul></div>"
        )
    for spool in state.external_spools:
        if spool.empty:
            continue
        cls = "tray active" if spool.global_id == active_id else "tray"
        units.append(
            f'<div class="unit"><span class="uname">spool</span><ul><li class="{cls}">'
            f'<span class="sw" style="background:{_swatch(spool.colour)}"></span>'
            f"{_e(spool.type)}</li></ul></div>"
        )
    return f'<div class="ams">{"".join(units)}</div>' if units else ""


def render_tile(
    serial: str,
    name: str,
    model: str,
    state: PrinterState | None,
    online: bool,
    info: FarmInfo = NO_INFO,
    *,
    camera: str = "",
    now: float | None = None,
) -> str:
    """One printer's tile (an ``<article>``); every string from elsewhere escaped."""
    moment = time.time() if now is None else now
    cls = _state_class(state, online)
    why = attention(state, online, info)
    label = name or serial
    gcode = "OFFLINE" if cls == "offline" else (state.gcode_state if state else "")
    remaining = state.remaining_minutes if state is not None else None
    printing = cls in ("printing", "paused")
    data = {
        "serial": serial,
        "name": label,
        "model": model,
        "state": cls,
        "tags": " ".join(info.tags),
        "remaining": str(remaining if printing and remaining is not None else ""),
        "attention": why,
    }
    attrs = " ".join(f'data-{k}="{_e(v)}"' for k, v in data.items())
    parts = [
        f'<article class="tile s-{cls}{" attn" if why else ""}" id="t-{_e(serial)}" {attrs}>',
        f'<header><h2 title="{_e(serial)}">{_e(label)}</h2>'
        f'<span class="model">{_e(model)}</span><span class="badge">{_e(gcode)}</span></header>',
    ]
    if why:
        parts.append(f'<p class="why">{_e(why)}</p>')
    if state is not None and online:
        job = info.job_name or state.job_name
        thumb = (
            f'<img class="thumb" loading="lazy" alt="" src="{_e(info.thumbnail)}">'
            if info.thumbnail
            else ""
        )
        if job or thumb:
            parts.append(f'<div class="job">{thumb}<span>{_e(job)}</span></div>')
        if printing:
            percent = state.percent or 0
            bits = [f"{percent} %"]
            if state.total_layers:
                bits.append(f"layer {state.layer or 0}/{state.total_layers}")
            ends = ""
            if remaining is not None:
                bits.append(f"{remaining} min left")
                ends = f' data-ends="{int(moment + remaining * 60)}"'
            parts.append(
                f'<div class="progress"><progress max="100" value="{percent}"></progress>'
                f'<span class="pinfo"{ends}>{_e(" · ".join(bits))}</span></div>'
            )
        temps = [
            f"nozzle {_temp(state.nozzle_temp, state.nozzle_target)}",
            f"bed {_temp(state.bed_temp, state.bed_target)}",
        ]
        if state.chamber_temp is not None:
            temps.append(f"chamber {state.chamber_temp:.0f}")
        parts.append(f'<div class="temps">{_e(" · ".join(temps))} °C</div>')
        parts.append(_ams(state))
        alerts = [
            f'<li class="sev-{_e(h.severity.name.lower())}"><a href="{_e(h.wiki_url)}" '
            f'rel="noreferrer" target="_blank">{_e(h.code_string)}</a> {_e(h.text)}</li>'
            for h in state.hms
        ]
        if alerts:
            parts.append(f'<ul class="hms">{"".join(alerts)}</ul>')
    if camera:
        parts.append(f'<div class="cam" data-src="{_e(camera)}"></div>')
    parts.append("</article>")
    return "".join(parts)


class TileFeed:
    """Renders each printer's tile when it changes and publishes it on :attr:`bus`.

    Built for a thousand printers on one event loop, where a report a second
    each changes every tile every second:

    * the farm's part of the tiles (the job, the bed, the tags) is read for all
      changed printers at once, off the loop (``infos``: one call, two queries);
    * tiles are rendered for the event stream only while a dashboard has it open
      (``watched``); otherwise they are marked stale and rendered when asked for
      (:meth:`tiles`), so an unwatched farm costs next to nothing;
    * rendering yields to the loop every few tiles, and the pause after a round
      is at least twice the round's time, so the tiles never take more than a
      third of the loop however many printers change.
    """

    def __init__(
        self,
        ctx: ServerContext,
        infos: FarmInfos | None = None,
        camera: Callable[[str], str] | None = None,
        interval: float = TILE_INTERVAL,
    ) -> None:
        self.ctx = ctx
        self.infos = infos or (lambda: {})
        self.camera = camera or (lambda serial: "")
        self.interval = interval
        self.watchers: Callable[[], int] = lambda: 1  # event streams open now
        self._arrived = -ARRIVAL_GRACE  # loop time a stream last opened
        self.bus = MemoryEventBus(keep=4096)
        self._html: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._stale: set[str] = set()  # changed while nobody watched
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.rendered = 0  # tiles rendered, for the benchmark and /metrics
        self.published = 0

    def serials(self) -> list[str]:
        hub = self.ctx.hub
        return [] if hub is None else [e.serial for e in hub.printers()]

    async def tiles(self, serials: Iterable[str]) -> dict[str, str]:
        """The tiles of ``serials`` now, rendering those that are stale or never were."""
        wanted = list(serials)
        missing = [s for s in wanted if s in self._stale or s not in self._html]
        if missing:
            await self._render_all(missing, publish=False)
        return {s: self._html.get(s, "") for s in wanted}

    def watched(self) -> bool:
        """Whether a dashboard follows the tiles (or one is opening its stream)."""
        arrived = asyncio.get_running_loop().time() - self._arrived < ARRIVAL_GRACE
        return arrived or self.watchers() > 0

    def arrived(self) -> None:
        """A dashboard opens its stream: what changed unwatched goes out now."""
        self._arrived = asyncio.get_running_loop().time()
        self._wake.set()

    def touch(self, serial: str) -> None:
        """Render ``serial``'s tile again soon (the farm's own data changed)."""
        self._dirty.add(serial)
        self._wake.set()

    def _render(self, serial: str, info: FarmInfo) -> str:
        hub = self.ctx.hub
        if hub is None:
            return ""
        entry = hub.entry(serial)
        state = hub.state(serial)
        model = (entry.model if entry else "") or (state.model.product if state else "")
        self.rendered += 1
        return render_tile(
            serial,
            entry.name if entry else "",
            model,
            state,
            hub.online(serial),
            info,
            camera=self.camera(serial),
        )

    async def _render_all(self, serials: list[str], *, publish: bool) -> None:
        infos = await asyncio.to_thread(self.infos)
        for count, serial in enumerate(serials, start=1):
            self._stale.discard(serial)
            fresh = self._render(serial, infos.get(serial, NO_INFO))
            if fresh != self._html.get(serial):
                self._html[serial] = fresh
                if publish:
                    await self.bus.publish("tile", {"serial": serial, "html": fresh}, serial)
                    self.published += 1
            if count % RENDER_BATCH == 0:
                await asyncio.sleep(0)  # let requests and reports through

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._follow()),
            asyncio.create_task(self._publish()),
        ]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.bus.aclose()

    async def _follow(self) -> None:
        async for batch in self.ctx.bus.batches(None):
            for event in batch:
                if event.serial:
                    self._dirty.add(event.serial)
            self._wake.set()

    async def _publish(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            began = loop.time()
            if self.watched():
                await self._render_all(sorted(dirty | self._stale), publish=True)
            else:
                self._stale |= dirty
            # the next changes gather meanwhile
            await asyncio.sleep(max(self.interval, 2 * (loop.time() - began)))


def _static(name: str) -> str:
    return resources.files("bambulab.farm").joinpath("static", name).read_text("utf-8")


def _visible_to(token: IssuedToken, serials: Iterable[str]) -> list[str]:
    return [s for s in serials if not token.printers or s in token.printers]


def render_page(tiles: list[str], token: IssuedToken) -> str:
    control = token.allows("control")
    controls = (
        '<template id="controls"><div class="controls">'
        '<button data-cmd="pause">Pause</button><button data-cmd="resume">Resume</button>'
        '<button data-cmd="stop" class="danger">Stop</button>'
        '<button data-cmd="light-on">Light on</button>'
        '<button data-cmd="light-off">Light off</button>'
        '<select data-cmd="speed" aria-label="speed"><option value="">speed</option>'
        '<option value="1">silent</option><option value="2">standard</option>'
        '<option value="3">sport</option><option value="4">ludicrous</option></select>'
        "</div></template>"
        if control
        else ""
    )
    options = "".join(
        f'<option value="{v}">{v}</option>'
        for v in ("printing", "paused", "failed", "finished", "idle", "offline")
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Farm</title>"
        '<link rel="stylesheet" href="/farm/static/dashboard.css"></head>'
        f'<body data-control="{1 if control else 0}">'
        '<header class="bar"><h1>Farm</h1><a href="/farm/queue">Queue</a>'
        '<span id="counts"></span>'
        '<label>state <select id="f-state"><option value="">all</option>'
        f"{options}</select></label>"
        '<label>model <select id="f-model"><option value="">all</option></select></label>'
        '<label>location <select id="f-tag"><option value="">all</option></select></label>'
        '<label>group <select id="group"><option value="">none</option>'
        '<option value="state">state</option><option value="model">model</option>'
        '<option value="tags">location</option></select></label>'
        '<label>sort <select id="sort"><option value="name">name</option>'
        '<option value="remaining">time left</option></select></label>'
        '<span id="live" title="live updates">●</span>'
        '<a href="/farm/stats">Statistics</a>'
        '<form method="post" action="/farm/logout"><button>Log out</button></form></header>'
        '<section id="attention" hidden><h2>Needs attention</h2><ul></ul></section>'
        f'<main id="tiles">{"".join(tiles)}</main>{controls}'
        '<script src="/farm/static/dashboard.js" defer></script></body></html>'
    )


def _queue_row(job: Job, control: bool) -> str:
    waiting = job.state in (JobState.QUEUED, JobState.HELD)
    where = job.printer or str(job.target)
    note = f'<div class="reason">{_e(job.reason)}</div>' if job.reason else ""
    actions = ""
    if control and waiting:
        toggle = "release" if job.state is JobState.HELD else "hold"
        actions = (
            '<button data-act="up" title="earlier">↑</button>'
            '<button data-act="down" title="later">↓</button>'
            f'<button data-act="{toggle}">{toggle.title()}</button>'
            '<button data-act="cancel" class="danger">Cancel</button>'
            f'<input type="number" data-act="priority" value="{job.priority}" min="-1000"'
            ' max="1000" aria-label="priority" title="priority (higher first)">'
        )
    elif control and job.state in ACTIVE_STATES:
        actions = '<button data-act="cancel" class="danger">Cancel</button>'
    return (
        f'<tr id="j-{job.id}" data-id="{job.id}" data-name="{_e(job.name)}"'
        f' class="q-{job.state.value}"><td>{job.id}</td>'
        f"<td>{_e(job.name)} <small>plate {job.plate}</small>{note}</td>"
        f"<td>{_e(job.state.value)}</td><td>{_e(where)}</td><td>{job.priority}</td>"
        f"<td>{job.attempts}</td><td>{actions}</td></tr>"
    )


def render_queue_page(jobs: list[Job], token: IssuedToken) -> str:
    """The queue: active jobs, then the waiting ones in the order they will be dispatched."""
    control = token.allows("control")
    active = [j for j in jobs if j.state in ACTIVE_STATES]
    waiting = [j for j in jobs if j.state in (JobState.QUEUED, JobState.HELD)]
    head = (
        "<thead><tr><th>#</th><th>job</th><th>state</th><th>printer or target</th>"
        "<th>priority</th><th>attempts</th><th></th></tr></thead>"
    )
    upload = (
        '<form id="upload"><h2>Queue a file</h2>'
        '<label>3MF <input type="file" name="file" accept=".3mf" required></label>'
        '<label>plate <input type="number" name="plate" value="1" min="1" max="64"></label>'
        '<label>copies <input type="number" name="copies" value="1" min="1" max="100"></label>'
        '<label>target <input name="target" value="any" '
        'title="any, printer:SERIAL or model:CODE"></label>'
        '<label>priority <input type="number" name="priority" value="0"></label>'
        "<button>Queue</button><output></output></form>"
        if control
        else ""
    )

    def table(title: str, rows: list[Job], empty: str) -> str:
        body = "".join(_queue_row(j, control) for j in rows) or (
            f'<tr><td colspan="7">{empty}</td></tr>'
        )
        return f'<h2>{title}</h2><table class="queue">{head}<tbody>{body}</tbody></table>'

    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Farm: queue</title>"
        '<link rel="stylesheet" href="/farm/static/dashboard.css"></head>'
        f'<body class="queue-page" data-control="{1 if control else 0}">'
        '<header class="bar"><h1>Queue</h1><a href="/farm">Dashboard</a></header><main>'
        + table("Printing", active, "nothing is printing")
        + table("Waiting, in dispatch order", waiting, "the queue is empty")
        + upload
        + '</main><script src="/farm/static/queue.js" defer></script></body></html>'
    )


FARM_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No token, or not a valid one"},
    403: {"description": "The token's scope or printers do not allow this"},
    404: {"description": "No such job, printer or file"},
    409: {"description": "The job is not in a state that allows this"},
    413: {"description": "The file is too large"},
    422: {"description": "A parameter or the 3MF is not usable"},
    429: {"description": "The token's rate limit was reached (see Retry-After)"},
    503: {"description": "This server runs no farm queue, or a printer is unreachable"},
}


def _redirect(to: str, cookie: str = "") -> HTMLResponse:
    """A 303 to ``to`` (an empty HTML body: every answer says what it is)."""
    headers = {"location": to, "cache-control": "no-store"}
    if cookie:
        headers["set-cookie"] = cookie
    return HTMLResponse("", status_code=303, headers=headers)


LOGIN_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>Farm: log in</title>"
    '<link rel="stylesheet" href="/farm/static/dashboard.css"></head><body class="login">'
    '<form method="post" action="/farm/login"><h1>Farm</h1>{message}'
    '<label>Token <input name="token" type="password" autocomplete="off" required autofocus>'
    "</label>"
    "<button>Open the dashboard</button>"
    "<p>A token this server issued: <code>bambu serve token create --scope read</code></p>"
    "</form></body></html>"
)


def farm_routes(
    ctx: ServerContext,
    feed: TileFeed | None = None,
    *,
    secure_cookie: bool = False,
) -> APIRouter:
    """The dashboard's routes on ``ctx`` (its :class:`TileFeed` starts with the server)."""
    from ..protocol import mqtt as proto

    found = ctx.extra.get("farm_tiles")
    tiles = feed or (found if isinstance(found, TileFeed) else TileFeed(ctx))
    ctx.extra["farm_tiles"] = tiles
    ctx.on_start.append(tiles.start)
    ctx.on_stop.append(tiles.aclose)
    streams = StreamCounter()
    tiles.watchers = lambda: streams.open
    router = APIRouter(prefix="/farm", tags=["farm"], responses=FARM_ERRORS)
    no_store = {"cache-control": "no-store"}
    cookie_attributes = "; HttpOnly; SameSite=Strict; Path=/" + (
        "; Secure" if secure_cookie else ""
    )

    async def token_of(request: Request) -> IssuedToken | None:
        try:
            return await ctx.gate.check(request, "read", cookie=True)
        except ApiError as exc:
            if exc.status == 401:
                return None
            raise

    @router.get(
        "",
        response_class=HTMLResponse,
        summary="The dashboard",
        responses={303: {"description": "Not logged in: to /farm/login"}},
    )
    async def dashboard(request: Request) -> Response:
        token = await token_of(request)
        if token is None:
            return _redirect("/farm/login")
        shown = list((await tiles.tiles(_visible_to(token, tiles.serials()))).values())
        return HTMLResponse(render_page(shown, token), headers=no_store)

    # One route per path with both methods: a 405 then names both in its Allow header.
    @router.api_route(
        "/login",
        methods=["GET", "POST"],
        response_class=HTMLResponse,
        summary="The login form (GET); log in with a token (POST, form field token)",
        responses={303: {"description": "Logged in: to /farm"}, 401: {"description": "Refused"}},
    )
    async def login(request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse(LOGIN_PAGE.format(message=""), headers=no_store)
        body = (await request.body())[:4096].decode("utf-8", "replace")
        secret = dict(parse_qsl(body)).get("token", "").strip()
        try:
            ctx.gate.store.verify(secret)
        except ServerTokenError as exc:
            page = LOGIN_PAGE.format(message=f'<p class="error">{_e(exc)}</p>')
            return HTMLResponse(page, status_code=401, headers=no_store)
        return _redirect("/farm", f"{SESSION_COOKIE}={secret}{cookie_attributes}")

    @router.post(
        "/logout",
        summary="Forget the session cookie",
        status_code=303,
        response_class=HTMLResponse,
    )
    async def logout() -> Response:
        return _redirect("/farm/login", f"{SESSION_COOKIE}=; Max-Age=0{cookie_attributes}")

    @router.get("/static/{name}", summary="The dashboard's style and script")
    async def static(name: str) -> Response:
        kind = STATIC.get(name)
        if kind is None:
            raise ApiError(404, "no such file")
        return Response(_static(name), media_type=kind, headers={"cache-control": "max-age=300"})

    @router.get("/api/tiles", summary="Every tile the token may see, as HTML")
    async def tile_list(request: Request) -> Response:
        token = await ctx.gate.check(request, "read", cookie=True)
        body = await tiles.tiles(_visible_to(token, tiles.serials()))
        return Response(
            content=orjson.dumps({"tiles": body}),
            media_type="application/json",
            headers=no_store,
        )

    @router.get("/api/events", summary="The tiles as they change (Server-Sent Events)")
    async def events(request: Request) -> StreamingResponse:
        token = await ctx.gate.check(request, "read", cookie=True)
        after = request.headers.get("last-event-id")
        keepalive = float(ctx.extra.get("sse_keepalive", 15.0))
        tiles.arrived()
        return StreamingResponse(
            stream_events(ctx, request, token, None, after, keepalive, streams, bus=tiles.bus),
            media_type="text/event-stream",
            headers={**no_store, "x-accel-buffering": "no"},
        )

    def farm_of() -> Any:
        farm = ctx.extra.get("farm")
        if farm is None:
            raise ApiError(503, "this server runs no farm queue (bambu serve farm)")
        return farm

    def job_out(job: Job) -> dict[str, Any]:
        return {
            "id": job.id,
            "name": job.name,
            "plate": job.plate,
            "state": job.state.value,
            "target": str(job.target),
            "priority": job.priority,
            "group": job.group,
            "printer": job.printer,
            "attempts": job.attempts,
            "reason": job.reason,
            "model_id": job.requirements.model_id,
            "filaments": [
                {"slot": f.slot, "type": f.type, "colour": f.colour, "grams": f.grams}
                for f in job.requirements.filaments
            ],
            "seconds": job.requirements.seconds,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        }

    def target_of(text: str) -> Target:
        kind, _, value = text.partition(":")
        try:
            return Target() if kind in ("", "any") else Target(kind, value)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ApiError(422, f"target is any, printer:SERIAL or model:CODE ({exc})") from None

    @router.api_route(
        "/api/jobs",
        methods=["GET", "POST"],
        summary="The queue (GET; history=true adds ended jobs); queue a sliced 3MF, the body "
        "(POST: name, plate, copies, target any|printer:SERIAL|model:CODE, priority, held)",
        responses={201: {"description": "Queued"}, 422: {"description": "Not a usable 3MF"}},
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def jobs(
        request: Request,
        history: bool = False,
        name: str = "",
        plate: int = 1,
        copies: int = 1,
        target: str = "any",
        priority: int = 0,
        held: bool = False,
    ) -> Response:
        if request.method == "POST":
            return await add_jobs(request, name, plate, copies, target, priority, held)
        token = await ctx.gate.check(request, "read", cookie=True)
        farm = farm_of()
        found = await asyncio.to_thread(farm.store.jobs)
        shown = [
            job_out(j)
            for j in found
            if (history or j.state not in END_STATES)
            and (not token.printers or not j.printer or j.printer in token.printers)
        ]
        return Response(orjson.dumps({"jobs": shown}), media_type="application/json")

    async def add_jobs(
        request: Request,
        name: str,
        plate: int,
        copies: int,
        target: str,
        priority: int,
        held: bool,
    ) -> Response:
        await ctx.gate.check(request, "control", cookie=True)
        farm = farm_of()
        if not 1 <= copies <= 1000:
            raise ApiError(422, "copies is 1 to 1000")
        data = await request.body()
        chosen = target_of(target)
        try:
            made = await asyncio.to_thread(
                farm.add,
                data,
                name,
                plate=plate,
                copies=copies,
                target=chosen,
                priority=priority,
                held=held,
            )
        except ThreeMFError as exc:
            raise ApiError(422, str(exc)) from None
        for job in made:
            log.info("farm: job %d queued (%s, %s)", job.id, visible(job.name), job.target)
        return Response(
            orjson.dumps({"jobs": [job_out(j) for j in made]}),
            status_code=201,
            media_type="application/json",
        )

    @router.get(
        "/camera/{serial}/stream.mjpg",
        summary="The printer's camera (MJPEG), through the farm's camera fan-out",
        response_class=Response,
        responses={
            200: {"content": {"multipart/x-mixed-replace": {}}, "description": "The frames"},
            404: {"description": "No camera for this printer on this server"},
        },
    )
    async def camera_stream(request: Request, serial: SerialPath) -> Response:
        await ctx.gate.check(request, "read", serial, cookie=True)
        from ..servers.camera import mjpeg_response

        return mjpeg_response(cameras_for(serial), serial)

    @router.get(
        "/camera/{serial}/snapshot.jpg",
        summary="The printer's latest camera picture (JPEG)",
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "The picture"},
            404: {"description": "No camera for this printer on this server"},
        },
    )
    async def camera_snapshot(request: Request, serial: SerialPath) -> Response:
        await ctx.gate.check(request, "read", serial, cookie=True)
        from ..errors import CameraError
        from ..servers.camera import SNAPSHOT_TIMEOUT

        try:
            frame = await cameras_for(serial).snapshot(serial, SNAPSHOT_TIMEOUT)
        except CameraError as exc:
            raise ApiError(503, f"no camera picture from this printer: {one_line(exc)}") from None
        return Response(frame.jpeg, media_type="image/jpeg", headers=no_store)

    def cameras_for(serial: str) -> Any:
        farm = ctx.extra.get("farm")
        cameras = getattr(farm, "cameras", None)
        if cameras is None or not cameras.knows(serial):
            raise ApiError(404, "no camera for this printer on this server")
        return cameras

    @router.get(
        "/queue",
        response_class=HTMLResponse,
        summary="The queue page: what prints, what waits and in which order",
        responses={303: {"description": "Not logged in: to /farm/login"}},
    )
    async def queue_page(request: Request) -> Response:
        token = await token_of(request)
        if token is None:
            return _redirect("/farm/login")
        farm = farm_of()
        found = await asyncio.to_thread(farm.store.jobs, QUEUE_PAGE_STATES)
        shown = [
            j for j in found if not token.printers or not j.printer or j.printer in token.printers
        ]
        return HTMLResponse(render_queue_page(shown, token), headers=no_store)

    async def queue_change(job_id: int, change: Callable[[Any], Job]) -> Response:
        farm = farm_of()
        from .store import QueueError, UnknownJobError

        try:
            job = await asyncio.to_thread(change, farm.store)
        except UnknownJobError:
            raise ApiError(404, f"no job {job_id}") from None
        except QueueError as exc:
            raise ApiError(409, str(exc)) from None
        if farm.dispatcher is not None:
            farm.dispatcher.poke()
        return Response(orjson.dumps(job_out(job)), media_type="application/json")

    @router.post(
        "/api/jobs/{job_id}/move",
        summary="Put a waiting job just before another (before=ID, taking its priority), "
        "or last in its priority (no before)",
    )
    async def job_move(request: Request, job_id: int, before: int | None = None) -> Response:
        token = await ctx.gate.check(request, "control", cookie=True)
        if token.printers:
            raise ApiError(403, "the queue's order is the whole farm's: not for a printer's token")
        return await queue_change(job_id, lambda store: store.move(job_id, before))

    @router.post("/api/jobs/{job_id}/priority", summary="Set a waiting job's priority")
    async def job_priority(
        request: Request,
        job_id: int,
        value: Annotated[int, Query(ge=-1000, le=1000, description="Higher goes first")],
    ) -> Response:
        token = await ctx.gate.check(request, "control", cookie=True)
        if token.printers:
            raise ApiError(403, "the queue's order is the whole farm's: not for a printer's token")
        return await queue_change(job_id, lambda store: store.set_priority(job_id, value))

    @router.get(
        "/api/jobs/{job_id}/thumbnail",
        summary="The picture of a job's plate (PNG, from its 3MF)",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}, "description": "The plate's picture"},
            404: {"description": "No such job, or its file has no picture"},
        },
    )
    async def job_thumbnail(request: Request, job_id: int) -> Response:
        token = await ctx.gate.check(request, "read", cookie=True)
        farm = farm_of()
        from .store import QueueError

        try:
            job = await asyncio.to_thread(farm.store.job, job_id)
        except QueueError:
            raise ApiError(404, f"no job {job_id}") from None
        if token.printers and job.printer and job.printer not in token.printers:
            raise ApiError(404, f"no job {job_id}")  # as if absent: nothing told of others' jobs
        data = await asyncio.to_thread(farm.thumbnail, job)
        if data is None:
            raise ApiError(404, f"job {job_id}'s file has no plate picture")
        return Response(
            data,
            media_type="image/png",
            headers={
                "cache-control": "private, max-age=86400",
                "x-content-type-options": "nosniff",
            },
        )

    @router.post("/api/jobs/{job_id}/{action}", summary="Hold, release or cancel a job")
    async def job_action(request: Request, job_id: int, action: str) -> Response:
        await ctx.gate.check(request, "control", cookie=True)
        if action not in JOB_ACTIONS:
            raise ApiError(404, f"a job's actions are {', '.join(JOB_ACTIONS)}")
        farm = farm_of()
        from .store import QueueError  # the queue needs the farm extra; the dashboard does not

        try:
            job = await asyncio.to_thread(getattr(farm.store, action), job_id)
        except QueueError as exc:
            raise ApiError(409, str(exc)) from None
        if job.printer:
            tiles.touch(job.printer)
        return Response(orjson.dumps(job_out(job)), media_type="application/json")

    @router.post(
        "/api/printers/{serial}/bed-cleared",
        summary="The bed is clear: the printer may print again",
    )
    async def bed_cleared(request: Request, serial: SerialPath) -> Response:
        await ctx.gate.check(request, "control", serial, cookie=True)
        farm = farm_of()
        if ctx.hub is None or ctx.hub.entry(serial) is None:
            raise ApiError(404, "this server serves no such printer")
        settings = await asyncio.to_thread(farm.store.bed_cleared, serial)
        tiles.touch(serial)
        if farm.dispatcher is not None:
            farm.dispatcher.poke()
        return Response(
            orjson.dumps({"serial": serial, "bed_clear_needed": settings.bed_clear_needed}),
            media_type="application/json",
        )

    @router.post(
        "/api/printers/{serial}/settings",
        summary="The printer's farm settings: auto_clear (it clears its own bed), tags "
        "(locations, comma-separated)",
    )
    async def printer_settings(
        request: Request,
        serial: SerialPath,
        auto_clear: bool | None = None,
        tags: Annotated[
            str | None,
            Query(
                pattern=r"^[^,]{0,32}(,[^,]{0,32}){0,15}$",
                description="Up to 16 tags of up to 32 characters, comma-separated",
            ),
        ] = None,
    ) -> Response:
        await ctx.gate.check(request, "control", serial, cookie=True)
        farm = farm_of()
        if ctx.hub is None or ctx.hub.entry(serial) is None:
            raise ApiError(404, "this server serves no such printer")
        try:
            if auto_clear is not None:
                await asyncio.to_thread(farm.store.set_auto_clear, serial, auto_clear)
            if tags is not None:
                names = [t.strip() for t in tags.split(",") if t.strip()]
                await asyncio.to_thread(farm.store.set_tags, serial, names)
            settings = await asyncio.to_thread(farm.store.settings, serial)
        except BambuError as exc:
            raise ApiError(422, str(exc)) from None
        tiles.touch(serial)
        body = {
            "serial": serial,
            "auto_clear": settings.auto_clear,
            "bed_clear_needed": settings.bed_clear_needed,
            "tags": list(settings.tags),
        }
        return Response(orjson.dumps(body), media_type="application/json")

    stats_routes(ctx, router, token_of, farm_of)

    control, run = command_routes(
        ctx, router, "/api/printers/{serial}/commands/{command}", COMMAND_ERRORS, cookie=True
    )

    @control("speed", "Set the print speed level (1 silent .. 4 ludicrous)")
    async def speed(
        request: Request,
        serial: SerialPath,
        level: Annotated[int, Query(ge=1, le=4, description="1 silent .. 4 ludicrous")],
    ) -> Response:
        return await run(request, serial, lambda: proto.print_speed(level))

    return router


# --- statistics ---------------------------------------------------------------------------------

STATS_CLOUD_TTL = 60.0  # seconds the cloud's task records are reused
STATS_CLOUD_TIMEOUT = 20.0  # the whole read of the task records, at most
STATS_CLOUD_TASKS = 2000  # the newest task records read, at most
SinceQuery = Annotated[
    float | None,
    Query(ge=0, description="Only prints that ended at or after this time (Unix seconds)"),
]


class CloudTasks:
    """The account's task records (newest :data:`STATS_CLOUD_TASKS`), reused a minute.

    ``note`` says what the last read gave: ``""`` (read), ``"no cloud account"``,
    or why it failed (the statistics then show the farm's history alone).
    """

    def __init__(self, ctx: ServerContext, retry: Any = None) -> None:
        self.ctx = ctx
        self.retry = retry  # the client's RetryPolicy (None: its default)
        self._client: Any = None
        self._kept: tuple[float, list[Any]] | None = None
        self._lock = asyncio.Lock()
        self.note = ""

    async def read(self) -> list[Any]:
        if not self.ctx.cloud_url or not self.ctx.account_token:
            self.note = "no cloud account"
            return []
        async with self._lock:
            now = time.monotonic()
            if self._kept is not None and now - self._kept[0] < STATS_CLOUD_TTL:
                return self._kept[1]
            if self._client is None:
                from ..cloud.client import AsyncBambuClient

                self._client = AsyncBambuClient(
                    self.ctx.account_token,
                    base_url=self.ctx.cloud_url,
                    timeout=10.0,
                    retry=self.retry,
                )
            client = self._client

            async def fetch() -> list[Any]:
                pages = client.iter_tasks(page_size=100, max_items=STATS_CLOUD_TASKS)
                return [task async for task in pages]

            try:
                tasks = await asyncio.wait_for(fetch(), STATS_CLOUD_TIMEOUT)
            except (BambuError, TimeoutError) as exc:
                from ..servers.runner import one_line

                self.note = f"the cloud's task records could not be read: {one_line(exc)}"
                log.warning("farm: %s", self.note)
                return self._kept[1] if self._kept is not None else []
            self.note = ""
            self._kept = (time.monotonic(), tasks)
            return tasks

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def render_stats_page(stats: Any, note: str) -> str:
    """The statistics page: per-printer table, SVG charts, failures with text and wiki link."""
    from .stats import code_info, svg_failures, svg_grams, svg_prints

    def rate(value: float | None) -> str:
        return "" if value is None else f"{value * 100:.1f} %"

    rows = "".join(
        f"<tr><td>{_e(s.name or s.printer)}</td><td><code>{_e(s.printer)}</code></td>"
        f'<td class="n">{s.prints}</td><td class="n">{s.finished}</td>'
        f'<td class="n">{s.failed}</td><td class="n">{s.cancelled}</td>'
        f'<td class="n">{rate(s.success_rate)}</td><td class="n">{s.hours:.2f}</td>'
        f'<td class="n">{s.total_grams:.1f}</td></tr>'
        for s in stats.printers
    )
    t = stats.total
    total = (
        f'<tr class="total"><td>Farm</td><td></td><td class="n">{t.prints}</td>'
        f'<td class="n">{t.finished}</td><td class="n">{t.failed}</td>'
        f'<td class="n">{t.cancelled}</td><td class="n">{rate(t.success_rate)}</td>'
        f'<td class="n">{t.hours:.2f}</td><td class="n">{t.total_grams:.1f}</td></tr>'
    )
    failures = []
    for code, count in t.failures:
        text, wiki = code_info(code)
        link = f' <a href="{_e(wiki)}" rel="noreferrer" target="_blank">wiki</a>' if wiki else ""
        failures.append(
            f'<tr><td><code>{_e(code)}</code></td><td class="n">{count}</td>'
            f"<td>{_e(text or 'no text known')}{link}</td></tr>"
        )
    failure_table = (
        '<table class="stats"><thead><tr><th>Code</th><th>Failures</th><th>What it means</th>'
        f"</tr></thead><tbody>{''.join(failures)}</tbody></table>"
        if failures
        else "<p>No failed print.</p>"
    )
    shown_note = f'<p class="note">{_e(note)}</p>' if note else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Farm statistics</title>"
        '<link rel="stylesheet" href="/farm/static/dashboard.css"></head><body class="stats">'
        '<header class="bar"><h1>Farm statistics</h1><a href="/farm">Dashboard</a>'
        '<a href="/farm/api/stats.csv?per=printer" download>CSV per printer</a>'
        '<a href="/farm/api/stats.csv?per=print" download>CSV per print</a></header>'
        f"<main>{shown_note}"
        '<table class="stats"><thead><tr><th>Printer</th><th>Serial</th><th>Prints</th>'
        "<th>Finished</th><th>Failed</th><th>Cancelled</th><th>Success</th><th>Hours</th>"
        f"<th>Grams</th></tr></thead><tbody>{rows}{total}</tbody></table>"
        f'<section><h2>Prints per printer</h2><div class="scroll">{svg_prints(stats)}</div>'
        '<p class="legend"><span class="k-finished">finished</span> '
        '<span class="k-failed">failed</span> <span class="k-cancelled">cancelled</span></p>'
        "</section>"
        f'<section><h2>Filament</h2><div class="scroll">{svg_grams(stats)}</div></section>'
        f'<section><h2>Failures</h2><div class="scroll">{svg_failures(stats)}</div>'
        f"{failure_table}</section></main></body></html>"
    )


def stats_routes(
    ctx: ServerContext,
    router: APIRouter,
    token_of: Callable[[Request], Any],
    farm_of: Callable[[], Any],
) -> None:
    """The statistics page and its JSON and CSV (see :mod:`bambulab.farm.stats`).

    Also puts the farm's :class:`~bambulab.farm.stats.FarmCounters` where the
    ``/metrics`` route finds them (``ctx.extra["farm_counters"]``).
    """
    from ..servers.runner import one_line
    from .stats import FarmCounters, aggregate, from_ended, from_task, merge

    cloud = CloudTasks(ctx)
    ctx.on_stop.append(cloud.aclose)
    farm = ctx.extra.get("farm")
    if farm is not None and "farm_counters" not in ctx.extra:
        counters = FarmCounters(farm.store.ended)
        ctx.extra["farm_counters"] = counters
        warming: list[asyncio.Future[Any]] = []

        def warm() -> None:
            try:
                counters.warm()
            except Exception as exc:  # the store closed under it, the database went away...
                log.warning("farm: the statistics' counters could not be read: %s", one_line(exc))

        async def start_warming() -> None:
            # in the background: a long history must not hold the server's start
            warming.append(asyncio.ensure_future(asyncio.to_thread(warm)))

        ctx.on_start.append(start_warming)

    async def collect(token: IssuedToken, since: float | None) -> tuple[Any, list[Any], str]:
        store = farm_of().store
        kept = ctx.extra.get("farm_counters")
        tasks = await cloud.read()
        names = {e.serial: e.name for e in ctx.hub.printers()} if ctx.hub is not None else {}

        def build() -> tuple[Any, list[Any]]:
            # off the loop: a long history is seconds of work the first time
            if kept is not None:  # the farm's prints, read incrementally
                farm_prints = [replace(r, name=names.get(r.printer, "")) for r in kept.records()]
            else:
                rows = store.ended()
                farm_prints = [r for row in rows if (r := from_ended(row, names.get(row[2], "")))]
            cloud_prints = [r for t in tasks if (r := from_task(t))]
            prints = merge(farm_prints, cloud_prints)
            if token.printers:
                prints = [p for p in prints if p.printer in token.printers]
            if since is not None:
                prints = [p for p in prints if p.end >= since]
            return aggregate(prints, since, names), prints

        stats, prints = await asyncio.to_thread(build)
        return stats, prints, cloud.note

    @router.get(
        "/stats",
        response_class=HTMLResponse,
        summary="The statistics page",
        responses={303: {"description": "Not logged in: to /farm/login"}},
    )
    async def stats_page(request: Request, since: SinceQuery = None) -> Response:
        token = await token_of(request)
        if token is None:
            return _redirect("/farm/login")
        stats, _, note = await collect(token, since)
        return HTMLResponse(render_stats_page(stats, note), headers={"cache-control": "no-store"})

    @router.get(
        "/api/stats",
        summary="The statistics: per printer and for the farm (prints=true: every print too)",
    )
    async def stats_api(
        request: Request, since: SinceQuery = None, prints: bool = False
    ) -> Response:
        from .stats import stats_json

        token = await ctx.gate.check(request, "read", cookie=True)
        stats, listed, note = await collect(token, since)
        body = stats_json(stats, listed if prints else ())
        body["cloud"] = note or "read"
        return Response(orjson.dumps(body), media_type="application/json")

    @router.get(
        "/api/stats.csv",
        summary="The statistics as CSV (RFC 4180, UTF-8): per print or per printer",
        response_class=Response,
        responses={200: {"content": {"text/csv": {}}, "description": "CSV with a header row"}},
    )
    async def stats_csv(
        request: Request,
        per: Annotated[str, Query(pattern="^(print|printer)$")] = "print",
        since: SinceQuery = None,
    ) -> Response:
        from .stats import csv_printers, csv_prints

        token = await ctx.gate.check(request, "read", cookie=True)
        stats, prints, _ = await collect(token, since)
        text = csv_prints(prints) if per == "print" else csv_printers(stats)
        return Response(
            text.encode("utf-8"),
            media_type="text/csv; charset=utf-8; header=present",
            headers={
                "content-disposition": f'attachment; filename="farm-{per}s.csv"',
                "cache-control": "no-store",
            },
        )
