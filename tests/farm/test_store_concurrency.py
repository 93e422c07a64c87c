"""The queue under concurrency: dispatchers racing, and dispatchers killed with SIGKILL.

Both on SQLite and on a real PostgreSQL server (``store_url``). The killed
dispatchers are processes forked from a fork server that imported the store
once, so each kill costs milliseconds, not an interpreter start.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bambulab.farm.models import Job, JobState, Requirements, Target
from bambulab.farm.store import FarmStore

PRINTERS = [f"01P00A00000000{n}" for n in range(5)]


def raw_engine(url: str) -> sa.Engine:
    """An engine of the test's own on the store's database, to read rows as they are."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return sa.create_engine(parsed)


@pytest.fixture
def raw(store_url: str) -> Iterator[sa.Engine]:
    engine = raw_engine(store_url)
    yield engine
    engine.dispose()


def active_per_printer(engine: sa.Engine) -> Counter[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT printer FROM farm_jobs WHERE state IN ('starting', 'printing')")
        )
        return Counter(row.printer for row in rows)


# --- two (three) dispatchers racing -----------------------------------------------------


def test_dispatchers_racing_never_claim_twice(store_url: str, raw: sa.Engine) -> None:
    """Three dispatchers, each with its own store (own engine, own connections), claim
    for the same printers from the same queue until it is empty: every job is
    claimed exactly once, and no printer ever has two active jobs."""
    with FarmStore(store_url) as setup:
        for printer in PRINTERS:
            setup.set_auto_clear(printer, True)
        total = {
            job.id
            for job in setup.add_jobs("/a.3mf", "", 1, "x", Target(), Requirements(), copies=80)
        }
    claims: dict[str, list[tuple[int, str]]] = {}
    errors: list[BaseException] = []
    overlaps: list[Counter[str]] = []
    racing = threading.Event()
    done = threading.Event()

    def dispatcher(name: str, seed: int) -> None:
        rng = random.Random(seed)
        mine = claims.setdefault(name, [])
        try:
            with FarmStore(store_url) as store:
                racing.wait(10)
                while not done.is_set():
                    printers = rng.sample(PRINTERS, len(PRINTERS))
                    for printer in printers:
                        job = store.claim(printer, lambda job: True, name)
                        if job is None:
                            continue
                        mine.append((job.id, printer))
                        active = store.active(printer)
                        assert active is not None and active.id == job.id, (active, job)
                        store.started(job.id)
                        store.finished(job.id)
                    if not store.jobs([JobState.QUEUED]):
                        return
        except BaseException as exc:
            errors.append(exc)
            done.set()

    def checker() -> None:
        while not done.is_set():
            counts = active_per_printer(raw)
            if any(n > 1 for n in counts.values()):
                overlaps.append(counts)

    threads = [threading.Thread(target=dispatcher, args=(f"d{n}", n)) for n in range(3)]
    watch = threading.Thread(target=checker)
    for thread in [*threads, watch]:
        thread.start()
    racing.set()
    for thread in threads:
        thread.join(120)
    done.set()
    watch.join(10)
    assert not errors, errors
    assert not overlaps, overlaps
    claimed = [job_id for mine in claims.values() for job_id, _ in mine]
    assert Counter(claimed).most_common(1)[0][1] == 1  # no job claimed twice
    assert set(claimed) == total  # every job claimed in the end
    assert sum(1 for mine in claims.values() if mine) >= 2  # they did race
    with FarmStore(store_url) as store:
        ended = {job.id: job for job in store.history()}
        assert set(ended) == total
        for mine in claims.values():
            for job_id, printer in mine:
                assert ended[job_id].printer == printer and ended[job_id].attempts == 1


# --- kill -9 during dispatch ------------------------------------------------------------


def dispatch_forever(url: str, owner: str, seed: int, signals: Connection, stacks: str) -> None:
    """A dispatcher that claims, starts, fails and finishes jobs until it is killed.

    It tells the test when it is inside a claim's transaction (in ``fits``,
    with the printer's row locked) so the test can kill it exactly there.
    SIGUSR1 writes its stack to ``stacks``.
    """
    faulthandler.register(signal.SIGUSR1, file=open(stacks, "w"), all_threads=True)  # noqa: SIM115
    rng = random.Random(seed)
    store = FarmStore(url)
    signals.send_bytes(b"ready")

    def fits(job: Job) -> bool:
        if rng.random() < 0.3:
            signals.send_bytes(b"in")
            time.sleep(0.003)  # widen the window the test kills in
        return rng.random() < 0.7

    while True:
        printer = rng.choice(PRINTERS)
        job = store.active(printer)
        if job is None:
            if store.settings(printer).bed_clear_needed:
                store.bed_cleared(printer)
            else:
                store.claim(printer, fits, owner)
        elif job.state is JobState.STARTING:
            luck = rng.random()
            if luck < 0.6:
                store.started(job.id)
            elif luck < 0.9:
                store.start_failed(job.id, "upload refused", max_attempts=1000)
            else:
                store.requeue(job.id, "lost track")
        elif rng.random() < 0.8:
            store.finished(job.id)
        else:
            store.failed(job.id, "spaghetti")


