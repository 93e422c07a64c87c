"""A farm server following 1000 printers: its CPU and memory, and SSE to 20 open dashboards.

Setup, all on loopback, as in ``bench/fan_in.py`` (whose broker and
publisher this reuses): mosquitto with a TLS listener for the server and a
plain one for a publisher *process* playing N printers, each sending one
small ``push_status`` delta per second (progress, layer, temperatures: a
tile changes with each). The server runs in a child process of its own
(this file with ``--serve``), as ``bambu serve farm`` builds it: one
``AsyncBambuMQTT`` connection held by its :class:`LiveHub`, the ``live``
part, and in the farm runs the ``farm`` part with a SQLite queue and its
dispatcher (:func:`bambulab.farm.service.attach`). Its CPU (% of one core,
``/proc`` of the child) and RSS are read over ``--seconds`` of steady state
after ``--warmup`` seconds.

* **baseline**: the same hub and server without the farm (``live`` only);
* **farm**: the farm mounted, no dashboard open (tiles are then only marked
  stale, and rendered when a page asks for them);
* **farm, no dispatcher** (``--split``): the farm without its dispatcher, to
  tell the dispatcher's share (a turn when a change can matter to it, at
  most every 0.1 s) from the rest;
* **farm + SSE**: ``--clients`` streams (httpx, in another process) on
  ``/farm/api/events``: tile frames delivered per second per client and in
  all, against the tiles the server published, and the server's CPU
  against the window with none.

Usage: ``.venv/bin/python bench/farm_scale.py [--printers 1000] [--clients 20] [--seconds 20]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fan_in import UID, Mosquitto, go, publisher, serials

# ``clients`` httpx streams on the farm's event stream, in one process; each
# counts the SSE frames (a tile each) and bytes it read. Commands on stdin:
# "count" answers the totals as JSON, "stop" ends.
SSE_CLIENTS = textwrap.dedent(
    """
    import asyncio, json, os, sys, httpx
    url, clients = sys.argv[1], int(sys.argv[2])
    token = os.environ["BENCH_TOKEN"]
    frames, sizes, statuses = [0] * clients, [0] * clients, []
    MARK = b"\\nevent: tile\\n"
    async def one(client, i, ready):
        async with client.stream("GET", url) as answer:
            statuses.append(answer.status_code)
            if not ready.done():
                ready.set_result(None)
            tail = b""
            async for chunk in answer.aiter_raw():
                text = tail + chunk
                frames[i] += text.count(MARK)
                sizes[i] += len(chunk)
                tail = text[-(len(MARK) - 1):]
    async def main():
        timeout = httpx.Timeout(30, read=60)
        limits = httpx.Limits(max_connections=clients)
        headers = {"authorization": f"Bearer {token}", "accept": "text/event-stream"}
        async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers) as client:
            readies = [asyncio.get_running_loop().create_future() for _ in range(clients)]
            tasks = [asyncio.ensure_future(one(client, i, readies[i])) for i in range(clients)]
            await asyncio.wait_for(asyncio.gather(*readies), 60)
            print(json.dumps({"statuses": statuses}), flush=True)
            while True:
                line = await asyncio.to_thread(sys.stdin.readline)
                if not line or line.strip() == "stop":
                    break
                print(json.dumps({"frames": frames, "bytes": sum(sizes)}), flush=True)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    asyncio.run(main())
    """
)


def serve(spec: str) -> int:
    """The server under test (``--serve farm|bare,TLS_PORT,CA_FILE,N``), in this process.

    Prints ``{"url", "pid"}`` once every printer has reported (the token goes
    in a file, never on a pipe or the command line); then answers each line
    on stdin with its counters; ends at EOF.
    """
    from bambulab import AsyncBambuMQTT
    from bambulab.servers.app import ServerContext, build_app
    from bambulab.servers.common import Gate, MemoryEventBus
    from bambulab.servers.live import LiveHub, PrinterEntry
    from bambulab.servers.runner import AppServer
    from bambulab.servers.tokens import TokenStore

    mode, port, ca_file, count_text, workdir = spec.split(",", 4)
    count = int(count_text)
    names = serials(count)
    tmp = Path(workdir)
    mqtt = AsyncBambuMQTT(
        UID,
        names,
        token="bench",
        host="127.0.0.1",
        port=int(port),
        ca_file=ca_file,
        stall_timeout=3600,
        queue_size=200_000,
    )
    bus = MemoryEventBus()
    entries = [PrinterEntry(s, f"Printer {i}", "C12") for i, s in enumerate(names)]
    hub = LiveHub([mqtt], entries, bus=bus)
    tokens = TokenStore(tmp / "tokens.sqlite3")
    token, _ = tokens.create("read", label="bench")
    (tmp / "token").write_text(token)
    ctx = ServerContext(Gate(tokens), bus=bus, hub=hub)
    parts = ["live"]
    store = None
    if mode in ("farm", "tiles"):
        from bambulab.farm.dispatcher import Dispatcher
        from bambulab.farm.service import Farm, attach
        from bambulab.farm.store import FarmStore

        store = FarmStore(f"sqlite:///{tmp / 'farm.db'}")
        # No job is queued here: the dispatcher's turns (one per wake-up) are part of the cost.
        dispatcher = (
            Dispatcher(store, hub, lambda _serial: None, owner="bench") if mode == "farm" else None
        )
        attach(ctx, Farm(store, tmp / "files", dispatcher=dispatcher))
        parts = ["farm", "live"]
    server = AppServer(build_app(ctx, parts), on_start=ctx.start, on_stop=ctx.aclose)
    server.start()

    def counters() -> dict[str, Any]:
        stats = hub.stats()
        tiles = ctx.extra.get("farm_tiles")
        farm = ctx.extra.get("farm")
        dispatcher = farm.dispatcher if farm is not None else None
        return {
            "at": time.monotonic(),  # when the loop read them
            "seen": sum(1 for s in names if hub.state(s) is not None),
            "messages": stats.messages,
            "connections": stats.connections,
            "rendered": tiles.rendered if tiles is not None else 0,
            "published": tiles.published if tiles is not None else 0,
            "turns": dispatcher.turns if dispatcher is not None else 0,
        }

    try:
        print(json.dumps({"url": server.url, "pid": os.getpid()}), flush=True)
        for _ in sys.stdin:
            # The call waits its turn on the server's loop: its time is the loop's lag.
            asked = time.perf_counter()
            found = server.call(counters, timeout=300)
            found["lag"] = time.perf_counter() - asked
            print(json.dumps(found), flush=True)
    finally:
        server.stop()
        if store is not None:
            store.close()
    return 0


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class ServerProcess:
    """A ``--serve`` child: the server under test, alone in its interpreter."""

    def __init__(self, mode: str, broker: Mosquitto, count: int, workdir: Path) -> None:
        self.workdir = workdir
        spec = f"{mode},{broker.tls_port},{broker.certs.ca_file},{count},{workdir}"
        self.log = workdir / "server.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--serve", spec],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {mode} server did not start: {self.log_tail()}")
        hello = json.loads(line)
        self.url, self.pid = str(hello["url"]), int(hello["pid"])
        self.token = (workdir / "token").read_text()

    def log_tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(no output)"

    def counters(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the server ended: {self.log_tail()}")
        return dict(json.loads(line))

    def wait_seen(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.counters()["seen"] < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not see every printer report")
            time.sleep(0.2)

    def window(self, seconds: float) -> dict[str, Any]:
        """CPU (share of one core), RSS at the end, counters' growth, over ``seconds``."""
        before, cpu0, t0 = self.counters(), proc_cpu_seconds(self.pid), time.perf_counter()
        lags = []
        while time.perf_counter() - t0 < seconds:  # the loop's lag, sampled every ~0.5 s
            time.sleep(min(0.5, max(0.0, seconds - (time.perf_counter() - t0))))
            lags.append(self.counters()["lag"])
        cpu1, t1, after = proc_cpu_seconds(self.pid), time.perf_counter(), self.counters()
        took = t1 - t0
        counted = after["at"] - before["at"]
        rates = {
            k: (after[k] - before[k]) / counted
            for k in ("messages", "rendered", "published", "turns")
        }
        return {
            "cpu": (cpu1 - cpu0) / took,
            "rss": proc_rss_mib(self.pid),
            "took": took,
            "connections": after["connections"],
            "lag_ms": max(lags) * 1000 if lags else 0.0,
            **rates,
        }

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class SseClients:
    """``count`` httpx streams on ``/farm/api/events`` in a process of their own."""

    def __init__(self, server: ServerProcess, count: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SSE_CLIENTS, server.url + "/farm/api/events", str(count)],
            env={**os.environ, "BENCH_TOKEN": server.token},  # not in argv, which ps shows
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the SSE clients did not connect")
        statuses = json.loads(line)["statuses"]
        if set(statuses) != {200}:
            raise RuntimeError(f"the event stream answered {sorted(set(statuses))}")

    def sample(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def stop(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def measure(
    mode: str, broker: Mosquitto, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """One server: its steady state with no client; for the farm, then with ``--clients``."""
    count = args.printers
    windows = 2 if mode == "farm" and args.clients else 1
    total = args.warmup + windows * (args.seconds + 2) + 4
    workdir.mkdir()
    server = ServerProcess(mode, broker, count, workdir)
    feed = None
    try:
        feed = publisher(broker.plain_port, count, total)
        go(feed)
        server.wait_seen(count)
        time.sleep(args.warmup)
        result: dict[str, Any] = {"idle": server.window(args.seconds)}
        if windows == 2:
            clients = SseClients(server, args.clients)
            try:
                time.sleep(1.0)  # the streams settle
                first, t0 = clients.sample(), time.monotonic()
                busy = server.window(args.seconds)
                last, t1 = clients.sample(), time.monotonic()
            finally:
                clients.stop()
            took = t1 - t0  # the clients' own window (the server's waits on its loop's lag)
            per_client = [
                (b - a) / took for a, b in zip(first["frames"], last["frames"], strict=True)
            ]
            busy["delivered"] = per_client
            busy["mib_s"] = (last["bytes"] - first["bytes"]) / took / 2**20
            result["sse"] = busy
        return result
    finally:
        if feed is not None:
            feed.kill()
            feed.wait()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--printers", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20, help="dashboards on the event stream")
    parser.add_argument("--seconds", type=float, default=20.0, help="per measured window")
    parser.add_argument("--warmup", type=float, default=3.0, help="before measuring")
    parser.add_argument(
        "--split", action="store_true", help="also the farm without its dispatcher (tiles only)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    n = args.printers
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp))
        try:
            bare = measure("bare", broker, args, Path(tmp) / "bare")["idle"]
            farm = measure("farm", broker, args, Path(tmp) / "farm")
            tiles = (
                measure("tiles", broker, args, Path(tmp) / "tiles")["idle"] if args.split else None
            )
        finally:
            broker.stop()
    idle = farm["idle"]
    print(
        f"{n} printers at 1 report/s, one MQTT connection "
        f"({idle['connections']} source), {args.seconds:g} s windows; load average "
        f"{load:.1f} before, {os.getloadavg()[0]:.1f} after",
        flush=True,
    )
    rows = [("baseline (no farm)", bare), ("farm, no dashboard", idle)]
    if tiles is not None:
        rows.append(("farm, no dispatcher", tiles))
    for name, r in rows:
        print(
            f"{name:20} CPU {r['cpu'] * 100:5.1f}% of a core  RSS {r['rss']:6.1f} MiB  "
            f"reports {r['messages']:6.0f}/s  tiles rendered {r['rendered']:6.0f}/s  "
            f"published {r['published']:6.0f}/s  dispatcher turns {r['turns']:5.0f}/s  "
            f"loop lag max {r['lag_ms']:.0f} ms"
        )
    print(
        f"ratio farm / baseline: CPU {idle['cpu'] / max(bare['cpu'], 1e-9):.2f}x  "
        f"RSS {idle['rss'] / max(bare['rss'], 1e-9):.2f}x "
        f"(+{idle['rss'] - bare['rss']:.1f} MiB, "
        f"{(idle['rss'] - bare['rss']) * 1024 / n:.1f} KiB per printer)"
    )
    figures: dict[str, Any] = {"printers": n, "baseline": bare, "farm": idle}
    if tiles is not None:
        figures["farm_no_dispatcher"] = tiles
    sse = farm.get("sse")
    if sse is not None:
        delivered = sse["delivered"]
        total = sum(delivered)
        wanted = sse["published"] * len(delivered)
        print(
            f"SSE {len(delivered)} dashboards: "
            f"{total / len(delivered):.0f} tiles/s per client (min {min(delivered):.0f}, "
            f"max {max(delivered):.0f}), {total:.0f}/s in all, {sse['mib_s']:.1f} MiB/s; "
            f"published {sse['published']:.0f}/s: delivered {total / max(wanted, 1e-9) * 100:.1f}%"
        )
        print(
            f"SSE server CPU {sse['cpu'] * 100:5.1f}% of a core with {len(delivered)} vs "
            f"{idle['cpu'] * 100:.1f}% with none: ratio {sse['cpu'] / max(idle['cpu'], 1e-9):.2f}x "
            f"({(sse['cpu'] - idle['cpu']) * 1000 / len(delivered):.1f} ms/s per client); "
            f"RSS {sse['rss']:.1f} MiB; loop lag max {sse['lag_ms']:.0f} ms"
        )
        figures["sse"] = sse
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        sys.exit(serve(sys.argv[2]))
    sys.exit(main())
