"""A server of the ``live``/``compat`` parts following a simulated fleet, for the server tests.

One simulator (cloud + cloud broker + printers, no LAN side), one hub on its
cloud broker (one MQTT connection for every printer, as ``bambu serve`` runs
it), a token store in a temporary directory and an :class:`AppServer` on a
free loopback port. :func:`read_sse` reads a ``text/event-stream``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bambulab import AsyncBambuMQTT, BambuClient
from bambulab.servers.app import ServerContext, build_app
from bambulab.servers.common import EventBus, Gate, MemoryEventBus
from bambulab.servers.live import LiveHub, PrinterEntry
from bambulab.servers.runner import AppServer
from bambulab.servers.tokens import Scope, TokenStore
from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from tests.conftest import unlimited, wait_for

# printing, idle, and one the cloud knows but that never reports (offline)
FLEET = ["p1s:printing", "x1c:idle", "a1:offline"]


@dataclass
class Env:
    sim: Simulator
    server: AppServer
    ctx: ServerContext
    store: TokenStore
    printing: str
    idle: str
    offline: str
    names: dict[str, str]
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def hub(self) -> LiveHub:
        assert self.ctx.hub is not None
        return self.ctx.hub

    def token(self, scope: Scope, *printers: str) -> str:
        """A token of ``scope`` for ``printers`` (every printer when none), made once."""
        key = (scope, ",".join(printers))
        if key not in self.tokens:
            self.tokens[key], _ = self.store.create(scope, printers=list(printers))
        return self.tokens[key]

    def auth(self, scope: Scope = "read", *printers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scope, *printers)}"}

    def truth(self, serial: str) -> dict[str, Any]:
        """The simulated printer's own full report body now."""
        return self.sim.with_printer(serial, lambda p: p.truth())


@contextlib.contextmanager
def live_env(
    tmp: Path,
    parts: Sequence[str] = ("live", "compat"),
    *,
    bus: EventBus | None = None,
    command_timeout: float = 3.0,
    keepalive: float = 0.3,
) -> Iterator[Env]:
    config = unlimited().with_demo_fleet(parse_fleet(FLEET))
    with Simulator(config, lan=False, ftps=False, camera=False, tick_interval=0.2) as sim:
        account = sim.issue_token(sim.demo_account.email)
        with BambuClient(account, base_url=sim.url) as cloud:
            devices = cloud.get_devices()
        by_model = {d.dev_product_name or d.dev_model_name: d for d in devices}
        serials = [d.dev_id for d in devices]
        mqtt = AsyncBambuMQTT(
            sim.user_id,
            serials,
            token=account,
            host=sim.mqtt_host,
            port=sim.mqtt_port,
            ca_file=sim.ca_file,
            command_timeout=command_timeout,
        )
        entries = [PrinterEntry(d.dev_id, d.name, d.dev_model_name) for d in devices]
        chosen = bus or MemoryEventBus()
        hub = LiveHub([mqtt], entries, bus=chosen)
        store = TokenStore(tmp / "tokens.sqlite3")
        ctx = ServerContext(
            Gate(store), bus=chosen, hub=hub, cloud_url=sim.url, account_token=account
        )
        ctx.extra["sse_keepalive"] = keepalive
        if "farm" in parts:  # the queue too (no dispatcher: nothing starts on its own)
            from bambulab.farm.service import Farm, attach
            from bambulab.farm.store import FarmStore

            farm_store = FarmStore(f"sqlite:///{tmp / 'farm.db'}")
            ctx.on_stop.append(_closer(farm_store))
            attach(ctx, Farm(farm_store, tmp / "farm-files"))
        server = AppServer(build_app(ctx, list(parts)), on_start=ctx.start, on_stop=ctx.aclose)
        with server:
            env = Env(
                sim,
                server,
                ctx,
                store,
                printing=by_model["P1S"].dev_id,
                idle=by_model["X1 Carbon"].dev_id,
                offline=by_model["A1"].dev_id,
                names={d.dev_id: d.name for d in devices},
            )
            for serial in (env.printing, env.idle):
                wait_for(
                    lambda s=serial: server.call(lambda: hub.state(s)) is not None,
                    20,
                    f"a report from {serial}",
                )
            yield env


def _closer(store: Any) -> Any:
    async def close() -> None:
        store.close()

    return close


@dataclass
class SseEvent:
    id: str | None
    type: str
    data: str


class SseReader:
    """Reads one ``text/event-stream`` response on a thread-free, blocking httpx stream."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()
        self.comments: list[str] = []
        self.retry: int | None = None
        self.lock = threading.Lock()

    def next(self) -> SseEvent:
        """The next event (comments and ``retry:`` are recorded on the way)."""
        fields: dict[str, list[str]] = {}
        for line in self.lines:
            if line == "":
                if "data" in fields or "event" in fields:
                    return SseEvent(
                        fields.get("id", [None])[-1],
                        fields.get("event", ["message"])[-1],
                        "\n".join(fields.get("data", [])),
                    )
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "retry":
                self.retry = int(value)
                continue
            fields.setdefault(name, []).append(value)
        raise EOFError("the stream ended")

    def take(self, count: int) -> list[SseEvent]:
        return [self.next() for _ in range(count)]


@contextlib.contextmanager
def sse(
    env: Env,
    headers: dict[str, str],
    params: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Iterator[SseReader]:
    with (
        httpx.Client(timeout=httpx.Timeout(timeout)) as client,
        client.stream("GET", f"{env.url}/api/v2/events", headers=headers, params=params) as resp,
    ):
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        yield SseReader(resp)
