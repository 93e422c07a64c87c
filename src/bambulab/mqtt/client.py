"""Live printers over MQTT, two faces: :class:`BambuMQTT` (sync) and :class:`AsyncBambuMQTT`.

Cloud mode: user ``u_<uid>`` with the access token, the region's broker, any
number of printers on one connection. The seed's documents show
``BambuMQTT(user_id, serial, access_code)``; a printer's access code opens only
its LAN broker, so in cloud mode the saved token (``BAMBU_TOKEN``, else the
token file) is used in its place, with a warning (once). LAN mode: user ``bblp``
with the printer's access code, its own broker, TLS verified against the CA
file or a pinned certificate, and the certificate's CN checked against the
serial. Both faces share one command vocabulary (:class:`_Commands`); only
the lifecycle and the way they wait differ. Both tell what the connection is
doing (``connection_status``, and ``Connected``/``ConnectionLost``/
``RetryScheduled``/``Reconnected``/``ConnectionFailed`` among the events) and
how old each printer's last report is (``report_age``, ``last_report``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

import orjson

from ..errors import ConfigurationError, NotConnectedError, TransportError
from ..models.events import CLOSED, ConnectionStatus, LiveEvent, StateChanged
from ..models.state import PrinterState
from ..protocol import mqtt as proto
from ..protocol.jwt import decode_claims
from ..regions import endpoints
from .core import BACKSTOP, Backoff, Connection, Endpoint, Signer, result_of
from .tls import PinStore, cloud_context, lan_context, pin_diagnosis

log = logging.getLogger("bambulab.mqtt")

R = TypeVar("R")
T = TypeVar("T")

ENV_MQTT_HOST = "BAMBU_MQTT_HOST"
ENV_MQTT_PORT = "BAMBU_MQTT_PORT"
LAN_PORT = 8883
ACCESS_CODE_LENGTH = 8
HAND_OVER_TICK = 0.002  # seconds: how often a busy connection's events reach the loop

_warned_lock = threading.Lock()
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning("%s", message)


def saved_token() -> str | None:
    """The account token the other clients use: ``BAMBU_TOKEN``, else the token file."""
    from ..cloud.tokens import resolve_token  # only here: the cloud side is rarely needed
    from ..errors import TokenFileError

    try:
        return resolve_token()
    except TokenFileError as exc:
        log.info("no usable saved token: %s", exc)
        return None


def cloud_password(token: str | None, access_code: str | None) -> str:
    """The cloud broker's password: the token; for a printer's access code, the saved token.

    The real cloud broker refuses an access code as the password of
    ``u_<uid>`` (it opens only the printer's LAN broker). The seed's form
    ``BambuMQTT(user_id, serial, access_code)`` therefore connects with the
    saved token (``BAMBU_TOKEN``, else the token file) and says so once; with
    no saved token the access code is tried as given (a lenient broker, such
    as ``bambu sim --lenient-cloud-mqtt``, takes it).
    """
    if token:
        return token
    code = (access_code or "").strip()
    if len(code) != ACCESS_CODE_LENGTH:
        return code  # not an access code: a token passed in its place
    saved = saved_token()
    if saved:
        _warn_once(
            "access-code-cloud",
            "a printer's access code opens only its LAN broker; connecting to the cloud "
            "broker with the saved account token instead (pass token= to choose one, "
            "or use BambuMQTT.lan() for the LAN broker)",
        )
        return saved
    _warn_once(
        "access-code-no-token",
        "a printer's access code opens only its LAN broker and no account token is saved: "
        "the cloud broker will likely refuse it (run `bambu login`, set BAMBU_TOKEN or pass "
        "token=)",
    )
    return code


def cloud_endpoint(
    password: str,
    user_id: str | int | None = None,
    *,
    region: str = "global",
    host: str | None = None,
    port: int | None = None,
    ca_file: str | os.PathLike[str] | None = None,
) -> Endpoint:
    """The cloud broker of ``region`` (``BAMBU_MQTT_HOST``/``_PORT`` override it)."""
    if not password:
        raise ConfigurationError("cloud MQTT needs the access token (or a printer's access code)")
    uid = str(user_id).strip() if user_id not in (None, "") else decode_claims(password).uid
    if not uid:
        raise ConfigurationError("cloud MQTT needs the user id (uid): pass user_id=")
    uid = uid.removeprefix("u_")
    env_port = os.environ.get(ENV_MQTT_PORT)
    chosen_host = host or os.environ.get(ENV_MQTT_HOST) or endpoints(region).mqtt_host
    chosen_port = port or (int(env_port) if env_port and env_port.isdigit() else 8883)
    return Endpoint(
        host=chosen_host,
        port=chosen_port,
        username=f"u_{uid}",
        password=password,
        tls=cloud_context(ca_file),
        client_id=f"bambulab-py-{uuid.uuid4().hex[:12]}",
        label=f"the Bambu cloud broker {chosen_host}:{chosen_port}",
    )


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def broker_endpoint(
    url: str,
    *,
    password: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    allow_plain: bool = False,
) -> Endpoint:
    """A broker the printers' reports are relayed to (``mqtts://user:pass@host:port``).

    For several servers following one fleet through one shared broker
    (mosquitto or any MQTT 3.1.1 broker) that carries ``device/<serial>/report``
    and ``device/<serial>/request`` as the cloud does. ``mqtts://`` (port 8883
    by default) checks the certificate against the host name with the system
    CAs or ``ca_file``; plain ``mqtt://`` (1883) sends the password in clear, so
    it is taken only for a loopback host or with ``allow_plain``. The user
    and password come from the URL (percent-decoded), the password else from
    ``password`` (``token=``). The URL's password never appears in a label,
    message or ``repr``.
    """
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ConfigurationError("not a broker URL (mqtts://user:password@host:8883)") from None
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if scheme not in ("mqtt", "mqtts") or not host:
        raise ConfigurationError(
            f"not a broker URL: scheme {scheme or 'none'!r}, host {host or 'none'!r} "
            "(mqtts://user:password@host:8883, or mqtt:// on loopback)"
        )
    tls = scheme == "mqtts"
    if not tls and not allow_plain and host not in LOOPBACK_HOSTS and not host.startswith("127."):
        raise ConfigurationError(
            f"plain mqtt:// to {host} would send the password in clear: use mqtts:// "
            "(or allow_plain=True on a network you trust)"
        )
    chosen_port = port or (8883 if tls else 1883)
    secret = unquote(parts.password) if parts.password is not None else (password or "")
    return Endpoint(
        host=host,
        port=chosen_port,
        username=unquote(parts.username or ""),
        password=secret,
        tls=cloud_context(ca_file) if tls else None,
        client_id=f"bambulab-py-{uuid.uuid4().hex[:12]}",
        label=f"the shared broker {host}:{chosen_port}",
    )


def lan_endpoint(
    host: str,
    serial: str,
    access_code: str,
    *,
    port: int = LAN_PORT,
    ca_file: str | os.PathLike[str] | None = None,
    pin_file: str | os.PathLike[str] | None = None,
    insecure: bool = False,
) -> Endpoint:
    """A printer's own broker (user ``bblp``, the LAN access code)."""
    if not host:
        raise ConfigurationError("LAN mode needs the printer's address (host)")
    if not access_code or len(access_code.strip()) != 8:
        raise ConfigurationError("the LAN access code has 8 characters (see the printer's screen)")
    context = lan_context(
        serial, host, port, ca_file=ca_file, pin_store=PinStore(pin_file), insecure=insecure
    )
    return Endpoint(
        host=host,
        port=port,
        username="bblp",
        password=access_code.strip(),
        tls=context,
        client_id=f"bambulab-py-{uuid.uuid4().hex[:12]}",
        label=f"printer {serial} at {host}:{port}",
        diagnose=pin_diagnosis(context, host, port),
    )


