"""The simulator's clock: real time plus an adjustable offset.

Every expiry in the simulated cloud (login codes, TFA keys, tokens, pre-signed
URLs, rate-limit windows) is measured on this clock, so a test can jump past a
five-minute code lifetime with ``advance(301)`` instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class SimClock:
    """Wall-clock time shifted by an offset that only ever grows.

    Shared between the server thread and the thread that drives a test, hence
    the lock around the offset.
    """

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Simulated Unix time in seconds."""
        with self._lock:
            return time.time() + self._offset

    @property
    def offset(self) -> float:
        """Seconds the simulated time runs ahead of the real one."""
        with self._lock:
            return self._offset

    def advance(self, seconds: float) -> float:
        """Move simulated time forward; returns the new simulated time.

        Going backwards is refused: expiry logic (and real servers) assume
        time is monotonic, and a rewind would resurrect expired codes.
        """
        if seconds < 0:
            raise ValueError("the simulated clock only moves forward")
        with self._lock:
            self._offset += seconds
            return time.time() + self._offset


def iso(timestamp: float) -> str:
    """ISO-8601 UTC with a ``Z`` suffix and whole seconds, as the cloud writes times."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float:
    """Inverse of :func:`iso`; also accepts offsets such as ``+00:00``."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
