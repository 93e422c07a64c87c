"""The live hub: one upstream MQTT connection per source, shared by every client of a server.

A server follows its printers through one or more
:class:`~bambulab.mqtt.client.AsyncBambuMQTT` connections (one cloud
connection for all of an account's printers, one per printer on a LAN, or
one to a shared broker that several server instances follow). The hub reads
their events on the server's loop and keeps:

* the latest immutable :class:`~bambulab.models.state.PrinterState` of each
  printer, whether it is online and when it last reported;
* counters for the server's own health (messages, reconnects, report
  latency) and per printer (prints started, finished, failed);
* the event stream: each event is published on the server's
  :class:`~bambulab.servers.common.EventBus` (see :meth:`LiveHub.publish`),
  from which the Server-Sent-Events endpoint reads.

Commands go to the connection that follows the printer. Everything here runs
on the server's event loop; the MQTT network threads only hand events over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BambuError, PrinterOfflineError
from ..models.events import (
    ConnectionEvent,
    Event,
    HMSCleared,
    HMSRaised,
    PrinterOffline,
    PrinterOnline,
    PrintFailed,
    PrintFinished,
    PrintPaused,
    PrintResumed,
    PrintStarted,
    Reconnected,
    StateChanged,
)
from .common import EventBus, MemoryEventBus
from .runner import one_line

if TYPE_CHECKING:
    from ..models.state import PrinterState
    from ..mqtt.client import AsyncBambuMQTT
    from ..protocol.mqtt import Command, Incoming

__all__ = ["EVENT_TYPES", "HubStats", "LiveHub", "PrinterEntry"]

log = logging.getLogger("bambulab.servers.live")

# Event classes -> the stream's event types (snake_case, past tense like the classes).
EVENT_TYPES: dict[type[Event], str] = {
    StateChanged: "state_changed",
    PrintStarted: "print_started",
    PrintPaused: "print_paused",
    PrintResumed: "print_resumed",
    PrintFinished: "print_finished",
    PrintFailed: "print_failed",
    HMSRaised: "hms_raised",
    HMSCleared: "hms_cleared",
    PrinterOnline: "printer_online",
    PrinterOffline: "printer_offline",
}
CONNECT_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class PrinterEntry:
    """A printer the server serves: serial, name and model name (``dev_model_name``)."""

    serial: str
    name: str = ""
    model: str = ""


@dataclass(frozen=True, slots=True)
class HubStats:
    """The hub's own counters (an immutable snapshot)."""

    connected: bool
    connections: int
    messages: int
    reconnects: int
    events_published: int
    report_latency_sum: float
    report_latency_count: int


@dataclass
class _PrinterCounters:
    started: int = 0
    finished: int = 0
    failed: int = 0


