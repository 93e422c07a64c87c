"""How a live command reaches its printers: which ones, over which broker, with what limits.

Cloud mode (the default) asks the cloud API for the account's printers,
resolves ``PRINTER`` (a serial or a name) among them and connects to the
cloud broker as ``u_<uid>`` with the saved token. LAN mode (``--lan HOST``)
talks to one printer's own broker as ``bblp`` with its access code, over TLS
verified against ``--ca-file`` (or the certificate pinned on first use).

A person waits at the terminal, so every wait is bounded: connecting,
the first full report and each command's reply give up after about ten
seconds with one clear line instead of hanging. Only the standard library is
imported at module level; the MQTT client comes in when a command runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .base import CliError

if TYPE_CHECKING:
    from ..models import Device
    from ..models.events import LiveEvent
    from ..models.state import PrinterState
    from ..mqtt.client import BambuMQTT

# Bounded waits (seconds): the whole command fails within about these.
CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 10.0
# The first full report: the whole wait, the client's first quiet wait and its
# ``pushall`` included (``get_full_status`` counts every second against it).
REPORT_TIMEOUT = 8.0
# A person watches the reconnects (``watch``): after an outage the next try is
# at most this far away, rather than the library's 30 s meant for services.
RECONNECT_MAX = 10.0


@dataclass(frozen=True, slots=True)
class Connect:
    """The live options every command takes (``--lan``, ``--serial``, ...)."""

    lan: str | None = None
    serial: str | None = None
    access_code: str | None = field(default=None, repr=False)
    port: int | None = None
    ca_file: str | None = None
    pin_file: str | None = None
    insecure: bool = False
    cloud: bool = False

    @property
    def lan_mode(self) -> bool:
        """Whether to talk to a printer's own broker (``--lan``, unless ``--cloud``)."""
        return bool(self.lan) and not self.cloud


@dataclass(frozen=True, slots=True)
class PrinterRef:
    """A printer as the command names it: serial, display name, model, cloud presence."""

    serial: str
    name: str
    model: str = ""  # dev_model_name, when the cloud told us
    online: bool | None = None  # None in LAN mode: only connecting tells

    @property
    def label(self) -> str:
        """How confirmation lines name the printer (``P1S 1``, or the serial on the LAN)."""
        return self.name or self.serial


@dataclass(frozen=True, slots=True)
class Plan:
    """Whom to connect to, and as whom (the token never leaves this object)."""

    printers: tuple[PrinterRef, ...]
    lan: bool
    token: str | None = field(default=None, repr=False)
    uid: str | None = None
    region: str = "global"


# --- choosing printers ---------------------------------------------------------------


def plan(conn: Connect, wanted: Sequence[str] = (), *, every: bool = False) -> Plan:
    """The printers a command acts on: ``wanted`` (serials or names), or the default one.

    With ``every`` and nothing wanted, every printer of the account (``watch``).
    """
    if conn.insecure and not conn.lan_mode:
        raise CliError("--insecure only applies to a LAN printer (--lan HOST)", exit_code=2)
    if conn.lan_mode:
        return _lan_plan(conn, wanted)
    return _cloud_plan(conn, wanted, every=every)


def _lan_plan(conn: Connect, wanted: Sequence[str]) -> Plan:
    named = [w for w in wanted if w]
    serial = (conn.serial or "").strip()
    if named and serial and any(n != serial for n in named):
        raise CliError(
            f"in LAN mode the printer is {serial} (--serial); "
            f"use --cloud to choose among the account's printers",
            exit_code=2,
        )
    if not serial and len(named) == 1:
        serial = named[0].strip()
    if not serial:
        raise CliError(
            "LAN mode needs the printer's serial: pass --serial SERIAL (or set BAMBU_SERIAL)",
            exit_code=2,
        )
    return Plan(printers=(PrinterRef(serial, serial),), lan=True)


def _cloud_plan(conn: Connect, wanted: Sequence[str], *, every: bool) -> Plan:
    from ..protocol.jwt import decode_claims
    from .base import open_client, region, token_source

    source = token_source()
    with open_client() as client:
        devices = client.get_devices()
        uid = decode_claims(source.token).uid or client.get_user_id()
    refs = [
        PrinterRef(d.serial, d.name or d.serial, d.dev_model_name, bool(d.online))
        for d in devices
        if d.serial
    ]
    if not refs:
        raise CliError("no printer is bound to this account (see `bambu device bind`)")
    names = [w for w in wanted if w]
    if names:
        chosen = tuple(_find(refs, name) for name in dict.fromkeys(names))
    elif every:
        chosen = tuple(refs)
    elif conn.serial:
        chosen = (_find(refs, conn.serial),)
    else:
        chosen = (default_printer(refs),)
    return Plan(printers=chosen, lan=False, token=source.token, uid=uid, region=region(source))


