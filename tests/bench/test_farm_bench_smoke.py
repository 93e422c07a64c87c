"""The farm's benchmarks in miniature, so that the scripts cannot rot.

Each ``bench/farm_*.py`` runs as a user runs it (a subprocess) at a tiny
size, writes its figures as JSON, and the figures must show the thing
measured happened: reports reached the server and tiles were rendered and
streamed to every dashboard; each bed clear was answered by exactly one
print command; every tile was in the browser's page.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.binaries import needs

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(180)


def run_bench(name: str, tmp: Path, *options: str) -> tuple[str, dict[str, Any]]:
    figures = tmp / f"{name}.json"
    command = [sys.executable, str(ROOT / "bench" / name), *options, "--json", str(figures)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout, json.loads(figures.read_text())


@needs("mosquitto")
def test_farm_scale_measures_the_hub_the_farm_and_the_dashboards(tmp_path: Path) -> None:
    out, figures = run_bench(
        "farm_scale.py",
        tmp_path,
        *("--printers", "20", "--clients", "2", "--seconds", "1", "--warmup", "0.2"),
    )
    assert "ratio farm / baseline" in out and "SSE 2 dashboards" in out
    bare, farm, sse = figures["baseline"], figures["farm"], figures["sse"]
    for window in (bare, farm, sse):
        assert window["messages"] > 5  # 20 printers at 1 report/s reached the hub
        assert window["cpu"] > 0 and window["rss"] > 20
    assert bare["rendered"] == 0 and bare["turns"] == 0  # no farm mounted
    assert farm["rendered"] == 0 and farm["turns"] > 0  # nobody watches: no tile drawn
    assert sse["rendered"] > 0 and sse["published"] > 0
    assert len(sse["delivered"]) == 2
    assert all(rate > 0 for rate in sse["delivered"]), sse["delivered"]


def test_dispatch_latency_answers_each_bed_clear_with_one_start(tmp_path: Path) -> None:
    out, figures = run_bench(
        "farm_dispatch_latency.py",
        tmp_path,
        *("--printers", "2", "--jobs", "2", "--interval", "2", "--print-seconds", "120"),
    )
    assert "ratio wake-up / polling only" in out
    for mode in ("wake", "polling"):
        assert figures[mode]["n"] == 2
        assert 0 < figures[mode]["p50"] <= figures[mode]["p99"] < 15_000
    # two runs, each: two printers x (a first start + one after its bed clear)
    assert figures["print_commands"] == 8
    # woken by the bed clear, the dispatcher did not wait for its 2 s turn
    assert figures["wake"]["p99"] < figures["interval_ms"] == 2000


@needs("mosquitto")
@needs("chromium")
@needs("chromedriver")
def test_page_load_shows_every_tile_in_chromium(tmp_path: Path) -> None:
    out, figures = run_bench("farm_page_load.py", tmp_path, "--printers", "5", "--loads", "1")
    assert "ratio 5 tiles / 1 tile" in out
    (full,) = figures["full"]
    (base,) = figures["baseline"]
    assert full["count"] == 5 and base["count"] == 1
    for run in (full, base):
        assert 0 < run["response"] <= run["tiles"] < 30_000
