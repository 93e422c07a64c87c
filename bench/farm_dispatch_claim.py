"""What a dispatch claim costs, against the floor of one durable write on the same database.

For SQLite (a temporary file, WAL, ``synchronous=FULL`` as the store runs it)
and PostgreSQL (``--pg-url``, or a throwaway cluster started here when the
Debian ``postgresql`` binaries are found), times:

* **baseline**: one transaction updating one row, on an engine of its own
  with the same settings (SQLite: ``BEGIN IMMEDIATE``): what any durable
  write to that database costs;
* **claim**: :meth:`FarmStore.claim` of the head of a 2000-job queue (the
  job then finished, so the printer is free for the next one);
* **claim past 100**: the same when the first 100 queued jobs do not fit
  the printer (``fits`` is asked about each: the paged candidate scan);
* **two dispatchers**: claims per second of two processes claiming for the
  same 8 printers, against one process alone.

Usage: ``.venv/bin/python bench/farm_dispatch_claim.py [--count 300] [--pg-url URL]``
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bambulab.farm.models import Job, Requirements, Target
from bambulab.farm.store import FarmStore

PRINTERS = [f"01P00A0000000{n:02d}" for n in range(8)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def baseline(url: str, count: int) -> list[float]:
    parsed = make_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    if not sqlite:
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(parsed)
    if sqlite:

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection: object, _record: object) -> None:
            dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
            dbapi_connection.execute("PRAGMA journal_mode=WAL")  # type: ignore[attr-defined]
            dbapi_connection.execute("PRAGMA synchronous=FULL")  # type: ignore[attr-defined]

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS bench_counter (n INTEGER NOT NULL)")
        conn.exec_driver_sql("DELETE FROM bench_counter")
        conn.exec_driver_sql("INSERT INTO bench_counter VALUES (0)")
    times = []
    for _ in range(count):
        start = time.perf_counter()
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE bench_counter SET n = n + 1")
        times.append(time.perf_counter() - start)
    engine.dispose()
    return times


def claims(store: FarmStore, count: int, fits: Callable[[Job], bool]) -> list[float]:
    printer = PRINTERS[0]
    times = []
    for _ in range(count):
        start = time.perf_counter()
        job = store.claim(printer, fits, "bench")
        times.append(time.perf_counter() - start)
        assert job is not None, "the queue ran dry"
        store.finished(job.id)
    return times


def race(url: str, start_at: float, stop_at: float, done: object) -> None:
    """One dispatcher process: claim and finish round the printers from ``start_at`` on."""
    with FarmStore(url) as store:
        made = 0
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < stop_at:
            for printer in PRINTERS:
                job = store.claim(printer, lambda job: True, f"p{os.getpid()}")
                if job is not None:
                    store.finished(job.id)
                    made += 1
        done.put(made)  # type: ignore[attr-defined]


def throughput(url: str, processes: int, seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 5.0  # the processes are started (imports done) by then
    workers = [
        context.Process(target=race, args=(url, start_at, start_at + seconds, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    total = sum(results.get(timeout=60 + seconds) for _ in workers)
    for worker in workers:
        worker.join(30)
    return total / seconds


def run(name: str, url: str, count: int, seconds: float) -> None:
    with FarmStore(url) as store:
        for printer in PRINTERS:
            store.set_auto_clear(printer, True)
        jobs = store.add_jobs("/a.3mf", "", 1, "bench", Target(), Requirements(), copies=1000)
        jobs += store.add_jobs("/a.3mf", "", 1, "bench", Target(), Requirements(), copies=1000)
        base = baseline(url, count)
        head = claims(store, count, lambda job: True)
        skipped = {job.id for job in jobs[count : count + 100]}
        past = claims(store, count, lambda job: job.id not in skipped)
        for job in store.jobs():
            if job.id in skipped:
                store.cancel(job.id)
        for _ in range(8):  # more than two racing processes claim in the time
            store.add_jobs("/a.3mf", "", 1, "bench", Target(), Requirements(), copies=1000)
    one = throughput(url, 1, seconds)
    two = throughput(url, 2, seconds)
    b50 = percentile(base, 0.5)
    print(f"{name}:")
    print(
        f"  baseline (one-row write transaction): p50 {b50 * 1e3:.2f} ms, "
        f"p99 {percentile(base, 0.99) * 1e3:.2f} ms"
    )
    for label, times in (("claim", head), ("claim past 100", past)):
        p50 = percentile(times, 0.5)
        print(
            f"  {label}: p50 {p50 * 1e3:.2f} ms, p99 {percentile(times, 0.99) * 1e3:.2f} ms: "
            f"ratio {p50 / b50:.2f}"
        )
    print(
        f"  claims/s (claim + finish): one process {one:.0f}, two racing {two:.0f}: "
        f"ratio {two / one:.2f}"
    )


@contextmanager
def postgres_cluster() -> Iterator[str | None]:
    """A throwaway cluster on a free loopback port (as nobody when root), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        yield None
        return
    bindir = Path(found[-1]).parent
    user: dict[str, object] = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    workdir = Path(tempfile.mkdtemp(prefix="bench-pg-", dir="/tmp"))
    password = secrets.token_hex(8)
    (workdir / "pw").write_text(password)
    if user:
        for path in (workdir, workdir / "pw"):
            os.chown(path, user["user"], user["group"])  # type: ignore[arg-type]
    subprocess.run(
        [bindir / "initdb", "-D", workdir / "data", "-U", "farm", "--auth=scram-sha-256",
         f"--pwfile={workdir / 'pw'}", "--no-sync", "--no-locale", "-E", "UTF8"],
        check=True, capture_output=True, timeout=120, **user,  # type: ignore[arg-type]
    )  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the settings a production server keeps: fsync on (the figure includes the commit)
    proc = subprocess.Popen(
        [bindir / "postgres", "-D", workdir / "data", "-h", "127.0.0.1", "-p", str(port),
         "-k", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **user,  # type: ignore[arg-type]
    )  # fmt: skip
    url = f"postgresql://farm:{password}@127.0.0.1:{port}/postgres"
    try:
        for _ in range(300):
            try:
                FarmStore(url).close()
                break
            except Exception:
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="claims timed per figure")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a race")
    parser.add_argument("--pg-url", help="an empty PostgreSQL database (default: start one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run("sqlite", f"sqlite:///{folder}/farm.db", args.count, args.seconds)
    if args.pg_url:
        run("postgresql", args.pg_url, args.count, args.seconds)
        return
    with postgres_cluster() as url:
        if url is None:
            print("postgresql: not measured (no /usr/lib/postgresql/*/bin/postgres)")
        else:
            run("postgresql", url, args.count, args.seconds)


if __name__ == "__main__":
    main()
