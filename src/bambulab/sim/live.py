"""The whole simulator in one object: cloud HTTP API, MQTT brokers and live printers.

:class:`Simulator` starts, in this order, the cloud (:class:`CloudSimulator`),
the certificates (:mod:`.certs`), the brokers (embedded amqtt by default,
mosquitto, or an external broker by URL for the cloud role) and the printer
host (:mod:`.mqtt_host`) with one :class:`~bambulab.sim.printer.SimPrinter`
per device of the cloud's world: same serials, names, access codes, AMS and
running jobs. ``bambu sim`` runs exactly this.

    with Simulator(SimConfig(), time_scale=60) as sim:
        sim.mqtt_host, sim.mqtt_port, sim.ca_file      # the cloud broker (TLS)
        sim.lan_address(serial)                        # a printer's own broker
        sim.ftps_address(serial)                       # its SD card over implicit FTPS
        sim.camera_address(serial)                     # a P1/A1's JPEG camera (TLS)
        sim.rtsp_url(serial)                           # an X1/P2/H2's RTSPS camera
        sim.issue_token("maker@example.com")           # password for u_<uid>
        sim.restart_broker("cloud")                    # and other faults

Faults for tests (also ``POST /sim/mqtt/faults``): cut every connection of a
broker, restart a broker on the same port, stall a printer's reports,
publish malformed payloads on a printer's report topic, take a printer
offline and back, and serve a LAN certificate with the wrong CN. The
printers' FTPS servers (:mod:`.ftps`) have theirs: a full SD card,
connections cut after N bytes, a stall, not listening. So do the P1/A1
printers' cameras (:mod:`.camera`, and :mod:`.rtsp` for the X1/P2/H2
families): a stall, cut connections, not listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..protocol.camera import rtsps_url
from .brokers import LOOPBACK, BrokerRuntime, CloudPolicy, Credential, EmbeddedBroker, LanPolicy
from .camera import DEFAULT_INTERVAL, DEFAULT_MAX_CLIENTS, CameraHost, camera_view
from .camera_frames import CameraView
from .certs import SimCertificates
from .config import SimConfig
from .errors import bad_request
from .farm import FaultDraw, FlakyPower, check_rate, farm_fleet, farm_router
from .follow import FOLLOW_INTERVAL, CloudFollower, CloudStorage, snapshot
from .ftps import FtpsHost
from .mosquitto import ExternalBroker, MosquittoBroker
from .mqtt_host import PrinterHost, Route
from .printer import SimPrinter
from .printer.sdcard import DEFAULT_CAPACITY
from .printer.state import FAULT_KINDS, FaultPlan
from .records import Account
from .rtsp import DEFAULT_FPS, RtspEndpoint
from .server import CloudSimulator
from .world import World

if TYPE_CHECKING:
    from ..local.lan_print import LanPrinter

log = logging.getLogger("bambulab.sim")

T = TypeVar("T")

CLOUD = "cloud"
HOST_USER = "bambu-sim-host"
MALFORMED_KINDS = ("not_json", "wrong_types", "deep", "noise", "empty", "not_object")
Target = Literal["cloud", "lan", "all"]


def malformed_payload(kind: str, seed: int = 0) -> bytes:
    """Bytes a parser must survive (see ``MALFORMED_KINDS``)."""
    if kind == "not_json":
        return b'{"print": {"command": "push_status", "nozzle_temper": 2'
    if kind == "wrong_types":
        return orjson.dumps(
            {
                "print": {
                    "command": "push_status",
                    "msg": "one",
                    "sequence_id": 7,
                    "nozzle_temper": "hot",
                    "bed_temper": None,
                    "mc_percent": "50%",
                    "mc_remaining_time": [1],
                    "gcode_state": 3,
                    "layer_num": {"n": 1},
                    "ams": "absent",
                    "hms": {"attr": "x"},
                    "lights_report": "on",
                    "wifi_signal": -45,
                }
            }
        )
    if kind == "deep":
        # Valid JSON, but nested far beyond what orjson (1024) or json's
        # recursion limit accept.
        depth = 5000
        return b'{"print":' + b'{"a":' * depth + b"1" + b"}" * (depth + 1)
    if kind == "noise":
        return random.Random(seed).randbytes(1 << 20)
    if kind == "empty":
        return b""
    if kind == "not_object":
        return b"[1, 2, 3]"
    raise ValueError(f"unknown malformed payload {kind!r} (known: {', '.join(MALFORMED_KINDS)})")


@dataclass(frozen=True, slots=True)
class PrinterEndpoint:
    """Where a single-printer script finds one printer."""

    serial: str
    access_code: str
    model: str  # dev_model_name, e.g. "C12"
    host: str | None
    port: int | None
    ftp_port: int | None = None  # implicit FTPS (a real printer: 990)
    camera_port: int | None = None  # P1/A1 JPEG camera over TLS (a real printer: 6000)
    rtsp_url: str | None = None  # X1/P2/H2 RTSPS camera, without credentials (port 322)


class Simulator:
    """Cloud, brokers and printers on loopback; a context manager.

    ``broker`` is ``"amqtt"`` (embedded, the default), ``"mosquitto"`` (a
    child process; see :mod:`.mosquitto` for what it checks) or a broker URL
    used as the cloud broker. ``lan=False`` skips the per-printer brokers
    (large fleets). ``time_scale`` speeds printers up (60: a minute per
    second); ``tick_interval`` is how often printers report.

    With the LAN side on, every printer also serves its SD card over
    implicit FTPS (:mod:`.ftps`; ``ftps=False`` turns that off):
    ``ftps_ports`` fixes ports per serial, ``ftps_port`` is the first
    printer's port and the next ones follow (default: free ports),
    ``ftps_tls13`` allows TLS 1.3 (real printers' vsftpd is taken as 1.2).

    The P1/A1 printers (JPEG cameras) also serve their camera stream
    (:mod:`.camera`; ``camera=False`` turns that off): ``camera_ports`` and
    ``camera_port`` pick ports as for FTPS, ``camera_interval`` is the time
    between frames (1 s like the printers; less for tests and benchmarks),
    ``camera_max_clients`` the viewers a printer serves at once (2 like them).

    The X1/P2/H2 printers serve RTSPS instead (:mod:`.rtsp`, on the same
    camera host): ``rtsp_ports``/``rtsp_port`` pick their ports (a real
    printer: 322), ``rtsp_fps`` the frames a second. Their reports carry the
    real URL in ``ipcam.rtsp_url``, or ``"disable"`` where LAN liveview is off
    (the H2 family out of the box); ``liveview=True`` switches it on for every
    printer (False off), :meth:`set_liveview` for one.

    A farm (:mod:`.farm`): ``printers=N`` gives the demo account N printers
    of a seeded mix of models and AMS loads instead of its fleet (``seed``
    overrides the config's); ``fail_rate`` (0-1) is the share of prints that
    fail, by filament runout or a clogged nozzle; ``flaky_rate`` how often per
    simulated hour each printer drops offline. In a farm, or with failures
    on, a runout pause resumes only once the slot is refilled (:meth:`refill`).
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        mqtt: bool = True,
        broker: str = "amqtt",
        lan: bool = True,
        time_scale: float = 1.0,
        tick_interval: float = 1.0,
        state_dir: Path | None = None,
        mosquitto_binary: str | None = None,
        printer_options: Mapping[str, Any] | None = None,
        ftps: bool = True,
        ftps_ports: Mapping[str, int] | None = None,
        ftps_port: int = 0,
        ftps_tls13: bool = False,
        camera: bool = True,
        camera_port: int = 0,
        camera_ports: Mapping[str, int] | None = None,
        camera_interval: float = DEFAULT_INTERVAL,
        camera_max_clients: int = DEFAULT_MAX_CLIENTS,
        rtsp_port: int = 0,
        rtsp_ports: Mapping[str, int] | None = None,
        rtsp_fps: float = DEFAULT_FPS,
        liveview: bool | None = None,
        printers: int | None = None,
        fail_rate: float = 0.0,
        flaky_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if time_scale <= 0 or tick_interval <= 0:
            raise ValueError("time_scale and tick_interval must be positive")
        fail_rate = check_rate("fail_rate", fail_rate)
        flaky_rate = check_rate("flaky_rate", flaky_rate)
        if seed is not None:
            config = replace(config or SimConfig(), seed=seed)
        if printers is not None:
            base = config or SimConfig()
            config = base.with_demo_fleet(farm_fleet(printers, base.seed))
        self.cloud = CloudSimulator(config)
        self.config = self.cloud.config
        self.world: World = self.cloud.world
        self.mqtt_enabled = mqtt
        self.broker_kind = broker if broker in ("amqtt", "mosquitto") else "url"
        self._external = ExternalBroker.parse(broker) if self.broker_kind == "url" else None
        self.lan = lan and mqtt
        self.time_scale = time_scale
        self.tick_interval = tick_interval
        self._state_dir = state_dir
        self._mosquitto_binary = mosquitto_binary
        self._internal = Credential(HOST_USER, secrets.token_urlsafe(24))
        options = dict(printer_options or {})
        self.printers: dict[str, SimPrinter] = {
            serial: SimPrinter.from_device(
                device,
                clock=_printer_clock(self.world, time_scale),
                time_scale=time_scale,
                seed=self.config.seed,
                **options,
            )
            for serial, device in self.world.devices.items()
        }
        # Printers download cloud prints from the cloud's own storage, in process.
        storage = CloudStorage(self.world)
        for printer in self.printers.values():
            printer.state.cloud_fetch = storage.fetch
        self.fail_rate = fail_rate
        self.farm = printers is not None
        for serial, printer in self.printers.items():
            printer.state.manual_refill = self.farm or fail_rate > 0
            if fail_rate > 0:
                printer.state.plan_faults = FaultDraw(self.config.seed, serial, fail_rate)
        self.flaky = FlakyPower(
            [d.dev_id for d in self.world.devices_of(self.world.demo_account.uid)],
            flaky_rate,
            time_scale,
            self.config.seed,
            self.set_online,
        )
        self.follower: CloudFollower | None = None
        self.cloud.app.state.print_dispatch = self._dispatch_print
        self.certs: SimCertificates | None = None
        self.host: PrinterHost | None = None
        self._runtime: BrokerRuntime | None = None
        self._cloud_broker: EmbeddedBroker | None = None
        self._lan_brokers: dict[str, EmbeddedBroker] = {}
        self._mosquitto: MosquittoBroker | None = None
        self._ftps_enabled = ftps
        self._ftps_ports = {
            serial: ftps_port + index if ftps_port else 0
            for index, serial in enumerate(self.printers)
        }
        self._ftps_ports.update(ftps_ports or {})
        for serial, port in self._ftps_ports.items():
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise ValueError(f"FTPS port for {serial} must be 0-65535")
        self._ftps_tls13 = ftps_tls13
        self.ftps: FtpsHost | None = None
        if camera_interval <= 0:
            raise ValueError("camera_interval must be positive")
        if camera_max_clients < 1:
            raise ValueError("camera_max_clients must be at least 1")
        self._camera_enabled = camera
        self._camera_interval = camera_interval
        self._camera_max_clients = camera_max_clients
        jpeg = [serial for serial, p in self.printers.items() if not p.profile.rtsp]
        self._camera_ports = {
            serial: camera_port + index if camera_port else 0 for index, serial in enumerate(jpeg)
        }
        self._camera_ports.update(camera_ports or {})
        for serial, port in self._camera_ports.items():
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise ValueError(f"camera port for {serial} must be 0-65535")
        rtsps = [serial for serial, p in self.printers.items() if p.profile.rtsp]
        self._rtsp_ports = {
            serial: rtsp_port + index if rtsp_port else 0 for index, serial in enumerate(rtsps)
        }
        self._rtsp_ports.update(rtsp_ports or {})
        for serial, port in self._rtsp_ports.items():
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise ValueError(f"RTSPS port for {serial} must be 0-65535")
        if not 0 < rtsp_fps <= 60:
            raise ValueError("rtsp_fps must be more than 0 and at most 60")
        self._rtsp_fps = rtsp_fps
        if liveview is not None:
            for serial in rtsps:
                self.printers[serial].state.liveview = liveview
        self.camera: CameraHost | None = None
        self.startup_seconds = 0.0
        self.cloud.app.include_router(_router(self))
        self.cloud.app.include_router(farm_router(self))

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> Simulator:
        """Start everything; returns once printers are connected to their brokers."""
        started = time.perf_counter()
        self.cloud.start()
        try:
            if self.mqtt_enabled:
                self._start_mqtt()
                self.flaky.start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - started
        log.info(
            "simulator ready in %.2f s: %d printers, %s broker%s",
            self.startup_seconds,
            len(self.printers),
            self.broker_kind,
            f" on {self.mqtt_host}:{self.mqtt_port}" if self.mqtt_enabled else " (MQTT off)",
        )
        return self

    def _start_mqtt(self) -> None:
        certs = SimCertificates(self._state_dir)
        self.certs = certs
        embedded: list[EmbeddedBroker] = []
        if self.broker_kind == "amqtt":
            self._cloud_broker = EmbeddedBroker(
                CLOUD,
                CloudPolicy(self.world, self._internal, lenient=self.config.lenient_cloud_mqtt),
                certs.cloud(),
            )
            embedded.append(self._cloud_broker)
        if self.lan and self.broker_kind != "mosquitto":
            for serial, printer in self.printers.items():
                policy = LanPolicy(serial, _access_code_of(printer), self._internal)
                broker = EmbeddedBroker(serial, policy, certs.printer(serial))
                self._lan_brokers[serial] = broker
                embedded.append(broker)
        if embedded:
            runtime = BrokerRuntime()
            runtime.start()
            self._runtime = runtime

            async def start_all() -> None:
                await asyncio.gather(*(broker.start() for broker in embedded))

            runtime.run(start_all())
        if self.broker_kind == "mosquitto":
            self._mosquitto = MosquittoBroker(
                certs,
                self._internal,
                {serial: p.access_code for serial, p in self.printers.items()},
                self._owners,
                lan=self.lan,
                binary=self._mosquitto_binary,
            )
            self._mosquitto.start()
            # A printer bound at run time (the cloud bind API) is followable at once.
            self.world.binding_listeners.append(self.refresh_acl)
        self.host = self._build_host()
        self.host.start()
        host = self.host
        printers = list(self.printers.values())
        self.follower = CloudFollower(
            self.world,
            lambda: host.call(lambda: [snapshot(p) for p in printers]),
            self.cloud.call_soon,
            interval=min(FOLLOW_INTERVAL, self.tick_interval),
        )
        self.follower.start()
        if self.lan and self._ftps_enabled:
            self._start_ftps(certs)
        if self.lan and self._camera_enabled:
            self._start_camera(certs)
        for serial, printer in self.printers.items():
            if not printer.online:
                self._lan_power(serial, online=False)

    def _start_ftps(self, certs: SimCertificates) -> None:
        ftps = FtpsHost(tls13=self._ftps_tls13)
        for serial, printer in self.printers.items():
            ftps.add(
                serial,
                printer.card,
                _access_code_of(printer),
                certs.printer(serial),
                family=printer.profile.family,
                port=self._ftps_ports.get(serial, 0),
            )
        self.ftps = ftps
        ftps.start()

    def _start_camera(self, certs: SimCertificates) -> None:
        camera = CameraHost(
            self._camera_view,
            interval=self._camera_interval,
            max_clients=self._camera_max_clients,
        )
        for serial, printer in self.printers.items():
            if printer.profile.rtsp:
                camera.add(
                    RtspEndpoint(
                        serial,
                        _access_code_of(printer),
                        certs.printer(serial),
                        port=self._rtsp_ports.get(serial, 0),
                        fps=self._rtsp_fps,
                    )
                )
                continue
            camera.add_jpeg(
                serial,
                _access_code_of(printer),
                certs.printer(serial),
                port=self._camera_ports.get(serial, 0),
            )
        self.camera = camera
        camera.start()
        for serial, endpoint in camera.endpoints.items():
            if endpoint.kind == "rtsps":
                # The report's ipcam.rtsp_url names the port that really listens.
                self.with_printer(serial, _set_rtsp_port(endpoint.port))

    def _camera_view(self, serial: str) -> CameraView:
        """What a camera shows: read on the printer host's thread (called off the camera loop)."""
        return self.with_printer(serial, camera_view)

    def _build_host(self) -> PrinterHost:
        host = PrinterHost(tick_interval=self.tick_interval)
        routes: dict[str, list[Route]] = {serial: [] for serial in self.printers}
        if self._mosquitto is not None:
            # One connection carries both roles: mosquitto shares one topic tree.
            link = host.add_link(
                "mosquitto", (LOOPBACK, self._mosquitto.internal_port), self._internal
            )
            for serial in self.printers:
                routes[serial].append(host.route(link, serial, ("cloud", "lan")))
        else:
            if self._cloud_broker is not None:
                cloud = host.add_link(
                    CLOUD, (LOOPBACK, self._cloud_broker.internal_port), self._internal
                )
            else:
                assert self._external is not None
                cloud = host.add_link(
                    CLOUD,
                    (self._external.host, self._external.port),
                    self._external.credential,
                    self._external.tls_context(),
                )
            for serial in self.printers:
                routes[serial].append(host.route(cloud, serial, ("cloud",), self._bound(serial)))
            for serial, broker in self._lan_brokers.items():
                link = host.add_link(serial, (LOOPBACK, broker.internal_port), self._internal)
                routes[serial].append(host.route(link, serial, ("lan",)))
        for serial, printer in self.printers.items():
            host.add_printer(printer, routes[serial])
        return host

    def stop(self) -> None:
        """Stop everything (safe to call twice)."""
        self.flaky.stop()
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
        if self.camera is not None:
            self.camera.stop()
            self.camera = None
        if self.ftps is not None:
            self.ftps.stop()
            self.ftps = None
        if self.host is not None:
            self.host.stop()
            self.host = None
        if self._runtime is not None:
            brokers = [b for b in (self._cloud_broker, *self._lan_brokers.values()) if b]
            self._runtime.stop(brokers)
            self._runtime = None
        self._cloud_broker = None
        self._lan_brokers = {}
        if self._mosquitto is not None:
            with contextlib.suppress(ValueError):
                self.world.binding_listeners.remove(self.refresh_acl)
            self._mosquitto.cleanup()
            self._mosquitto = None
        if self.certs is not None:
            self.certs.cleanup()
            self.certs = None
        self.cloud.stop()
        for printer in self.printers.values():
            printer.card.close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- addresses and accounts ---------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the cloud HTTP API."""
        return self.cloud.url

    @property
    def port(self) -> int:
        """The cloud HTTP port."""
        return self.cloud.port

    @property
    def mqtt_host(self) -> str:
        """Host of the cloud broker."""
        return self._external.host if self._external is not None else LOOPBACK

    @property
    def mqtt_port(self) -> int:
        """Port of the cloud broker (TLS, except for an ``mqtt://`` external broker)."""
        if self._external is not None:
            return self._external.port
        if self._mosquitto is not None:
            return self._mosquitto.port
        if self._cloud_broker is not None:
            return self._cloud_broker.port
        return 0

    @property
    def ca_file(self) -> str | None:
        """PEM file of the simulator CA (cloud and LAN certificates); None without MQTT."""
        return str(self.certs.ca_file) if self.certs is not None else None

    def lan_address(self, serial: str) -> tuple[str, int]:
        """``(host, port)`` of a printer's own broker (TLS, CN = serial, ``bblp``)."""
        if serial not in self.printers:
            raise KeyError(f"no simulated printer {serial!r}")
        if self._mosquitto is not None and serial in self._mosquitto.lan_ports:
            return LOOPBACK, self._mosquitto.lan_ports[serial]
        broker = self._lan_brokers.get(serial)
        if broker is None:
            raise RuntimeError("the printers' LAN brokers are not running (lan=False or no MQTT)")
        return LOOPBACK, broker.port

    def ftps_address(self, serial: str) -> tuple[str, int]:
        """``(host, port)`` of a printer's implicit FTPS server (``bblp``, CN = serial).

        The port stays the same while the printer is off (nothing listens then).
        """
        if self.ftps is None:
            raise RuntimeError("the printers' FTPS servers are not running (lan=False or no MQTT)")
        if serial not in self.ftps.endpoints:
            raise KeyError(f"no simulated printer {serial!r}")
        return self.ftps.address(serial)

    def camera_address(self, serial: str) -> tuple[str, int]:
        """``(host, port)`` of a P1/A1 printer's camera stream (TLS, CN = serial, ``bblp``).

        The port stays the same while the printer is off (nothing listens
        then). Printers with an RTSPS camera (X1, P2, H2 families) have no
        such stream: asking for theirs is a ValueError.
        """
        printer = self.printers.get(serial)
        if printer is None:
            raise KeyError(f"no simulated printer {serial!r}")
        if printer.profile.rtsp:
            raise ValueError(
                f"{serial} ({printer.profile.product}) has an RTSPS camera, "
                "not the port-6000 JPEG stream"
            )
        if self.camera is None or serial not in self.camera.endpoints:
            raise RuntimeError("the printers' cameras are not running (camera=False, lan=False)")
        return self.camera.address(serial)

    def rtsp_url(self, serial: str) -> str:
        """``rtsps://127.0.0.1:<port>/streaming/live/1`` of an X1/P2/H2 printer (no credentials).

        The URL is there whether or not LAN liveview is on (the report says
        ``"disable"`` while it is off; the server answers either way, as the
        simulator cannot know what a client read). A P1/A1 printer has no
        RTSPS camera: ValueError.
        """
        printer = self.printers.get(serial)
        if printer is None:
            raise KeyError(f"no simulated printer {serial!r}")
        if not printer.profile.rtsp:
            raise ValueError(
                f"{serial} ({printer.profile.product}) streams JPEG on port 6000, not RTSPS"
            )
        if self.camera is None or serial not in self.camera.endpoints:
            raise RuntimeError("the printers' cameras are not running (camera=False, lan=False)")
        return rtsps_url(LOOPBACK, self.camera.endpoints[serial].port)

    def set_liveview(self, serial: str, on: bool = True) -> None:
        """Switch LAN liveview on or off on an X1/P2/H2 printer: its reports' ``ipcam.rtsp_url``."""
        self.rtsp_url(serial)  # the clear error for an unknown or JPEG-camera printer

        def apply(printer: SimPrinter) -> None:
            printer.state.liveview = on

        self.with_printer(serial, apply)

    def _rtsp_url(self, serial: str) -> str | None:
        endpoint = self.camera.endpoints.get(serial) if self.camera is not None else None
        if endpoint is None or endpoint.kind != "rtsps":
            return None
        return rtsps_url(LOOPBACK, endpoint.port)

    def _camera_port(self, serial: str) -> int | None:
        endpoint = self.camera.endpoints.get(serial) if self.camera is not None else None
        return endpoint.port if endpoint is not None and endpoint.kind == "jpeg" else None

    @property
    def demo_account(self) -> Account:
        """The demo account (``.email``, ``.password``, ``.uid``)."""
        return self.cloud.demo_account

    @property
    def user_id(self) -> int:
        """The demo account's uid (cloud MQTT username ``u_<uid>``)."""
        return self.demo_account.uid

    def issue_token(self, login: str) -> str:
        """A valid token for an account: the cloud MQTT password of ``u_<uid>``."""
        return self.cloud.issue_token(login)

    def advance_clock(self, seconds: float) -> None:
        """Move simulated time forward: tokens and codes expire, printers run ``seconds`` ahead.

        The printers catch up at their next tick (heating, printing, cooling
        as if that time had passed); the jump is not multiplied by ``time_scale``.
        """
        self.cloud.advance_clock(seconds)

    def lan_printers(self, uid: int | None = None, **options: Any) -> dict[str, LanPrinter]:
        """How to reach each of an account's printers on its loopback LAN ports, by serial
        (``options``: more :class:`~bambulab.local.lan_print.LanPrinter` fields, a timeout...)."""
        from ..local.lan_print import LanPrinter

        return {
            e.serial: LanPrinter(
                host=e.host,
                serial=e.serial,
                access_code=e.access_code,
                mqtt_port=e.port,
                ftp_port=e.ftp_port,
                ca_file=self.ca_file,
                **options,
            )
            for e in self.endpoints(uid)
            if e.host and e.port and e.ftp_port
        }

    def endpoints(self, uid: int | None = None) -> list[PrinterEndpoint]:
        """An account's printers (default: the demo account's) in fleet order."""
        owner = self.user_id if uid is None else uid
        found: list[PrinterEndpoint] = []
        for device in self.world.devices_of(owner):
            address: tuple[str | None, int | None] = (None, None)
            if self.lan and (self._lan_brokers or self._mosquitto is not None):
                address = self.lan_address(device.dev_id)
            found.append(
                PrinterEndpoint(
                    serial=device.dev_id,
                    access_code=device.access_code,
                    model=device.model.model_name,
                    host=address[0],
                    port=address[1],
                    ftp_port=self.ftps_address(device.dev_id)[1] if self.ftps else None,
                    camera_port=self._camera_port(device.dev_id),
                    rtsp_url=self._rtsp_url(device.dev_id),
                )
            )
        return found

    def export_lines(self) -> list[str]:
        """Shell lines for the demo account: the cloud's, then MQTT and printers."""
        lines = self.cloud.export_lines()
        if not self.mqtt_enabled:
            return lines
        values: list[tuple[str, str]] = [
            ("BAMBU_MQTT_HOST", self.mqtt_host),
            ("BAMBU_MQTT_PORT", str(self.mqtt_port)),
            ("BAMBU_USER_ID", str(self.user_id)),
            ("BAMBU_CA_FILE", self.ca_file or ""),
        ]
        endpoints = self.endpoints()
        for number, endpoint in enumerate(endpoints, start=1):
            prefix = f"BAMBU_PRINTER_{number}_"
            values.append((f"{prefix}SERIAL", endpoint.serial))
            values.append((f"{prefix}ACCESS_CODE", endpoint.access_code))
            if endpoint.host is not None and endpoint.port is not None:
                values.append((f"{prefix}HOST", endpoint.host))
                values.append((f"{prefix}PORT", str(endpoint.port)))
            if endpoint.ftp_port is not None:
                values.append((f"{prefix}FTP_PORT", str(endpoint.ftp_port)))
            if endpoint.camera_port is not None:
                values.append((f"{prefix}CAMERA_PORT", str(endpoint.camera_port)))
            if endpoint.rtsp_url is not None:
                values.append((f"{prefix}RTSP_URL", endpoint.rtsp_url))
            values.append((f"{prefix}MODEL", endpoint.model))
        if endpoints:
            first = endpoints[0]
            values.append(("BAMBU_SERIAL", first.serial))
            values.append(("BAMBU_ACCESS_CODE", first.access_code))
            if first.ftp_port is not None:
                values.append(("BAMBU_PRINTER_FTP_PORT", str(first.ftp_port)))
            if first.camera_port is not None:
                values.append(("BAMBU_PRINTER_CAMERA_PORT", str(first.camera_port)))
            # BAMBU_PRINTER_PORT stays the last line: scripts read up to it.
            if first.host is not None and first.port is not None:
                values.append(("BAMBU_PRINTER_HOST", first.host))
                values.append(("BAMBU_PRINTER_PORT", str(first.port)))
        return lines + [f"export {name}={shlex.quote(value)}" for name, value in values]

    # --- printers -----------------------------------------------------------------------

    def with_printer(self, serial: str, function: Callable[[SimPrinter], T]) -> T:
        """``function(printer)`` on the printer host's thread; its result.

        Printers are not thread-safe and the host ticks them all the time, so
        tests read or poke a running printer through this (``truth()``,
        ``inject_hms()``, ``start_job()``...). Without MQTT it runs directly.
        """
        printer = self.printers[serial]
        if self.host is None:
            return function(printer)
        return self.host.call(lambda: function(printer))

    async def _dispatch_print(self, serial: str, payload: bytes) -> dict[str, Any] | None:
        """A print the cloud's ``POST /user/print`` started: the printer's reply body.

        Runs the request on the printer host thread while the event loop
        waits without blocking (the printer may ask the loop for the file).
        """
        if serial not in self.printers:
            return None

        def run(printer: SimPrinter) -> list[dict[str, Any]]:
            return printer.handle_request(payload)

        messages = await run_in_threadpool(self.with_printer, serial, run)
        for message in messages:
            body = message.get("print")
            if isinstance(body, dict) and body.get("command") == "project_file":
                return body
        return None

    def set_online(self, serial: str, online: bool) -> None:
        """Power a printer on or off: silence, cloud presence event, cloud device state."""
        device = self.world.devices[serial]
        device.online = online
        if self.host is not None:
            self.host.set_online(serial, online)
        else:
            self.printers[serial].online = online
        self._lan_power(serial, online)

    def _lan_power(self, serial: str, online: bool) -> None:
        """A powered-off printer is unreachable on the LAN: its broker stops listening.

        Clients then get "connection refused" on its port, as from a printer
        that is off, instead of a silent broker that accepts them. Powered on
        again, it listens on the same port and the printer host reconnects.
        A shared mosquitto cannot close one listener: there the printer's
        listener refuses every login instead (:meth:`MosquittoBroker.set_online`).
        Its FTPS server and camera stop listening too, and come back on the same port.
        """
        if self.ftps is not None:
            self.ftps.set_listening(serial, online)
        if self.camera is not None and serial in self.camera.endpoints:
            self.camera.set_listening(serial, online)
        if self._mosquitto is not None:
            self._mosquitto.set_online(serial, online)
            return
        broker = self._lan_brokers.get(serial)
        if broker is None or self._runtime is None:
            return
        if online:
            self._runtime.run(broker.start())
            if self.host is not None:
                self.host.reconnect_now([serial])
        else:
            self._runtime.run(broker.stop(keep_ports=True))

    # --- farm -------------------------------------------------------------------------------

    def fail_next(self, serial: str, kind: str, at: float = 0.0) -> None:
        """Make the printer's running print (else its next one) fail: ``runout`` or ``clog``.

        ``at`` is the share of the printing done when it happens (0-1); a
        print already past it fails at once.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if isinstance(at, bool) or not 0 <= at <= 1:
            raise ValueError("at must be 0-1")
        plan = FaultPlan(kind, float(at))

        def arm(printer: SimPrinter) -> None:
            state = printer.state
            if state.gcode_state in ("PREPARE", "RUNNING"):
                state.fault_plan = plan
            else:
                state.next_fault = plan

        self.with_printer(serial, arm)

    def refill(self, serial: str, ams_id: int, slot: int) -> None:
        """Put a full spool in a slot (``ams_id`` 255: the external spool), as a person would."""

        def load(printer: SimPrinter) -> bool:
            return printer.state.refill(ams_id, slot)

        if not self.with_printer(serial, load):
            raise ValueError(f"{serial} has no tray {slot} on AMS {ams_id}")

    def take_offline(self, serial: str) -> None:
        """Shorthand for ``set_online(serial, False)``."""
        self.set_online(serial, False)

    def bring_online(self, serial: str) -> None:
        """Shorthand for ``set_online(serial, True)``."""
        self.set_online(serial, True)

    # --- faults ---------------------------------------------------------------------------

    def _require_host(self) -> PrinterHost:
        if self.host is None:
            raise RuntimeError("MQTT is not running")
        return self.host

    def _host_links(self, broker: str) -> list[str]:
        if self._mosquitto is not None:
            return ["mosquitto"]
        return [broker]

    def _embedded(self, broker: str) -> EmbeddedBroker:
        if broker == CLOUD:
            if self._cloud_broker is None:
                raise RuntimeError("the cloud broker is not the simulator's own (external URL)")
            return self._cloud_broker
        found = self._lan_brokers.get(broker)
        if found is None:
            raise KeyError(f"no broker {broker!r} (use 'cloud' or a printer serial)")
        return found

    def drop_connections(self, broker: str = CLOUD, *, wait: bool = True) -> None:
        """Cut every client connection of a broker; it keeps running.

        Clients see a disconnect; the printer host reconnects by itself (and
        ``wait`` returns only once it has). With mosquitto, which cannot cut
        connections from outside, this restarts the process.
        """
        host = self._require_host()
        if self._mosquitto is not None:
            self.restart_broker(broker, wait=wait)
            return
        runtime = self._runtime
        assert runtime is not None
        runtime.run(self._embedded(broker).drop_connections())
        if wait:
            host.reconnect_now(self._host_links(broker))
            self._wait_links(broker)

    def restart_broker(
        self, broker: str = CLOUD, *, downtime: float = 0.0, wait: bool = True
    ) -> None:
        """Stop a broker and start it again on the same port after ``downtime`` seconds.

        Printers keep their state (they live in the host); every client sees a
        disconnect and can reconnect to the same address. With mosquitto the
        whole process restarts (cloud and LAN listeners alike).
        """
        host = self._require_host()
        if self._mosquitto is not None:
            self._mosquitto.restart(downtime)
        else:
            target = self._embedded(broker)
            runtime = self._runtime
            assert runtime is not None
            runtime.run(target.stop(keep_ports=True))
            if downtime > 0:
                time.sleep(downtime)
            if not self._lan_listening(broker):
                return  # a printer that is off stays unreachable
            runtime.run(target.start())
        if wait:
            host.reconnect_now(self._host_links(broker))
            self._wait_links(broker)

    def _wait_links(self, broker: str, timeout: float = 5.0) -> None:
        host = self._require_host()
        if not host.wait_ready(self._host_links(broker), timeout=timeout):
            raise RuntimeError(f"printer host did not reconnect to {broker} in {timeout} s")

    def wait_mqtt_ready(self, timeout: float = 5.0) -> bool:
        """Wait until the printer host is connected to every broker.

        A powered-off printer's LAN broker is not listening (see
        :meth:`_lan_power`), so its link is not waited for.
        """
        host = self._require_host()
        names = [name for name in host.links if self._lan_listening(name)]
        return host.wait_ready(names, timeout=timeout)

    def _lan_listening(self, link: str) -> bool:
        """False for the LAN link of a printer that is switched off."""
        device = self.world.devices.get(link) if link in self._lan_brokers else None
        return device is None or device.online

    def stall(self, serial: str, seconds: float) -> None:
        """Drop everything ``serial`` publishes for ``seconds`` (its state keeps changing)."""
        self._require_host().stall(serial, seconds)

    def publish_malformed(
        self, serial: str, kind: str | bytes = "not_json", *, target: Target = "all"
    ) -> bytes:
        """Publish a broken payload on ``serial``'s report topic; returns the bytes sent.

        ``kind`` is one of ``MALFORMED_KINDS`` (``not_json``, ``wrong_types``,
        ``deep``, ``noise`` = 1 MiB of random bytes, ``empty``,
        ``not_object``) or the bytes themselves.
        """
        payload = kind if isinstance(kind, bytes) else malformed_payload(kind, self.config.seed)
        kinds = ("cloud", "lan") if target == "all" else (target,)
        self._require_host().publish_raw(serial, payload, kinds)
        return payload

    def publish_message(self, serial: str, message: dict[str, Any]) -> None:
        """Publish a message as ``serial`` would (its report topic, both sides)."""
        self._require_host().publish_message(serial, message)

    def use_wrong_certificate(self, serial: str, wrong: bool = True) -> None:
        """Serve a LAN certificate whose CN is not ``serial`` (same CA), or the right one again.

        The broker restarts on the same port (amqtt only); the printer's FTPS
        server and camera present the same certificate to their next connections.
        """
        if self.certs is None:
            raise RuntimeError("MQTT is not running")
        broker = self._lan_brokers.get(serial)
        if broker is None:
            raise RuntimeError("wrong certificates need the embedded (amqtt) LAN brokers")
        cert = self.certs.wrong_cn(serial) if wrong else self.certs.printer(serial)
        if self.ftps is not None:
            self.ftps.set_certificate(serial, cert)
        if self.camera is not None and serial in self.camera.endpoints:
            self.camera.set_certificate(serial, cert)
        broker.cert = cert
        self.restart_broker(serial)

    def renew_certificate(self, serial: str) -> None:
        """Serve a new, legitimate LAN certificate for ``serial`` (as after a printer reset).

        A client that pinned the old one must refuse it and say why; the
        original comes back with ``use_wrong_certificate(serial, False)``.
        The broker restarts on the same port (amqtt only); the FTPS server
        and the camera present the new certificate too.
        """
        if self.certs is None:
            raise RuntimeError("MQTT is not running")
        broker = self._lan_brokers.get(serial)
        if broker is None:
            raise RuntimeError("new certificates need the embedded (amqtt) LAN brokers")
        cert = self.certs.renewed(serial)
        if self.ftps is not None:
            self.ftps.set_certificate(serial, cert)
        if self.camera is not None and serial in self.camera.endpoints:
            self.camera.set_certificate(serial, cert)
        broker.cert = cert
        self.restart_broker(serial)

    # --- FTPS faults ------------------------------------------------------------------------

    def _require_ftps(self) -> FtpsHost:
        if self.ftps is None:
            raise RuntimeError("the printers' FTPS servers are not running (lan=False or no MQTT)")
        return self.ftps

    def set_card_free(self, serial: str, free_bytes: int | None) -> None:
        """Leave only ``free_bytes`` free on a printer's SD card (None: a roomy card again).

        An FTPS upload that finds nothing free answers ``552``; one that
        outgrows the room answers ``452`` and its partial file is removed.
        """
        card = self.printers[serial].card
        if free_bytes is None:
            card.capacity = DEFAULT_CAPACITY
            return
        if free_bytes < 0:
            raise ValueError("free_bytes must be >= 0")
        card.capacity = card.used_bytes() + free_bytes

    def ftps_drop_after(self, serial: str, nbytes: int | None, *, times: int = 1) -> None:
        """Cut the next ``times`` FTPS file transfers after ``nbytes`` bytes (TCP reset).

        Data and control connections both go, without an answer, as when a
        printer's Wi-Fi drops; a partial upload is removed. ``None`` clears it.
        """
        self._require_ftps().drop_after(serial, nbytes, times)

    def ftps_drop_connections(self, serial: str) -> int:
        """Reset every FTPS connection of a printer now; it keeps listening."""
        return self._require_ftps().drop_connections(serial)

    def ftps_stall(self, serial: str, seconds: float) -> None:
        """The printer's FTPS server answers nothing for ``seconds`` (banner, commands, data)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._require_ftps().stall(serial, seconds)

    def ftps_refuse(self, serial: str, refuse: bool = True) -> None:
        """Stop listening for FTPS (connection refused), or listen again on the same port."""
        ftps = self._require_ftps()
        ftps.set_listening(serial, not refuse and self.world.devices[serial].online)

    # --- camera faults ----------------------------------------------------------------------

    def _require_camera(self, serial: str) -> CameraHost:
        """The camera host serving ``serial``, whatever its kind; a clear error otherwise."""
        printer = self.printers.get(serial)
        if printer is None:
            raise KeyError(f"no simulated printer {serial!r}")
        if self.camera is None:
            raise RuntimeError("the printers' cameras are not running (camera=False, lan=False)")
        if serial not in self.camera.endpoints:
            product = printer.profile.product
            raise ValueError(f"{serial} ({product}): its camera is not served here")
        return self.camera

    def camera_stall(self, serial: str, seconds: float) -> None:
        """No camera frames for ``seconds`` (connections stay open; 0 ends a stall)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._require_camera(serial).stall(serial, seconds)

    def camera_drop(self, serial: str) -> int:
        """Cut every connection of the printer's camera now (it keeps listening); how many."""
        return self._require_camera(serial).drop_connections(serial)

    def camera_refuse(self, serial: str, refuse: bool = True) -> None:
        """Stop listening for camera viewers (refused), or listen again on the same port."""
        camera = self._require_camera(serial)
        camera.set_listening(serial, not refuse and self.world.devices[serial].online)

    def camera_connections(self, serial: str) -> int:
        """Viewers connected to the printer's camera and authenticated now."""
        return self._require_camera(serial).connections(serial)

    def camera_total_connections(self, serial: str) -> int:
        """Viewers the printer's camera admitted (right code, under the limit) since the start."""
        return self._require_camera(serial).total_connections(serial)

    def camera_frame(self, serial: str) -> bytes:
        """The JPEG the printer's camera shows now (rendered if older than the interval)."""
        return self._require_camera(serial).frame(serial)

    def camera_clear_faults(self) -> None:
        """End every camera stall and refusal (a printer that is off stays off)."""
        camera = self.camera
        if camera is None:
            return
        camera.clear_faults()
        for serial in list(camera.endpoints):
            camera.set_listening(serial, self.world.devices[serial].online)

    def refresh_acl(self) -> None:
        """mosquitto: rewrite the cloud ACL from the bindings (amqtt needs nothing).

        Called by the world after every bind and unbind (``POST``/``DELETE
        /user/bind``), so a printer bound at run time can be followed, and an
        unbound one no longer, without a restart.
        """
        if self._mosquitto is not None:
            self._mosquitto.reload_acl()

    # --- helpers ----------------------------------------------------------------------------

    def _bound(self, serial: str) -> Callable[[], bool]:
        device = self.world.devices[serial]
        return lambda: device.owner is not None

    def _owners(self) -> dict[int, list[str]]:
        owners: dict[int, list[str]] = {}
        for device in list(self.world.devices.values()):
            if device.owner is not None:
                owners.setdefault(device.owner, []).append(device.dev_id)
        return owners

    def info(self) -> dict[str, Any]:
        """Brokers and printers, for ``GET /sim/mqtt`` (no secrets)."""
        printers = []
        for serial, printer in self.printers.items():
            entry: dict[str, Any] = {"serial": serial, "online": printer.online}
            if self.lan and self.mqtt_enabled and self.host is not None:
                entry["lan_host"], entry["lan_port"] = self.lan_address(serial)
            if self.ftps is not None:
                entry["ftp_port"] = self.ftps_address(serial)[1]
            camera_port = self._camera_port(serial)
            if camera_port is not None:
                entry["camera_port"] = camera_port
            rtsp = self._rtsp_url(serial)
            if rtsp is not None:
                entry["rtsp_url"] = rtsp
            printers.append(entry)
        return {
            "enabled": self.mqtt_enabled and self.host is not None,
            "broker": self.broker_kind,
            "host": self.mqtt_host if self.mqtt_enabled else None,
            "port": self.mqtt_port if self.mqtt_enabled else None,
            "ca_file": self.ca_file,
            "printers": printers,
        }


def _printer_clock(world: World, time_scale: float) -> Callable[[], float]:
    """A clock for printers: real time, plus ``advance_clock()`` jumps taken at face value.

    Printers multiply the clock's deltas by ``time_scale``; dividing the
    world's offset by it first makes ``advance_clock(60)`` move a printer 60
    simulated seconds whatever the scale. Monotonic, since only deltas count.
    """
    return lambda: time.monotonic() + world.clock.offset / time_scale


def _set_rtsp_port(port: int) -> Callable[[SimPrinter], None]:
    def apply(printer: SimPrinter) -> None:
        printer.state.rtsp_port = port

    return apply


def _access_code_of(printer: SimPrinter) -> Callable[[], str]:
    return lambda: printer.access_code


# --- HTTP: /sim/mqtt -------------------------------------------------------------------------

FAULTS = (
    "drop",
    "restart",
    "stall",
    "malformed",
    "offline",
    "online",
    "wrong_cert",
    "right_cert",
    "card_full",
    "ftps_drop",
    "ftps_stall",
    "ftps_refuse",
    "ftps_listen",
    "camera_stall",
    "camera_drop",
    "camera_refuse",
    "camera_listen",
    "liveview",
)
_PRINTER_FAULTS = frozenset(FAULTS) - {"drop", "restart"}


def _router(sim: Simulator) -> APIRouter:
    router = APIRouter(prefix="/sim/mqtt", tags=["simulator"])

    @router.get("")
    async def mqtt_info() -> JSONResponse:
        """Brokers, ports and printers of the MQTT side."""
        return JSONResponse(sim.info())

    @router.post("/faults")
    async def mqtt_fault(request: Request) -> JSONResponse:
        """Apply an MQTT fault now; ``{"fault": ..., ...}`` (see docs/simulator.md)."""
        try:
            body = await request.json()
        except ValueError:
            raise bad_request("body must be JSON") from None
        if not isinstance(body, dict):
            raise bad_request("body must be a JSON object")
        action = _fault_action(sim, body)
        try:
            await run_in_threadpool(action)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise bad_request(str(exc).strip("'\"")) from None
        return JSONResponse({"ok": True, "fault": body["fault"]})

    @router.delete("/faults")
    async def clear_mqtt_faults() -> JSONResponse:
        """End the faults that last (camera stalls and refusals), so no test leaks one."""
        await run_in_threadpool(sim.camera_clear_faults)
        return JSONResponse({"ok": True})

    return router


def _fault_action(sim: Simulator, body: dict[str, Any]) -> Callable[[], object]:
    fault = body.get("fault")
    if fault not in FAULTS:
        raise bad_request(f"fault must be one of {', '.join(FAULTS)}")
    broker = body.get("broker", CLOUD)
    serial = body.get("serial")
    if not isinstance(broker, str):
        raise bad_request("broker must be 'cloud' or a printer serial")
    if fault in _PRINTER_FAULTS and (not isinstance(serial, str) or serial not in sim.printers):
        raise bad_request("serial must name a simulated printer")
    assert isinstance(serial, str) or fault in ("drop", "restart")
    if fault == "drop":
        return lambda: sim.drop_connections(broker)
    if fault == "restart":
        downtime = _number(body, "downtime", 0.0)
        return lambda: sim.restart_broker(broker, downtime=downtime)
    if fault == "stall":
        seconds = _number(body, "seconds", 10.0)
        return lambda: sim.stall(str(serial), seconds)
    if fault == "malformed":
        kind = body.get("payload", "not_json")
        target = body.get("target", "all")
        if kind not in MALFORMED_KINDS:
            raise bad_request(f"payload must be one of {', '.join(MALFORMED_KINDS)}")
        if target not in ("cloud", "lan", "all"):
            raise bad_request("target must be cloud, lan or all")
        return lambda: sim.publish_malformed(str(serial), kind, target=target)
    if fault in ("offline", "online"):
        return lambda: sim.set_online(str(serial), fault == "online")
    if fault == "card_full":
        free = _count(body, "free_bytes", 0, allow_none=True)
        return lambda: sim.set_card_free(str(serial), free)
    if fault == "ftps_drop":
        after = _count(body, "after_bytes", 0, allow_none=True)
        times = _count(body, "times", 1) or 1
        return lambda: sim.ftps_drop_after(str(serial), after, times=times)
    if fault == "ftps_stall":
        seconds = _number(body, "seconds", 10.0)
        return lambda: sim.ftps_stall(str(serial), seconds)
    if fault in ("ftps_refuse", "ftps_listen"):
        return lambda: sim.ftps_refuse(str(serial), fault == "ftps_refuse")
    if fault == "camera_stall":
        seconds = _number(body, "seconds", 10.0)
        return lambda: sim.camera_stall(str(serial), seconds)
    if fault == "camera_drop":
        return lambda: sim.camera_drop(str(serial))
    if fault in ("camera_refuse", "camera_listen"):
        refuse = fault == "camera_refuse" and body.get("refuse", True) is not False
        return lambda: sim.camera_refuse(str(serial), refuse)
    if fault == "liveview":
        on = body.get("on", True) is not False
        return lambda: sim.set_liveview(str(serial), on)
    return lambda: sim.use_wrong_certificate(str(serial), fault == "wrong_cert")


def _count(body: dict[str, Any], key: str, default: int, *, allow_none: bool = False) -> int | None:
    value = body.get(key, default)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_request(f"{key} must be a non-negative integer")
    return value


def _number(body: dict[str, Any], key: str, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise bad_request(f"{key} must be a non-negative number of seconds")
    return float(value)