def check_consistent(url: str, engine: sa.Engine, added: set[int], store: FarmStore) -> None:
    """No job lost, no half-done row, one active job a printer at most."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM farm_jobs")).all()
        if engine.dialect.name == "sqlite":
            assert conn.execute(sa.text("PRAGMA integrity_check")).scalar() == "ok"
    assert {row.id for row in rows} == added
    for row in rows:
        state = JobState(row.state)
        where = f"job {row.id} ({state.value})"
        if state in (JobState.QUEUED, JobState.HELD):
            assert (row.printer, row.owner, row.claimed_at) == ("", "", None), where
        else:
            assert row.printer in PRINTERS and row.attempts >= 1, where
            assert row.owner and row.claimed_at is not None, where
        if state is JobState.STARTING:
            assert row.started_at is None and row.finished_at is None, where
        if state is JobState.PRINTING:
            assert row.started_at is not None and row.finished_at is None, where
        if state in (JobState.FINISHED, JobState.FAILED):
            assert row.started_at is not None and row.finished_at is not None, where
        assert not row.stop_pending, where
    active = Counter(r.printer for r in rows if r.state in ("starting", "printing"))
    assert all(n == 1 for n in active.values()), active
    starting = {r.id for r in rows if r.state == "starting"}
    assert {job.id for job in store.starting()} == starting


def stall_report(child: Any, stacks: Path, engine: sa.Engine) -> str:
    """Where a dispatcher that stopped making progress is, and what the database waits on."""
    os.kill(child.pid, signal.SIGUSR1)
    time.sleep(0.5)
    report = f"its stack:\n{stacks.read_text()}"
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            activity = conn.execute(
                sa.text(
                    "SELECT pid, state, wait_event_type, wait_event, left(query, 120)"
                    " FROM pg_stat_activity WHERE datname = current_database()"
                )
            ).all()
        report += "\nsessions:\n" + "\n".join(str(tuple(row)) for row in activity)
    return report


def test_dispatchers_killed_at_any_moment_lose_nothing(
    store_url: str, raw: sa.Engine, tmp_path: Path
) -> None:
    context: Any = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    rng = random.Random(1234)
    with FarmStore(store_url) as store:
        added = {
            job.id
            for job in store.add_jobs("/a.3mf", "", 1, "x", Target(), Requirements(), copies=30)
        }
        kills_in_claim = 0
        for round_ in range(16):
            reader, writer = context.Pipe(duplex=False)
            stacks = tmp_path / f"stacks-{round_}.txt"
            child = context.Process(
                target=dispatch_forever,
                args=(store_url, f"dispatcher-{round_}", round_, writer, str(stacks)),
                daemon=True,
            )
            child.start()
            writer.close()
            assert reader.poll(30) and reader.recv_bytes() == b"ready"
            if round_ % 2:
                # inside a claim's transaction: after a random number of them
                wanted = rng.randint(1, 6)
                while wanted and reader.poll(20):
                    wanted -= reader.recv_bytes() == b"in"
                if wanted:
                    pytest.fail(
                        f"dispatcher {round_} stopped claiming; {stall_report(child, stacks, raw)}"
                    )
                kills_in_claim += 1
            else:
                # anywhere: it loops through transactions back to back, so a random
                # moment falls inside one, between two, or in a commit
                time.sleep(rng.uniform(0.0, 0.15))
            child.kill()
            child.join(10)
            assert child.exitcode == -9
            reader.close()
            check_consistent(store_url, raw, added, store)
            # what a restarted dispatcher does: look at each claimed printer, decide
            for job in store.starting():
                if rng.random() < 0.5:
                    store.started(job.id)
                else:
                    store.requeue(job.id, "dispatcher restarted; printer idle")
            check_consistent(store_url, raw, added, store)
            if len(store.jobs([JobState.QUEUED])) < 10:
                more = store.add_jobs("/a.3mf", "", 1, "x", Target(), Requirements(), copies=10)
                added |= {job.id for job in more}
        assert kills_in_claim == 8
        # and a fresh store takes it from there to the end
    with FarmStore(store_url) as fresh:
        for _ in range(10_000):
            progressed = False
            for printer in PRINTERS:
                job = fresh.active(printer)
                if job is not None:
                    if job.state is JobState.STARTING:
                        fresh.started(job.id)
                    fresh.finished(job.id)
                    progressed = True
                fresh.bed_cleared(printer)
                progressed |= fresh.claim(printer, lambda job: True, "last") is not None
            if not progressed:
                break
        check_consistent(store_url, raw, added, fresh)
        history = fresh.history()
        assert {job.id for job in history} == added
        assert {job.state for job in history} <= {JobState.FINISHED, JobState.FAILED}