@dataclass
class LiveHub:
    """Live state of ``printers`` from ``sources`` (see the module).

    ``sources``: connected-on-start MQTT clients; each printer is followed by
    the source whose ``serials`` names it (the first one otherwise).
    """

    sources: Sequence[AsyncBambuMQTT]
    entries: Sequence[PrinterEntry]
    bus: EventBus = field(default_factory=MemoryEventBus)
    connect_timeout: float = CONNECT_TIMEOUT
    _states: dict[str, PrinterState] = field(default_factory=dict, init=False)
    _online: dict[str, bool] = field(default_factory=dict, init=False)
    _seen: dict[str, float] = field(default_factory=dict, init=False)
    _counters: dict[str, _PrinterCounters] = field(default_factory=dict, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _messages: int = field(default=0, init=False)
    _reconnects: int = field(default=0, init=False)
    _published: int = field(default=0, init=False)
    _latency_sum: float = field(default=0.0, init=False)
    _latency_count: int = field(default=0, init=False)
    # Called with each printer event on the server's loop (the farm's dispatcher and
    # notifier): quick, non-blocking.
    listeners: list[Callable[[Event], None]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._by_serial = {e.serial: e for e in self.entries}
        for entry in self.entries:
            self._counters[entry.serial] = _PrinterCounters()

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Connect every source (a source that cannot connect yet keeps retrying on its own)."""
        for source in self.sources:
            for serial in source.serials:
                if serial not in self._by_serial:
                    self._add_entry(PrinterEntry(serial))
            try:
                await source.connect(timeout=self.connect_timeout)
            except BambuError as exc:
                log.warning("live source not connected yet: %s", one_line(exc))
            if source._queue is not None:  # connect() made the event queue
                self._tasks.append(asyncio.create_task(self._read(source)))

    async def aclose(self) -> None:
        """Close every source and stop reading."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for source in self.sources:
            with contextlib.suppress(Exception):
                await source.aclose()

    def _add_entry(self, entry: PrinterEntry) -> None:
        self._by_serial[entry.serial] = entry
        self._counters.setdefault(entry.serial, _PrinterCounters())

    async def _read(self, source: AsyncBambuMQTT) -> None:
        try:
            async for event in source.events():
                try:
                    await self.handle(event, source)
                except Exception as exc:  # one bad event never ends the stream
                    log.error("live event not handled: %s", one_line(exc))
        except BambuError as exc:
            log.error("live source ended: %s", one_line(exc))

    # --- events -------------------------------------------------------------------

    async def handle(self, event: Any, source: AsyncBambuMQTT | None = None) -> None:
        """Take one event from a source: update the state and counters, publish it."""
        if isinstance(event, ConnectionEvent):
            if isinstance(event, Reconnected):
                self._reconnects += 1
            return
        if not isinstance(event, Event):
            return
        serial = event.serial
        if serial not in self._by_serial:
            self._add_entry(PrinterEntry(serial))
        self._states[serial] = event.state
        if isinstance(event, StateChanged):
            self._messages += 1
            now = time.time()
            self._seen[serial] = now
            self._online[serial] = True
            if source is not None:
                age = source.report_age(serial)
                if age is not None:
                    self._latency_sum += age
                    self._latency_count += 1
        elif isinstance(event, PrinterOnline):
            self._online[serial] = True
        elif isinstance(event, PrinterOffline):
            self._online[serial] = False
        counters = self._counters[serial]
        if isinstance(event, PrintStarted):
            counters.started += 1
        elif isinstance(event, PrintFinished):
            counters.finished += 1
        elif isinstance(event, PrintFailed):
            counters.failed += 1
        await self.publish(event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as exc:
                log.error("a listener of live events failed: %s", one_line(exc))

    async def publish(self, event: Event) -> None:
        """Put ``event`` on the bus as ``{"serial", "type", ...}`` (see :func:`event_body`)."""
        kind = EVENT_TYPES.get(type(event))
        if kind is None:
            return
        # A bus shared by several instances (Redis) names each event so that it is published
        # once however many instances follow the printer.
        key_of = getattr(self.bus, "dedupe_key", None)
        dedupe = key_of(kind, event) if key_of is not None else None
        if await self.bus.publish(kind, event_body(event), event.serial, dedupe) is not None:
            self._published += 1

    # --- reading ------------------------------------------------------------------

    def printers(self) -> list[PrinterEntry]:
        """Every printer the hub serves, in the order configured (then as discovered)."""
        return list(self._by_serial.values())

    def entry(self, serial: str) -> PrinterEntry | None:
        return self._by_serial.get(serial)

    def state(self, serial: str) -> PrinterState | None:
        """The latest state (``None``: no report yet)."""
        return self._states.get(serial)

    def online(self, serial: str) -> bool:
        """Whether the printer has reported and not gone offline since."""
        return self._online.get(serial, False)

    def last_report(self, serial: str) -> float | None:
        """When the printer last reported (``time.time()`` seconds)."""
        return self._seen.get(serial)

    def print_counts(self, serial: str) -> tuple[int, int, int]:
        """(started, finished, failed) prints seen by this server."""
        c = self._counters.get(serial) or _PrinterCounters()
        return c.started, c.finished, c.failed

    @property
    def connected(self) -> bool:
        """Whether every source's session is up."""
        return bool(self.sources) and all(s.connected for s in self.sources)

    def stats(self) -> HubStats:
        return HubStats(
            connected=self.connected,
            connections=len(self.sources),
            messages=self._messages,
            reconnects=self._reconnects,
            events_published=self._published,
            report_latency_sum=self._latency_sum,
            report_latency_count=self._latency_count,
        )

    def source_for(self, serial: str) -> AsyncBambuMQTT:
        """The connection that follows ``serial`` (KeyError if none does)."""
        for source in self.sources:
            if serial in source.serials:
                return source
        raise KeyError(serial)

    # --- commands -----------------------------------------------------------------

    async def command(self, serial: str, command: Command) -> Incoming:
        """Send ``command`` to ``serial`` through the connection that follows it; its reply.

        :class:`~bambulab.errors.PrinterOfflineError` (nothing sent) when the
        printer is not online as far as the hub knows, or no connection follows
        it; otherwise the connection's own errors (not connected, refused,
        timed out, interrupted, unsupported by the model).
        """
        if not self.online(serial):
            raise PrinterOfflineError(f"printer {serial} is offline", serial=serial)
        try:
            source = self.source_for(serial)
        except KeyError:
            raise PrinterOfflineError(
                f"no connection follows printer {serial}", serial=serial
            ) from None
        return await source.send(command, serial)


def event_body(event: Event) -> dict[str, Any]:
    """The JSON body of a stream event: the serial, and what the event says."""
    body: dict[str, Any] = {"serial": event.serial, "time": time.time()}
    if isinstance(event, StateChanged):
        body["changed"] = sorted(event.changed)
        values = changed_values(event.state, event.changed)
        if values:
            body["values"] = values
    elif isinstance(event, (PrintStarted, PrintFinished, PrintFailed)):
        body["job"] = event.job
        if isinstance(event, PrintFailed):
            body["error"] = event.error.code_string
    elif isinstance(event, (HMSRaised, HMSCleared)):
        body["code"] = event.entry.code_string
    return body


def _error(state: PrinterState) -> str | None:
    error = state.print_error
    return str(error) if error else None


# Summary fields a report key moves (the wire keys of PROTOCOL.md §2; ``device``
# carries the temperatures on printers with an extruder block).
_TEMPS = ("nozzle_temp", "nozzle_target", "bed_temp", "bed_target", "chamber_temp")
_FIELDS_OF: dict[str, tuple[str, ...]] = {
    "gcode_state": ("gcode_state",),
    "mc_print_stage": ("stage",),
    "stg_cur": ("stage",),
    "subtask_name": ("job",),
    "mc_percent": ("percent",),
    "mc_remaining_time": ("remaining_minutes",),
    "layer_num": ("layer",),
    "total_layer_num": ("total_layers",),
    "nozzle_temper": ("nozzle_temp",),
    "nozzle_target_temper": ("nozzle_target",),
    "bed_temper": ("bed_temp",),
    "bed_target_temper": ("bed_target",),
    "chamber_temper": ("chamber_temp",),
    "device": _TEMPS,
    "cooling_fan_speed": ("part_fan",),
    "big_fan1_speed": ("aux_fan",),
    "big_fan2_speed": ("chamber_fan",),
    "spd_lvl": ("speed",),
    "print_error": ("print_error",),
    "hms": ("hms_count",),
    "wifi_signal": ("wifi_dbm",),
}
_VALUE: dict[str, Any] = {
    "gcode_state": lambda s: s.gcode_state,
    "stage": lambda s: s.stage_name,
    "job": lambda s: s.job_name,
    "percent": lambda s: s.percent,
    "remaining_minutes": lambda s: s.remaining_minutes,
    "layer": lambda s: s.layer,
    "total_layers": lambda s: s.total_layers,
    "nozzle_temp": lambda s: s.nozzle_temp,
    "nozzle_target": lambda s: s.nozzle_target,
    "bed_temp": lambda s: s.bed_temp,
    "bed_target": lambda s: s.bed_target,
    "chamber_temp": lambda s: s.chamber_temp,
    "part_fan": lambda s: s.part_fan,
    "aux_fan": lambda s: s.aux_fan,
    "chamber_fan": lambda s: s.chamber_fan,
    "speed": lambda s: s.speed_name,
    "print_error": _error,
    "hms_count": lambda s: len(s.hms),
    "wifi_dbm": lambda s: s.wifi_dbm,
}


def changed_values(state: PrinterState, changed: Iterable[str]) -> dict[str, Any]:
    """The summary fields (names of ``GET /api/v2/printers``) the changed report keys move.

    Runs for every report of every printer: a few cached properties of the
    state, no pydantic.
    """
    values: dict[str, Any] = {}
    for key in changed:
        for name in _FIELDS_OF.get(key, ()):
            if name not in values:
                values[name] = _VALUE[name](state)
    return values
