"""Camera fan-out: 100 viewers of one printer through ``bambu camera serve`` vs 100 direct clients.

A printer serves one or two camera clients and has little CPU to spare; the
fan-out server holds one upstream connection and serves every viewer itself.
Setup, all on loopback: the simulator (one P1S, its JPEG camera on TLS, a
frame every ``--interval`` seconds, its viewer limit raised for the baseline)
in this process; the fan-out server as a subprocess (``bambu camera serve``,
exactly as a user runs it), so its CPU and memory are its own.

* **fan-out**: ``--viewers`` raw MJPEG readers (asyncio sockets) stream
  ``/camera/<serial>/stream.mjpg`` for ``--seconds``. Measured: the printer's
  camera connections (sampled all along; must stay 1), the CPU of the
  simulated camera's socket thread (TLS and sends: what grows with clients
  on a printer), the server process's CPU seconds and its RSS growth per
  viewer (RSS with all viewers minus RSS with one, over the extra viewers),
  and frames delivered per viewer against frames sent.
* **baseline**: the same number of direct camera clients
  (:class:`bambulab.local.camera.AsyncJPEGFrameStream`) on the printer for
  the same time, the way each viewer would otherwise connect.

Printed: the ratio of printer-side connections and of printer-side camera CPU
(baseline / fan-out).

Usage: ``.venv/bin/python bench/camera_fanout.py [--viewers 100] [--seconds 10] [--interval 0.5]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.mjpeg: the raw MJPEG reader the tests use

import bambulab.sim.camera as sim_camera  # noqa: E402
from bambulab.local.camera import AsyncJPEGFrameStream  # noqa: E402
from bambulab.sim.config import RateLimits, SimConfig, parse_fleet  # noqa: E402
from bambulab.sim.live import Simulator  # noqa: E402
from tests.mjpeg import MjpegViewer  # noqa: E402

TOKEN = "bench-camera-token"
CLOCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process."""
    with open(f"/proc/self/task/{native_id}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK


def process_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as handle:
        return int(handle.read().split()[1]) * PAGE_KIB


def camera_thread() -> int:
    for thread in threading.enumerate():
        if thread.name == "bambu-sim-camera" and thread.native_id is not None:
            return thread.native_id
    raise RuntimeError("the simulated camera thread is not running")


class Sampler:
    """The printer's camera connections, sampled every 50 ms on a thread."""

    def __init__(self, sim: Simulator, serial: str) -> None:
        self.sim, self.serial = sim, serial
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.seen.append(self.sim.camera_connections(self.serial))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start_server(sim: Simulator, serial: str, port: int) -> subprocess.Popen[bytes]:
    host, camera_port = sim.camera_address(serial)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMBU_")}
    env.update(
        BAMBU_PRINTER_1_SERIAL=serial,
        BAMBU_PRINTER_1_HOST=host,
        BAMBU_PRINTER_1_CAMERA_PORT=str(camera_port),
        BAMBU_PRINTER_1_ACCESS_CODE=sim.printers[serial].access_code,
        BAMBU_PRINTER_1_MODEL=sim.printers[serial].profile.product,
        BAMBU_CA_FILE=sim.ca_file or "",
        BAMBU_CAMERA_TOKEN=TOKEN,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bambulab.cli", "camera", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(
                f"http://127.0.0.1:{port}/api/cameras",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=1,
            )
            if answer.status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("bambu camera serve did not start")


def measure_fanout(
    sim: Simulator, serial: str, viewers: int, seconds: float, interval: float
) -> dict[str, Any]:
    port = free_port()
    proc = start_server(sim, serial, port)
    path = f"/camera/{serial}/stream.mjpg"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    tid = camera_thread()

    async def run() -> dict[str, Any]:
        first = await MjpegViewer("127.0.0.1", port, path, headers).open()
        await first.read_for(max(2.0, 3 * interval))  # upstream open, warm
        rss_one = process_rss_kib(proc.pid)
        rest = [
            await MjpegViewer("127.0.0.1", port, path, headers).open() for _ in range(viewers - 1)
        ]
        everyone = [first, *rest]
        await asyncio.gather(*(v.next_frame(10) for v in rest))
        frames_before = [v.frames for v in everyone]
        cpu0, printer0 = process_cpu(proc.pid), thread_cpu(tid)
        with Sampler(sim, serial) as sampler:
            await asyncio.gather(*(v.read_for(seconds) for v in everyone))
        cpu = process_cpu(proc.pid) - cpu0
        printer_cpu = thread_cpu(tid) - printer0
        rss_all = process_rss_kib(proc.pid)
        delivered = [v.frames - b for v, b in zip(everyone, frames_before, strict=True)]
        size = len(first.last)
        for v in everyone:
            await v.close()
        return {
            "connections": max(sampler.seen, default=0),
            "connections_min": min(sampler.seen, default=0),
            "printer_cpu": printer_cpu,
            "server_cpu": cpu,
            "rss_per_viewer": (rss_all - rss_one) / max(1, viewers - 1),
            "rss_all": rss_all,
            "delivered": delivered,
            "frame_size": size,
        }

    try:
        return asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(10)


def measure_baseline(sim: Simulator, serial: str, clients: int, seconds: float) -> dict[str, Any]:
    host, port = sim.camera_address(serial)
    code = sim.printers[serial].access_code
    tid = camera_thread()

    async def run() -> dict[str, Any]:
        streams = [
            AsyncJPEGFrameStream(host, code, serial, port=port, ca_file=sim.ca_file)
            for _ in range(clients)
        ]
        for stream in streams:
            await stream.connect()
        await asyncio.gather(*(s.next_frame(10) for s in streams))
        counts = [0] * clients

        async def read(i: int, stream: AsyncJPEGFrameStream, until: float) -> None:
            while (left := until - time.monotonic()) > 0:
                try:
                    await stream.next_frame(left)
                except Exception:  # the deadline: next_frame raises on its timeout
                    break
                counts[i] += 1

        printer0 = thread_cpu(tid)
        with Sampler(sim, serial) as sampler:
            until = time.monotonic() + seconds
            await asyncio.gather(*(read(i, s, until) for i, s in enumerate(streams)))
        printer_cpu = thread_cpu(tid) - printer0
        for stream in streams:
            await stream.aclose()
        return {
            "connections": max(sampler.seen, default=0),
            "printer_cpu": printer_cpu,
            "delivered": counts,
        }

    return asyncio.run(run())


def spread(values: list[int]) -> str:
    return f"min {min(values)}, median {statistics.median(values):g}, max {max(values)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between frames")
    args = parser.parse_args()

    # The baseline needs the printer to take every client: its viewer limit is an
    # option, its cap on open connections (16, before authentication) a constant.
    sim_camera.MAX_OPEN = max(sim_camera.MAX_OPEN, args.viewers + 10)
    config = SimConfig(rate_limits=RateLimits(enabled=False)).with_demo_fleet(
        parse_fleet(["p1s:idle"])
    )
    with Simulator(
        config,
        tick_interval=1.0,
        camera_interval=args.interval,
        camera_max_clients=args.viewers + 10,
    ) as sim:
        serial = next(e.serial for e in sim.endpoints() if e.camera_port is not None)
        sent = args.seconds / args.interval
        print(
            f"one P1S, a frame every {args.interval:g} s (~{sent:.0f} sent in {args.seconds:g} s), "
            f"{args.viewers} viewers"
        )
        fan = measure_fanout(sim, serial, args.viewers, args.seconds, args.interval)
        print(
            f"fan-out : printer connections {fan['connections_min']}-{fan['connections']}, "
            f"printer camera CPU {fan['printer_cpu']:.2f} s, "
            f"server CPU {fan['server_cpu']:.2f} s "
            f"({fan['server_cpu'] / args.seconds * 100:.1f} % of a core), "
            f"server RSS {fan['rss_all'] / 1024:.1f} MiB, "
            f"+{fan['rss_per_viewer']:.0f} KiB per viewer; "
            f"frames per viewer {spread(fan['delivered'])} "
            f"({fan['frame_size'] / 1024:.0f} KiB each)"
        )
        wait = time.monotonic() + 15
        while sim.camera_connections(serial) and time.monotonic() < wait:
            time.sleep(0.1)
        base = measure_baseline(sim, serial, args.viewers, args.seconds)
        print(
            f"baseline: printer connections {base['connections']}, "
            f"printer camera CPU {base['printer_cpu']:.2f} s; "
            f"frames per client {spread(base['delivered'])}"
        )
        conn_ratio = base["connections"] / max(1, fan["connections"])
        cpu_ratio = base["printer_cpu"] / max(fan["printer_cpu"], 0.01)
        print(
            f"ratio baseline / fan-out: printer connections {conn_ratio:.0f}x, "
            f"printer camera CPU {cpu_ratio:.1f}x"
        )
        ok = fan["connections"] == 1
        if not ok:
            print("FAIL: the fan-out used more than one printer connection")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
