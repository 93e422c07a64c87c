"""What the farm's counters add to a ``/metrics`` scrape with a long history.

A SQLite farm store holds ``--jobs`` ended jobs (default 100,000) over 200
printers, one in ten failed with a code. Times the rendering of the
exposition (:func:`bambulab.servers.metrics.render`, what a scrape runs on
its worker thread):

* **baseline**: the exposition without a farm (the server's own figures);
* **cold**: the first scrape with the farm's counters (the whole history read
  once: what a scrape would cost every time without the incremental counters);
* **incremental**: a scrape after 10 more jobs ended (the TTL passed: the store
  is asked only for what ended since the newest counted, less the margin);
* **cached**: a scrape within the TTL.

And what the statistics page and its JSON/CSV compute: from the whole history read
again, and from the records the counters keep (what the page does).

Usage: ``.venv/bin/python bench/farm_stats_scrape.py [--jobs 100000] [--rounds 20]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bambulab.farm.stats import FarmCounters, aggregate, from_ended
from bambulab.farm.store import FarmStore, jobs_table
from bambulab.servers.metrics import MetricsSnapshot, render

T0 = 1_780_000_000.0
REQUIREMENTS = (
    '{"model_id":"C12","nozzle_diameter":0.4,"filaments":[{"slot":1,"type":"PLA",'
    '"colour":"#FF0000FF","grams":12.5,"metres":4.1,"tray_info_idx":"GFA00"},'
    '{"slot":2,"type":"PETG","colour":"#00FF00FF","grams":3.0,"metres":1.0,'
    '"tray_info_idx":"GFG00"}],"seconds":3600,"grams":15.5}'
)


def rows(start: int, count: int) -> list[dict[str, object]]:
    out = []
    for i in range(start, start + count):
        failed = i % 10 == 0
        out.append(
            {
                "name": f"Part {i}",
                "file": "/farm/x.3mf",
                "file_md5": "0" * 32,
                "plate": 1,
                "target_kind": "any",
                "target_value": "",
                "requirements": REQUIREMENTS,
                "state": "failed" if failed else "finished",
                "priority": 0,
                "position": float(i),
                "grp": "",
                "printer": f"01P00A{i % 200:09d}",
                "owner": "bench",
                "attempts": 1,
                "reason": "HMS 0300_8016: The nozzle is clogged with filament." if failed else "",
                "stop_pending": False,
                "created_at": T0 + i * 60,
                "updated_at": T0 + i * 60 + 3600,
                "claimed_at": T0 + i * 60,
                "started_at": T0 + i * 60 + 5,
                "finished_at": T0 + i * 60 + 3600,
            }
        )
    return out


def timed(fn: object, rounds: int) -> float:
    values = []
    for _ in range(rounds):
        began = time.perf_counter()
        fn()  # type: ignore[operator]
        values.append(time.perf_counter() - began)
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = FarmStore(f"sqlite:///{Path(tmp) / 'farm.db'}")
        with store._engine.begin() as conn:
            for start in range(0, args.jobs, 10_000):
                conn.execute(sa.insert(jobs_table), rows(start, min(10_000, args.jobs - start)))
        snap = MetricsSnapshot(time.time(), time.time(), (), None, ())
        now = [0.0]
        counters = FarmCounters(store.ended, clock=lambda: now[0])
        base = timed(lambda: render(snap), args.rounds)
        began = time.perf_counter()
        body, _ = render(snap, farm=counters.read)
        cold = time.perf_counter() - began
        assert b'bambu_farm_prints_total{printer="01P00A000000000",result="failed"} 500.0' in body
        cached = timed(lambda: render(snap, farm=counters.read), args.rounds)
        added = args.jobs
        values = []
        for _ in range(args.rounds):
            with store._engine.begin() as conn:
                conn.execute(sa.insert(jobs_table), rows(added, 10))
            added += 10
            now[0] += 10.0  # past the TTL
            began = time.perf_counter()
            render(snap, farm=counters.read)
            values.append(time.perf_counter() - began)
        incremental = statistics.median(values)
        began = time.perf_counter()
        page = aggregate([r for row in store.ended() if (r := from_ended(row))])
        page_time = time.perf_counter() - began
        assert page.total.prints == added
        began = time.perf_counter()
        kept = aggregate(counters.records())  # what the page does now: the counters' records
        kept_time = time.perf_counter() - began
        assert kept.total.prints == added
        total = sum(n for _, n in counters.read().prints)
        assert total == added, (total, added)
        store.close()
    print(f"history: {args.jobs} ended jobs, 200 printers (SQLite)")
    print(f"baseline (no farm):         {base * 1000:8.2f} ms")
    print(f"cold (whole history read):  {cold * 1000:8.2f} ms  ratio {cold / base:7.1f}")
    print(
        f"incremental (+10 jobs):     {incremental * 1000:8.2f} ms  ratio {incremental / base:7.1f}"
    )
    print(f"cached (within the TTL):    {cached * 1000:8.2f} ms  ratio {cached / base:7.1f}")
    print(f"statistics page's totals, the whole history read: {page_time * 1000:.0f} ms")
    print(
        f"statistics page's totals, from the kept records: {kept_time * 1000:.0f} ms"
        f"  ratio to the read {kept_time / page_time:.2f}"
    )


if __name__ == "__main__":
    main()
