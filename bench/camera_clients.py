"""P1/A1 camera clients reading the same simulated camera: frames/s and CPU per 100 frames.

Setup, all on loopback: ``bambu sim --fleet p1s`` in its own process (so the
simulator's work is not counted), its camera sending a frame every
``--interval`` seconds (0.02 by default: faster than any client needs, so
what differs is the CPU a client burns per frame). Each client runs in a
child process of its own that reads ``--frames`` frames after a few
warm-up ones; the child reports wall time and its CPU time (all threads):

* **raw**: the limit. A TLS socket, the auth packet, then ``recv_into`` a
  preallocated buffer: the 16-byte header, then exactly that many bytes,
  nothing checked, nothing copied;
* **ours**: :class:`bambulab.local.camera.JPEGFrameStream` (verified TLS, a
  ``Frame`` per picture, stall deadline, size cap, JPEG check);
* **seed**: the seed's own ``JPEGFrameStream.get_frame()`` (PyPI
  ``bambu-lab-cloud-api==1.0.5``), installed by this script into its own venv
  under ``.bench-venv/`` (git-ignored; its package is also named
  ``bambulab``). It dials port 6000 whatever the printer: the child maps
  that one port onto the simulator's (``ssl.SSLSocket.connect``), the
  library's files are untouched;
* **bambulabs_api**: ``PrinterCamera`` (2.6.6, installed in this venv), its
  thread keeping ``last_frame``; frames are counted as it stores them.

Printed: frames/s and CPU seconds per 100 frames of each, and the ratio of
each to the raw read measured in the same run (``--rounds`` interleaved
rounds, the median kept).

Usage: ``.venv/bin/python bench/camera_clients.py [--frames 200] [--interval 0.02]
[--rounds 3] [--no-seed]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SEED_PACKAGE = "bambu-lab-cloud-api==1.0.5"
SEED_VENV = ROOT / ".bench-venv" / "seed-camera"
WARMUP = 5  # frames read before the clock starts (connect, TLS, first picture)

# One child per measurement: argv = kind host port serial code ca_file frames.
MEASURE = r"""
import json, os, socket, ssl, struct, sys, threading, time

kind, host, port, serial, code, ca_file, frames = sys.argv[1:8]
port, frames = int(port), int(frames)
WARMUP = int(os.environ["BENCH_WARMUP"])
total = WARMUP + frames
marks = {}

def mark(count):
    if count == WARMUP:
        marks["start"] = (time.perf_counter(), time.process_time())
    if count == total:
        marks["end"] = (time.perf_counter(), time.process_time())

if kind == "raw":
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    sock = ctx.wrap_socket(socket.create_connection((host, port)), server_hostname=serial)
    auth = struct.pack("<IIII", 0x40, 0x3000, 0, 0) + b"bblp".ljust(32, b"\0")
    sock.sendall(auth + code.encode().ljust(32, b"\0"))
    buf = bytearray(16 << 20)
    view = memoryview(buf)

    def exact(n):
        got = 0
        while got < n:
            k = sock.recv_into(view[got:n])
            if not k:
                raise SystemExit("closed")
            got += k

    for i in range(1, total + 1):
        exact(16)
        exact(struct.unpack_from("<I", buf)[0])
        mark(i)
elif kind == "ours":
    from bambulab.local.camera import JPEGFrameStream

    with JPEGFrameStream(host, code, serial, port=port, ca_file=ca_file) as stream:
        for frame in stream.frames(total):
            mark(frame.index)
elif kind == "seed":
    real_connect = ssl.SSLSocket.connect

    def connect(self, address):  # the seed dials 6000: the simulator's port instead
        if address[1] == 6000:
            address = (address[0], port)
        return real_connect(self, address)

    ssl.SSLSocket.connect = connect
    from bambulab import JPEGFrameStream

    stream = JPEGFrameStream(host, code)
    stream.connect()
    for i in range(1, total + 1):
        stream.get_frame()
        mark(i)
    stream.disconnect()
