"""Dispatch latency: from a printer becoming free with a job waiting to its print command arriving.

A small simulated farm (``--printers`` P1S of the simulator, printing at
``--time-scale``), a farm server on it as ``bambu serve farm`` builds one
(the hub on the cloud broker, the ``farm`` part, a SQLite queue, the
dispatcher starting jobs over the printers' LAN MQTT and FTPS). Each
printer gets its own queue of jobs (``printer:SERIAL`` targets, its loaded
filament, a short print); no printer clears its own bed, so after each print
it waits in FINISH until this bench says the bed is clear
(``POST /farm/api/printers/{serial}/bed-cleared``, the moment it becomes
free with a job waiting: t0). t1 is when the simulated printer receives the
next ``print.project_file`` (stamped where it arrives). The latency t1 - t0
holds the dispatcher's wake-up, the claim in the queue, the 3MF's FTPS
upload and the print command.

* **wake-up** (the farm as it runs): the bed-clear route and every hub event
  poke the dispatcher, which takes a turn at once;
* **polling only** (the baseline, same run, same farm): the pokes switched
  off, so a turn comes every ``--interval`` seconds (the dispatcher's own
  interval; 1 s by default as ``bambu serve farm`` runs it).

Printed: p50/p99 of both over ``--jobs`` measured starts each, and the
ratios wake-up / polling and wake-up / interval.

Usage: ``.venv/bin/python bench/farm_dispatch_latency.py [--printers 4] [--jobs 20] [--interval 1]``
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bambulab import AsyncBambuMQTT, BambuClient
from bambulab.farm.dispatcher import Dispatcher
from bambulab.farm.models import Target
from bambulab.farm.service import Farm, attach
from bambulab.farm.store import FarmStore
from bambulab.servers.app import ServerContext, build_app
from bambulab.servers.common import Gate, MemoryEventBus
from bambulab.servers.live import LiveHub, PrinterEntry
from bambulab.servers.runner import AppServer
from bambulab.servers.tokens import TokenStore
from bambulab.sim.config import RateLimits, SimConfig, parse_fleet
from bambulab.sim.live import Simulator
from bambulab.sim.threemf_writer import write_3mf

PRINT = "print.project_file"


class StampedLog(collections.deque):  # type: ignore[type-arg]
    """A simulated printer's log of received commands that stamps each print command."""

    def __init__(self, old: collections.deque[Any], stamps: list[float]) -> None:
        super().__init__(old, maxlen=old.maxlen)
        self.stamps = stamps

    def append(self, key: Any) -> None:
        if key[0] == PRINT:
            self.stamps.append(time.monotonic())
        super().append(key)


@dataclass
class Rig:
    sim: Simulator
    server: AppServer
    farm: Farm
    dispatcher: Dispatcher
    hub: LiveHub
    serials: list[str]
    control: str
    stamps: dict[str, list[float]] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def rig(printers: int, time_scale: float, interval: float, tmp: Path) -> Iterator[Rig]:
    config = SimConfig(rate_limits=RateLimits(enabled=False)).with_demo_fleet(
        parse_fleet(["p1s:idle"] * printers)
    )
    with Simulator(config, time_scale=time_scale, tick_interval=0.2, camera=False) as sim:
        account = sim.issue_token(sim.demo_account.email)
        with BambuClient(account, base_url=sim.url) as cloud:
            devices = cloud.get_devices()
        serials = [d.dev_id for d in devices if (d.dev_product_name or d.dev_model_name) == "P1S"]
        mqtt = AsyncBambuMQTT(
            sim.user_id,
            [d.dev_id for d in devices],
            token=account,
            host=sim.mqtt_host,
            port=sim.mqtt_port,
            ca_file=sim.ca_file,
        )
        bus = MemoryEventBus()
        hub = LiveHub([mqtt], [PrinterEntry(d.dev_id, d.name, d.dev_model_name) for d in devices])
        tokens = TokenStore(tmp / "tokens.sqlite3")
        ctx = ServerContext(Gate(tokens), bus=bus, hub=hub, cloud_url=sim.url)
        store = FarmStore(f"sqlite:///{tmp / 'farm.db'}")
        lan = sim.lan_printers(timeout=10.0)
        dispatcher = Dispatcher(store, hub, lan.get, owner="bench", interval=interval)
        farm = Farm(store, tmp / "files", dispatcher=dispatcher)
        attach(ctx, farm)
        server = AppServer(build_app(ctx, ["farm", "live"]), on_start=ctx.start, on_stop=ctx.aclose)
        control, _ = tokens.create("control", label="bench")
        try:
            with server:
                r = Rig(sim, server, farm, dispatcher, hub, serials, control)
                for serial in serials:
                    stamps: list[float] = []
                    r.stamps[serial] = stamps
                    sim.with_printer(
                        serial,
                        lambda p, s=stamps: setattr(p, "received", StampedLog(p.received, s)),
                    )
                deadline = time.monotonic() + 30
                while not all(server.call(lambda s=s: hub.state(s)) for s in serials):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the hub did not see every printer")
                    time.sleep(0.05)
                yield r
        finally:
            store.close()


