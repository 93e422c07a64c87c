"""Sans-IO derivation of events from consecutive printer states, and of the connection's.

:class:`Tracker` remembers the little it needs about the last state
(gcode_state, job name, HMS set, online) and turns each update into events.
:class:`ConnectionTracker` does the same for the connection: what the network
thread saw in, a :class:`ConnectionStatus` snapshot and connection events out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import replace

from ..models.events import (
    CLOSED,
    CONNECTED,
    CONNECTING,
    FAILED,
    RECONNECTING,
    Connected,
    ConnectionEvent,
    ConnectionFailed,
    ConnectionLost,
    ConnectionStatus,
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
    RetryScheduled,
    StateChanged,
)
from ..models.printer import HMSEntry
from ..models.state import PrinterState
from .mqtt import ENVELOPE_KEYS

ACTIVE = frozenset({"PREPARE", "RUNNING", "SLICING"})
# The envelope of every report: not part of the state.
ENVELOPE = frozenset(ENVELOPE_KEYS)


class ChangedKeys(AbstractSet[str]):
    """The top-level keys a report touched, without its envelope: an immutable set.

    The keys are kept as a tuple and the envelope filtered out when read: a
    full X1 report touches some sixty keys and most consumers never look at
    them, so building a set for each report would cost more than the merge.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(keys)

    def __contains__(self, key: object) -> bool:
        return key not in ENVELOPE and key in self._keys

    def __iter__(self) -> Iterator[str]:
        return (k for k in self._keys if k not in ENVELOPE)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"ChangedKeys({sorted(self)!r})"

    __hash__ = AbstractSet._hash


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

    def update(self, state: PrinterState, changed: Iterable[str]) -> list[Event]:
        """Events for a report that touched ``changed`` top-level keys.

        ``state`` is the (immutable) state right after the report; the envelope
        keys of the report (``command``, ``msg``, ``sequence_id``) are not
        state and are left out of ``StateChanged.changed``.
        """
        events: list[Event] = self.presence(state, True) if self.online is not True else []
        events.append(StateChanged(self.serial, state, ChangedKeys(changed)))
        gcode_state = state.get("gcode_state")
        if gcode_state != self._raw_state:
            self._raw_state = gcode_state
            events.extend(self._job(state))
        hms = state.get("hms")
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


class ConnectionTracker:
    """The connection's :class:`ConnectionStatus` as a small state machine.

    The network thread reports what happened (connected, lost, an attempt
    failed, gave up, closed) with the time; each call updates the snapshot
    and returns the events to emit. Attempts are counted here: ``attempt``
    is the number of the connect (or, once a session has been up, reconnect)
    attempt under way or next, so a person reads "attempt 3, next try at ...".
    """

    def __init__(self, broker: str, now: float) -> None:
        self.status = ConnectionStatus(CONNECTING, since=now, attempt=1, broker=broker)

    def connected(self, now: float) -> list[ConnectionEvent]:
        """A session is up."""
        connects = self.status.connects + 1
        self.status = replace(
            self.status, state=CONNECTED, since=now, attempt=0, next_retry=None, connects=connects
        )
        return [Connected(self.status) if connects == 1 else Reconnected(self.status)]

    def lost(self, error: str, now: float, delay: float) -> list[ConnectionEvent]:
        """The session that was up dropped; the first retry comes after ``delay`` seconds."""
        self.status = replace(
            self.status,
            state=RECONNECTING,
            since=now,
            attempt=1,
            next_retry=now + max(0.0, delay),
            last_error=error,
        )
        return [ConnectionLost(self.status)]

    def retry(self, error: str, now: float, delay: float) -> list[ConnectionEvent]:
        """An attempt failed; the next comes after ``delay`` seconds."""
        if self.status.state in (FAILED, CLOSED):
            return []
        self.status = replace(
            self.status,
            state=RECONNECTING if self.status.connects else CONNECTING,
            attempt=self.status.attempt + 1,
            next_retry=now + max(0.0, delay),
            last_error=error,
        )
        return [RetryScheduled(self.status)]

    def trying(self) -> None:
        """The waited-for attempt starts now (no event: its outcome will be one)."""
        if self.status.next_retry is not None:
            self.status = replace(self.status, next_retry=None)

    def failed(self, error: str, now: float) -> list[ConnectionEvent]:
        """The client gave up for good."""
        if self.status.state in (FAILED, CLOSED):
            return []
        self.status = replace(
            self.status, state=FAILED, since=now, next_retry=None, last_error=error
        )
        return [ConnectionFailed(self.status)]

    def closed(self, now: float) -> None:
        """Closed by the caller (no event: the caller knows)."""
        if self.status.state != FAILED:
            self.status = replace(self.status, state=CLOSED, since=now, next_retry=None)
