"""Fan-in: how many printers one client follows with p99 report-to-state latency under 100 ms.

Setup, all on loopback: mosquitto with a TLS listener (certificate from the
simulator's CA) for the clients and a plain one for the publisher, Nagle off
(``set_tcp_nodelay``: with it on, reports wait for the client's delayed
ACKs); a publisher *process* playing N printers, each sending one ~250-byte
``push_status`` delta per second (spread evenly), each stamped with its send
time, written as raw MQTT (a few µs a report, where paho's publish took most
of a core at 10,000 a second). Measured in this process, where the client
runs:

* **ours**: one ``AsyncBambuMQTT`` cloud connection following all N printers;
  latency = arrival of the ``StateChanged`` event in the asyncio loop (state
  already merged) minus the stamp;
* **baseline**: one connection per printer with the sync face (``BambuMQTT``),
  the way a script that opens a client per printer works; latency measured in
  its callback the same way.

N grows (1000 ... 20,000) until p99 >= 100 ms or less than 99 % arrives;
printed per step: p50/p99, received/sent, client CPU (% of one core) and
memory per printer. Where one connection in one process ends, the climb goes
on with what a second one adds: **2 conns** (two connections in this
process, half the printers each) and **2 procs** (two client processes with
one connection each; CPU is the busier one's). The ratio is the largest N
held by ours over the baseline's.

Usage: ``.venv/bin/python bench/fan_in.py [--seconds 6] [--max 20000] [--no-split] [--at N]``
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from bambulab import AsyncBambuMQTT, BambuMQTT
from bambulab.errors import BambuError
from bambulab.models.events import StateChanged
from bambulab.sim.certs import SimCertificates

LIMIT_MS = 100.0
UID = "1873420516"

# The printers' side, in its own process: MQTT written by hand on a plain socket
# (CONNECT, then QoS 0 PUBLISH packets), reports due within the same 0.5 ms
# sent in one write. paho's publish costs ~90 µs a message, which at 10,000
# reports/s would take most of a core from the client under test on this
# 2-core machine; this costs a few µs.
PUBLISHER = textwrap.dedent(
    r"""
    import socket, sys, time, orjson
    from bambulab.protocol.mqtt_frames import remaining_length
    port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

    def packet(first, body):
        return bytes([first]) + remaining_length(len(body)) + body

    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client_id = b"bench-publisher"
    connect = b"\x00\x04MQTT\x04\x02\x00\x00" + len(client_id).to_bytes(2, "big") + client_id
    sock.sendall(packet(0x10, connect))
    assert sock.recv(4)[:2] == b"\x20\x02", "no CONNACK"
    topics = [f"device/01P{i:012d}/report".encode() for i in range(count)]
    heads = [len(t).to_bytes(2, "big") + t for t in topics]
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    sent = seq = 0
    batch = []
    for second in range(int(seconds)):
        for i in range(count):
            delay = start + second + i / count - time.perf_counter()
            if delay > 0.0005:
                sock.sendall(b"".join(batch))
                batch.clear()
                time.sleep(delay)
            seq += 1
            body = {"print": {"command": "push_status", "sequence_id": str(seq), "msg": 1,
                    "mc_percent": second % 100, "mc_remaining_time": 60 - second % 60,
                    "nozzle_temper": 219.5 + (seq % 3), "bed_temper": 60.0, "layer_num": second,
                    "wifi_signal": "-48dBm", "gcode_state": "RUNNING", "t_sent": time.time()}}
            batch.append(packet(0x30, heads[i] + orjson.dumps(body)))
            sent += 1
    sock.sendall(b"".join(batch))
    sock.sendall(b"\xe0\x00")  # DISCONNECT: mosquitto routes all before it
    time.sleep(0.5)
    sock.close()
    print(sent, flush=True)
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """mosquitto with a TLS listener for clients and a plain one for the publisher."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.certs = SimCertificates()
        cloud = self.certs.cloud()
        self.tls_port, self.plain_port = free_port(), free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            # As root, mosquitto would drop to a user that cannot read the key.
            f"user {getpass.getuser()}\n"
            f"per_listener_settings false\nallow_anonymous true\nmax_queued_messages 100000\n"
            "set_tcp_nodelay true\n"
            f"listener {self.plain_port} 127.0.0.1\n"
            f"listener {self.tls_port} 127.0.0.1\n"
            f"cafile {self.certs.ca_file}\ncertfile {cloud.cert_file}\nkeyfile {cloud.key_file}\n"
        )
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.tls_port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self.certs.cleanup()


def serials(count: int) -> list[str]:
    return [f"01P{i:012d}" for i in range(count)]


def rss_kib() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("inf")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def publisher(port: int, count: int, seconds: float) -> subprocess.Popen[str]:
    """The publisher process, connected and waiting for :func:`go`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(port), str(count), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.readline()  # "ready"
    return proc


