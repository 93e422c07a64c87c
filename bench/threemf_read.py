"""Reading a 50 MB 3MF's metadata: time and peak memory, against reading the archive whole.

The file is written by the simulator's 3MF writer (two sliced plates, PNG
thumbnails) padded with a stored member of incompressible bytes, the way
large projects carry big meshes or textures. Three readers run on it:

* ``read_3mf`` (what the toolkit does): central directory, the small
  metadata members, the first 64 KiB of each plate's G-code, and an MD5 of
  the file streamed in 1 MiB chunks;
* baseline "whole": ``Path.read_bytes`` then ``zipfile`` reads every member
  into memory and the MD5 is taken of the bytes (how a naive reader does it);
* baseline "every member": the file opened from disk, every member read
  into memory one after another.

Peak memory is tracemalloc's peak (Python allocations) of the call, after a
warm-up run; time is the median of N runs with the file in the page cache.
Exits 1 when the metadata read's peak exceeds 8 MiB.

Usage: ``.venv/bin/python bench/threemf_read.py [--size-mb 50] [-n 5]``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bambulab.protocol.threemf import read_3mf
from bambulab.sim.threemf_writer import write_3mf

PEAK_LIMIT = 8 << 20


def metadata(path: Path) -> Any:
    with path.open("rb") as stream:
        return read_3mf(stream)


def whole(path: Path) -> Any:
    data = path.read_bytes()
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    return digest, len(members)


def every_member(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        return sum(len(zf.read(info)) for info in zf.infolist())


def measure(function: Callable[[Path], Any], path: Path, n: int) -> tuple[float, int]:
    """(median seconds, peak bytes) of ``function(path)``."""
    function(path)  # warm-up: imports, page cache
    times = []
    for _ in range(n):
        started = time.perf_counter()
        function(path)
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    try:
        function(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return statistics.median(times), peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=50, help="file size (default 50 MB)")
    parser.add_argument("-n", type=int, default=5, help="timed runs per reader (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-3mf-") as tmp:
        path = Path(tmp) / "big.3mf"
        write_3mf(
            path,
            name="Big",
            plates=2,
            filaments=[("PLA", "#FF0000FF"), ("PETG", "#0000FFFF")],
            objects=("Part A", "Part B"),
            layers=400,
            seconds=7200,
            padding=args.size_mb * 1_000_000,
        )
        size = path.stat().st_size
        print(f"file: {size / 1e6:.1f} MB, 2 sliced plates + a stored padding member")
        results = {
            "read_3mf (metadata + streamed MD5)": measure(metadata, path, args.n),
            "baseline: read_bytes + every member": measure(whole, path, args.n),
            "baseline: every member from disk": measure(every_member, path, args.n),
        }
    width = max(map(len, results))
    for name, (seconds, peak) in results.items():
        print(f"{name:<{width}}  {seconds * 1000:8.1f} ms  peak {peak / 2**20:7.2f} MiB")
    ours_time, ours_peak = results["read_3mf (metadata + streamed MD5)"]
    base_time, base_peak = results["baseline: read_bytes + every member"]
    print(f"peak memory ratio baseline / read_3mf = {base_peak / max(1, ours_peak):.0f}x")
    print(f"time ratio read_3mf / baseline        = {ours_time / base_time:.2f}")
    print(f"peak limit {PEAK_LIMIT >> 20} MiB: {'pass' if ours_peak <= PEAK_LIMIT else 'FAIL'}")
    return 0 if ours_peak <= PEAK_LIMIT else 1


if __name__ == "__main__":
    raise SystemExit(main())
