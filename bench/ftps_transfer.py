"""FTPS transfer speed: our client against ``curl`` moving the same file to the same server.

Setup, all on loopback: the simulator's FTPS server for one printer (implicit
TLS, ``PROT P``, session reuse required, TLS 1.2 by default: what a printer
demands, PROTOCOL.md §3), a random file of ``--mib`` MiB (256 by default) on
disk. Measured, ``--runs`` times each, interleaved, the median kept:

The simulator runs in a process of its own (as ``bambu sim`` does), so its
server thread does not share our client's interpreter.

* **ours**: ``LocalFTPClient.upload`` (temporary name + rename included) and
  ``LocalFTPClient.download`` to a file;
* **baseline**: ``curl --ssl-reqd`` with ``ftps://`` (implicit TLS) doing the
  same upload (``-T``) and download (``-o``), the same certificate checks
  (the simulator's CA, the printer's serial as the name).

Printed: MB/s of each and the ratio ours / curl (target >= 0.8 both ways).
With ``--vsftpd`` (root, vsftpd installed) the same against a private vsftpd
configured like the printers' (the test fixture), as extra information.

Usage: ``.venv/bin/python bench/ftps_transfer.py [--mib 256] [--runs 3] [--vsftpd]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bambulab.local import LocalFTPClient

MB = 1_000_000


CPU: dict[str, list[float]] = {}


def _timed(action: Callable[[], object], key: str = "") -> float:
    """Wall seconds of ``action``; its CPU seconds (ours, or curl's) go to :data:`CPU`."""
    before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    action()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    which = 1 if key.startswith("curl") else 0
    used = sum(
        getattr(after[which], f) - getattr(before[which], f) for f in ("ru_utime", "ru_stime")
    )
    CPU.setdefault(key, []).append(used)
    return wall


def _curl(args: list[str]) -> None:
    done = subprocess.run(["curl", "-sS", "--ssl-reqd", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"curl failed ({done.returncode}): {done.stderr.strip()[:300]}")


def measure(
    label: str,
    host: str,
    port: int,
    serial: str,
    code: str,
    ca_file: str,
    source: Path,
    work: Path,
    runs: int,
    remote_dir: str,
) -> dict[str, float]:
    size = source.stat().st_size
    url_base = f"ftps://{serial}:{port}{remote_dir}"
    curl_common = [
        "--cacert",
        ca_file,
        "--connect-to",
        f"{serial}:{port}:{host}:{port}",
        "-u",
        f"bblp:{code}",
    ]
    out = work / "down.bin"
    times: dict[str, list[float]] = {
        k: [] for k in ("ours_up", "curl_up", "ours_down", "curl_down")
    }
    client = LocalFTPClient(host, code, serial, port=port, ca_file=ca_file, timeout=60)
    with client:
        for _ in range(runs):
            times["ours_up"].append(
                _timed(lambda: client.upload(source, f"{remote_dir}ours.bin"), "ours_up")
            )
            times["curl_up"].append(
                _timed(
                    lambda: _curl([*curl_common, "-T", str(source), f"{url_base}curl.bin"]),
                    "curl_up",
                )
            )
            times["ours_down"].append(
                _timed(lambda: client.download(f"{remote_dir}ours.bin", out), "ours_down")
            )
            assert out.stat().st_size == size
            out.unlink()
            times["curl_down"].append(
                _timed(
                    lambda: _curl([*curl_common, "-o", str(out), f"{url_base}curl.bin"]),
                    "curl_down",
                )
            )
            assert out.stat().st_size == size
            out.unlink()
        client.delete(f"{remote_dir}ours.bin")
        client.delete(f"{remote_dir}curl.bin")
    speed = {k: size / statistics.median(v) / MB for k, v in times.items()}
    print(
        f"{label}: {size / (1 << 20):.0f} MiB, median of {runs}\n"
        f"  upload   ours {speed['ours_up']:7.1f} MB/s   curl {speed['curl_up']:7.1f} MB/s   "
        f"ratio {speed['ours_up'] / speed['curl_up']:.2f}\n"
        f"  download ours {speed['ours_down']:7.1f} MB/s   curl {speed['curl_down']:7.1f} MB/s   "
        f"ratio {speed['ours_down'] / speed['curl_down']:.2f}",
        flush=True,
    )
    cpu = {k: size / statistics.median(CPU.pop(k)) / MB for k in list(times)}
    print(
        f"  client CPU (MB moved per CPU-second; steadier than wall time on a shared machine):\n"
        f"  upload   ours {cpu['ours_up']:7.1f}        curl {cpu['curl_up']:7.1f}        "
        f"ratio {cpu['ours_up'] / cpu['curl_up']:.2f}\n"
        f"  download ours {cpu['ours_down']:7.1f}        curl {cpu['curl_down']:7.1f}        "
        f"ratio {cpu['ours_down'] / cpu['curl_down']:.2f}",
        flush=True,
    )
    return speed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--vsftpd", action="store_true", help="also against a private vsftpd")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed (apt-get install curl)")
    with tempfile.TemporaryDirectory(prefix="bambu-bench-ftps-") as tmp:
        work = Path(tmp)
        source = work / "payload.bin"
        with source.open("wb") as handle:
            for _ in range(args.mib):
                handle.write(os.urandom(1 << 20))
        info, sim = _start_simulator()
        try:
            speed = measure(
                "simulator (pyftpdlib, TLS 1.2)",
                info["host"],
                info["port"],
                info["serial"],
                info["code"],
                info["ca_file"],
                source,
                work,
                args.runs,
                "/",
            )
        finally:
            assert sim.stdin is not None
            sim.stdin.close()
            sim.wait(30)
        if args.vsftpd:
            _vsftpd(source, work, args.runs)
    worst = min(speed["ours_up"] / speed["curl_up"], speed["ours_down"] / speed["curl_down"])
    print(f"worst ratio against curl on the simulator: {worst:.2f} (target >= 0.80)")
    return 0


# The simulator runs in its own process, as ``bambu sim`` does: in this one,
# its server thread would compete with our client for the GIL while curl
# (another process) would not.
_SIMULATOR = """
import json, sys
from bambulab.sim.config import RateLimits, SimConfig, parse_fleet
from bambulab.sim.live import Simulator
config = SimConfig(rate_limits=RateLimits(enabled=False)).with_demo_fleet(parse_fleet(["p1s:idle"]))
with Simulator(config, time_scale=1) as sim:
    endpoint = sim.endpoints()[0]
    sim.with_printer(endpoint.serial, lambda p: setattr(p.card, "capacity", 8 << 30))
    host, port = sim.ftps_address(endpoint.serial)
    print(json.dumps({"host": host, "port": port, "serial": endpoint.serial,
                      "code": endpoint.access_code, "ca_file": sim.ca_file}), flush=True)
    sys.stdin.read()
"""


def _start_simulator() -> tuple[dict[str, Any], subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SIMULATOR],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("the simulator did not start")
    return json.loads(line), proc


def _vsftpd(source: Path, work: Path, runs: int) -> None:
    try:
        from tests.integration.test_ftps_vsftpd import CODE, SERIAL, start_vsftpd
    except ImportError as exc:  # pragma: no cover - tests not importable
        print(f"vsftpd: skipped ({exc})")
        return
    try:
        servers = start_vsftpd()
        server = next(servers)
    except BaseException as exc:  # pytest.skip outside pytest, no root...
        print(f"vsftpd: skipped ({type(exc).__name__}: {exc})")
        return
    try:
        measure(
            "vsftpd 3.0.3 (implicit TLS, require_ssl_reuse)",
            server.host,
            server.port,
            SERIAL,
            CODE,
            str(server.ca_file),
            source,
            work,
            runs,
            "/cache/",
        )
    finally:
        servers.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
