"""Events a live connection emits, named in the past tense.

Every printer event (:class:`Event`) carries the printer's ``serial`` and the
:class:`PrinterState` as it was right after the change. The connection's own
events (:class:`ConnectionEvent`: connected, lost, retrying, failed) carry a
:class:`ConnectionStatus` snapshot instead; :data:`LiveEvent` is either kind.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TypeAlias

from .printer import HMSEntry, PrintError
from .state import PrinterState

NO_ERROR = PrintError(0)
NO_HMS = HMSEntry(0, 0)


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event: ``state`` is the printer's immutable state right after it."""

    serial: str
    state: PrinterState = field(repr=False)


@dataclass(frozen=True, slots=True)
class StateChanged(Event):
    """A report changed the printer's state.

    ``changed`` is the set of top-level state keys the report touched; the
    report's envelope (``command``, ``msg``, ``sequence_id``) is not state and
    never appears in it.
    """

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
    """The client can no longer hear the printer; not proof that the printer is off.

    Sent once per change, for one of two reasons: the cloud's presence event
    says the printer left the broker (``client.disconnected``; the cloud
    notices a powered-off printer only ~3.5 minutes later), or the client's
    own connection to the broker dropped, in which case every printer on it
    goes offline together and a :class:`ConnectionEvent` tells of the outage
    (the printers may be printing on). A printer that merely stays quiet is
    not offline: staleness is the age of its last report. ``state`` is the
    last state known. :class:`PrinterOnline` follows with the next report or
    presence event.
    """


# --- the connection itself --------------------------------------------------------------
#
# Not about one printer: these carry no serial and no state, only a snapshot of
# the connection. They travel on the same callback / async iterator as the
# printer events, so a live view learns of an outage the moment the client does.

CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
FAILED = "failed"
CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    """What a connection is doing right now; an immutable snapshot (a new one per change).

    Times are wall-clock seconds (``time.time()``), so they can be shown and logged.

    * ``state``: ``connecting`` (the first connection), ``connected``,
      ``reconnecting`` (a session that was up dropped, or a retry failed),
      ``failed`` (given up for good: wrong credentials, refused certificate,
      never reachable) or ``closed`` (by the caller).
    * ``since``: when that state began (for ``reconnecting``: when the
      connection went down, across every retry).
    * ``attempt``: the number of the (re)connect attempt under way or next
      (1-based; 0 while connected).
    * ``next_retry``: when that attempt starts, while waiting for it; else ``None``.
    * ``last_error``: why the last attempt failed or the session dropped (kept
      after a reconnect, as history).
    * ``connects``: sessions established so far; ``broker``: who we talk to.
    """

    state: str = CONNECTING
    since: float = 0.0
    attempt: int = 0
    next_retry: float | None = None
    last_error: str | None = None
    connects: int = 0
    broker: str = ""

    @property
    def connected(self) -> bool:
        """Whether the session is up (reports flow)."""
        return self.state == CONNECTED


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    """Base of the events about the connection (not about one printer)."""

    status: ConnectionStatus


@dataclass(frozen=True, slots=True)
class Connected(ConnectionEvent):
    """A session is up (the first one; :class:`Reconnected` for the later ones)."""


@dataclass(frozen=True, slots=True)
class Reconnected(Connected):
    """A session is up again after the connection was lost (reports flow again)."""


@dataclass(frozen=True, slots=True)
class ConnectionLost(ConnectionEvent):
    """A session that was up dropped; ``status`` says which retry comes next, and when."""


@dataclass(frozen=True, slots=True)
class RetryScheduled(ConnectionEvent):
    """A (re)connect attempt failed; ``status`` says which retry comes next, and when."""


@dataclass(frozen=True, slots=True)
class ConnectionFailed(ConnectionEvent):
    """The client gave up for good (``status.last_error`` says why): no more retries."""


LiveEvent: TypeAlias = Event | ConnectionEvent
"""Anything a live connection emits: a printer's event or the connection's."""