def go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


async def follow(
    port: int,
    ca_file: str,
    names: list[str],
    seconds: float,
    connections: int,
    started: Any,
    finished: Any,
    latencies: list[float],
) -> dict[str, Any]:
    """Follow ``names`` over ``connections`` AsyncBambuMQTT connections in this loop.

    ``started()`` is awaited once connected (it starts the publisher),
    ``finished()`` until the publisher is done; then one more second for
    what is in flight. The latencies of every ``StateChanged`` go to
    ``latencies``.
    """
    rss0 = rss_kib()
    clients = [
        AsyncBambuMQTT(
            UID,
            names[i::connections],
            token="bench",
            host="127.0.0.1",
            port=port,
            ca_file=ca_file,
            stall_timeout=3600,
            queue_size=400_000,
        )
        for i in range(connections)
    ]
    for client in clients:
        await client.connect()
        for serial in client.serials:  # no pushall answers here: mark the state known
            client.connection.printers[serial].full = True
    await started()
    cpu0 = time.process_time()

    async def consume(client: AsyncBambuMQTT) -> None:
        async for event in client.events():
            if isinstance(event, StateChanged):
                sent = event.state.raw.get("t_sent")
                if isinstance(sent, float):
                    latencies.append((time.time() - sent) * 1000)

    consumers = [asyncio.ensure_future(consume(c)) for c in clients]
    await finished()
    await asyncio.sleep(1.0)
    for consumer in consumers:
        consumer.cancel()
    cpu = time.process_time() - cpu0
    rss = rss_kib() - rss0
    for client in clients:
        await client.aclose()
    return {"cpu": cpu, "rss": rss}


def measure_ours(
    broker: Mosquitto, count: int, seconds: float, connections: int = 1
) -> dict[str, Any]:
    latencies: list[float] = []
    procs: list[subprocess.Popen[str]] = []

    outputs: list[str] = []

    async def started() -> None:
        procs.append(await asyncio.to_thread(publisher, broker.plain_port, count, seconds))
        go(procs[0])

    async def finished() -> None:
        outputs.append((await asyncio.to_thread(procs[0].communicate))[0])

    async def run() -> dict[str, Any]:
        result = await follow(
            broker.tls_port,
            str(broker.certs.ca_file),
            serials(count),
            seconds,
            connections,
            started,
            finished,
            latencies,
        )
        return {**result, "sent": int(outputs[0].strip().splitlines()[-1])}

    return summarise(latencies, asyncio.run(run()), count, seconds)


def measure_processes(
    broker: Mosquitto, count: int, seconds: float, processes: int = 2
) -> dict[str, Any]:
    """``processes`` client processes (this file with ``--child``), each following a share."""
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                f"{broker.tls_port},{broker.certs.ca_file},{count},{i},{processes},{seconds}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    for child in children:
        assert child.stdout is not None
        child.stdout.readline()  # "ready": connected
    proc = publisher(broker.plain_port, count, seconds)
    go(proc)
    for child in children:
        go(child)
    sent = int(proc.communicate()[0].strip().splitlines()[-1])
    for child in children:
        go(child)  # the publisher is done: "finished"
    latencies: list[float] = []
    cpu = rss = 0.0
    for child in children:
        out, _ = child.communicate(timeout=60)
        body = orjson.loads(out.strip().splitlines()[-1])
        latencies += body["latencies"]
        cpu = max(cpu, body["cpu"])  # the busiest process decides whether N is held
        rss += body["rss"]
    return summarise(latencies, {"sent": sent, "cpu": cpu, "rss": rss}, count, seconds)


def child(spec: str) -> int:
    port, ca_file, count, index, processes, seconds = spec.split(",")
    names = serials(int(count))[int(index) :: int(processes)]
    latencies: list[float] = []

    async def started() -> None:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)

    async def finished() -> None:
        await asyncio.to_thread(sys.stdin.readline)

    result = asyncio.run(
        follow(int(port), ca_file, names, float(seconds), 1, started, finished, latencies)
    )
    print(orjson.dumps({**result, "latencies": latencies}).decode(), flush=True)
    return 0