elif kind == "bambulabs_api":
    from bambulabs_api.camera_client import PrinterCamera

    done = threading.Event()

    class Counted(PrinterCamera):
        count = 0

        @property
        def last_frame(self):
            return self.__dict__.get("_frame")

        @last_frame.setter
        def last_frame(self, value):
            self.__dict__["_frame"] = value
            if value is not None:
                Counted.count += 1
                mark(Counted.count)
                if Counted.count == total:
                    done.set()

    camera = Counted(host, code, port)
    camera.start()
    if not done.wait(120):
        raise SystemExit("bambulabs_api got %d frames in 120 s" % Counted.count)
    camera.alive = False
(w0, c0), (w1, c1) = marks["start"], marks["end"]
print(json.dumps({"wall": w1 - w0, "cpu": c1 - c0, "frames": frames}), flush=True)
os._exit(0)
"""


def start_sim(interval: float) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``bambu sim`` with one P1S in its own process; its exports."""
    bambu = os.path.join(os.path.dirname(sys.executable), "bambu")
    proc = subprocess.Popen(
        [
            bambu, "sim", "--port", "0", "--quiet", "--fleet", "p1s:idle", "--no-rate-limits",
            "--camera-fps", str(1.0 / interval),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    found: dict[str, str] = {}
    for line in proc.stdout:
        match = re.match(r"export (\w+)=(\S*)", line)
        if match:
            found[match.group(1)] = match.group(2).strip("'\"")
        if "BAMBU_PRINTER_PORT" in found:
            break
    if "BAMBU_PRINTER_CAMERA_PORT" not in found:
        proc.terminate()
        raise SystemExit("bambu sim did not export a camera port")
    return proc, found


def seed_python() -> Path:
    """The seed's venv (made once, then reused): its python."""
    python = SEED_VENV / "bin" / "python"
    if python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(SEED_VENV)], check=True)
    # No deps: its camera needs none, and opencv/flask are large (requests and
    # paho-mqtt are imported by its package's __init__).
    for spec in ([SEED_PACKAGE, "--no-deps"], ["requests", "paho-mqtt"]):
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *spec],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return python


def measure(python: str, kind: str, sim: dict[str, str], frames: int, cwd: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMBU_")}
    env["BENCH_WARMUP"] = str(WARMUP)
    if kind == "seed":
        env.pop("PYTHONPATH", None)  # never our package: the seed's is named bambulab too
    else:
        env["PYTHONPATH"] = str(ROOT / "src")
    args = [
        sim["BAMBU_PRINTER_HOST"],
        sim["BAMBU_PRINTER_CAMERA_PORT"],
        sim["BAMBU_SERIAL"],
        sim["BAMBU_ACCESS_CODE"],
        sim["BAMBU_CA_FILE"],
        str(frames),
    ]
    done = subprocess.run(
        [python, "-c", MEASURE, kind, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd,
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="frames timed per run")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between frames")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--no-seed", action="store_true", help="skip the seed's client")
    args = parser.parse_args()
    clients = {"raw": sys.executable, "ours": sys.executable}
    if not args.no_seed:
        clients["seed"] = str(seed_python())
    clients["bambulabs_api"] = sys.executable
    proc, sim = start_sim(args.interval)
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in clients}
    try:
        with tempfile.TemporaryDirectory(prefix="bambu-bench-camera-") as cwd:
            for _ in range(args.rounds):
                for kind, python in clients.items():
                    results[kind].append(measure(python, kind, sim, args.frames, cwd))
    finally:
        proc.terminate()
        proc.wait(10)

    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    raw_cpu = median("raw", "cpu") / args.frames * 100
    print(
        f"{args.frames} frames per run after {WARMUP} warm-up ones, a frame every "
        f"{args.interval:g} s, {args.rounds} rounds (median)"
    )
    print(f"{'client':<15} {'frames/s':>9} {'CPU s/100 frames':>17} {'CPU ratio to raw':>17}")
    for kind in clients:
        rate = args.frames / median(kind, "wall")
        cpu = median(kind, "cpu") / args.frames * 100
        print(f"{kind:<15} {rate:9.1f} {cpu:17.4f} {cpu / raw_cpu:17.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
