"""Sliding-window rate limits on the simulated clock.

Each (category, account) pair keeps the times of its recent accepted
requests. A request is refused when the window already holds ``limit`` of
them, and ``Retry-After`` is the time until the oldest one leaves the window,
which is exactly when a retry will succeed. Refused requests do not consume
a slot, so a client that honours ``Retry-After`` is never punished twice.
"""

from __future__ import annotations

import math
from collections import deque

from .clock import SimClock
from .config import RateLimits


class RateLimiter:
    """All rate-limit windows of one simulated cloud."""

    def __init__(self, limits: RateLimits, clock: SimClock) -> None:
        self._limits = limits
        self._clock = clock
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def retry_after(self, category: str, key: str) -> int | None:
        """Whole seconds to wait before ``key`` may call ``category`` again, or None."""
        limit = self._limits.get(category)
        if limit is None:
            return None
        now = self._clock.now()
        hits = self._window(category, key, now, limit.window)
        if len(hits) < limit.limit:
            return None
        return max(1, math.ceil(hits[0] + limit.window - now))

    def record(self, category: str, key: str) -> None:
        """Count one accepted request."""
        limit = self._limits.get(category)
        if limit is None:
            return
        now = self._clock.now()
        self._window(category, key, now, limit.window).append(now)

    def check(self, categories: tuple[str, ...], key: str) -> int | None:
        """Check every category first, then count the request in all of them.

        Returns the largest wait when any category is exhausted (nothing is
        counted then), None when the request may proceed.
        """
        waits = [w for c in categories if (w := self.retry_after(c, key)) is not None]
        if waits:
            return max(waits)
        for category in categories:
            self.record(category, key)
        return None

    def _window(self, category: str, key: str, now: float, window: float) -> deque[float]:
        hits = self._hits.setdefault((category, key), deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        return hits
