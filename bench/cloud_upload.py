"""A 1 GiB cloud upload: the uploading process's peak memory growth and throughput.

The issue asks that ``upload_file`` stream: peak RSS growth of the uploading
process at most 32 MiB for a 1 GiB file. Measured here against ``bambu sim``
running in its own process (so only the client's memory is counted): each
upload runs in a fresh child process, which resets its peak-RSS counter
(``/proc/self/clear_refs``) once the client is built, uploads, and reports
``VmHWM`` (peak RSS) minus the RSS before the upload, and the wall time.

Baseline, same file, same simulator, same run: the seed's own ``upload_file``
(PyPI ``bambu-lab-cloud-api==1.0.5``), installed by this script into its own
venv in a temporary directory (its package is also named ``bambulab``). It
has no base-URL option; its API host is the class attribute
``BambuClient.BASE_URL``, which the child sets to the simulator's URL before
the call (the library's files are not touched). Its pre-signed PUTs go to
whatever URLs the API hands out, so it uploads to the same simulated S3.
(It sends the size part with ``Content-Type: text/plain``, which the
signature does not cover: that PUT is refused and the seed ignores the
refusal, so the file's bytes arrive but the upload is never registered. The
bytes PUT, which is what is measured, is the same work as ours.)

Prints the figures and the ratios ours / seed (memory growth and time);
exits 1 when our peak growth exceeds 32 MiB.

Usage: ``.venv/bin/python bench/cloud_upload.py [--size-mib 1024] [--no-baseline]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT_MIB = 32.0
SEED_PACKAGE = "bambu-lab-cloud-api==1.0.5"

# Runs in the child: measure one upload. argv: face, file, url, token.
MEASURE = r"""
import asyncio, json, os, sys, time

def status(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False

face, path, url, token = sys.argv[1:5]
name = os.path.basename(path)
if face == "seed":
    from bambulab import BambuClient
    BambuClient.BASE_URL = url
    client = BambuClient(token=token, timeout=600)
    run = lambda: client.upload_file(path, filename=name)
elif face == "sync":
    from bambulab import BambuClient
    client = BambuClient(token=token, base_url=url)
    run = lambda: client.upload_file(name, path)
else:
    from bambulab import AsyncBambuClient
    async def go():
        async with AsyncBambuClient(token=token, base_url=url) as client:
            return await client.upload_file(name, path)
    run = lambda: asyncio.run(go())
import hashlib  # loaded before measuring, as everything the client imports
before = status("VmRSS")
exact = reset_peak()
started = time.perf_counter()
result = run()
seconds = time.perf_counter() - started
peak = status("VmHWM")
print(json.dumps({
    "seconds": seconds, "before": before, "peak": peak, "exact_peak": exact,
    "md5": (result.get("md5") if hasattr(result, "get") else "") or "",
}))
"""


def make_file(path: Path, size: int) -> str:
    """Write ``size`` bytes (a counter-stamped random pattern) and return their MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    block = os.urandom(1 << 20)
    with path.open("wb") as out:
        written = 0
        index = 0
        while written < size:
            piece = (index.to_bytes(8, "big") + block[8:])[: size - written]
            out.write(piece)
            digest.update(piece)
            written += len(piece)
            index += 1
    return digest.hexdigest()


def start_sim() -> tuple[subprocess.Popen[str], str, str]:
    """``bambu sim`` (cloud only, no rate limits) in its own process; its URL and a token."""
    bambu = os.path.join(os.path.dirname(sys.executable), "bambu")
    proc = subprocess.Popen(
        [bambu, "sim", "--port", "0", "--quiet", "--no-mqtt", "--no-rate-limits"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    found: dict[str, str] = {}
    for line in proc.stdout:
        match = re.match(r"export (BAMBU_API_URL|BAMBU_TOKEN)=(\S+)", line)
        if match:
            found[match.group(1)] = match.group(2).strip("'\"")
        if len(found) == 2:
            break
    if len(found) != 2:
        proc.terminate()
        raise RuntimeError("bambu sim did not print its URL and token")
    return proc, found["BAMBU_API_URL"], found["BAMBU_TOKEN"]


def seed_python(where: Path) -> Path:
    """A venv with the seed's package from PyPI; returns its python."""
    venv = where / "seed-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", SEED_PACKAGE],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return python


def measure(python: str, face: str, path: Path, url: str, token: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMBU_")}
    done = subprocess.run(
        [python, "-c", MEASURE, face, str(path), url, token],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
        cwd=path.parent,  # never import this checkout's sources by accident
    )
    if done.returncode != 0:
        raise RuntimeError(f"{face} upload failed:\n{done.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the seed's client")
    args = parser.parse_args()
    size = args.size_mib << 20
    mib = float(1 << 20)
    with tempfile.TemporaryDirectory(prefix="bambu-bench-upload-") as tmp:
        where = Path(tmp)
        path = where / "big.3mf"
        md5 = make_file(path, size)
        seed = None if args.no_baseline else seed_python(where)
        proc, url, token = start_sim()
        try:
            rows: dict[str, dict[str, float]] = {}
            for face in ("sync", "async"):
                rows[face] = measure(sys.executable, face, path, url, token)
                if rows[face]["md5"] != md5:
                    raise RuntimeError(f"{face}: MD5 {rows[face]['md5']} != {md5}")
            if seed is not None:
                rows["seed"] = measure(str(seed), "seed", path, url, token)
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"file: {args.size_mib} MiB; simulator: bambu sim --no-mqtt in its own process")
    for face, row in rows.items():
        growth = (row["peak"] - row["before"]) / mib
        speed = size / mib / row["seconds"]
        label = {"sync": "ours, BambuClient", "async": "ours, AsyncBambuClient"}.get(
            face, f"seed ({SEED_PACKAGE})"
        )
        exact = "" if row["exact_peak"] else " (peak since start: clear_refs unavailable)"
        print(
            f"{label:34s} peak RSS growth {growth:8.1f} MiB{exact}, "
            f"{row['seconds']:6.2f} s, {speed:7.1f} MiB/s"
        )
    worst = max((rows[f]["peak"] - rows[f]["before"]) / mib for f in ("sync", "async"))
    if "seed" in rows:
        seed_growth = (rows["seed"]["peak"] - rows["seed"]["before"]) / mib
        for face in ("sync", "async"):
            growth = (rows[face]["peak"] - rows[face]["before"]) / mib
            print(
                f"ratio {face} / seed: memory growth {growth / seed_growth:.3f}, "
                f"time {rows[face]['seconds'] / rows['seed']['seconds']:.2f}"
            )
    print(
        f"limit: peak RSS growth <= {LIMIT_MIB:.0f} MiB -> {'ok' if worst <= LIMIT_MIB else 'FAIL'}"
    )
    return 0 if worst <= LIMIT_MIB else 1


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - started:.0f} s in all)")
    raise SystemExit(code)
