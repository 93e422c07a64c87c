"""Sans-IO derivation of events from consecutive printer states.

:class:`Tracker` remembers the little it needs about the last state
(gcode_state, job name, HMS set, online) and turns each update into events.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from ..models.events import (
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
    StateChanged,
)
from ..models.printer import HMSEntry
from ..models.state import PrinterState

ACTIVE = frozenset({"PREPARE", "RUNNING", "SLICING"})


class Tracker:
    """Events for one printer."""

    def __init__(self, serial: str) -> None:
        self.serial = serial
        self.gcode_state = ""
        self.job = ""
        self.hms: frozenset[HMSEntry] = frozenset()
        self.online: bool | None = None
        # The raw values last seen, so an unchanged report costs one comparison.
        self._raw_state: object = None
        self._raw_hms: object = None

    def presence(self, state: PrinterState, online: bool) -> list[Event]:
        """A presence change (cloud ``event`` message, or the connection itself)."""
        if self.online is online:
            return []
        self.online = online
        cls = PrinterOnline if online else PrinterOffline
        return [cls(self.serial, state)]

    def update(self, state: PrinterState, changed: AbstractSet[str]) -> list[Event]:
        """Events for a report that touched ``changed`` top-level keys."""
        events: list[Event] = self.presence(state, True) if self.online is not True else []
        events.append(StateChanged(self.serial, state, changed))
        raw = state.raw
        if raw.get("gcode_state") != self._raw_state:
            self._raw_state = raw.get("gcode_state")
            events.extend(self._job(state))
        hms = raw.get("hms")
        if hms != self._raw_hms:
            self._raw_hms = hms
            events.extend(self._hms(state))
        return events

    def _job(self, state: PrinterState) -> list[Event]:
        old, new = self.gcode_state, state.gcode_state
        if not new or new == old:
            return []
        self.gcode_state = new
        job = state.job_name or self.job
        events: list[Event] = []
        if new in ACTIVE and old not in ACTIVE and old != "PAUSE":
            self.job = job
            if old:  # the first state seen is not a transition
                events.append(PrintStarted(self.serial, state, job))
        elif new in ACTIVE and old == "PAUSE":
            events.append(PrintResumed(self.serial, state))
        elif new == "PAUSE" and old in ACTIVE:
            events.append(PrintPaused(self.serial, state))
        elif new == "FINISH" and old in ACTIVE | {"PAUSE"}:
            events.append(PrintFinished(self.serial, state, job))
        elif new == "FAILED" and old in ACTIVE | {"PAUSE"}:
            events.append(PrintFailed(self.serial, state, job, state.print_error))
        return events

    def _hms(self, state: PrinterState) -> list[Event]:
        now = frozenset(state.hms)
        raised = [HMSRaised(self.serial, state, e) for e in sorted(now - self.hms, key=str)]
        cleared = [HMSCleared(self.serial, state, e) for e in sorted(self.hms - now, key=str)]
        self.hms = now
        return [*raised, *cleared]
