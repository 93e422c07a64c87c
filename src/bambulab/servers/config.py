"""Assemble a running server from options: ``bambu serve``, ``bambu sim --serve`` and the demo.

:func:`open_server` lists the account's printers with the cloud API (the
account token stays here: it goes upstream, never to a client), opens **one**
MQTT connection that follows all of them (the cloud broker, or a shared
broker several instances follow), picks in-process or Redis-shared rate
limits and events, and returns an :class:`~bambulab.servers.runner.AppServer`
ready to start with the parts asked for mounted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .app import PARTS, ServerContext, build_app
from .common import EventBus, Gate, MemoryEventBus, MemoryRateLimiter, RateLimit, RateLimiter
from .live import LiveHub, PrinterEntry
from .runner import AppServer
from .tokens import TokenStore

if TYPE_CHECKING:
    from ..farm.models import Job
    from ..local.lan_print import LanPrinter
    from ..models import Device
    from ..sim.live import Simulator
    from .camera import CameraHub

__all__ = ["DEFAULT_RATE", "ServeOptions", "Server", "open_server"]

DEFAULT_RATE = RateLimit(120, 60.0)
DEFAULT_PORT = 8088


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What ``bambu serve`` was asked for (secrets are not options: see :func:`open_server`)."""

    parts: tuple[str, ...] = PARTS
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    proxy_mode: str = "strict"
    store: str | None = None
    rate: RateLimit | None = DEFAULT_RATE
    redis: str | None = None
    cors: tuple[str, ...] = ()
    printers: tuple[str, ...] = ()  # serials or names; empty: every bound printer
    live: bool = True  # follow the printers over MQTT (needed by compat's live data, v2, metrics)
    mqtt_host: str | None = None
    mqtt_port: int | None = None
    ca_file: str | None = None
    # a shared broker the reports are relayed to (mqtts://user:pass@host:port) instead of
    # the cloud's: several instances follow one fleet without a session each
    broker: str | None = field(default=None, repr=False)
    broker_ca: str | None = None
    # the farm: its queue's database URL (None: SQLite in the state directory), where it
    # keeps queued files (None: next to the database), a notifications file (TOML/JSON)
    farm_database: str | None = field(default=None, repr=False)
    farm_files: str | None = None
    farm_notify: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Server(AppServer):
    """An :class:`AppServer` that also owns its :class:`ServerContext` (hub, bus, limiter)."""

    def __init__(self, ctx: ServerContext, parts: Sequence[str], options: ServeOptions) -> None:
        self.ctx = ctx
        self.parts = tuple(parts)
        self.issued_token: str | None = None  # a token made for the caller (bambu sim --serve)
        self._remove: str | None = None  # a private folder to delete on stop
        super().__init__(
            build_app(ctx, parts),
            host=options.host,
            port=options.port,
            name="bambu-server",
            on_start=ctx.start,
            on_stop=ctx.aclose,
        )

    def before_stop(self) -> None:
        # Open event and camera streams end first, so uvicorn need not wait them out.
        self.run(self.ctx.bus.aclose(), 5.0)
        cameras = getattr(self.ctx.extra.get("farm"), "cameras", None)
        if cameras is not None:
            self.run(cameras.aclose(), 5.0)

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        if self._remove is not None:
            import shutil

            shutil.rmtree(self._remove, ignore_errors=True)
            self._remove = None

    def export_lines(self) -> list[str]:
        """Shell lines: the server's URL, its token store and the token issued, if any."""
        import shlex

        values = [("BAMBU_SERVER_URL", self.url)]
        values.append(("BAMBU_TOKEN_STORE", str(self.ctx.gate.store.path)))
        if self.issued_token:
            values.append(("BAMBU_SERVER_TOKEN", self.issued_token))
        return [f"export {name}={shlex.quote(value)}" for name, value in values]

    def __enter__(self) -> Server:
        self.start()
        return self

    def __repr__(self) -> str:
        return f"Server(url={self.url!r}, parts={list(self.parts)!r})"


def choose(devices: Sequence[Device], wanted: Sequence[str]) -> list[PrinterEntry]:
    """The printers to serve: every bound one, or those named (by serial or name)."""
    entries = [
        PrinterEntry(d.serial, d.name or d.serial, d.dev_model_name or "")
        for d in devices
        if d.serial
    ]
    if not wanted:
        return entries
    chosen: list[PrinterEntry] = []
    for name in wanted:
        match = [e for e in entries if name in (e.serial, e.name)]
        if not match:
            known = ", ".join(e.serial for e in entries) or "none"
            raise ConfigurationError(f"no bound printer {name!r} (bound: {known})")
        chosen.extend(m for m in match if m not in chosen)
    return chosen