def default_printer(refs: Sequence[PrinterRef]) -> PrinterRef:
    """The only printer, else the first one online, else the first one."""
    online = [r for r in refs if r.online]
    return online[0] if online else refs[0]


def _find(refs: Sequence[PrinterRef], wanted: str) -> PrinterRef:
    """A printer by serial (exact), else by name (case-insensitive)."""
    key = wanted.strip()
    for ref in refs:
        if ref.serial == key or ref.serial.lower() == key.lower():
            return ref
    matches = [r for r in refs if r.name.casefold() == key.casefold()]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        serials = ", ".join(r.serial for r in matches)
        raise CliError(f"several printers are named {key!r} ({serials}): give the serial")
    known = ", ".join(f"{r.name} ({r.serial})" if r.name != r.serial else r.serial for r in refs)
    raise CliError(f"no printer {key!r} on this account (printers: {known})")


def refs_from_devices(devices: Sequence[Device]) -> list[PrinterRef]:
    """Printer references from a device list (the demo has its own client)."""
    return [PrinterRef(d.serial, d.name or d.serial, d.dev_model_name, d.online) for d in devices]


# --- connecting ----------------------------------------------------------------------------


def client_for(conn: Connect, chosen: Plan) -> BambuMQTT:
    """An unconnected client for the plan (cloud broker, or the printer's own)."""
    from ..mqtt.client import BambuMQTT
    from ..mqtt.core import Backoff

    serials = [p.serial for p in chosen.printers]
    if chosen.lan:
        return BambuMQTT.lan(
            conn.lan or "",
            serials[0],
            _access_code(conn),
            port=conn.port or None,
            ca_file=conn.ca_file or None,
            pin_file=conn.pin_file or None,
            insecure=conn.insecure,
            connect_timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            backoff=Backoff(maximum=RECONNECT_MAX),
        )
    return BambuMQTT(
        chosen.uid,
        serials,
        token=chosen.token,
        region=chosen.region,
        ca_file=conn.ca_file or None,
        connect_timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        backoff=Backoff(maximum=RECONNECT_MAX),
        models={p.serial: p.model for p in chosen.printers if p.model},
    )


def _access_code(conn: Connect) -> str:
    code = (conn.access_code or "").strip()
    if code:
        return code
    from .base import interactive

    if not interactive():
        raise CliError(
            "LAN mode needs the printer's access code: pass --access-code CODE "
            "(or set BAMBU_ACCESS_CODE)",
            exit_code=2,
        )
    from .output import ask

    return ask("Access code (on the printer's screen)", secret=True)


@contextmanager
def connected(
    conn: Connect, chosen: Plan, on_event: Callable[[LiveEvent], object] | None = None
) -> Iterator[BambuMQTT]:
    """A connected client (``on_event`` set before the first report); always closed after."""
    mqtt = client_for(conn, chosen)
    mqtt.on_event = on_event
    try:
        mqtt.connect(timeout=CONNECT_TIMEOUT)
        yield mqtt
    finally:
        mqtt.disconnect()


def require_online(ref: PrinterRef) -> None:
    """Fail at once when the cloud already knows the printer is offline."""
    if ref.online is False:
        raise CliError(f"printer {describe(ref)} is offline")


def full_state(mqtt: BambuMQTT, ref: PrinterRef) -> PrinterState:
    """The printer's full state, or one clear line when it does not report."""
    from ..errors import CommandTimeoutError

    try:
        return mqtt.get_full_status(ref.serial, timeout=REPORT_TIMEOUT)
    except CommandTimeoutError as exc:
        raise CliError(
            f"printer {describe(ref)} sent no report within {REPORT_TIMEOUT:g} s: is it offline?"
        ) from exc


def describe(ref: PrinterRef) -> str:
    """``P1S 1 (01P...)`` or just the serial."""
    return f"{ref.name} ({ref.serial})" if ref.name and ref.name != ref.serial else ref.serial


@contextmanager
def one_printer(conn: Connect, printer: str | None) -> Iterator[tuple[BambuMQTT, PrinterRef]]:
    """Connected to the one printer a command is about, with its full state known."""
    chosen = plan(conn, [printer] if printer else [])
    ref = chosen.printers[0]
    require_online(ref)
    with connected(conn, chosen) as mqtt:
        full_state(mqtt, ref)
        yield mqtt, ref
