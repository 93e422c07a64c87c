"""Heaters without noise: linear heating, Newtonian cooling, snapping at the end.

Tests assert on temperatures, so there is no randomness here and every
approach ends *exactly* on its target: once a heater is within
:data:`SNAP` degrees of where it is heading it jumps there. That is also what
makes delta reports go quiet when nothing happens (real printers report
sensor noise; a simulator that did would make every delta non-empty).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SNAP = 0.25  # °C: closer than this to the resting point counts as there


@dataclass(slots=True)
class Heater:
    """One heated part: a nozzle, the bed, or the chamber."""

    current: float
    rate: float  # °C/s while actively heating
    tau: float  # s, the time constant of passive cooling/warming
    target: float = 0.0  # 0 = heater off

    def step(self, dt: float, ambient: float) -> None:
        """Advance ``dt`` seconds with the surroundings at ``ambient`` °C."""
        if self.target > self.current:
            self.current = min(self.target, self.current + self.rate * dt)
            return
        # Off, or above target: lose heat toward the surroundings, but a
        # heater that is on never drops below its target.
        floor = max(self.target, ambient)
        decay = math.exp(-dt / self.tau)
        if self.current > floor:
            cooled = ambient + (self.current - ambient) * decay
            self.current = floor if cooled - floor < SNAP else cooled
        elif self.current < floor:
            warmed = ambient - (ambient - self.current) * decay
            self.current = ambient if ambient - warmed < SNAP else warmed

    @property
    def reported(self) -> float:
        """The value a report carries: the sensor's 1/32 °C resolution."""
        return round(self.current * 32) / 32


def pack(current: float, target: float) -> int:
    """Newer firmware's packed temperature: low 16 bits current, high 16 target."""
    return (round(target) & 0xFFFF) << 16 | (round(current) & 0xFFFF)
