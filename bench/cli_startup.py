"""Start-up time of ``bambu --help`` against the seed's kind of CLI.

The baseline mimics the seed's ``bambu-query --help``: an argparse program
that imports its HTTP client library (``import argparse, json, httpx``) and
prints its help. ``python -c pass`` is measured as the floor (interpreter
start alone). Each command runs N times in a fresh process; medians are
printed with the ratio ``bambu --help / baseline``, which must stay <= 1.0.

Usage: ``.venv/bin/python bench/cli_startup.py [-n 15]``; exits 1 when the
ratio is above the limit.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

LIMIT = 1.0

BASELINE = """
import argparse, json, httpx
parser = argparse.ArgumentParser(prog="bambu-query", description="Query the Bambu Lab cloud API.")
parser.add_argument("--token", help="access token (default: ~/.bambu_token)")
parser.add_argument("--region", choices=["global", "china"], default="global")
parser.add_argument("--json", action="store_true", help="print JSON")
sub = parser.add_subparsers(dest="command")
for name in ("devices", "status", "tasks", "projects", "profile"):
    sub.add_parser(name, help=f"show {name}")
parser.print_help()
"""


def run(argv: list[str]) -> float:
    """Seconds one process takes, start to exit."""
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def median_of(argv: list[str], n: int) -> float:
    """Median of ``n`` runs, after one unmeasured run that warms the file cache."""
    run(argv)
    return statistics.median(run(argv) for _ in range(n))


def main() -> int:
    """Measure, print the medians and the ratio; 1 when the ratio exceeds the limit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=15, help="runs per command (default 15)")
    args = parser.parse_args()
    python = sys.executable
    # The installed console script when there is one (what people run), else -m.
    script = Path(python).with_name("bambu")
    bambu = [str(script)] if script.exists() else [python, "-m", "bambulab.cli"]
    cases = {
        "floor (python -c pass)": [python, "-c", "pass"],
        "baseline (argparse + httpx --help)": [python, "-c", BASELINE],
        "bambu --help": [*bambu, "--help"],
        "bambu devices --help": [*bambu, "devices", "--help"],
    }
    medians = {name: median_of(argv, args.n) for name, argv in cases.items()}
    width = max(map(len, medians))
    for name, value in medians.items():
        print(f"{name:<{width}}  {value * 1000:7.1f} ms (median of {args.n})")
    base = medians["baseline (argparse + httpx --help)"]
    ratio = medians["bambu --help"] / base
    sub_ratio = medians["bambu devices --help"] / base
    print(f"ratio bambu --help / baseline          = {ratio:.2f} (limit {LIMIT:.1f})")
    print(f"ratio bambu devices --help / baseline  = {sub_ratio:.2f}")
    return 0 if ratio <= LIMIT else 1


if __name__ == "__main__":
    raise SystemExit(main())
