"""One FastAPI app that mounts the parts a server is configured with.

``bambu serve`` mounts everything configured; ``bambu serve proxy`` and
``bambu serve compat`` mount one part each (plus what every server has). The
parts share one :class:`ServerContext`: the token gate, the event bus, the
live hub (one upstream MQTT connection for every client) and the account's
upstream API. Every part is an ``APIRouter`` built by its module:

* ``proxy`` (:func:`bambulab.servers.proxy.proxy_routes`): ``/v1/...`` to the cloud;
* ``compat`` (:func:`bambulab.servers.compat.compat_routes`): the legacy ``/api/v1``;
* ``live`` (:func:`bambulab.servers.api_v2.live_routes`): ``/api/v2`` and its events;
* ``metrics`` (:func:`bambulab.servers.metrics.metrics_routes`): ``/metrics``;
* ``farm`` (:func:`bambulab.farm.web.farm_routes`): the dashboard at ``/farm``.

Every app has ``/`` (what is mounted), ``/health``, the OpenAPI schema and
``/docs``, the audit line per request and the one error shape of
:mod:`bambulab.servers.common`. CORS is off unless origins are given.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .common import AuditLog, BodyLimit, EventBus, Gate, MemoryEventBus, install_errors

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .live import LiveHub

__all__ = ["PARTS", "ServerContext", "build_app"]

PARTS = ("proxy", "compat", "live", "metrics", "farm")
VERSION = "2"


@dataclass
class ServerContext:
    """What the parts of one server share.

    ``gate``: the token check and rate limit. ``bus``: the event stream.
    ``hub``: live printer state and commands (``None``: no MQTT configured).
    ``cloud_url``: the Bambu API base the proxy forwards to and the compat
    API falls back on (a region's, or the simulator's). ``account_token``:
    the Bambu account token, from the server's own token file; it is sent
    upstream and never to a client of the server. ``proxy_mode``: ``strict``
    or ``full``. ``cors_origins``: browsers' origins allowed (none by default).
    """

    gate: Gate
    bus: EventBus = field(default_factory=MemoryEventBus)
    hub: LiveHub | None = None
    cloud_url: str = ""
    account_token: str = field(default="", repr=False)
    proxy_mode: str = "strict"
    cors_origins: tuple[str, ...] = ()
    started: float = field(default_factory=time.time)
    # run on the server's loop when it starts / stops (the hub, upstream clients...)
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # One stream per server: the hub publishes on the bus the event stream reads.
        if self.hub is not None:
            self.hub.bus = self.bus

    async def start(self) -> None:
        if self.hub is not None:
            await self.hub.start()
        for hook in self.on_start:
            await hook()

    async def aclose(self) -> None:
        for hook in reversed(self.on_stop):
            await hook()
        if self.hub is not None:
            await self.hub.aclose()
        await self.bus.aclose()
        await self.gate.limiter.aclose()


def _router(part: str, ctx: ServerContext) -> Any:
    if part == "proxy":
        from .proxy import proxy_routes

        return proxy_routes(ctx)
    if part == "compat":
        from .compat import compat_routes

        return compat_routes(ctx)
    if part == "live":
        from .api_v2 import live_routes

        return live_routes(ctx)
    if part == "metrics":
        from .metrics import metrics_routes

        return metrics_routes(ctx)
    if part == "farm":
        from ..farm.web import farm_routes

        return farm_routes(ctx)
    raise ValueError(f"unknown server part {part!r} (known: {', '.join(PARTS)})")


def build_app(ctx: ServerContext, parts: Sequence[str]) -> FastAPI:
    """The app with ``parts`` (names from :data:`PARTS`) mounted on ``ctx``."""
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware

    chosen = [p for p in PARTS if p in parts]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown server part(s) {', '.join(unknown)} (known: {', '.join(PARTS)})")
    app = FastAPI(
        title="bambulab server",
        version=VERSION,
        description=(
            "Bambu Lab printers behind tokens this server issues: "
            + ", ".join(chosen or ["nothing mounted"])
            + "."
        ),
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    install_errors(app)
    app.state.ctx = ctx

    @app.get("/", tags=["server"], summary="What this server serves")
    async def index() -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": "bambulab server",
            "version": VERSION,
            "parts": chosen,
            "docs": "/docs",
            "status": "online",
        }
        if "proxy" in chosen:
            body["proxy_mode"] = ctx.proxy_mode
        return body

    @app.get("/health", tags=["server"], summary="Liveness and upstream state")
    async def health() -> dict[str, Any]:
        hub = ctx.hub
        return {
            "status": "healthy",
            "uptime_s": round(time.time() - ctx.started, 1),
            "parts": chosen,
            "mqtt": "none" if hub is None else ("connected" if hub.connected else "down"),
            "printers": 0 if hub is None else len(hub.printers()),
        }

    for part in chosen:
        app.include_router(_router(part, ctx))
    if ctx.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(ctx.cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )
    if "metrics" in chosen:  # HTTP requests by status, for /metrics
        from .metrics import RequestCounter

        app.add_middleware(RequestCounter, ctx=ctx)
    if "farm" in chosen:
        from ..farm.web import UPLOAD_LIMIT, UPLOAD_PATH

        app.add_middleware(BodyLimit, larger={UPLOAD_PATH: UPLOAD_LIMIT})
    else:
        app.add_middleware(BodyLimit)
    app.add_middleware(AuditLog)
    app.openapi = _unique_operation_ids(app)  # type: ignore[method-assign]
    return app


def _unique_operation_ids(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` with one operation id per method.

    FastAPI names every method of a multi-method route (``/farm/login``, GET
    and POST: one route so that a 405 names both) after the first method, so
    the schema held duplicate ids, which OpenAPI forbids and client generators
    trip on. Each operation named after another method gets its own.
    """
    import warnings

    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
        seen: set[str] = set()
        for item in schema.get("paths", {}).values():
            for method, operation in item.items():
                name = operation.get("operationId") if isinstance(operation, dict) else None
                if name is None:
                    continue
                base, _, last = name.rpartition("_")
                if last in _HTTP_METHODS and last != method:  # named after another method
                    name = f"{base}_{method}"
                if name in seen:
                    name = f"{name}_{method}"
                operation["operationId"] = name
                seen.add(name)
        app.openapi_schema = schema
        return schema

    return openapi


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
