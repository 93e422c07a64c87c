"""Fixtures for the cloud simulator tests.

Every test talks to a simulator on a real loopback socket with plain httpx,
never through the client library: these tests pin the wire contract the
client is written against. The module-scoped ``sim`` has rate limits off so
tests do not trip over each other's request counts; tests that need limits,
a fresh state or special options start their own through ``make_sim``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from bambulab.sim import CloudSimulator, SimConfig
from tests.sim.mqtt_support import Probe
from tests.sim.simtools import DEMO, UNLIMITED, authed


@pytest.fixture(scope="module")
def sim() -> Iterator[CloudSimulator]:
    """A shared simulator (rate limits off) for one test module."""
    with CloudSimulator(UNLIMITED) as running:
        yield running


@pytest.fixture
def make_sim() -> Iterator[Callable[..., CloudSimulator]]:
    """Start simulators with custom settings; all are stopped after the test."""
    started: list[CloudSimulator] = []

    def start(config: SimConfig | None = None, **changes: Any) -> CloudSimulator:
        base = config or UNLIMITED
        if changes:
            base = replace(base, **changes)
        simulator = CloudSimulator(base).start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        simulator.stop()


@pytest.fixture
def client(sim: CloudSimulator) -> Iterator[httpx.Client]:
    """An unauthenticated client for the shared simulator."""
    with httpx.Client(base_url=sim.url, timeout=10) as http:
        yield http


@pytest.fixture
def demo(sim: CloudSimulator) -> Iterator[httpx.Client]:
    """A client authenticated as the demo account."""
    with authed(sim, DEMO) as http:
        yield http


@pytest.fixture
def probes() -> Iterator[list[Probe]]:
    """Raw MQTT clients made by a test, closed after it."""
    made: list[Probe] = []
    yield made
    for probe in made:
        probe.close()