class _Commands(Generic[R]):
    """Every printer command, for both faces. ``serial`` defaults to the only printer."""

    def _run(self, serial: str | None, command: proto.Command) -> R:
        raise NotImplementedError

    # print control
    def pause(self, serial: str | None = None) -> R:
        """Pause the running print."""
        return self._run(serial, proto.pause())

    def resume(self, serial: str | None = None) -> R:
        """Resume a paused print."""
        return self._run(serial, proto.resume())

    def stop(self, serial: str | None = None) -> R:
        """Stop (cancel) the running print."""
        return self._run(serial, proto.stop())

    pause_print = pause
    resume_print = resume
    stop_print = stop

    def start_print(self, url: str, plate: int = 1, serial: str | None = None, **options: Any) -> R:
        """Print a sliced 3MF (``project_file``); options as :func:`protocol.mqtt.project_file`."""
        return self._run(serial, proto.project_file(url, plate, **options))

    def print_gcode_file(self, path: str, serial: str | None = None) -> R:
        """Print a G-code file already on the SD card."""
        return self._run(serial, proto.gcode_file(path))

    def send_gcode(self, lines: str | Iterable[str], serial: str | None = None) -> R:
        """Run G-code lines."""
        return self._run(serial, proto.gcode_line(lines))

    def set_print_speed(self, level: int | str, serial: str | None = None) -> R:
        """1 silent, 2 standard, 3 sport, 4 ludicrous."""
        return self._run(serial, proto.print_speed(level))

    def skip_objects(self, object_ids: Iterable[int], serial: str | None = None) -> R:
        """Skip objects of the running print."""
        return self._run(serial, proto.skip_objects(object_ids))

    def set_print_option(self, option: str, enabled: bool, serial: str | None = None) -> R:
        """Set one option flag (``auto_recovery``, ``sound_enable``, ...)."""
        return self._run(serial, proto.print_option(option, enabled))

    def calibrate(self, serial: str | None = None, **which: bool) -> R:
        """Run calibrations (``lidar``, ``bed_level``, ``vibration``, ``motor_noise``)."""
        return self._run(serial, proto.calibration(**which))

    # temperatures and fans, under the seed's names
    def set_nozzle_temp(
        self, temp: float, serial: str | None = None, extruder: int | None = None
    ) -> R:
        """Nozzle target (°C)."""
        return self._run(serial, proto.set_nozzle_temp(temp, extruder))

    def set_bed_temp(self, temp: float, serial: str | None = None) -> R:
        """Bed target (°C)."""
        return self._run(serial, proto.set_bed_temp(temp))

    def set_chamber_temp(self, temp: float, serial: str | None = None) -> R:
        """Chamber target (°C), on printers with a chamber heater."""
        return self._run(serial, proto.set_chamber_temp(temp))

    def set_fan_speed(self, fan: str | int, percent: float, serial: str | None = None) -> R:
        """Fan speed in % (``part``, ``aux`` or ``chamber``)."""
        return self._run(serial, proto.set_fan_speed(fan, percent))

    def set_airduct(self, mode: int, serial: str | None = None) -> R:
        """Air-duct mode (0 cooling, 1 heating) where the printer has one."""
        return self._run(serial, proto.set_airduct(mode))

    def set_ctt(self, temp: float, serial: str | None = None) -> R:
        """Chamber target via the newer ``set_ctt`` command."""
        return self._run(serial, proto.set_ctt(temp))

    # lights, system
    def set_light(
        self, on: bool | str = True, node: str = "chamber_light", serial: str | None = None
    ) -> R:
        """Switch a light: ``True``/``False`` or ``"on"``/``"off"``/``"flashing"``."""
        mode = on if isinstance(on, str) else ("on" if on else "off")
        return self._run(serial, proto.ledctrl(node, mode))

    def get_version(self, serial: str | None = None) -> R:
        """Ask for the firmware modules (the state's ``firmware`` updates)."""
        return self._run(serial, proto.get_version())

    def get_access_code(self, serial: str | None = None) -> R:
        """Ask for the LAN access code (reply body ``access_code``)."""
        return self._run(serial, proto.get_access_code())

    def set_nozzle(
        self, diameter: float, nozzle_type: str = "stainless_steel", serial: str | None = None
    ) -> R:
        """Tell the printer which nozzle is fitted."""
        return self._run(serial, proto.set_accessories(diameter, nozzle_type))

    def set_camera_recording(self, enabled: bool, serial: str | None = None) -> R:
        """Camera recording on or off."""
        return self._run(serial, proto.ipcam_record(enabled))

    def set_timelapse(self, enabled: bool, serial: str | None = None) -> R:
        """Timelapse on or off."""
        return self._run(serial, proto.ipcam_timelapse(enabled))

    def set_detector(self, module: str, enabled: bool, serial: str | None = None, **kw: Any) -> R:
        """An AI-camera detector on or off (``spaghetti_detector``, ...)."""
        return self._run(serial, proto.xcam_control(module, enabled, **kw))

    # AMS
    def ams_load(self, ams_id: int, slot: int, serial: str | None = None) -> R:
        """Load filament from an AMS slot."""
        return self._run(serial, proto.ams_load(ams_id, slot))

    def ams_unload(self, serial: str | None = None) -> R:
        """Unload the current filament."""
        return self._run(serial, proto.ams_unload())

    def ams_set_filament(
        self, ams_id: int, tray_id: int, serial: str | None = None, **kw: Any
    ) -> R:
        """Describe a slot's filament (``tray_type``, ``tray_color``, temperatures)."""
        return self._run(serial, proto.ams_filament_setting(ams_id, tray_id, **kw))

    def ams_control(self, param: str, serial: str | None = None) -> R:
        """resume, reset, pause, done or abort."""
        return self._run(serial, proto.ams_control(param))

    def ams_user_setting(self, serial: str | None = None, **kw: Any) -> R:
        """AMS reading options."""
        return self._run(serial, proto.ams_user_setting(**kw))

    def ams_read_rfid(self, ams_id: int, slot: int, serial: str | None = None) -> R:
        """Re-read one slot's RFID tag."""
        return self._run(serial, proto.ams_get_rfid(ams_id, slot))

    def unload_filament(self, serial: str | None = None) -> R:
        """Unload filament (printers without an AMS)."""
        return self._run(serial, proto.unload_filament())

    # firmware
    def upgrade_history(self, serial: str | None = None) -> R:
        """Ask for the firmware upgrade history."""
        return self._run(serial, proto.upgrade_history())

    def send(self, command: proto.Command, serial: str | None = None) -> R:
        """Send any :class:`~bambulab.protocol.mqtt.Command` and wait for its reply."""
        return self._run(serial, command)


