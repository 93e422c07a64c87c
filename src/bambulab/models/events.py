"""Events a live connection emits, named in the past tense.

Every event carries the printer's ``serial`` and the :class:`PrinterState`
as it was right after the change.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from .printer import HMSEntry, PrintError
from .state import PrinterState

NO_ERROR = PrintError(0)
NO_HMS = HMSEntry(0, 0)


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event."""

    serial: str
    state: PrinterState = field(repr=False)


@dataclass(frozen=True, slots=True)
class StateChanged(Event):
    """A report changed the printer's state (``changed`` = top-level keys touched)."""

    changed: AbstractSet[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PrintStarted(Event):
    """A job started (PREPARE or RUNNING after something else)."""

    job: str = ""


@dataclass(frozen=True, slots=True)
class PrintPaused(Event):
    """The job paused."""


@dataclass(frozen=True, slots=True)
class PrintResumed(Event):
    """The paused job runs again."""


@dataclass(frozen=True, slots=True)
class PrintFinished(Event):
    """The job completed."""

    job: str = ""


@dataclass(frozen=True, slots=True)
class PrintFailed(Event):
    """The job failed or was cancelled."""

    job: str = ""
    error: PrintError = NO_ERROR


@dataclass(frozen=True, slots=True)
class HMSRaised(Event):
    """A new HMS entry appeared."""

    entry: HMSEntry = NO_HMS


@dataclass(frozen=True, slots=True)
class HMSCleared(Event):
    """An HMS entry went away."""

    entry: HMSEntry = NO_HMS


@dataclass(frozen=True, slots=True)
class PrinterOnline(Event):
    """The printer is reachable (first report, or a presence event)."""


@dataclass(frozen=True, slots=True)
class PrinterOffline(Event):
    """The printer went away (presence event, or its connection dropped)."""