def measure_baseline(broker: Mosquitto, count: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    lock = threading.Lock()
    rss0 = rss_kib()
    clients = []

    def on_event(event: Any) -> None:
        if isinstance(event, StateChanged):
            sent = event.state.raw.get("t_sent")
            if isinstance(sent, float):
                value = (time.time() - sent) * 1000
                with lock:
                    latencies.append(value)

    for serial in serials(count):
        client = BambuMQTT(
            UID,
            serial,
            token="bench",
            host="127.0.0.1",
            port=broker.tls_port,
            ca_file=broker.certs.ca_file,
            stall_timeout=3600,
        )
        client.on_event = on_event
        client.connect()
        client.connection.printers[serial].full = True
        clients.append(client)
    proc = publisher(broker.plain_port, count, seconds)
    cpu0 = time.process_time()
    go(proc)
    out, _ = proc.communicate()
    time.sleep(1)
    cpu = time.process_time() - cpu0
    rss = rss_kib() - rss0
    for client in clients:
        client.disconnect()
    return summarise(
        latencies,
        {"sent": int(out.strip().splitlines()[-1]), "cpu": cpu, "rss": rss},
        count,
        seconds,
    )


def summarise(
    latencies: list[float], run: dict[str, Any], count: int, seconds: float
) -> dict[str, Any]:
    sent = max(1, run["sent"])
    return {
        "n": count,
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "received": len(latencies) / sent,
        "cpu_pct": 100 * run["cpu"] / seconds,
        "kib_per_printer": run["rss"] / count,
    }


def line(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:8} N={r['n']:6d}  p50 {r['p50']:7.1f} ms  p99 {r['p99']:7.1f} ms  "
        f"received {r['received'] * 100:5.1f}%  client CPU {r['cpu_pct']:5.1f}% of a core "
        f"({r['cpu_pct'] * 10 / r['n']:.3f} ms/s per printer)  "
        f"memory {r['kib_per_printer']:.1f} KiB/printer"
    )


def held(r: dict[str, Any]) -> bool:
    return bool(r["p99"] < LIMIT_MS and r["received"] >= 0.99)


def climb(name: str, measure: Any, broker: Mosquitto, steps: list[int], seconds: float) -> int:
    best = 0
    for count in steps:
        try:
            result = measure(broker, count, seconds)
        except BambuError as exc:
            print(f"{name:8} N={count:6d}  could not run: {exc}", flush=True)
            break
        print(line(name, result), flush=True)
        if not held(result):
            break
        best = count
    return best


STEPS = (1000, 2000, 3000, 4000, 5000, 6000, 8000, 10_000, 12_500, 15_000, 17_500, 20_000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="publishing time per step")
    parser.add_argument("--max", type=int, default=20_000, help="largest N tried for ours")
    parser.add_argument("--baseline-max", type=int, default=800, help="largest N for the baseline")
    parser.add_argument("--no-split", action="store_true", help="skip 2 connections / 2 processes")
    parser.add_argument("--at", type=int, help="measure ours at this N only (for A/B runs)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    two_conns = two_procs = 0
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp))
        try:
            ours_steps = [args.at] if args.at else [n for n in STEPS if n <= args.max]
            base_steps = [n for n in (25, 50, 100, 200, 400, 800) if n <= args.baseline_max]
            best = climb("ours", measure_ours, broker, ours_steps, args.seconds)
            if not args.no_split:
                # Where one connection ended: what a second connection, or process, adds.
                beyond = [n for n in ours_steps if n > best] or ours_steps[-1:]
                two_conns = climb(
                    "2 conns", partial(measure_ours, connections=2), broker, beyond, args.seconds
                )
                two_procs = climb("2 procs", measure_processes, broker, beyond, args.seconds)
            base = climb("baseline", measure_baseline, broker, base_steps, args.seconds)
        finally:
            broker.stop()
    print(
        f"largest N with p99 < {LIMIT_MS:.0f} ms: ours {best} (one process, one connection), "
        f"baseline (a connection per printer) {base}"
    )
    if not args.no_split:
        print(
            f"beyond one connection: 2 connections in one process {two_conns or 'no gain'}, "
            f"2 processes {two_procs or 'no gain'}"
        )
    print(f"ratio ours / baseline = {best / max(base, 1):.1f}x   (goal: ours >= 10000)")
    return 0 if best >= 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
