"""``bambulab.sim``: a faithful stand-in for the Bambu Lab cloud, on loopback.

The cloud part serves every HTTP endpoint the client uses, with consistent
in-memory data: accounts for each login mode, a mixed printer fleet, print
history, projects, uploads through pre-signed URLs, plus fault injection and
an adjustable clock for tests. :class:`Simulator` adds the MQTT side: a
cloud broker and one broker per printer (TLS, the simulator's own CA) with
live simulated printers behind them, their SD cards over FTPS and the
P1/A1 printers' camera streams.

    from bambulab.sim import CloudSimulator, SimConfig, Simulator

    with CloudSimulator(SimConfig()) as sim:          # HTTP only
        print(sim.url, sim.demo_account.email)

    with Simulator(SimConfig()) as sim:               # HTTP + MQTT + printers
        print(sim.mqtt_host, sim.mqtt_port, sim.ca_file, sim.lan_address(serial))
        print(sim.camera_address(serial))           # a P1/A1 printer's camera

From a shell: ``bambu sim`` or ``python -m bambulab.sim`` (see ``docs/simulator.md``).
"""

from __future__ import annotations

from .cloud import create_app
from .command import main
from .config import (
    AccountConfig,
    ConfigError,
    DeviceConfig,
    RateLimit,
    RateLimits,
    SimConfig,
    load_config,
)
from .live import Simulator
from .server import CloudSimulator
from .world import World

__all__ = [
    "AccountConfig",
    "CloudSimulator",
    "ConfigError",
    "DeviceConfig",
    "RateLimit",
    "RateLimits",
    "SimConfig",
    "Simulator",
    "World",
    "create_app",
    "load_config",
    "main",
]
