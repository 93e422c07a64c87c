"""Shared fixtures: a simulated cloud on a loopback socket, and clients of both faces."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import httpx
import pytest

from bambulab.sim import CloudSimulator, SimConfig
from bambulab.sim.config import SEED_DEVICE, RateLimits

T = TypeVar("T")


class LoopThread:
    """One event loop in a thread, so async clients keep their pool across calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Face:
    """Calls a client's methods the same way whether it is sync or async."""

    def __init__(self, obj: Any, loop: LoopThread | None) -> None:
        self.obj = obj
        self.loop = loop
        self.is_async = loop is not None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        attr = getattr(self.obj, name)
        if not callable(attr):
            return attr  # type: ignore[no-any-return]
        if self.loop is None:

            def call_sync(*args: Any, **kwargs: Any) -> Any:
                result = attr(*args, **kwargs)
                return list(result) if hasattr(result, "__next__") else result

            return call_sync
        loop = self.loop

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if hasattr(result, "__anext__"):
                return loop.run(_collect(result))
            return loop.run(result)

        return call


async def _collect(aiter: Any) -> list[Any]:
    return [item async for item in aiter]


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``check()`` until it returns something truthy, and return that; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def seed_printing(config: SimConfig) -> SimConfig:
    """``config`` with the seed's device printing, as its documentation shows it.

    A plain ``bambu sim`` leaves that device idle so that the seed's
    upload-and-print examples can start a print on it; the tests that watch,
    pause and stop a running print use this world.
    """
    fleet = tuple(
        replace(device, printing=True) if device.dev_id == SEED_DEVICE.dev_id else device
        for device in config.demo_account.devices
    )
    return config.with_demo_fleet(fleet)


def unlimited() -> SimConfig:
    """The demo world with rate limits off and the seed's device printing."""
    return seed_printing(SimConfig(rate_limits=RateLimits(enabled=False)))


def cloud_mqtt(sim: Any, serials: list[str], **options: Any) -> Any:
    """A sync MQTT client of ``sim``'s cloud broker for the demo account (not connected)."""
    from bambulab import BambuMQTT

    return BambuMQTT(
        sim.user_id,
        serials,
        token=sim.issue_token(sim.demo_account.email),
        host=sim.mqtt_host,
        port=sim.mqtt_port,
        ca_file=sim.ca_file,
        **options,
    )


@pytest.fixture(scope="session")
def sim() -> Iterator[CloudSimulator]:
    with CloudSimulator(unlimited()) as simulator:
        yield simulator


@pytest.fixture
def faults(sim: CloudSimulator) -> Iterator[Callable[..., None]]:
    """Inject faults through the simulator's control endpoint; cleared afterwards."""

    def inject(**fault: Any) -> None:
        httpx.post(f"{sim.url}/sim/faults", json=fault, timeout=5).raise_for_status()

    yield inject
    httpx.delete(f"{sim.url}/sim/faults", timeout=5)


@pytest.fixture
def sim_env(sim: CloudSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> CloudSimulator:
    """The environment the seed's examples expect: API URL and token from the environment."""
    monkeypatch.setenv("BAMBU_API_URL", sim.url)
    monkeypatch.setenv("BAMBU_TOKEN", sim.issue_token(sim.demo_account.email))
    monkeypatch.setenv("BAMBU_TOKEN_FILE", str(tmp_path / "token"))
    return sim


def outbox_code(sim: CloudSimulator, account: str, kind: str = "email") -> str:
    answer = httpx.get(
        f"{sim.url}/sim/outbox", params={"account": account, "kind": kind}, timeout=5
    ).json()
    return str(answer["messages"][-1]["code"])


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(sim: CloudSimulator, face: str) -> Iterator[Face]:
    from bambulab import AsyncBambuClient, BambuClient

    token = sim.issue_token(sim.demo_account.email)
    if face == "sync":
        sync = BambuClient(token=token, base_url=sim.url)
        yield Face(sync, None)
        sync.close()
    else:
        loop = LoopThread()
        aclient = AsyncBambuClient(token=token, base_url=sim.url)
        yield Face(aclient, loop)
        loop.run(aclient.aclose())
        loop.close()


# --- real servers the tests start (tests/binaries.py) -----------------------------------

_NOT_INSTALLED = re.compile(r"(?:Skipped: )?(\S+) is not installed$")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reverse",
        action="store_true",
        help="run the tests in reverse order (each test must set up what it needs)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(binary): the test runs this system binary")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--reverse``: last test first (``-p random_order --random-order`` shuffles instead)."""
    if config.getoption("--reverse"):
        items.reverse()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test whose binary is missing; under CI=true, fail it instead."""
    from tests import binaries

    for mark in item.iter_markers("needs"):
        wanted = binaries.binary(mark.args[0])
        if wanted.path() is not None:
            continue
        if binaries.in_ci():
            pytest.fail(
                f"{wanted.name} is not installed and CI=true requires it "
                f"(apt-get install {wanted.package}; make test installs it when run as root)",
                pytrace=False,
            )
        pytest.skip(f"{wanted.name} is not installed")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line naming each missing binary and how many tests it cost.

    Counted from the skip reports the terminal reporter holds, so it also
    works when pytest-xdist runs the tests in worker processes.
    """
    from tests import binaries

    _skipped_for: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
        match = _NOT_INSTALLED.fullmatch(str(reason))
        if match and match.group(1) in binaries.BINARIES:
            _skipped_for[match.group(1)] = _skipped_for.get(match.group(1), 0) + 1
    if not _skipped_for:
        return

    parts = ", ".join(
        f"{name} ({count} tests; apt-get install {binaries.binary(name).package})"
        for name, count in sorted(_skipped_for.items())
    )
    terminalreporter.write_line(f"skipped, not installed: {parts}", yellow=True)


# --- fixed ports ------------------------------------------------------------------------


def free_port_block(count: int = 1) -> int:
    """The first of ``count`` consecutive free loopback ports, for tests of fixed-port options.

    Picked below the kernel's ephemeral range (32768-60999 on Linux), where
    ``bind(0)`` and outgoing connections of the other pytest-xdist workers take
    their ports, at a random base so workers do not pick the same block.
    """
    import random
    import socket

    for _ in range(200):
        base = random.randrange(20000, 32000 - count)
        taken: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                taken.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in taken:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports between 20000 and 32000")


# --- a real redis-server ---------------------------------------------------------------


def binary_path(name: str) -> str:
    """The executable of a binary a test is marked as needing (it was checked present)."""
    from tests.binaries import binary

    path = binary(name).path()
    if path is None:
        pytest.fail(f"{name} is missing")
    return path


def free_port() -> int:
    """A port free on loopback a moment ago (another process may take it first)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server of the module's own on a free loopback port (no persistence)."""
    binary = binary_path("redis-server")
    workdir = tmp_path_factory.mktemp("redis")
    for _ in range(5):  # the port was free a moment ago; another worker may take it first
        port = free_port_block()
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up(port: int = port) -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    return conn.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        try:
            wait_for(lambda proc=proc, up=up: up() or proc.poll() is not None, 10, "redis-server")
        except AssertionError:
            proc.kill()
            raise
        if proc.poll() is None:
            break
    else:
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)
