"""A server following 1000 printers: ``GET /api/v2/printers`` and ``GET /metrics``, and SSE fan-out.

Setup, all on loopback, as in ``bench/fan_in.py`` (whose broker and
publisher this reuses): mosquitto with a TLS listener for the server and a
plain one for a publisher *process* playing N printers, each sending one
small ``push_status`` delta per second. The server (``live`` + ``metrics``
parts, :class:`~bambulab.servers.runner.AppServer`) follows them through one
``AsyncBambuMQTT`` cloud-mode connection held by its :class:`LiveHub`.

Measured, the load coming from other processes (so that the client does not
share the server's interpreter):

* **HTTP**: latency p50/p99 with one client (keep-alive, one request at a
  time) and requests/s with ``--concurrency`` clients, for ``GET /health``
  of the same server (the baseline: the cheapest authenticated-free route
  through the same stack), ``GET /api/v2/printers`` and ``GET /metrics``;
  printed as ratios against the baseline.
* **SSE fan-out**: ``--clients`` streams on ``/api/v2/events``: the server
  process' CPU and memory per client (against a window with no client),
  events delivered/s against those published, and the upstream MQTT
  connections the server holds (must stay 1).

Usage: ``.venv/bin/python bench/server_fleet.py [--printers 1000] [--seconds 5] [--clients 500]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fan_in import UID, Mosquitto, go, publisher, serials

from bambulab import AsyncBambuMQTT
from bambulab.servers.app import ServerContext, build_app
from bambulab.servers.common import Gate, MemoryEventBus
from bambulab.servers.live import LiveHub, PrinterEntry
from bambulab.servers.runner import AppServer
from bambulab.servers.tokens import TokenStore

# A load generator process: ``concurrency`` keep-alive clients for ``seconds``.
LOADGEN = textwrap.dedent(
    """
    import asyncio, json, os, sys, time, httpx
    url, token = sys.argv[1], os.environ["BENCH_TOKEN"]
    concurrency, seconds = int(sys.argv[2]), float(sys.argv[3])
    async def main():
        latencies, errors, size = [], 0, 0
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=30,
                                     headers={"authorization": f"Bearer {token}"}) as client:
            for _ in range(3):  # warm the connections
                await client.get(url)
            end = time.perf_counter() + seconds
            async def worker():
                nonlocal errors, size
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    r = await client.get(url)
                    latencies.append(time.perf_counter() - t0)
                    size = len(r.content)
                    errors += r.status_code != 200
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            took = time.perf_counter() - start
        latencies.sort()
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
        print(json.dumps({"n": len(latencies), "rps": len(latencies) / took, "p50": pick(0.5),
                          "p99": pick(0.99), "errors": errors, "bytes": size}))
    asyncio.run(main())
    """
)

# ``clients`` Server-Sent-Events streams in one process: count events for ``seconds``.
SSE_CLIENTS = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    host, port, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    token = os.environ["BENCH_TOKEN"]
    counts = [0] * clients
    resets = [0]
    async def one(i, ready):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write((f"GET /api/v2/events HTTP/1.1\\r\\nHost: {host}\\r\\n"
                      f"Authorization: Bearer {token}\\r\\n"
                      "Accept: text/event-stream\\r\\n\\r\\n").encode())
        await writer.drain()
        head = await reader.readuntil(b"\\r\\n\\r\\n")
        assert b" 200 " in head.split(b"\\r\\n")[0], head[:80]
        ready.set_result(None) if not ready.done() else None
        tail = b""
        while True:
            data = await reader.read(65536)
            if not data:
                return
            text = tail + data
            counts[i] += text.count(b"\\nid: ") + text.startswith(b"id: ")
            resets[0] += text.count(b"event: reset")
            tail = text[-8:]
            counts[i] -= tail.count(b"\\nid: ")  # counted again with the next read
    async def main():
        readies = [asyncio.get_running_loop().create_future() for _ in range(clients)]
        tasks = [asyncio.ensure_future(one(i, readies[i])) for i in range(clients)]
        await asyncio.wait_for(asyncio.gather(*readies), 60)
        print("connected", flush=True)
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line or line.strip() == "stop":
                break
            print(json.dumps({"events": sum(counts), "resets": resets[0]}), flush=True)
        for t in tasks:
            t.cancel()
    asyncio.run(main())
    """
)