def first_filament(sim: Simulator, serial: str) -> tuple[str, str]:
    def read(p: Any) -> tuple[str, str]:
        for unit in p.truth().get("ams", {}).get("ams", []):
            for tray in unit.get("tray", []):
                if tray.get("tray_type"):
                    return str(tray["tray_type"]), "#" + str(tray["tray_color"])
        raise RuntimeError(f"{serial} has no filament loaded")

    return sim.with_printer(serial, read)


def sliced(filament: tuple[str, str], seconds: float) -> bytes:
    out = io.BytesIO()
    write_3mf(out, name="Cube", filaments=(filament,), seconds=seconds, printer_model="P1S")
    return out.getvalue()


def settle(r: Rig, api: httpx.Client, timeout: float) -> None:
    """Wait for every printer's job to end; clear the beds (not measured)."""
    store = r.farm.store
    deadline = time.monotonic() + timeout
    while any(store.active(s) is not None for s in r.serials):
        if time.monotonic() > deadline:
            raise RuntimeError("the printers did not finish their jobs")
        time.sleep(0.05)
    for serial in r.serials:
        if store.settings(serial).bed_clear_needed:
            api.post(f"/farm/api/printers/{serial}/bed-cleared").raise_for_status()


def phase(
    r: Rig, api: httpx.Client, jobs: int, print_seconds: float, timeout: float
) -> list[float]:
    """Queue jobs on every printer; clear each bed once its print ends; the latencies.

    Each printer's first start (queued while it was free) is not measured;
    the (k+1)-th answers the k-th bed clear.
    """
    settle(r, api, timeout)
    per_printer = -(-jobs // len(r.serials)) + 1
    base = {s: len(r.stamps[s]) for s in r.serials}
    for serial in r.serials:
        data = sliced(first_filament(r.sim, serial), print_seconds)
        r.farm.add(data, "Bench", copies=per_printer, target=Target("printer", serial))
    store = r.farm.store
    cleared: dict[str, list[float]] = {s: [] for s in r.serials}
    deadline = time.monotonic() + timeout
    while any(len(r.stamps[s]) - base[s] < per_printer for s in r.serials):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the jobs did not all start in {timeout:.0f} s")
        for serial in r.serials:
            started = len(r.stamps[serial]) - base[serial]
            if started != len(cleared[serial]) + 1 or started >= per_printer:
                continue  # not printed yet, a clear not answered yet, or no job left
            if store.active(serial) is None and store.settings(serial).bed_clear_needed:
                t0 = time.monotonic()
                api.post(f"/farm/api/printers/{serial}/bed-cleared").raise_for_status()
                cleared[serial].append(t0)
        time.sleep(0.005)
    return [
        t1 - t0
        for serial in r.serials
        for t0, t1 in zip(cleared[serial], r.stamps[serial][base[serial] + 1 :], strict=True)
    ]


def summary(name: str, values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    found = {"n": len(ms), "p50": percentile(ms, 0.5), "p99": percentile(ms, 0.99), "max": max(ms)}
    print(
        f"{name:14} n={found['n']:3d}  p50 {found['p50']:7.1f} ms  p99 {found['p99']:7.1f} ms  "
        f"max {found['max']:7.1f} ms",
        flush=True,
    )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--printers", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=20, help="measured starts per mode")
    parser.add_argument("--interval", type=float, default=1.0, help="the dispatcher's interval")
    parser.add_argument("--time-scale", type=float, default=600.0)
    parser.add_argument("--print-seconds", type=float, default=300.0, help="simulated")
    parser.add_argument("--no-baseline", action="store_true", help="skip the polling-only run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    timeout = 30 + args.jobs * 10
    figures: dict[str, Any] = {"interval_ms": args.interval * 1000}
    with (
        tempfile.TemporaryDirectory() as tmp,
        rig(args.printers, args.time_scale, args.interval, Path(tmp)) as r,
        httpx.Client(
            base_url=r.server.url, headers={"Authorization": f"Bearer {r.control}"}, timeout=20
        ) as api,
    ):
        print(
            f"{len(r.serials)} simulated P1S at time scale {args.time_scale:g}, "
            f"dispatcher interval {args.interval * 1000:.0f} ms",
            flush=True,
        )
        wake = phase(r, api, args.jobs, args.print_seconds, timeout)
        figures["wake"] = summary("wake-up", wake)
        if not args.no_baseline:
            poke = r.dispatcher.poke
            r.dispatcher.poke = lambda: None  # type: ignore[method-assign]
            try:
                polled = phase(r, api, args.jobs, args.print_seconds, timeout)
            finally:
                r.dispatcher.poke = poke  # type: ignore[method-assign]
            figures["polling"] = summary("polling only", polled)
        executed = sum(len(s) for s in r.stamps.values())
    w = figures["wake"]
    print(
        f"ratio wake-up / interval ({args.interval * 1000:.0f} ms): "
        f"p50 {w['p50'] / (args.interval * 1000):.2f}  p99 {w['p99'] / (args.interval * 1000):.2f}"
    )
    if "polling" in figures:
        p = figures["polling"]
        print(
            f"ratio wake-up / polling only: p50 {w['p50'] / p['p50']:.2f}  "
            f"p99 {w['p99'] / p['p99']:.2f}  "
            f"(the wake-up {'beats' if w['p50'] < p['p50'] else 'does not beat'} the polling)"
        )
    print(f"print commands received by the printers: {executed}")
    figures["print_commands"] = executed
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
