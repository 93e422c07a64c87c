"""The farm's durable queue on SQLite and on a real PostgreSQL server.

Every test runs once per engine (``store_url``): the same behaviour from
the same queries. Concurrency (two dispatchers racing, kill -9 during a
dispatch) is in ``test_store_concurrency.py``.
"""

from __future__ import annotations

import os
import random
import stat
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bambulab.errors import ConfigurationError, TransportError
from bambulab.farm.models import Filament, Job, JobState, Requirements, Target
from bambulab.farm.store import (
    FarmStore,
    JobStateError,
    PrinterSettings,
    UnknownJobError,
)
from tests import binaries
from tests.binaries import needs

REQ = Requirements(
    model_id="C12",
    nozzle_diameter=0.4,
    filaments=(Filament(1, "PLA", "#FF0000FF", grams=12.5, metres=4.1, tray_info_idx="GFA00"),),
    seconds=3600.0,
    grams=12.5,
)
ANY = Target()
ROOT = Path(__file__).resolve().parents[2]


class Clock:
    """A clock the test moves (history's ``since``, ordering by time)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_url: str, clock: Clock) -> Iterator[FarmStore]:
    with FarmStore(store_url, clock=clock) as opened:
        yield opened


def add(store: FarmStore, name: str = "cube", **options: object) -> Job:
    [job] = store.add_jobs("/farm/files/a.3mf", "0" * 32, 1, name, ANY, REQ, **options)  # type: ignore[arg-type]
    return job


def anything(job: Job) -> bool:
    return True


def ids(jobs: list[Job]) -> list[int]:
    return [job.id for job in jobs]


# --- adding and reading -----------------------------------------------------------------


def test_jobs_keep_everything_they_were_given(store: FarmStore) -> None:
    target = Target("printer", "01P00A000000001")
    [job] = store.add_jobs(
        "/farm/files/b.3mf", "f" * 32, 3, "bracket", target, REQ, priority=5, held=True
    )
    again = store.job(job.id)
    assert again == job
    assert (job.file, job.file_md5, job.plate, job.name) == (
        "/farm/files/b.3mf",
        "f" * 32,
        3,
        "bracket",
    )
    assert job.target == target and job.requirements == REQ
    assert (job.state, job.priority, job.group, job.printer, job.attempts) == (
        JobState.HELD,
        5,
        "",
        "",
        0,
    )
    model = store.add_jobs("/f.3mf", "", 1, "m", Target("model", "N2S"), Requirements())[0]
    assert store.job(model.id).target == Target("model", "N2S")
    assert store.job(model.id).requirements == Requirements()


def test_copies_share_a_new_group_and_queue_in_order(store: FarmStore) -> None:
    single = add(store)
    copies = store.add_jobs("/a.3mf", "1" * 32, 2, "plate 2", ANY, REQ, copies=3)
    more = store.add_jobs("/a.3mf", "1" * 32, 2, "plate 2", ANY, REQ, copies=2)
    assert single.group == ""
    assert len({job.group for job in copies}) == 1 and copies[0].group
    assert len({job.group for job in more}) == 1 and more[0].group != copies[0].group
    assert ids(store.jobs()) == [single.id, *ids(copies), *ids(more)]
    assert all(job.state is JobState.QUEUED for job in store.jobs())


def test_unknown_jobs_and_bad_arguments_are_refused(store: FarmStore) -> None:
    with pytest.raises(UnknownJobError, match="no job 999 in the farm queue"):
        store.job(999)
    for call in (store.hold, store.release, store.started, store.finished):
        with pytest.raises(UnknownJobError):
            call(999)
    with pytest.raises(ConfigurationError, match="copies must be 1 to 1000, not 0"):
        store.add_jobs("/a.3mf", "", 1, "x", ANY, REQ, copies=0)
    with pytest.raises(ConfigurationError, match="plate numbers start at 1"):
        store.add_jobs("/a.3mf", "", 0, "x", ANY, REQ)
    with pytest.raises(ConfigurationError, match="job name is longer than 255"):
        store.add_jobs("/a.3mf", "", 1, "x" * 256, ANY, REQ)
    with pytest.raises(ConfigurationError, match="printer serial"):
        store.claim("bad serial", anything, "me")
    assert store.jobs() == []


# --- queue order ------------------------------------------------------------------------


def test_priority_then_position_then_id(store: FarmStore) -> None:
    low = add(store, "low", priority=-1)
    a = add(store, "a")
    urgent = add(store, "urgent", priority=10)
    b = add(store, "b")
    assert ids(store.jobs()) == [urgent.id, a.id, b.id, low.id]
    raised = store.set_priority(low.id, 10)
    assert raised.priority == 10 and raised.position == low.position
    # it keeps its position: older than urgent, so ahead of it among priority 10
    assert ids(store.jobs()) == [low.id, urgent.id, a.id, b.id]
    # what claim takes first is what jobs() lists first
    assert store.claim("P1", anything, "me") == store.job(low.id)


def test_move_before_a_job_takes_its_place_and_priority(store: FarmStore) -> None:
    a, b, c = (add(store, n) for n in "abc")
    urgent = add(store, "urgent", priority=3)
    moved = store.move(c.id, a.id)
    assert ids(store.jobs()) == [urgent.id, c.id, a.id, b.id]
    moved = store.move(b.id, urgent.id)
    assert moved.priority == 3
    assert ids(store.jobs()) == [b.id, urgent.id, c.id, a.id]
    store.move(b.id, None)  # last of its (new) priority
    assert ids(store.jobs()) == [urgent.id, b.id, c.id, a.id]
    assert store.move(a.id, a.id) == store.job(a.id)  # before itself: where it is


def test_many_reorders_keep_the_order_a_list_would(store: FarmStore) -> None:
    """Random moves (halving positions until they run out, then renumbering) against a list."""
    rng = random.Random(12)
    order = ids([add(store, str(n)) for n in range(6)])
    for _ in range(120):
        job_id = rng.choice(order)
        # mostly into one narrow spot, so the halving runs out of precision
        before = order[1] if rng.random() < 0.8 else rng.choice([*order, None])
        if before == job_id:
            continue
        store.move(job_id, before)
        order.remove(job_id)
        order.insert(len(order) if before is None else order.index(before), job_id)
    assert ids(store.jobs()) == order


def test_held_jobs_keep_their_place_but_are_not_dispatched(store: FarmStore) -> None:
    first = add(store, "first")
    second = add(store, "second")
    assert store.hold(first.id).state is JobState.HELD
    assert ids(store.jobs()) == [first.id, second.id]
    assert ids(store.jobs([JobState.QUEUED])) == [second.id]
    assert store.claim("P1", anything, "me").id == second.id  # type: ignore[union-attr]
    store.requeue(second.id, "test")
    assert store.release(first.id).state is JobState.QUEUED
    assert store.claim("P1", anything, "me").id == first.id  # type: ignore[union-attr]


# --- every transition and refusal -------------------------------------------------------


def bring(store: FarmStore, state: JobState, printer: str) -> Job:
    """A new job in ``state`` (through the public transitions only)."""
    store.bed_cleared(printer)
    job = add(store, f"to {state.value}", held=state is JobState.HELD)
    if state in (JobState.QUEUED, JobState.HELD):
        return job
    if state is JobState.CANCELLED:
        return store.cancel(job.id, "not wanted")
    claimed = store.claim(printer, lambda j: j.id == job.id, "me")
    assert claimed is not None and claimed.id == job.id
    if state is JobState.STARTING:
        return claimed
    store.started(job.id)
    if state is JobState.PRINTING:
        return store.job(job.id)
    if state is JobState.FINISHED:
        return store.finished(job.id)
    return store.failed(job.id, "spaghetti")


OPERATIONS: dict[str, Callable[[FarmStore, int], Job]] = {
    "hold": lambda s, i: s.hold(i),
    "release": lambda s, i: s.release(i),
    "cancel": lambda s, i: s.cancel(i, "no longer needed"),
    "started": lambda s, i: s.started(i),
    "start_failed": lambda s, i: s.start_failed(i, "upload refused"),
    "requeue": lambda s, i: s.requeue(i, "dispatcher restarted"),
    "finished": lambda s, i: s.finished(i),
    "failed": lambda s, i: s.failed(i, "nozzle clog"),
    "set_priority": lambda s, i: s.set_priority(i, 7),
    "move": lambda s, i: s.move(i, None),
    "stopped": lambda s, i: s.stopped(i),
}
Q, H, S, P = JobState.QUEUED, JobState.HELD, JobState.STARTING, JobState.PRINTING
F, X, C = JobState.FINISHED, JobState.FAILED, JobState.CANCELLED
# operation -> {state it accepts: state it leads to}; every other state is refused
ALLOWED: dict[str, dict[JobState, JobState]] = {
    "hold": {Q: H},
    "release": {H: Q},
    "cancel": {Q: C, H: C, S: C, P: C},
    "started": {S: P},
    "start_failed": {S: Q},
    "requeue": {S: Q},
    "finished": {S: F, P: F},
    "failed": {S: X, P: X},
    "set_priority": {Q: Q, H: H},
    "move": {Q: Q, H: H},
    "stopped": {},  # only a cancelled job with a printer to stop (below)
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_each_operation_in_each_state(store: FarmStore, operation: str) -> None:
    for n, state in enumerate(JobState):
        printer = f"P{n}"
        job = bring(store, state, printer)
        assert job.state is state
        act = OPERATIONS[operation]
        if state in ALLOWED[operation]:
            after = act(store, job.id)
            assert after.state is ALLOWED[operation][state], (operation, state)
            assert after == store.job(job.id)
            assert after.updated_at > job.updated_at
            continue
        with pytest.raises(JobStateError) as refused:
            act(store, job.id)
        message = str(refused.value)
        assert f"job {job.id}" in message and state.value in message, message
        assert "\n" not in message
        assert (refused.value.job_id, refused.value.state) == (job.id, state)
        assert store.job(job.id) == job  # a refusal changes nothing


def test_the_fields_each_transition_sets(store: FarmStore, clock: Clock) -> None:
    job = add(store)
    claimed = store.claim("P1", anything, "dispatcher-1")
    assert claimed is not None
    assert (claimed.state, claimed.printer, claimed.attempts) == (JobState.STARTING, "P1", 1)
    assert claimed.started_at is None and claimed.finished_at is None
    assert store.active("P1") == claimed and store.active("P2") is None
    back = store.start_failed(job.id, "upload\nrefused")
    assert (back.state, back.printer, back.reason, back.attempts) == (
        JobState.QUEUED,
        "",
        "upload refused",
        1,
    )
    again = store.claim("P2", anything, "dispatcher-2")
    assert again is not None and (again.printer, again.attempts) == ("P2", 2)
    printing = store.started(job.id)
    assert printing.state is JobState.PRINTING and printing.reason == ""
    assert printing.started_at is not None and printing.started_at > again.updated_at - 1
    done = store.finished(job.id)
    assert done.state is JobState.FINISHED and done.finished_at is not None
    assert done.printer == "P2" and store.active("P2") is None


def test_a_failing_start_is_retried_then_fails(store: FarmStore) -> None:
    job = add(store)
    for attempt in (1, 2):
        claimed = store.claim("P1", anything, "me")
        assert claimed is not None and claimed.attempts == attempt
        after = store.start_failed(job.id, "printer busy", max_attempts=2)
    assert after.state is JobState.FAILED
    assert after.reason == "printer busy (after 2 attempts)"
    assert store.history() == [after]
    assert store.claim("P1", anything, "me") is None
    assert not store.settings("P1").bed_clear_needed  # nothing was printed


def test_starting_lists_claims_to_recover_by_owner(store: FarmStore) -> None:
    for n in range(4):
        add(store, str(n))
    one = store.claim("P1", anything, "farm-a")
    two = store.claim("P2", anything, "farm-b")
    three = store.claim("P3", anything, "farm-a")
    assert one and two and three
    store.started(three.id)
    assert ids(store.starting()) == [one.id, two.id]
    assert ids(store.starting(owner="farm-a")) == [one.id]
    back = store.requeue(one.id, "farm-a restarted; P1 is idle")
    assert back.state is JobState.QUEUED and back.printer == "" and back.attempts == 1
    assert ids(store.starting()) == [two.id]
    # it kept its place at the head of the queue
    assert store.claim("P1", anything, "farm-a") == store.job(one.id)


# --- dispatch rules ---------------------------------------------------------------------


def test_claim_takes_the_first_job_that_fits_and_respects_printer_targets(
    store: FarmStore,
) -> None:
    mine = store.add_jobs("/a.3mf", "", 1, "for P2", Target("printer", "P2"), REQ)[0]
    big = add(store, "big")
    small = add(store, "small")
    seen: list[int] = []

    def fits(job: Job) -> bool:
        seen.append(job.id)
        return job.name == "small"

    claimed = store.claim("P1", fits, "me")
    assert claimed is not None and claimed.id == small.id
    assert seen == [big.id, small.id]  # P2's job is not even offered to P1
    assert store.claim("P3", lambda job: job.id == mine.id, "me") is None
    got = store.claim("P2", anything, "me")
    assert got is not None and got.id == mine.id
    assert store.claim("P4", lambda job: False, "me") is None
    assert store.job(big.id).state is JobState.QUEUED


def test_claim_looks_past_many_jobs_that_do_not_fit(store: FarmStore) -> None:
    jobs = store.add_jobs("/a.3mf", "", 1, "x", ANY, REQ, copies=150)
    wanted = jobs[137].id
    calls: list[int] = []

    def fits(job: Job) -> bool:
        calls.append(job.id)
        return job.id == wanted

    claimed = store.claim("P1", fits, "me")
    assert claimed is not None and claimed.id == wanted
    assert calls == ids(jobs[:138])  # each once, in queue order


def test_one_active_job_per_printer(store: FarmStore) -> None:
    first, second = add(store), add(store)
    claimed = store.claim("P1", anything, "me")
    assert claimed is not None and claimed.id == first.id
    assert store.claim("P1", anything, "me") is None  # starting
    store.started(first.id)
    assert store.claim("P1", anything, "me") is None  # printing
    other = store.claim("P2", anything, "me")
    assert other is not None and other.id == second.id


def test_a_bed_clear_is_needed_between_jobs_unless_auto_clearing(store: FarmStore) -> None:
    for n in range(4):
        add(store, str(n))
    store.set_auto_clear("AUTO", True)
    for printer in ("MANUAL", "AUTO"):
        job = store.claim(printer, anything, "me")
        assert job is not None
        store.started(job.id)
        store.finished(job.id)
    assert store.settings("MANUAL").bed_clear_needed
    assert not store.settings("AUTO").bed_clear_needed
    assert store.claim("MANUAL", anything, "me") is None
    assert store.claim("AUTO", anything, "me") is not None
    assert store.bed_cleared("MANUAL").bed_clear_needed is False
    failing = store.claim("MANUAL", anything, "me")
    assert failing is not None
    store.failed(failing.id, "spaghetti")  # a failed print leaves something too
    assert store.claim("MANUAL", anything, "me") is None
    store.bed_cleared("MANUAL")
    assert store.need_bed_clear("MANUAL").bed_clear_needed  # a person says so
    assert store.claim("MANUAL", anything, "me") is None


def test_a_cancelled_active_job_holds_its_printer_until_stopped(store: FarmStore) -> None:
    printing, starting, waiting = add(store, "p"), add(store, "s"), add(store, "w")
    store.set_auto_clear("P2", True)
    assert store.claim("P1", anything, "me") is not None
    store.started(printing.id)
    assert store.claim("P2", anything, "me") is not None
    cancelled = store.cancel(printing.id, "wrong colour")
    assert (cancelled.state, cancelled.printer, cancelled.reason) == (
        JobState.CANCELLED,
        "P1",
        "wrong colour",
    )
    store.cancel(starting.id)
    assert ids(store.to_stop()) == [printing.id, starting.id]
    assert store.active("P1") is None
    assert store.claim("P1", anything, "me") is None  # the print is still running
    assert store.claim("P2", anything, "me") is None
    store.stopped(printing.id)  # it had printed: the bed needs clearing
    store.stopped(starting.id)  # it never printed: P2 is free at once
    assert store.to_stop() == []
    assert store.settings("P1").bed_clear_needed
    assert not store.settings("P2").bed_clear_needed
    got = store.claim("P2", anything, "me")
    assert got is not None and got.id == waiting.id
    with pytest.raises(JobStateError, match="no printer to stop"):
        store.stopped(printing.id)
    plain = store.cancel(add(store).id)
    assert plain.printer == "" and store.to_stop() == []


# --- history ----------------------------------------------------------------------------


def test_history_keeps_ended_jobs_by_printer_and_time(store: FarmStore, clock: Clock) -> None:
    store.set_auto_clear("P1", True)
    store.set_auto_clear("P2", True)
    ended: list[Job] = []
    for printer in ("P1", "P2", "P1"):
        job = add(store)
        assert store.claim(printer, anything, "me") is not None
        store.started(job.id)
        ended.append(store.finished(job.id))
    cancelled = store.cancel(add(store).id, "not needed")
    assert store.history() == [*ended, cancelled]
    assert store.history(printer="P1") == [ended[0], ended[2]]
    assert ended[1].finished_at is not None
    assert store.history(since=ended[1].finished_at) == [ended[1], ended[2], cancelled]
    assert store.history(printer="P2", since=ended[2].finished_at) == []
    assert len(store.jobs()) == 4  # nothing was deleted


# --- printers' settings -----------------------------------------------------------------


def test_printer_settings(store: FarmStore) -> None:
    assert store.settings("P1") == PrinterSettings("P1", False, False, ())
    assert store.all_settings() == []
    assert store.set_auto_clear("P1", True).auto_clear
    tagged = store.set_tags("P1", [" shelf A ", "PLA only", "shelf A"])
    assert tagged == PrinterSettings("P1", True, False, ("shelf A", "PLA only"))
    store.need_bed_clear("P2")
    assert store.all_settings() == [tagged, PrinterSettings("P2", False, True, ())]
    assert store.set_tags("P1", []).tags == ()
    with pytest.raises(ConfigurationError, match="tag is empty"):
        store.set_tags("P1", ["ok", "  "])
    with pytest.raises(ConfigurationError, match="longer than 32"):
        store.set_tags("P1", ["x" * 33])
    with pytest.raises(ConfigurationError, match="at most 16 tags"):
        store.set_tags("P1", [str(n) for n in range(17)])
    with pytest.raises(ConfigurationError, match="printer serial"):
        store.settings("P1\x1b[2J")
    assert store.settings("P1").tags == ()


def test_a_reopened_store_has_everything(store_url: str) -> None:
    with FarmStore(store_url) as first:
        job = first.add_jobs("/a.3mf", "", 1, "x", ANY, REQ, copies=2)[0]
        first.set_tags("P1", ["kept"])
        assert first.claim("P1", anything, "me") is not None
    with FarmStore(store_url) as second:
        assert second.job(job.id).state is JobState.STARTING
        assert second.settings("P1").tags == ("kept",)
        assert len(second.jobs()) == 2


# --- files, URLs and secrets ------------------------------------------------------------


def test_the_default_database_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    old = os.umask(0)  # the file must not depend on a careful umask
    try:
        with FarmStore() as store:
            add(store)
            assert store.url == f"sqlite:///{tmp_path / 'state' / 'bambulab' / 'farm.db'}"
    finally:
        os.umask(old)
    folder = tmp_path / "state" / "bambulab"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(p.name for p in folder.iterdir())
    assert "farm.db" in files
    for name in files:  # farm.db, and the WAL's -wal and -shm while they exist
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:hunter2hunter@db/farm", "unsupported database 'mysql'"),
        ("postgresql+psycopg2://u:hunter2hunter@db/farm", "unsupported database"),
        ("sqlite://", "needs a file"),
        ("sqlite:///:memory:", "needs a file"),
        ("no url at all", "not a database URL"),
        ("postgresql://u:hunter2hunter@db:port/farm", "not a database URL"),
    ],
)
def test_bad_urls_are_one_clear_line(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        FarmStore(url)
    text = str(refused.value)
    assert message in text and "\n" not in text
    assert "hunter2hunter" not in text


def assert_secret_nowhere(error: BaseException, secret: str) -> None:
    shown = "".join(traceback.format_exception(error))
    assert secret not in shown and secret not in repr(error)


def test_an_unreachable_postgresql_is_one_line_without_the_password() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    secret = "s3cret-pass"
    for url in (
        f"postgresql://farm:{secret}@127.0.0.1:{port}/farm",
        f"postgresql://farm@127.0.0.1:{port}/farm?password={secret}",
    ):
        with pytest.raises(TransportError) as refused:
            FarmStore(url)
        text = str(refused.value)
        assert text.startswith("farm database postgresql://farm") and "\n" not in text
        assert "cannot connect" in text and "refused" in text.lower()
        assert_secret_nowhere(refused.value, secret)


@needs("postgres")
def test_a_wrong_password_is_refused_without_showing_either(
    pg_cluster: tuple[str, str],
) -> None:
    url, right = pg_cluster
    without_file = url.split("?")[0]
    wrong = "wrong-" + right[:6]
    with pytest.raises(TransportError) as refused:
        FarmStore(without_file.replace("farm@", f"farm:{wrong}@"))
    assert "password authentication failed" in str(refused.value)
    assert_secret_nowhere(refused.value, wrong)
    with FarmStore(without_file.replace("farm@", f"farm:{right}@")) as store:
        assert right not in repr(store) and right not in store.url
        assert store.url.startswith("postgresql://farm:***@127.0.0.1:")
        assert store.engine_name == "postgresql"


# --- the PostgreSQL binary: found off PATH, or skipped with one line --------------------


@needs("postgres")
def test_postgres_is_found_where_debian_puts_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    found = binaries.binary("postgres").path()
    assert found is not None and found.startswith("/usr/lib/postgresql/")
    assert found.endswith("/bin/postgres")
    monkeypatch.setenv("BAMBU_TEST_HIDE", "postgres")
    assert binaries.binary("postgres").path() is None


def test_without_postgres_only_its_tests_are_skipped_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "BAMBU_TEST_HIDE"}}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            # plugins these tests do not use: a third of the start-up time
            "-p",
            "no:schemathesis",
            "-p",
            "no:hypothesispytest",
            "-p",
            "no:anyio",
            "tests/farm/test_store.py",
            "-k",
            "reopened or found_where",
        ],
        cwd=ROOT,
        env={**env, "BAMBU_TEST_HIDE": "postgres"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 2 skipped" in done.stdout, done.stdout
    summary = [line for line in done.stdout.splitlines() if "not installed:" in line]
    assert summary == ["skipped, not installed: postgres (2 tests; apt-get install postgresql)"], (
        done.stdout
    )
