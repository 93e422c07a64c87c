"""What the API proxy adds per request, against calling the simulated cloud directly.

The same endpoint (``GET /v1/iot-service/api/user/bind``, the bound printers)
is called directly on the simulated cloud with the account token (the
baseline) and through a strict proxy with a ``read`` token (token check in
SQLite, allowlist, upstream hop over a kept-alive connection, masking).
Requests alternate between the two in rounds, each side on its own kept-alive
client, so drift on the machine hits both alike. Then each side is driven by
``--threads`` clients at once for ``--seconds`` to measure requests/s.

The simulated cloud and the proxy each run in their own process, as they
would on a network (in one process the three threads would queue for the
GIL, and its 5 ms switch interval would be measured instead of the proxy).

Prints p50/p99 of each, the CPU time each process spends per request
(robust when the machine is busy with other work, unlike latencies), the
**added p50** (goal: under 2 ms) and the ratio
proxy/direct. Usage: ``.venv/bin/python bench/proxy_overhead.py [-n 1000]``;
exits 1 when the added p50 is over the goal.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bambulab.servers.app import ServerContext, build_app
from bambulab.servers.common import Gate
from bambulab.servers.runner import AppServer
from bambulab.servers.tokens import TokenStore
from bambulab.sim.config import RateLimits, SimConfig
from bambulab.sim.server import CloudSimulator

PATH = "/v1/iot-service/api/user/bind"
GOAL_MS = 2.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    answer = client.get(url)
    elapsed = time.perf_counter() - started
    if answer.status_code != 200:
        raise SystemExit(f"{url}: {answer.status_code} {answer.text[:200]}")
    return elapsed * 1000


def throughput(url: str, headers: dict[str, str], threads: int, seconds: float) -> float:
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(index: int) -> None:
        with httpx.Client(headers=headers, timeout=10, trust_env=False) as client:
            while time.perf_counter() < stop:
                client.get(url).raise_for_status()
                counts[index] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def serve_cpu(conn: Any) -> None:
    """Answer "cpu" with this process's CPU seconds until anything else arrives."""
    while conn.recv() == "cpu":
        conn.send(time.process_time())


def cpu(conn: Any) -> float:
    conn.send("cpu")
    return float(conn.recv())


def run_cloud(conn: Any) -> None:
    """Child process: the simulated cloud until told to stop."""
    config = SimConfig(rate_limits=RateLimits(enabled=False))
    with CloudSimulator(config) as cloud:
        conn.send((cloud.url, cloud.issue_token(cloud.demo_account.login)))
        serve_cpu(conn)


def run_proxy(conn: Any, cloud_url: str, account: str, store_path: str) -> None:
    """Child process: a strict proxy in front of ``cloud_url`` until told to stop."""
    ctx = ServerContext(Gate(TokenStore(store_path)), cloud_url=cloud_url, account_token=account)
    with AppServer(build_app(ctx, ["proxy"]), on_start=ctx.start, on_stop=ctx.aclose) as server:
        conn.send(server.url)
        serve_cpu(conn)


def start(target: Any, *args: Any) -> tuple[Any, Any, Any]:
    spawn = multiprocessing.get_context("spawn")
    parent, child = spawn.Pipe()
    process = spawn.Process(target=target, args=(child, *args), daemon=True)
    process.start()
    if not parent.poll(30):
        raise SystemExit(f"{target.__name__} did not start")
    return process, parent, parent.recv()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="requests per side (latency)")
    parser.add_argument("--threads", type=int, default=8, help="clients at once (throughput)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per side (throughput)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store_path = str(Path(tmp) / "tokens.sqlite3")
        token, _ = TokenStore(store_path).create("read")
        cloud_process, cloud_pipe, (cloud_url, account) = start(run_cloud)
        proxy_process, proxy_pipe, proxy_base = start(run_proxy, cloud_url, account, store_path)
        try:
            direct_headers = {"authorization": f"Bearer {account}"}
            proxy_headers = {"authorization": f"Bearer {token}"}
            direct_url, proxy_url = cloud_url + PATH, proxy_base + PATH
            direct: list[float] = []
            proxied: list[float] = []
            with (
                httpx.Client(headers=direct_headers, timeout=10, trust_env=False) as dc,
                httpx.Client(headers=proxy_headers, timeout=10, trust_env=False) as pc,
            ):
                for _ in range(100):  # warm-up: connections, caches, the token's last use
                    timed(dc, direct_url)
                    timed(pc, proxy_url)
                cloud_cpu, proxy_cpu = cpu(cloud_pipe), cpu(proxy_pipe)
                for _ in range(args.n):
                    direct.append(timed(dc, direct_url))
                    proxied.append(timed(pc, proxy_url))
                # CPU per request: what a request costs, whatever else the machine runs
                cloud_cpu = (cpu(cloud_pipe) - cloud_cpu) * 1000 / (2 * args.n)
                proxy_cpu = (cpu(proxy_pipe) - proxy_cpu) * 1000 / args.n
            direct_rps = throughput(direct_url, direct_headers, args.threads, args.seconds)
            proxy_rps = throughput(proxy_url, proxy_headers, args.threads, args.seconds)
        finally:
            for pipe, process in ((proxy_pipe, proxy_process), (cloud_pipe, cloud_process)):
                pipe.send("stop")
                process.join(10)

    d50, p50 = statistics.median(direct), statistics.median(proxied)
    d99, p99 = percentile(direct, 0.99), percentile(proxied, 0.99)
    added = p50 - d50
    print(f"GET {PATH}, {args.n} requests per side, sequential, kept-alive connections")
    print(f"  direct to the simulated cloud: p50 {d50:.2f} ms  p99 {d99:.2f} ms")
    print(f"  through the strict proxy:      p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    print(f"  added p50 {added:.2f} ms (goal < {GOAL_MS:g} ms), ratio p50 {p50 / d50:.2f}")
    print(
        f"  CPU per request: cloud {cloud_cpu:.2f} ms, proxy {proxy_cpu:.2f} ms"
        f" (ratio proxy/cloud {proxy_cpu / cloud_cpu:.2f})"
    )
    print(f"  {args.threads} clients for {args.seconds:g} s each:")
    print(f"  direct {direct_rps:.0f} req/s, proxy {proxy_rps:.0f} req/s")
    print(f"  ratio proxy/direct throughput {proxy_rps / direct_rps:.2f}")
    return 0 if added < GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
