"""Third-party Bambu client libraries, run unmodified against ``bambu sim``.

Each library is used the way its README shows a user would; only the host,
the port and TLS verification are adapted (a printer listens on 8883 and the
cloud on ``api.bambulab.com``; the simulator on free loopback ports). The
libraries live in the ``thirdparty`` extra: without it these tests skip with
one line, and under ``CI=true`` they fail instead, like missing binaries do
(tests/binaries.py).

What a library reads is compared with what the simulator *holds*: the
simulated printer's own state (heaters, job, AMS, lights, fans), read on the
printer thread, not the report it rendered from it.
"""

from __future__ import annotations

import importlib
import math
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from bambulab.sim import Simulator
from tests import binaries
from tests.conftest import unlimited

T = TypeVar("T")

# The demo fleet (docs/simulator.md "The fleet"): the seed's P1P, printing.
SEED_DEVICE = "01234567890ABCD"
PASSWORD_USER = "password@example.com"
PASSWORD = "bambu-demo"
BINDABLE_H2D = "09409B120100202"

# Every wait in these tests ends by this many seconds; pytest-timeout stops the rest.
WAIT = 15.0


def require(module: str) -> types.ModuleType:
    """Import a third-party library of the ``thirdparty`` extra, or skip (fail under CI)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        reason = f"{module} is not installed (pip install -e '.[thirdparty]'; make env does it)"
        if binaries.in_ci():
            pytest.fail(f"{reason} and CI=true requires it", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """The default fleet on the embedded brokers, reporting twice a second."""
    with Simulator(unlimited(), tick_interval=0.5) as running:
        yield running


def eventually(read: Callable[[], T], want: Callable[[T], bool], timeout: float = WAIT) -> T:
    """Poll ``read()`` until ``want(value)``; the last value either way (assert on it)."""
    deadline = time.monotonic() + timeout
    value = read()
    while not want(value) and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


def settle(
    library: Callable[[], Any], simulator: Callable[[], Any], timeout: float = WAIT
) -> tuple[Any, Any]:
    """Poll until the library's value equals the simulator's; both last values.

    Values move (heaters, progress), so a library that reads right catches up
    within a report or two; one that reads wrong never does.
    """
    deadline = time.monotonic() + timeout
    while True:
        ours, theirs = simulator(), library()
        if theirs == ours or time.monotonic() >= deadline:
            return theirs, ours
        time.sleep(0.05)


# --- what the simulator holds ---------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """The values a user reads off a printer, from the simulated printer's own state."""

    model: str  # dev_model_name
    product: str
    firmware: str
    gcode_state: str
    percent: int
    layer: int
    total_layers: int
    nozzle_temp: float  # the active nozzle
    nozzle_target: float
    nozzle_temps: tuple[float, ...]  # every nozzle, by extruder id
    active_extruder: int
    bed_temp: float
    bed_target: float
    chamber_temp: float
    nozzle_diameter: float
    nozzle_type: str
    lights: dict[str, str]
    fans: dict[str, int]  # PWM 0-255: part, aux, chamber
    trays: dict[tuple[int, int], tuple[str, str]]  # (ams id, slot) -> (type, RRGGBBAA)
    tray_now: int


def held(sim: Simulator, serial: str) -> Held:
    """Read the simulated printer's state on its own thread."""

    def read(printer: Any) -> Held:
        state = printer.state
        profile = printer.profile
        job = state.job
        percent = layer = total = 0
        if job is not None:
            total = job.layers
            if state.gcode_state == "FINISH":
                percent, layer = 100, job.layers
            elif job.work_done > 0:
                percent = min(99, int(job.fraction * 100))
                layer = max(1, min(job.layers, math.ceil(job.fraction * job.layers)))
        trays = {
            (unit.id, slot): (spool.tray_type, spool.colour)
            for unit in state.ams.units
            for slot, spool in enumerate(unit.trays)
            if spool.tray_type
        }
        return Held(
            model=profile.code,
            product=profile.product,
            firmware=state.ota_version,
            gcode_state=state.gcode_state,
            percent=percent,
            layer=layer,
            total_layers=total,
            nozzle_temp=state.nozzle.reported,
            nozzle_target=float(state.nozzle.target),
            nozzle_temps=tuple(h.reported for h in state.nozzles),
            active_extruder=state.active_extruder,
            bed_temp=state.bed.reported,
            bed_target=float(state.bed.target),
            chamber_temp=state.chamber.reported,
            nozzle_diameter=state.nozzle_diameter[state.active_extruder],
            nozzle_type=state.nozzle_type[state.active_extruder],
            lights=dict(state.lights),
            fans=dict(state.fans),
            trays=trays,
            tray_now=state.ams.tray_now,
        )

    return sim.with_printer(serial, read)


def serial_of(sim: Simulator, model: str) -> str:
    """The first printer of the demo account with this ``dev_model_name``."""
    return next(e.serial for e in sim.endpoints() if e.model == model)


def access_code(sim: Simulator, serial: str) -> str:
    return str(sim.printers[serial].access_code)


# --- "ports and CA aside": address rewriting for libraries with fixed endpoints -------


class Redirect:
    """Maps the addresses a library hard-codes onto the simulator's.

    ``mqtt`` maps ``(host, port)`` pairs a library dials to loopback ones;
    ``http`` maps URL prefixes (``https://api.bambulab.com``) to the
    simulator's base URL. Nothing else a library sends is touched.
    """

    def __init__(self) -> None:
        self.mqtt: dict[tuple[str, int], tuple[str, int]] = {}
        self.http: dict[str, str] = {}

    def address(self, host: str, port: int) -> tuple[str, int]:
        return self.mqtt.get((host, port), (host, port))

    def url(self, url: str) -> str:
        for prefix, target in self.http.items():
            if url.startswith(prefix):
                return target + url[len(prefix) :]
        return url

    def paho_module(self) -> Any:
        """A stand-in for ``paho.mqtt.client`` whose ``Client`` dials through this map."""
        import paho.mqtt.client as paho

        redirect = self

        class Client(paho.Client):
            def connect(self, host: str, port: int = 1883, *args: Any, **kwargs: Any) -> Any:
                return super().connect(*redirect.address(host, port), *args, **kwargs)

            def connect_async(self, host: str, port: int = 1883, *args: Any, **kwargs: Any) -> Any:
                return super().connect_async(*redirect.address(host, port), *args, **kwargs)

        module = types.SimpleNamespace(**{k: getattr(paho, k) for k in dir(paho) if k[0] != "_"})
        module.Client = Client
        return module

    def requests_module(self) -> Any:
        """A stand-in for ``requests`` whose calls go through :meth:`url`."""
        import requests

        redirect = self

        def call(method: str) -> Callable[..., Any]:
            def send(url: str, *args: Any, **kwargs: Any) -> Any:
                return getattr(requests, method)(redirect.url(url), *args, **kwargs)

            return send

        module = types.SimpleNamespace(
            **{k: getattr(requests, k) for k in dir(requests) if k[0] != "_"}
        )
        for method in ("get", "post", "put", "delete", "patch"):
            setattr(module, method, call(method))
        return module


# --- time to a first full state, per library ----------------------------------------

TIMINGS: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per library: seconds from connect to its first full printer state."""
    if TIMINGS:
        parts = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in sorted(TIMINGS.items()))
        terminalreporter.write_line(f"third-party clients, connect to first full state: {parts}")
