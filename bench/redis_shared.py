"""What sharing through Redis costs: a rate-limit hit and an event publish, Redis vs in process.

Starts a ``redis-server`` on a free loopback port (``--save ''``), then times
sequential calls (each awaited before the next: the latency a request or an
event pays) of :class:`RedisRateLimiter.hit` and :class:`RedisEventBus.publish`
(with a dedupe key, as the live hub publishes) against the in-process
:class:`MemoryRateLimiter` and :class:`MemoryEventBus` (the baseline), and
how long an event takes from ``publish`` on one bus to a subscriber of
another bus on the same Redis (another instance).

Usage: ``.venv/bin/python bench/redis_shared.py [--count 5000]``
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from bambulab.servers.common import MemoryEventBus, MemoryRateLimiter, RateLimit
from bambulab.servers.shared import shared_from_url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(call: object, count: int) -> list[float]:
    times = []
    for n in range(count):
        start = time.perf_counter()
        await call(n)  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1e6)
    return times


async def run(url: str, count: int) -> None:
    limit = RateLimit(10**9, 60.0)
    limiter, bus = shared_from_url(url, prefix=f"bench{uuid.uuid4().hex[:6]}:")
    memory_limiter, memory_bus = MemoryRateLimiter(), MemoryEventBus()
    rows = [
        (
            "rate-limit hit",
            lambda n: memory_limiter.hit("token:a", limit),
            lambda n: limiter.hit("token:a", limit),
        ),
        (
            "event publish",
            lambda n: memory_bus.publish("state_changed", {"n": n}, "S", f"k{n}"),
            lambda n: bus.publish("state_changed", {"n": n}, "S", f"k{n}"),
        ),
    ]
    for name, base, shared in rows:
        await timed(shared, 200)  # warm up (connections, scripts loaded)
        b = await timed(base, count)
        s = await timed(shared, count)
        print(
            f"{name:15} in process p50 {percentile(b, 0.5):6.1f} µs  |  Redis p50 "
            f"{percentile(s, 0.5):6.1f} µs  p99 {percentile(s, 0.99):6.1f} µs  "
            f"({1e6 / (sum(s) / len(s)):7.0f}/s sequential)  "
            f"ratio {percentile(s, 0.5) / percentile(b, 0.5):.0f}x"
        )
    # Publish on one instance's bus, read on another's.
    prefix = f"bench{uuid.uuid4().hex[:6]}:"
    _, one = shared_from_url(url, prefix=prefix)
    _, two = shared_from_url(url, prefix=prefix)
    events = two.subscribe()
    first = asyncio.ensure_future(events.__anext__())
    while not first.done():  # until the subscriber is in place
        await one.publish("tick", {"t": time.perf_counter()})
        await asyncio.sleep(0.01)
    delays = []
    for _ in range(500):
        sent = time.perf_counter()
        await one.publish("tick", {"t": sent})
        async for event in events:
            if event.data == f'{{"t":{sent}}}'.encode():
                break
        delays.append((time.perf_counter() - sent) * 1e3)
    print(
        f"instance to instance (publish -> another bus's subscriber): "
        f"p50 {percentile(delays, 0.5):.2f} ms  p99 {percentile(delays, 0.99):.2f} ms"
    )
    for closing in (limiter, bus, one, two):
        await closing.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
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
                tmp,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            asyncio.run(run(f"redis://127.0.0.1:{port}/0", args.count))
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
