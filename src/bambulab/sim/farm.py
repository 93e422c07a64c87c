"""A simulated print farm: a seeded mix of printers that fail now and then.

``Simulator(printers=N, fail_rate=..., flaky_rate=..., seed=...)`` (and
``bambu sim --printers N --fail-rate R --flaky-rate R``) gives the demo
account N printers instead of its own fleet:

* :func:`farm_fleet`: a mix of models weighted like a farm (mostly P1S and
  A1, some X1C, P1P, A1 mini, a few X1E/H2D), about one in six without an
  AMS, a few 0.6 mm nozzles. Serials, names, access codes and the AMS loads
  (types, colours, remaining) come from the world's seeded generator, so one
  seed always gives the same farm.
* :class:`FaultDraw`: each print that starts draws, from a generator seeded
  by (seed, serial, print number), whether it fails (``fail_rate``) and how:
  a filament runout (the job pauses with print_error 0700_8011 and the
  slot's runout HMS until the slot is refilled and ``resume`` is sent) or a
  clogged nozzle (FAILED with print_error 0300_8016 and the clog HMS).
* :class:`FlakyPower`: with ``flaky_rate`` > 0 each printer goes offline at
  that rate per simulated hour, for one to ten simulated minutes.

A finished print stays FINISH with the plate on the bed until the next one
starts: a real printer cannot know that someone cleared the bed.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .config import DeviceConfig
from .errors import bad_request
from .printer.job import Job
from .printer.state import FAULT_KINDS, FaultPlan

if TYPE_CHECKING:
    from .live import Simulator

log = logging.getLogger("bambulab.sim")

# (catalog key, weight): what a farm of Bambu printers tends to hold.
FARM_MODELS: tuple[tuple[str, int], ...] = (
    ("p1s", 30),
    ("a1", 18),
    ("x1c", 14),
    ("p1p", 10),
    ("a1mini", 12),
    ("x1e", 3),
    ("h2d", 4),
    ("p2s", 4),
    ("h2s", 5),
)
NO_AMS_SHARE = 0.17
WIDE_NOZZLE_SHARE = 0.1  # 0.6 mm; the rest 0.4 mm
MAX_PRINTERS = 5000
FLAKY_MIN_SECONDS = 60.0  # simulated time a flaky printer stays off, at least...
FLAKY_MAX_SECONDS = 600.0  # ...and at most


def farm_fleet(count: int, seed: int) -> tuple[DeviceConfig, ...]:
    """``count`` printers of a seeded mix of models, AMS sets and nozzles (all idle)."""
    if not 1 <= count <= MAX_PRINTERS:
        raise ValueError(f"printers must be 1-{MAX_PRINTERS}, got {count}")
    rng = random.Random(f"farm:{seed}")
    keys = [key for key, _ in FARM_MODELS]
    weights = [weight for _, weight in FARM_MODELS]
    devices = []
    for _ in range(count):
        key = rng.choices(keys, weights)[0]
        no_ams = rng.random() < NO_AMS_SHARE
        nozzle = 0.6 if rng.random() < WIDE_NOZZLE_SHARE else 0.4
        devices.append(
            DeviceConfig(
                model=key,
                idle=True,  # a farm starts empty, every bed clear
                nozzle_diameter=nozzle,
                ams_units=0 if no_ams else None,
            )
        )
    return tuple(devices)


def check_rate(name: str, value: float) -> float:
    """A failure rate: finite and >= 0 (``fail_rate`` at most 1); a clear ValueError otherwise."""
    if isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0")
    if name == "fail_rate" and value > 1:
        raise ValueError("fail_rate is a share of prints: 0-1")
    return float(value)


@dataclass(slots=True)
class FaultDraw:
    """Per printer: whether each print that starts fails, and how (seeded)."""

    seed: int
    serial: str
    rate: float
    kinds: tuple[str, ...] = FAULT_KINDS
    prints: int = 0

    def __call__(self, job: Job) -> FaultPlan | None:
        self.prints += 1
        if self.rate <= 0:
            return None
        rng = random.Random(f"{self.seed}:{self.serial}:{self.prints}")
        if rng.random() >= self.rate:
            return None
        return FaultPlan(rng.choice(self.kinds), round(rng.uniform(0.1, 0.9), 3))


@dataclass(slots=True)
class _Outage:
    serial: str
    back_at: float  # monotonic


@dataclass(slots=True)
class FlakyPower:
    """Takes printers offline at ``rate`` per simulated hour each, then back (a thread).

    ``set_online(serial, bool)`` is the simulator's power switch; it is
    called from this thread only, never from a socket's.
    """

    serials: list[str]
    rate: float
    time_scale: float
    seed: int
    set_online: Callable[[str, bool], None]
    interval: float = 0.5
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _out: dict[str, _Outage] = field(default_factory=dict)
    outages: int = 0

    def start(self) -> None:
        """Run in a daemon thread until :meth:`stop`."""
        if self.rate <= 0 or not self.serials or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="bambu-sim-flaky", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop, and power on every printer this took down."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self._restore(list(self._out))

    def _run(self) -> None:
        rng = random.Random(f"flaky:{self.seed}")
        last = time.monotonic()
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            hours = (now - last) * self.time_scale / 3600
            last = now
            self._restore([s for s, o in self._out.items() if o.back_at <= now])
            chance = 1 - math.exp(-self.rate * hours)
            for serial in self.serials:
                if serial in self._out or rng.random() >= chance:
                    continue
                down = rng.uniform(FLAKY_MIN_SECONDS, FLAKY_MAX_SECONDS) / self.time_scale
                self._out[serial] = _Outage(serial, now + max(self.interval, down))
                self.outages += 1
                self._switch(serial, False)

    def _restore(self, serials: Iterable[str]) -> None:
        for serial in serials:
            self._out.pop(serial, None)
            self._switch(serial, True)

    def _switch(self, serial: str, online: bool) -> None:
        try:
            self.set_online(serial, online)
        except Exception:  # a stopping simulator must not kill the thread noisily
            log.debug("flaky power: could not switch %s %s", serial, "on" if online else "off")


# --- HTTP: /sim/farm ---------------------------------------------------------------------


def farm_router(sim: Simulator) -> APIRouter:
    """``GET /sim/farm``, ``POST /sim/farm/printers/{serial}/fail`` and ``.../refill``."""
    router = APIRouter(prefix="/sim/farm", tags=["simulator"])

    @router.get("")
    async def farm_info() -> JSONResponse:
        """The farm's settings and how often flaky printers went offline."""
        return JSONResponse(
            {
                "farm": sim.farm,
                "printers": len(sim.world.devices_of(sim.world.demo_account.uid)),
                "fail_rate": sim.fail_rate,
                "flaky_rate": sim.flaky.rate,
                "outages": sim.flaky.outages,
            }
        )

    @router.post("/printers/{serial}/fail")
    async def fail(serial: str, request: Request) -> JSONResponse:
        """``{"kind": "runout"|"clog", "at": 0-1}``: the running (else next) print fails."""
        body = await _body(request)
        kind = body.get("kind")
        at = body.get("at", 0.0)
        if not isinstance(kind, str) or kind not in FAULT_KINDS:
            raise bad_request(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not 0 <= at <= 1:
            raise bad_request("at must be a number 0-1")
        _known(sim, serial)
        await run_in_threadpool(sim.fail_next, serial, kind, float(at))
        return JSONResponse({"ok": True, "serial": serial, "kind": kind, "at": float(at)})

    @router.post("/printers/{serial}/refill")
    async def refill(serial: str, request: Request) -> JSONResponse:
        """``{"ams_id": N, "slot": N}``: a full spool in that slot (255: the external spool)."""
        body = await _body(request)
        ams_id, slot = body.get("ams_id"), body.get("slot")
        for key, value in (("ams_id", ams_id), ("slot", slot)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
                raise bad_request(f"{key} must be an integer 0-255")
        assert isinstance(ams_id, int) and isinstance(slot, int)
        _known(sim, serial)
        try:
            await run_in_threadpool(sim.refill, serial, ams_id, slot)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        return JSONResponse({"ok": True, "serial": serial, "ams_id": ams_id, "slot": slot})

    return router


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("body must be JSON") from None
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    return body


def _known(sim: Simulator, serial: str) -> None:
    if serial not in sim.printers:
        raise bad_request("serial must name a simulated printer")