def loadgen(url: str, token: str, concurrency: int, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", LOADGEN, url, str(concurrency), str(seconds)],
        env={**os.environ, "BENCH_TOKEN": token},  # not in argv, which ps shows
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def upstream_connections(port: int) -> int:
    """TCP connections of this process to the broker's client port."""
    return sum(
        1
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def rss_mib() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--printers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, default=8, help="clients for requests/s")
    parser.add_argument("--clients", type=int, default=500, help="SSE streams")
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=0.0,
        help="sys.setswitchinterval for the server process (0: Python's 5 ms)",
    )
    args = parser.parse_args()
    if args.switch_interval > 0:
        sys.setswitchinterval(args.switch_interval)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    count = args.printers
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp))
        mqtt = AsyncBambuMQTT(
            UID,
            serials(count),
            token="bench",
            host="127.0.0.1",
            port=broker.tls_port,
            ca_file=broker.certs.ca_file,
            stall_timeout=3600,
            queue_size=200_000,
        )
        bus = MemoryEventBus()
        entries = [PrinterEntry(s, f"Printer {i}", "C12") for i, s in enumerate(serials(count))]
        hub = LiveHub([mqtt], entries, bus=bus)
        store = TokenStore(Path(tmp) / "tokens.sqlite3")
        token, _ = store.create("read", label="bench")
        ctx = ServerContext(Gate(store), bus=bus, hub=hub)

        async def known() -> None:  # no pushall answers here: mark the states known
            for serial in serials(count):
                mqtt.connection.printers[serial].full = True

        ctx.on_start.append(known)
        server = AppServer(
            build_app(ctx, ["live", "metrics"]), on_start=ctx.start, on_stop=ctx.aclose
        )
        total = 8 * args.seconds + 60
        feed = None
        try:
            server.start()
            feed = publisher(broker.plain_port, count, total)
            go(feed)
            deadline = time.monotonic() + 30
            while server.call(lambda: sum(1 for s in serials(count) if hub.state(s))) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not see every printer report")
                time.sleep(0.2)
            print(
                f"server follows {count} printers (1 report/s each) through "
                f"{upstream_connections(broker.tls_port)} MQTT connection(s)",
                flush=True,
            )
            results: dict[str, dict[str, Any]] = {}
            for name, path in (
                ("health", "/health"),
                ("printers", "/api/v2/printers"),
                ("metrics", "/metrics"),
            ):
                one = loadgen(server.url + path, token, 1, args.seconds)
                many = loadgen(server.url + path, token, args.concurrency, args.seconds)
                results[name] = {
                    **one,
                    "rps": many["rps"],
                    "errors": one["errors"] + many["errors"],
                }
                r = results[name]
                print(
                    f"GET {path:18} p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms  "
                    f"{r['rps']:7.0f} req/s ({args.concurrency} clients)  "
                    f"{r['bytes'] / 1024:7.1f} KiB  errors {r['errors']}",
                    flush=True,
                )
            base = results["health"]
            for name in ("printers", "metrics"):
                r = results[name]
                print(
                    f"ratio {name:8} / health: p50 {r['p50'] / base['p50']:.1f}x  "
                    f"p99 {r['p99'] / base['p99']:.1f}x  req/s {r['rps'] / base['rps']:.2f}x"
                )
            sse(server, ctx, broker, token, args)
        finally:
            if feed is not None:
                feed.kill()
                feed.wait()
            server.stop()
            broker.stop()
    return 0


def sse(server: AppServer, ctx: ServerContext, broker: Mosquitto, token: str, args: Any) -> None:
    hub = ctx.hub
    assert hub is not None
    seconds = args.seconds
    messages0 = server.call(hub.stats).messages
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    idle_cpu = (cpu_seconds() - cpu0) / (time.perf_counter() - t0)
    published = (server.call(hub.stats).messages - messages0) / seconds
    rss0 = rss_mib()
    clients = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SSE_CLIENTS,
            server.host,
            str(server.port),
            str(args.clients),
        ],
        env={**os.environ, "BENCH_TOKEN": token},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert clients.stdin is not None and clients.stdout is not None
    try:
        if clients.stdout.readline().strip() != "connected":
            raise RuntimeError("the SSE clients did not connect")
        time.sleep(1.0)  # settle

        def sample() -> dict[str, Any]:
            assert clients.stdin is not None and clients.stdout is not None
            clients.stdin.write("count\n")
            clients.stdin.flush()
            return dict(json.loads(clients.stdout.readline()))

        first = sample()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        events0 = server.call(hub.stats).events_published
        time.sleep(seconds)
        took = time.perf_counter() - t0
        busy_cpu = (cpu_seconds() - cpu0) / took
        events = (server.call(hub.stats).events_published - events0) / took
        last = sample()
        rss = rss_mib()
        streams = server.call(lambda: getattr(ctx.extra.get("sse"), "open", 0))
        delivered = (last["events"] - first["events"]) / took
        connections = upstream_connections(broker.tls_port)
        clients.stdin.write("stop\n")
        clients.stdin.flush()
        clients.wait(30)
    finally:
        if clients.poll() is None:
            clients.kill()
            clients.wait()
    n = args.clients
    print(
        f"SSE: {streams} streams open; server CPU {idle_cpu * 100:.0f}% of a core with none "
        f"(ingesting {published:.0f} reports/s), {busy_cpu * 100:.0f}% with {n}: "
        f"{(busy_cpu - idle_cpu) * 1000 / n:.2f} ms/s per client; "
        f"memory {(rss - rss0) * 1024 / n:.1f} KiB per client"
    )
    print(
        f"SSE: {events:.0f} events/s published, {delivered:.0f} events/s delivered to {n} clients "
        f"({delivered / max(1.0, events * n) * 100:.1f}% of {events * n:.0f} wanted), "
        f"resets {last['resets']}; upstream MQTT connections: {connections}"
    )


if __name__ == "__main__":
    sys.exit(main())