def shared_state(redis_url: str | None) -> tuple[RateLimiter, EventBus]:
    """In-process limits and events, or Redis-shared ones (``--redis``)."""
    if not redis_url:
        return MemoryRateLimiter(), MemoryEventBus()
    from .shared import shared_from_url

    return shared_from_url(redis_url)


def open_server(
    options: ServeOptions,
    *,
    account_token: str,
    cloud_url: str,
    region: str = "global",
) -> Server:
    """A server (not started) for ``options``, on the account of ``account_token``.

    ``cloud_url``: the API base the proxy forwards to and the printers are
    listed from (the region's, or the simulator's). Raises
    :class:`~bambulab.errors.BambuError` subclasses with one line when the
    account cannot be read.
    """
    from ..cloud.client import BambuClient
    from ..mqtt.client import AsyncBambuMQTT
    from ..protocol.jwt import decode_claims

    parts = tuple(p for p in PARTS if p in options.parts)
    if not parts:
        raise ConfigurationError(f"nothing to serve: choose among {', '.join(PARTS)}")
    if not account_token:
        raise ConfigurationError(
            "the server needs the Bambu account: run `bambu login` (or set BAMBU_TOKEN)"
        )
    store = TokenStore(options.store)
    limiter, bus = shared_state(options.redis)
    gate = Gate(store, limiter=limiter, limit=options.rate)
    needs_live = options.live and any(p in parts for p in ("compat", "live", "metrics", "farm"))
    devices: list[Device] = []
    hub = None
    if needs_live:
        with BambuClient(account_token, region, base_url=cloud_url) as client:
            devices = client.get_devices()
            entries = choose(devices, options.printers)
            uid = decode_claims(account_token).uid or client.get_user_id()
        models = {e.serial: e.model for e in entries if e.model}
        serials = [e.serial for e in entries]
        if options.broker:
            mqtt = AsyncBambuMQTT(
                None, serials, broker=options.broker, ca_file=options.broker_ca, models=models
            )
        else:
            mqtt = AsyncBambuMQTT(
                uid,
                serials,
                token=account_token,
                region=region,
                host=options.mqtt_host,
                port=options.mqtt_port,
                ca_file=options.ca_file,
                models=models,
            )
        hub = LiveHub([mqtt], entries, bus)
    ctx = ServerContext(
        gate=gate,
        bus=bus,
        hub=hub,
        cloud_url=cloud_url.rstrip("/"),
        account_token=account_token,
        proxy_mode=options.proxy_mode,
        cors_origins=options.cors,
    )
    if "farm" in parts and hub is not None:
        _attach_farm(ctx, hub, options, devices)
    return Server(ctx, parts, options)


def _attach_farm(
    ctx: ServerContext, hub: LiveHub, options: ServeOptions, devices: Sequence[Device]
) -> None:
    """The farm's queue, dispatcher and notifier on ``ctx`` (the ``farm`` part's data)."""
    from pathlib import Path

    from ..farm.dispatcher import Dispatcher
    from ..farm.notify import Notifier, NotifyConfig, PrinterInfo
    from ..farm.service import Farm, attach
    from ..farm.store import FarmStore, default_database_path
    from ..local.lan_print import LanPrinter

    store = FarmStore(options.farm_database)
    files = Path(options.farm_files) if options.farm_files else default_database_path().parent
    given: dict[str, LanPrinter] = options.extra.get("farm_lan", {})
    codes = {d.dev_id: d.dev_access_code for d in devices if d.dev_access_code}
    models = {d.dev_id: d.dev_model_name for d in devices}

    def reach(serial: str) -> LanPrinter | None:
        if serial in given:
            return given[serial]
        state = hub.state(serial)
        host = state.ip_address if state is not None else None
        code = codes.get(serial)
        if not host or not code:
            return None
        return LanPrinter(host=host, serial=serial, access_code=code, model=models.get(serial))

    notifier = None
    if options.farm_notify:
        path = Path(options.farm_notify)
        text = path.read_text("utf-8")
        config = (
            NotifyConfig.from_json(text) if path.suffix == ".json" else NotifyConfig.from_toml(text)
        )

        def directory(serial: str) -> PrinterInfo:
            entry = hub.entry(serial)
            return PrinterInfo(
                name=entry.name if entry else "", tags=frozenset(store.settings(serial).tags)
            )

        notifier = Notifier(config, printers=directory)
    from ..cloud.client import AsyncBambuClient
    from ..farm.starter import start_job_cloud

    cloud: list[AsyncBambuClient] = []  # opened on the server's loop, at the first cloud start

    async def cloud_start(
        job: Job, serial: str, mapping: Sequence[int] | None, timeout: float
    ) -> None:
        if not cloud:
            cloud.append(AsyncBambuClient(ctx.account_token, base_url=ctx.cloud_url))
        # the hub's own connection, when it is the cloud's broker (not a shared one)
        mqtt = None if options.broker else hub.source_for(serial)
        await start_job_cloud(job, serial, cloud[0], mqtt=mqtt, mapping=mapping, timeout=timeout)

    dispatcher = Dispatcher(store, hub, reach, cloud=cloud_start)
    farm = Farm(
        store,
        files / "farm-files",
        dispatcher=dispatcher,
        notifier=notifier,
        cameras=_farm_cameras(options, reach, set(codes)),
    )
    attach(ctx, farm)

    async def close_store() -> None:
        for client in cloud:
            await client.aclose()
        store.close()

    ctx.on_stop.append(close_store)