class _Dispatcher:
    """The sync face's event thread: callbacks run here, never on the network thread.

    A callback may block, or send a command and wait for its reply: the
    connection keeps reading meanwhile. Events wait in a bounded queue; if
    callbacks fall ``size`` events behind, newer events are dropped and
    counted (``dropped``) rather than growing memory without end.
    """

    def __init__(self, handle: Callable[[LiveEvent], None], size: int, name: str) -> None:
        self._handle = handle
        self._queue: queue.Queue[LiveEvent | None] = queue.Queue(size)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=f"bambu-events-{name}", daemon=True)
        self._thread.start()

    def put(self, event: LiveEvent) -> None:
        """Hand one event over (network thread; never blocks)."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("event callbacks are behind; %d events dropped", self.dropped)

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            try:
                self._handle(event)
            except Exception:
                log.exception("an event callback failed on %s", type(event).__name__)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then stop (not waiting when called from a callback)."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


class _Base:
    """Configuration, printer table and waiting rules shared by both faces.

    Parameters (the same on both faces):

    ``user_id``, ``device_serial`` (one serial or several), ``access_code``:
    the seed's positional form. ``token``: the cloud access token (the cloud
    broker's password; given only an access code, cloud mode uses the saved
    token and warns once, see :func:`cloud_password`). ``host``/``port``:
    the broker (cloud: ``BAMBU_MQTT_HOST``/``_PORT``, else the region's; LAN: the
    printer's address). ``region``: ``global`` or ``china``. ``lan``: talk to one
    printer's own broker. ``ca_file``/``pin_file``/``insecure``: how the TLS
    certificate is checked. ``keepalive``: seconds between MQTT pings (a link
    that stops answering them is reconnected). ``stall_timeout``: a printer
    silent this long is asked for a full report. ``connect_timeout``: give up
    connecting after this long. ``command_timeout``: how long a command waits
    for its reply. ``backoff``: reconnect delays. ``models``: serial ->
    ``dev_model_name`` when known. ``queue_size``: events buffered for a slow
    consumer before newer ones are dropped (``dropped_events``). ``broker``: a
    shared broker the reports are relayed to instead of the cloud's
    (``mqtts://user:pass@host:port``, see :func:`broker_endpoint`;
    ``allow_plain`` lets ``mqtt://`` reach a host that is not loopback).
    """

    def __init__(
        self,
        user_id: str | int | None = None,
        device_serial: str | Iterable[str] | None = None,
        access_code: str | None = None,
        *,
        token: str | None = None,
        host: str | None = None,
        port: int | None = None,
        region: str = "global",
        lan: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
        pin_file: str | os.PathLike[str] | None = None,
        insecure: bool = False,
        keepalive: int = 30,
        stall_timeout: float = 60.0,
        connect_timeout: float = 15.0,
        command_timeout: float = 10.0,
        backoff: Backoff | None = None,
        models: dict[str, str] | None = None,
        queue_size: int = 10000,
        signer: Signer | None = None,
        broker: str | None = None,
        allow_plain: bool = False,
    ) -> None:
        if isinstance(device_serial, str):
            serials = [device_serial] if device_serial else []
        else:
            serials = list(device_serial or [])
        self.serials = [s.strip() for s in serials if s and s.strip()]
        self.lan_mode = lan
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
        self.queue_size = queue_size
        self._conn_args: dict[str, Any] = {
            "keepalive": keepalive,
            "stall_timeout": stall_timeout,
            "connect_timeout": connect_timeout,
            "backoff": backoff,
            "models": models,
            # Signs control commands for firmware that wants it (PROTOCOL.md §2.8).
            "signer": signer,
        }
        self._broker_args: dict[str, Any] | None = None
        if broker:
            if lan:
                raise ConfigurationError("a shared broker replaces the cloud's, not a printer's")
            self._broker_args = {
                "url": broker,
                "password": token,
                "ca_file": ca_file,
                "allow_plain": allow_plain,
            }
            broker_endpoint(**self._broker_args)  # a wrong URL fails here, not at connect
        if lan:
            if len(self.serials) != 1:
                raise ConfigurationError("LAN mode talks to exactly one printer: give its serial")
            self._endpoint_args: dict[str, Any] = {
                "host": host or "",
                "serial": self.serials[0],
                "access_code": access_code or "",
                "port": port or LAN_PORT,
                "ca_file": ca_file,
                "pin_file": pin_file,
                "insecure": insecure,
            }
        else:
            self._cloud_secrets = (token, access_code)
            self._endpoint_args = {
                "user_id": user_id,
                "region": region,
                "host": host,
                "port": port,
                "ca_file": ca_file,
            }
        self._conn: Connection | None = None

    def _endpoint(self) -> Endpoint:
        if self._broker_args is not None:
            return broker_endpoint(**self._broker_args)
        if self.lan_mode:
            return lan_endpoint(**self._endpoint_args)
        # Resolved at each connection: a token saved (or set) since is picked up.
        return cloud_endpoint(cloud_password(*self._cloud_secrets), **self._endpoint_args)

    def _usable(self) -> Connection | None:
        """The connection if it is running (not closed, not given up)."""
        conn = self._conn
        return conn if conn is not None and not conn.stopped else None

    def _open(self, on_event: Callable[[LiveEvent], None], timeout: float | None) -> Connection:
        conn = Connection(self._endpoint(), self.serials, on_event=on_event, **self._conn_args)
        self._conn = conn
        conn.start(self.connect_timeout if timeout is None else timeout)
        return conn

    @property
    def connection(self) -> Connection:
        """The live connection (after ``connect()``)."""
        if self._conn is None:
            raise NotConnectedError("not connected: call connect() first")
        return self._conn

    def _serial(self, serial: str | None) -> str:
        if serial:
            return serial
        if len(self.serials) == 1:
            return self.serials[0]
        if not self.serials:
            raise ConfigurationError("no printer given: pass its serial")
        raise ConfigurationError("several printers on this connection: pass serial=")

    def _follow(self, serial: str, dev_model_name: str | None = None) -> None:
        if serial not in self.serials:
            self.serials.append(serial)
        if self._conn is not None:
            self._conn.add(serial, dev_model_name)

    def state(self, serial: str | None = None) -> PrinterState:
        """The latest state of one printer: immutable; call again for a newer one."""
        return self.connection.printer(self._serial(serial)).state

    @property
    def connected(self) -> bool:
        """Whether the broker session is up."""
        return self._conn is not None and self._conn.connected

    @property
    def connection_status(self) -> ConnectionStatus:
        """What the connection is doing (connected, reconnecting with attempt and next try...).

        An immutable snapshot; the same one the connection events carry. Before
        ``connect()`` the state is ``closed``.
        """
        if self._conn is None:
            return ConnectionStatus(CLOSED)
        return self._conn.status

    def report_age(self, serial: str | None = None) -> float | None:
        """Seconds since the printer's last report (``None``: none yet). Immune to clock changes."""
        if self._conn is None:
            return None
        printer = self._conn.printers.get(self._serial(serial))
        return None if printer is None else printer.report_age()

    def last_report(self, serial: str | None = None) -> float | None:
        """When the printer last reported, as ``time.time()`` seconds (``None``: not yet)."""
        age = self.report_age(serial)
        return None if age is None else time.time() - age

    def _send(self, serial: str | None, command: proto.Command) -> Future[proto.Incoming]:
        return self.connection.send(self._serial(serial), command, timeout=self.command_timeout)

    def _publish(
        self, payload: dict[str, Any] | bytes | str, serial: str | None, qos: int
    ) -> Future[None]:
        data = (
            payload
            if isinstance(payload, bytes)
            else (payload.encode() if isinstance(payload, str) else orjson.dumps(payload))
        )
        return self.connection.publish(self._serial(serial), data, qos)

    def __repr__(self) -> str:
        mode = "LAN" if self.lan_mode else ("shared broker" if self._broker_args else "cloud")
        return (
            f"{type(self).__name__}({mode}, printers={self.serials!r}, connected={self.connected})"
        )


class BambuMQTT(_Base, _Commands[proto.Incoming]):
    """Blocking MQTT client with the seed's API.

    ``BambuMQTT(user_id, device_serial, access_code)`` for the cloud broker;
    ``BambuMQTT.lan(host, serial, access_code)`` for a printer on the LAN.
    ``on_message`` is called with the printer's state after every report
    (once a full state has arrived); ``on_event`` with every event. Both run
    on this client's event thread (``bambu-events-...``), one at a time and in
    order, never on the network thread: they may block or send commands.
    """

    on_message: Callable[[PrinterState], Any] | None = None
    # Printer events and the connection's own (Connected, ConnectionLost, ...).
    on_event: Callable[[LiveEvent], Any] | None = None
    _dispatcher: _Dispatcher | None = None

    @classmethod
    def lan(cls, host: str, serial: str, access_code: str, **kw: Any) -> BambuMQTT:
        """A client for one printer's own broker (keywords as :class:`BambuMQTT`)."""
        return cls(None, serial, access_code, host=host, lan=True, **kw)

    @property
    def dropped_events(self) -> int:
        """Events dropped because the callbacks fell ``queue_size`` behind."""
        return self._dispatcher.dropped if self._dispatcher is not None else 0

    def _deliver(self, event: LiveEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)
        if isinstance(event, StateChanged) and self.on_message is not None:
            conn = self._conn
            printer = conn.printers.get(event.serial) if conn is not None else None
            if printer is not None and printer.full:
                self.on_message(event.state)

    def connect(self, device_id: str | None = None, timeout: float | None = None) -> BambuMQTT:
        """Connect (and follow ``device_id`` too); raises if the broker cannot be used.

        Calling it again while connected only adds ``device_id``.
        """
        if device_id:
            self._follow(device_id)
        if self._usable() is None:
            if self._dispatcher is not None:
                self._dispatcher.close()
            dispatcher = _Dispatcher(self._deliver, self.queue_size, f"{id(self):x}")
            self._dispatcher = dispatcher
            self._open(dispatcher.put, timeout)
        self.connection.wait_connected(self.connect_timeout if timeout is None else timeout)
        return self

    def add_printer(self, serial: str, dev_model_name: str | None = None) -> None:
        """Follow one more printer on this (cloud) connection (now, or once connected)."""
        self._follow(serial, dev_model_name)

    def subscribe_status(self, serial: str | None = None) -> None:
        """Follow a printer's reports (the seed's step; connecting already subscribes)."""
        if serial:
            self.connect(serial)

    def request_full_status(self, serial: str | None = None) -> None:
        """Ask for a full report (``pushall``); a P1P gets one every 5 min at most."""
        result_of(self.connection.send(self._serial(serial), proto.pushall(), wait=False), 0)

    def get_full_status(self, serial: str | None = None, timeout: float = 15.0) -> PrinterState:
        """The printer's full state, waiting (with ``pushall`` if needed) until it is known.

        Connects first if needed.
        """
        if self._usable() is None:
            self.connect()
        return result_of(self.connection.full_state(self._serial(serial), timeout), timeout)

    def _run(self, serial: str | None, command: proto.Command) -> proto.Incoming:
        return result_of(self._send(serial, command), self.command_timeout)

    def publish(
        self, payload: dict[str, Any] | bytes | str, serial: str | None = None, qos: int = 0
    ) -> None:
        """Publish a raw payload on the printer's request topic (no reply awaited)."""
        result_of(self._publish(payload, serial, qos), 0)

    def loop_forever(self) -> None:
        """Block, delivering callbacks, until :meth:`disconnect` (or Ctrl-C)."""
        if self._usable() is None:
            self.connect()
        conn = self.connection
        try:
            while not conn.wait_stopped(0.5):
                pass
        except KeyboardInterrupt:
            self.disconnect()
        conn.raise_if_failed()

    def disconnect(self) -> None:
        """Close the connection (events already queued are still delivered)."""
        if self._conn is not None:
            self._conn.close()
        if self._dispatcher is not None:
            self._dispatcher.close()

    close = disconnect

    def __enter__(self) -> BambuMQTT:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.disconnect()


MQTTClient = BambuMQTT
"""The seed's other name for :class:`BambuMQTT`."""


class AsyncBambuMQTT(_Base, _Commands[Awaitable[proto.Incoming]]):
    """Non-blocking twin of :class:`BambuMQTT` (same parameters, same methods, awaited).

    ``async with AsyncBambuMQTT(...) as mqtt: async for event in mqtt: ...``;
    commands are awaited (``await mqtt.pause(serial)``). Events are handed to
    the event loop that connected; nothing here blocks it or ties up threads.
    """

    _queue: asyncio.Queue[LiveEvent | None] | None = None
    dropped_events = 0

    @classmethod
    def lan(cls, host: str, serial: str, access_code: str, **kw: Any) -> AsyncBambuMQTT:
        """A client for one printer's own broker (keywords as :class:`AsyncBambuMQTT`)."""
        return cls(None, serial, access_code, host=host, lan=True, **kw)

    def _put(self, queue_: asyncio.Queue[LiveEvent | None], event: LiveEvent | None) -> None:
        try:
            queue_.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped_events += 1  # a consumer that stopped reading must not grow memory
            if event is None:  # the end must get through: it replaces the oldest event
                queue_.get_nowait()
                queue_.put_nowait(None)

    async def connect(
        self, device_id: str | None = None, timeout: float | None = None
    ) -> AsyncBambuMQTT:
        """Connect (and follow ``device_id`` too); raises if the broker cannot be used.

        Calling it again while connected only adds ``device_id``.
        """
        if device_id:
            self._follow(device_id)
        if self._usable() is None:
            loop = asyncio.get_running_loop()
            queue_: asyncio.Queue[LiveEvent | None] = asyncio.Queue(self.queue_size)
            self._queue = queue_

            # Events cross from the network thread in batches. A write to the loop's
            # self-pipe (call_soon_threadsafe) per event costs a thread switch each time
            # (~0.3 ms of GIL hand-over under load); instead the first event after a
            # quiet spell wakes the loop, and while events keep coming the loop collects
            # them every HAND_OVER_TICK on its own: one connection then follows
            # thousands of printers (bench/fan_in.py) for at most a tick of latency.
            pending: list[LiveEvent | None] = []
            lock = threading.Lock()
            scheduled = False

            def drain() -> None:
                nonlocal scheduled
                with lock:
                    batch = pending[:]
                    pending.clear()
                    if not batch:
                        scheduled = False  # quiet: the next event wakes the loop again
                        return
                for item in batch:
                    self._put(queue_, item)
                loop.call_later(HAND_OVER_TICK, drain)

            def hand_over(event: LiveEvent | None) -> None:
                # On the network thread: to this connection's loop and queue (None: the end).
                nonlocal scheduled
                with lock:
                    pending.append(event)
                    if scheduled:  # the loop will collect it
                        return
                    scheduled = True
                try:
                    loop.call_soon_threadsafe(drain)
                except RuntimeError:  # the loop was closed: nobody will read these
                    with lock:
                        pending.clear()

            opened = self._open(hand_over, timeout)
            opened.closed.add_done_callback(lambda _: hand_over(None))
        conn = self.connection
        await _awaited(conn.ready, self.connect_timeout if timeout is None else timeout)
        conn.raise_if_failed()
        return self

    async def add_printer(self, serial: str, dev_model_name: str | None = None) -> None:
        """Follow one more printer on this (cloud) connection (now, or once connected)."""
        self._follow(serial, dev_model_name)

    async def subscribe_status(self, serial: str | None = None) -> None:
        """Follow a printer's reports (connecting already subscribes)."""
        if serial:
            await self.connect(serial)

    async def get_full_status(
        self, serial: str | None = None, timeout: float = 15.0
    ) -> PrinterState:
        """The printer's full state, waiting (with ``pushall`` if needed) until it is known.

        Connects first if needed.
        """
        if self._usable() is None:
            await self.connect()
        return await _awaited(self.connection.full_state(self._serial(serial), timeout), timeout)

    async def request_full_status(self, serial: str | None = None) -> None:
        """Ask for a full report (``pushall``); a P1P gets one every 5 min at most."""
        future = self.connection.send(self._serial(serial), proto.pushall(), wait=False)
        await _awaited(future, 0)

    def _run(self, serial: str | None, command: proto.Command) -> Awaitable[proto.Incoming]:
        return _awaited(self._send(serial, command), self.command_timeout)

    async def publish(
        self, payload: dict[str, Any] | bytes | str, serial: str | None = None, qos: int = 0
    ) -> None:
        """Publish a raw payload on the printer's request topic (no reply awaited)."""
        await _awaited(self._publish(payload, serial, qos), 0)

    async def events(self) -> AsyncIterator[LiveEvent]:
        """Every event, as it happens, until the connection is closed.

        The printers' events and the connection's own (``ConnectionLost``,
        ``RetryScheduled``, ``Reconnected``...): tell them apart with
        ``isinstance(event, ConnectionEvent)``.
        """
        if self._queue is None:
            raise NotConnectedError("not connected: use 'async with' or await connect()")
        queue_ = self._queue
        conn = self.connection
        while True:
            event = await queue_.get()
            if event is None:  # the connection ended; every event before it was delivered
                queue_.put_nowait(None)  # for any other iterator (there is room: one was taken)
                conn.raise_if_failed()
                return
            yield event

    def __aiter__(self) -> AsyncIterator[LiveEvent]:
        return self.events()

    async def aclose(self) -> None:
        """Close the connection."""
        conn = self._conn
        if conn is not None:
            conn.close_soon()
            with contextlib.suppress(TransportError):  # a thread stuck connecting: it is a daemon
                await _awaited(conn.closed, 6.0)

    close = aclose
    disconnect = aclose

    async def __aenter__(self) -> AsyncBambuMQTT:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _awaited(future: Future[T], timeout: float) -> T:
    """Await a future the network thread settles by its own deadline.

    A fresh asyncio future per waiter: cancelling one waiter never cancels
    the shared future. ``timeout`` is a backstop only.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()

    def settle(done: Future[T]) -> None:
        def copy() -> None:
            if waiter.done():
                return
            error = done.exception()
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(done.result())

        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(copy)

    future.add_done_callback(settle)
    try:
        async with asyncio.timeout(timeout + BACKSTOP):
            return await waiter
    except TimeoutError:
        raise TransportError("the MQTT connection stopped answering") from None


__all__ = [
    "AsyncBambuMQTT",
    "BambuMQTT",
    "MQTTClient",
    "broker_endpoint",
    "cloud_endpoint",
    "lan_endpoint",
]
