"""``bambulab.sim``: a faithful stand-in for the Bambu Lab cloud, on loopback.

The cloud part serves every HTTP endpoint the client uses, with consistent
in-memory data: accounts for each login mode, a mixed printer fleet, print
history, projects, uploads through pre-signed URLs, plus fault injection and
an adjustable clock for tests. Printers (MQTT, FTPS, camera) will join it.

    from bambulab.sim import CloudSimulator, SimConfig

    with CloudSimulator(SimConfig()) as sim:
        print(sim.url, sim.demo_account.email)

From a shell: ``bambu sim`` or ``python -m bambulab.sim`` (see ``docs/simulator.md``).
"""

from __future__ import annotations

from .cloud import create_app
from .config import (
    AccountConfig,
    ConfigError,
    DeviceConfig,
    RateLimit,
    RateLimits,
    SimConfig,
    load_config,
)
from .server import CloudSimulator, main
from .world import World

__all__ = [
    "AccountConfig",
    "CloudSimulator",
    "ConfigError",
    "DeviceConfig",
    "RateLimit",
    "RateLimits",
    "SimConfig",
    "World",
    "create_app",
    "load_config",
    "main",
]