def _farm_cameras(
    options: ServeOptions, reach: Callable[[str], LanPrinter | None], coded: set[str]
) -> CameraHub:
    """The camera fan-out of the farm's tiles: one camera connection per watched printer.

    A printer's camera is opened where ``options.extra["farm_cameras"]`` says
    (``bambu sim``: its endpoints, with their ports), else at the address it
    reports with the access code the account gives, on the family's port.
    """
    from ..errors import CameraUnavailableError
    from ..local.camera import open_async_camera
    from .camera import AsyncFrameSource, CameraHub

    given: dict[str, Any] = {
        serial: e
        for serial, e in options.extra.get("farm_cameras", {}).items()
        if e.host and (e.camera_port or e.rtsp_url)
    }

    def open_camera(serial: str) -> AsyncFrameSource:
        found = given.get(serial)
        if found is not None:
            ports = {"port": found.camera_port} if found.camera_port else {}
            source: AsyncFrameSource = open_async_camera(
                found.host,
                found.access_code,
                serial,
                model=found.model,
                rtsp_url=found.rtsp_url,
                ca_file=options.ca_file,
                **ports,
            )
            return source
        printer = reach(serial)
        if printer is None:
            raise CameraUnavailableError(
                "no LAN address or access code known for its camera", serial=serial
            )
        return open_async_camera(printer.host, printer.access_code, serial, model=printer.model)

    return CameraHub(open_camera, serials=set(given) | coded)


def environment_mqtt() -> tuple[str | None, int | None, str | None]:
    """``BAMBU_MQTT_HOST``/``_PORT`` and ``BAMBU_CA_FILE`` (``bambu sim`` exports them)."""
    port = os.environ.get("BAMBU_MQTT_PORT", "")
    return (
        os.environ.get("BAMBU_MQTT_HOST") or None,
        int(port) if port.isdigit() else None,
        os.environ.get("BAMBU_CA_FILE") or None,
    )


def open_sim_server(
    sim: Simulator,
    parts: Sequence[str],
    *,
    port: int = 0,
    proxy_mode: str = "strict",
    rate: RateLimit | None = DEFAULT_RATE,
) -> Server:
    """A server on the simulator's demo account, with a token store of its own.

    The store lives in a private temporary folder removed when the server
    stops; one ``control`` token is issued into it (:attr:`Server.issued_token`,
    exported as ``BAMBU_SERVER_TOKEN``), and ``BAMBU_TOKEN_STORE`` lets
    ``bambu serve token create`` add more while it runs.
    """
    import tempfile

    folder = tempfile.mkdtemp(prefix="bambu-sim-server-")
    try:
        options = ServeOptions(
            parts=tuple(parts),
            port=port,
            proxy_mode=proxy_mode,
            store=os.path.join(folder, "tokens.sqlite3"),
            rate=rate,
            live=sim.mqtt_enabled,
            mqtt_host=sim.mqtt_host if sim.mqtt_enabled else None,
            mqtt_port=sim.mqtt_port if sim.mqtt_enabled else None,
            ca_file=sim.ca_file,
            farm_database=f"sqlite:///{os.path.join(folder, 'farm.db')}",
            farm_files=folder,
            extra=(
                {
                    "farm_lan": sim.lan_printers(),
                    "farm_cameras": {e.serial: e for e in sim.endpoints()},
                }
                if "farm" in parts
                else {}
            ),
        )
        account = sim.demo_account
        login = account.email or account.phone or ""
        server = open_server(options, account_token=sim.issue_token(login), cloud_url=sim.url)
        server.issued_token, _ = server.ctx.gate.store.create("control", label="bambu sim")
    except BaseException:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        raise
    server._remove = folder
    return server
