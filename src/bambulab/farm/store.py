"""The farm's durable queue: jobs, their claims by printers, printers' farm settings, history.

One set of SQLAlchemy 2 Core queries for two engines: an embedded SQLite file
(the default, ``farm.db`` in the user's state directory) and PostgreSQL by URL,
so that several farm instances can share one queue.

How two dispatchers never start one job twice, nor two jobs on one printer:

* **SQLite**: every writing transaction opens with ``BEGIN IMMEDIATE``, which
  takes the file's one write lock *before* reading. A claim's read, check
  and write therefore never interleave with another writer's, in this
  process or another one on the same file. Readers go on meanwhile (WAL).
* **PostgreSQL** (read committed): a claim first locks its printer's row
  (``SELECT ... FOR UPDATE``): two claims for one printer queue up, and the
  second sees the first one's job. It then reads candidate jobs with
  ``FOR UPDATE SKIP LOCKED``: claims for other printers pass over the rows
  another dispatcher is looking at instead of waiting for them.
* Both: every transition is an ``UPDATE`` guarded by the state it expects,
  and a partial unique index allows one active (starting or printing) job
  per printer, so even a broken lock could not store two.

A process killed at any point loses nothing: a transaction is committed
whole or not at all, and a job it had claimed stays ``starting`` (with the
owner and time of the claim) until the dispatcher that recovers looks at the
printer and calls :meth:`FarmStore.started` or :meth:`FarmStore.requeue`.

Ended jobs are kept as history (statistics read :meth:`FarmStore.history`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, Engine, Row, make_url

from ..errors import BambuError, ConfigurationError, TransportError
from ..paths import PRIVATE_FILE, private_dir
from ..safetext import visible
from .models import (
    ACTIVE_STATES,
    END_STATES,
    Filament,
    Job,
    JobState,
    Requirements,
    Target,
)

__all__ = [
    "DATABASE_FILE_NAME",
    "FarmStore",
    "JobStateError",
    "PrinterSettings",
    "QueueError",
    "UnknownJobError",
    "default_database_path",
]

DATABASE_FILE_NAME = "farm.db"

# Jobs still waiting in the queue (ordered, movable, cancellable without a printer).
QUEUE_STATES = frozenset({JobState.QUEUED, JobState.HELD})

# How many candidate jobs a claim reads (and, on PostgreSQL, locks: other dispatchers
# pass over them meanwhile) at a time: a few first, as the head of the queue usually fits.
_CLAIM_BATCH_FIRST = 4
_CLAIM_BATCH_MAX = 64
# Limits of what is stored (PostgreSQL enforces the column sizes; SQLite would not).
_NAME_LIMIT = 255
_SERIAL_LIMIT = 64
_OWNER_LIMIT = 128
_REASON_LIMIT = 1000
_TAG_LIMIT = 32
_TAGS_LIMIT = 16
_COPIES_LIMIT = 1000
# Deadlines: connecting, waiting for a lock, one statement, a transaction left open.
_CONNECT_TIMEOUT_S = 10
_SQLITE_BUSY_TIMEOUT_S = 30.0
_PG_SETTINGS = {
    "lock_timeout": "15s",
    "statement_timeout": "30s",
    "idle_in_transaction_session_timeout": "60s",
}
_DETAIL_LIMIT = 200


# --- errors -----------------------------------------------------------------------------


class QueueError(BambuError):
    """The queue refused an operation (one line, says which job and why)."""


class UnknownJobError(QueueError):
    """No job with this id; ``job_id`` says which."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"no job {job_id} in the farm queue")
        self.job_id = job_id


class JobStateError(QueueError):
    """The job is in a state that does not allow the operation; ``job_id`` and ``state``."""

    def __init__(self, message: str, *, job_id: int, state: JobState) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.state = state


# --- printers' farm settings ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrinterSettings:
    """What the farm keeps about one printer.

    ``auto_clear``: the printer clears its own bed (a belt printer, a plate
    changer), so a job may follow another without a person. Otherwise a job
    that ends sets ``bed_clear_needed`` and the printer takes no job until
    someone confirms the bed is clear. ``tags`` group printers (a location...).
    """

    serial: str
    auto_clear: bool = False
    bed_clear_needed: bool = False
    tags: tuple[str, ...] = ()


# --- schema -----------------------------------------------------------------------------

metadata = sa.MetaData()

jobs_table = sa.Table(
    "farm_jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(_NAME_LIMIT), nullable=False),
    sa.Column("file", sa.Text, nullable=False),
    sa.Column("file_md5", sa.String(64), nullable=False),
    sa.Column("plate", sa.Integer, nullable=False),
    sa.Column("target_kind", sa.String(16), nullable=False),
    sa.Column("target_value", sa.String(_SERIAL_LIMIT), nullable=False),
    sa.Column("requirements", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("position", sa.Double, nullable=False),
    sa.Column("grp", sa.String(32), nullable=False),
    sa.Column("printer", sa.String(_SERIAL_LIMIT), nullable=False),
    sa.Column("owner", sa.String(_OWNER_LIMIT), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    # cancelled while starting or printing: the dispatcher still has to stop the printer
    sa.Column("stop_pending", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("claimed_at", sa.Double, nullable=True),
    sa.Column("started_at", sa.Double, nullable=True),
    sa.Column("finished_at", sa.Double, nullable=True),
)
_J = jobs_table.c
_ACTIVE_VALUES = sorted(s.value for s in ACTIVE_STATES)
_QUEUE_VALUES = sorted(s.value for s in QUEUE_STATES)
_END_VALUES = sorted(s.value for s in END_STATES)

sa.Index("farm_jobs_queue_order", _J.state, _J.priority.desc(), _J.position, _J.id)
sa.Index("farm_jobs_by_printer", _J.printer, _J.state)
sa.Index("farm_jobs_by_end", _J.finished_at)
# One active job per printer, as a constraint of the database itself.
sa.Index(
    "farm_jobs_one_active_per_printer",
    _J.printer,
    unique=True,
    sqlite_where=_J.state.in_(_ACTIVE_VALUES),
    postgresql_where=_J.state.in_(_ACTIVE_VALUES),
)

printers_table = sa.Table(
    "farm_printers",
    metadata,
    sa.Column("serial", sa.String(_SERIAL_LIMIT), primary_key=True),
    sa.Column("auto_clear", sa.Boolean, nullable=False),
    sa.Column("bed_clear_needed", sa.Boolean, nullable=False),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)
_P = printers_table.c


# --- where the default database lives ---------------------------------------------------


def default_database_path() -> Path:
    """``$XDG_STATE_HOME/bambulab/farm.db`` (``~/.local/state/bambulab/farm.db`` unset)."""
    base = os.environ.get("XDG_STATE_HOME", "").strip()
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "bambulab" / DATABASE_FILE_NAME


# --- the store --------------------------------------------------------------------------


class FarmStore:
    """The farm's queue and printer settings in SQLite (default) or PostgreSQL.

    ``url``: ``None`` for ``farm.db`` in the user's state directory,
    ``sqlite:///path/to/farm.db``, or ``postgresql://user:password@host/db``
    (driven by psycopg 3). Tables are created when missing. Safe to share
    between threads; several processes or farm instances may open the same
    database. Every method is one transaction.
    """

    def __init__(self, url: str | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        parsed, self._secrets = _parse_url(url)
        self._shown = _shown_url(parsed)
        self._sqlite = parsed.get_backend_name() == "sqlite"
        if self._sqlite:
            self._engine = _sqlite_engine(parsed)
        else:
            self._engine = _postgresql_engine(parsed)
        try:
            self._create_tables()
        except BaseException:
            self._engine.dispose()
            raise

    @property
    def url(self) -> str:
        """The database's URL without its password."""
        return self._shown

    @property
    def engine_name(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return "sqlite" if self._sqlite else "postgresql"

    def __repr__(self) -> str:
        return f"FarmStore({self._shown!r})"

    def close(self) -> None:
        """Close every pooled connection (the store is unusable afterwards)."""
        self._engine.dispose()

    def __enter__(self) -> FarmStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- adding and reading jobs --------------------------------------------------------

    def add_jobs(
        self,
        file: str,
        file_md5: str,
        plate: int,
        name: str,
        target: Target,
        requirements: Requirements,
        *,
        copies: int = 1,
        priority: int = 0,
        held: bool = False,
    ) -> list[Job]:
        """Queue ``copies`` jobs of one plate (``held``: kept from dispatch until released).

        Copies share a new ``group``; they go to the end of their priority.
        """
        if not 1 <= copies <= _COPIES_LIMIT:
            raise ConfigurationError(f"copies must be 1 to {_COPIES_LIMIT}, not {copies}")
        if plate < 1:
            raise ConfigurationError(f"plate numbers start at 1, not {plate}")
        _check_text("job name", name, _NAME_LIMIT)
        _check_text("file MD5", file_md5, 64, empty=True)
        if target.kind != "any":
            _check_serial(target.value)
        group = uuid.uuid4().hex if copies > 1 else ""
        state = JobState.HELD if held else JobState.QUEUED
        encoded = _requirements_json(requirements)
        with self._write("add jobs") as conn:
            now = self._clock()
            last = conn.execute(sa.select(sa.func.max(_J.position))).scalar()
            base = math.floor(last or 0.0)
            ids = []
            for n in range(1, copies + 1):
                done = conn.execute(
                    sa.insert(jobs_table).values(
                        name=name,
                        file=file,
                        file_md5=file_md5,
                        plate=plate,
                        target_kind=target.kind,
                        target_value=target.value,
                        requirements=encoded,
                        state=state.value,
                        priority=int(priority),
                        position=float(base + n),
                        grp=group,
                        printer="",
                        owner="",
                        attempts=0,
                        reason="",
                        stop_pending=False,
                        created_at=now,
                        updated_at=now,
                    )
                )
                key = done.inserted_primary_key
                assert key is not None  # an INSERT of one row always has one
                ids.append(int(key[0]))
            return [self._fetch(conn, job_id) for job_id in ids]

    def job(self, job_id: int) -> Job:
        """One job, whatever its state (:class:`UnknownJobError` when there is none)."""
        with self._read("read a job") as conn:
            return self._fetch(conn, job_id)

    def jobs(self, states: Iterable[JobState] | None = None) -> list[Job]:
        """Jobs in queue order (priority first, then position), all or those in ``states``."""
        query = sa.select(jobs_table).order_by(*_QUEUE_ORDER)
        if states is not None:
            query = query.where(_J.state.in_([JobState(s).value for s in states]))
        with self._read("list jobs") as conn:
            return [_job_of(row) for row in conn.execute(query)]

    def history(self, printer: str | None = None, since: float | None = None) -> list[Job]:
        """Ended jobs (finished, failed, cancelled), oldest end first; of one printer, since."""
        query = sa.select(jobs_table).where(_J.state.in_(_END_VALUES))
        if printer is not None:
            query = query.where(_J.printer == printer)
        if since is not None:
            query = query.where(_J.finished_at >= since)
        with self._read("read the history") as conn:
            rows = conn.execute(query.order_by(_J.finished_at, _J.id))
            return [_job_of(row) for row in rows]

    def ended(self, since: float | None = None) -> list[tuple[Any, ...]]:
        """Ended jobs that printed, light (no :class:`Job` built), oldest end first; since.

        ``(id, name, printer, state, reason, requirements JSON, started_at,
        finished_at)``: what the statistics read (:mod:`bambulab.farm.stats`),
        a fraction of the cost of :meth:`history` for a long history.
        """
        query = sa.select(
            _J.id,
            _J.name,
            _J.printer,
            _J.state,
            _J.reason,
            _J.requirements,
            _J.started_at,
            _J.finished_at,
            # lower(state), the same values: SQLite would otherwise take the queue's index
            # (on state) and sort the whole history, rather than read the end's index from since
        ).where(sa.func.lower(_J.state).in_(_END_VALUES), _J.started_at.is_not(None))
        if since is not None:
            query = query.where(_J.finished_at >= since)
        with self._read("read the history") as conn:
            return [tuple(row) for row in conn.execute(query.order_by(_J.finished_at, _J.id))]

    # --- the queue: order, holding, cancelling ------------------------------------------

    def move(self, job_id: int, before_id: int | None) -> Job:
        """Put a waiting job just before another one (taking its priority), or last (``None``)."""
        with self._write("move a job") as conn:
            row = self._locked(conn, job_id)
            _require(row, QUEUE_STATES, "move", "queued or held")
            if before_id == job_id:
                return _job_of(row)
            if before_id is None:
                priority = int(row.priority)
                last = conn.execute(
                    sa.select(sa.func.max(_J.position)).where(
                        _J.state.in_(_QUEUE_VALUES), _J.priority == priority, _J.id != job_id
                    )
                ).scalar()
                position = math.floor(last or 0.0) + 1.0
            else:
                before = self._locked(conn, before_id)
                if JobState(before.state) not in QUEUE_STATES:
                    raise JobStateError(
                        f"cannot move job {job_id} before job {before_id}: "
                        f"job {before_id} is {before.state}, not waiting in the queue",
                        job_id=before_id,
                        state=JobState(before.state),
                    )
                priority = int(before.priority)
                position = self._position_before(conn, job_id, before)
            self._update(conn, row, priority=priority, position=position)
            return self._fetch(conn, job_id)

    def set_priority(self, job_id: int, priority: int) -> Job:
        """Change a waiting job's priority (higher goes first); it keeps its position."""
        with self._write("change a priority") as conn:
            row = self._locked(conn, job_id)
            _require(row, QUEUE_STATES, "reprioritise", "queued or held")
            self._update(conn, row, priority=int(priority))
            return self._fetch(conn, job_id)

    def hold(self, job_id: int) -> Job:
        """Keep a queued job in its place without dispatching it."""
        return self._simple(job_id, {JobState.QUEUED}, "hold", "queued", state=JobState.HELD)

    def release(self, job_id: int) -> Job:
        """Let a held job be dispatched again (from the place it kept)."""
        return self._simple(job_id, {JobState.HELD}, "release", "held", state=JobState.QUEUED)

    def cancel(self, job_id: int, reason: str = "") -> Job:
        """Cancel a job that has not ended.

        A waiting job simply ends. A starting or printing job ends as well,
        keeps its printer, and is listed by :meth:`to_stop` until the
        dispatcher has stopped the printer (:meth:`stopped`).
        """
        with self._write("cancel a job") as conn:
            row = self._locked(conn, job_id)
            _require(row, QUEUE_STATES | ACTIVE_STATES, "cancel", "waiting or active")
            active = JobState(row.state) in ACTIVE_STATES
            now = self._clock()
            self._update(
                conn,
                row,
                state=JobState.CANCELLED.value,
                reason=_reason(reason) or "cancelled",
                stop_pending=active,
                finished_at=now,
            )
            return self._fetch(conn, job_id)

    def to_stop(self) -> list[Job]:
        """Jobs cancelled while starting or printing whose printer was not stopped yet."""
        query = (
            sa.select(jobs_table)
            .where(_J.state == JobState.CANCELLED.value, _J.stop_pending.is_(True))
            .order_by(_J.finished_at, _J.id)
        )
        with self._read("list jobs to stop") as conn:
            return [_job_of(row) for row in conn.execute(query)]

    def stopped(self, job_id: int) -> Job:
        """The printer of a cancelled job was stopped (or was found idle): it is free again.

        A job that had started printing leaves something on the bed, so a
        printer that does not clear its own bed then waits for a bed clear.
        """
        with self._write("mark a job stopped") as conn:
            row = self._locked(conn, job_id)
            if JobState(row.state) is not JobState.CANCELLED or not row.stop_pending:
                raise JobStateError(
                    f"job {job_id} is {row.state} with no printer to stop",
                    job_id=job_id,
                    state=JobState(row.state),
                )
            self._update(conn, row, stop_pending=False)
            if row.started_at is not None:
                self._flag_bed(conn, str(row.printer))
            return self._fetch(conn, job_id)

    # --- dispatch -----------------------------------------------------------------------

    def claim(self, printer: str, fits: Callable[[Job], bool], owner: str) -> Job | None:
        """Give ``printer`` the first queued job that ``fits``, set ``starting``; or ``None``.

        One transaction: nothing is claimed while the printer has an active
        job (or a cancelled one still to stop) or waits for a bed clear. Jobs
        targeted at another printer are skipped here; the model and the
        filaments are for ``fits`` to judge (it is called inside the
        transaction, so it must be quick and must not call the store).
        """
        _check_serial(printer)
        _check_text("owner", owner, _OWNER_LIMIT, empty=True)
        with self._write("claim a job") as conn:
            # The printer's row is the lock that serialises claims for this printer.
            locking = sa.select(printers_table).where(_P.serial == printer).with_for_update()
            settings = conn.execute(locking).first()
            if settings is None:  # a printer's first claim
                self._ensure_printer(conn, printer)
                settings = conn.execute(locking).one()
            if settings.bed_clear_needed:
                return None
            busy = conn.execute(
                sa.select(_J.id)
                .where(
                    _J.printer == printer,
                    sa.or_(
                        _J.state.in_(_ACTIVE_VALUES),
                        sa.and_(_J.state == JobState.CANCELLED.value, _J.stop_pending.is_(True)),
                    ),
                )
                .limit(1)
            ).first()
            if busy is not None:
                return None
            after: Row[Any] | None = None
            batch = _CLAIM_BATCH_FIRST
            while True:
                query = sa.select(jobs_table).where(
                    _J.state == JobState.QUEUED.value,
                    sa.or_(_J.target_kind != "printer", _J.target_value == printer),
                )
                if after is not None:
                    query = query.where(_after_in_queue(after))
                query = query.order_by(*_QUEUE_ORDER).limit(batch)
                if not self._sqlite:
                    query = query.with_for_update(skip_locked=True)
                rows = conn.execute(query).all()
                for row in rows:
                    if not fits(_job_of(row)):
                        continue
                    now = self._clock()
                    claimed = conn.execute(
                        sa.update(jobs_table)
                        .where(_J.id == row.id, _J.state == JobState.QUEUED.value)
                        .values(
                            state=JobState.STARTING.value,
                            printer=printer,
                            owner=owner,
                            claimed_at=now,
                            attempts=_J.attempts + 1,
                            updated_at=now,
                        )
                        .returning(*jobs_table.c)
                    ).first()
                    if claimed is not None:
                        return _job_of(claimed)
                if len(rows) < batch:
                    return None
                after = rows[-1]
                batch = min(batch * 4, _CLAIM_BATCH_MAX)

    def started(self, job_id: int) -> Job:
        """The claimed job is printing (the printer said so)."""
        with self._write("mark a job printing") as conn:
            row = self._locked(conn, job_id)
            _require(row, {JobState.STARTING}, "mark as printing", "starting")
            self._update(
                conn, row, state=JobState.PRINTING.value, reason="", started_at=self._clock()
            )
            return self._fetch(conn, job_id)

    def start_failed(self, job_id: int, reason: str, max_attempts: int = 3) -> Job:
        """The start did not happen: back in the queue with ``reason``, or failed after the last."""
        if max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, not {max_attempts}")
        with self._write("record a failed start") as conn:
            row = self._locked(conn, job_id)
            _require(row, {JobState.STARTING}, "record a failed start of", "starting")
            why = _reason(reason) or "the print did not start"
            if int(row.attempts) >= max_attempts:
                self._update(
                    conn,
                    row,
                    state=JobState.FAILED.value,
                    reason=f"{why} (after {row.attempts} attempts)",
                    finished_at=self._clock(),
                )
            else:
                self._update(conn, row, **_back_in_queue(why))
            return self._fetch(conn, job_id)

    def requeue(self, job_id: int, reason: str) -> Job:
        """Return a ``starting`` job to its place in the queue (it never became a print)."""
        with self._write("requeue a job") as conn:
            row = self._locked(conn, job_id)
            _require(row, {JobState.STARTING}, "requeue", "starting")
            self._update(conn, row, **_back_in_queue(_reason(reason) or "requeued"))
            return self._fetch(conn, job_id)

    def finished(self, job_id: int) -> Job:
        """The job's print finished; a printer that does not clear its bed now waits for one."""
        return self._end(job_id, JobState.FINISHED, "")

    def failed(self, job_id: int, reason: str) -> Job:
        """The job's print failed; its printer waits for a bed clear unless it clears its own."""
        return self._end(job_id, JobState.FAILED, _reason(reason) or "failed")

    def active(self, printer: str) -> Job | None:
        """The printer's starting or printing job, if any."""
        query = sa.select(jobs_table).where(_J.printer == printer, _J.state.in_(_ACTIVE_VALUES))
        with self._read("read a printer's job") as conn:
            row = conn.execute(query).first()
            return None if row is None else _job_of(row)

    def starting(self, owner: str | None = None) -> list[Job]:
        """Jobs claimed but not yet seen printing (all, or one dispatcher's), oldest claim first.

        After a crash the dispatcher looks at each one's printer: printing
        this job (:meth:`started`), or not (:meth:`requeue`).
        """
        query = sa.select(jobs_table).where(_J.state == JobState.STARTING.value)
        if owner is not None:
            query = query.where(_J.owner == owner)
        with self._read("list starting jobs") as conn:
            rows = conn.execute(query.order_by(_J.claimed_at, _J.id))
            return [_job_of(row) for row in rows]

    # --- printers' settings -------------------------------------------------------------

    def settings(self, serial: str) -> PrinterSettings:
        """A printer's farm settings (the defaults for a printer never configured)."""
        _check_serial(serial)
        with self._read("read printer settings") as conn:
            row = conn.execute(sa.select(printers_table).where(_P.serial == serial)).first()
            return PrinterSettings(serial) if row is None else _settings_of(row)

    def all_settings(self) -> list[PrinterSettings]:
        """Every printer the farm has settings for, by serial."""
        with self._read("read printer settings") as conn:
            rows = conn.execute(sa.select(printers_table).order_by(_P.serial))
            return [_settings_of(row) for row in rows]

    def set_auto_clear(self, serial: str, auto_clear: bool) -> PrinterSettings:
        """Whether the printer clears its own bed (no confirmation between jobs)."""
        return self._set_printer(serial, auto_clear=bool(auto_clear))

    def set_tags(self, serial: str, tags: Iterable[str]) -> PrinterSettings:
        """The printer's tags (location, group...): stripped, duplicates dropped, order kept."""
        clean: list[str] = []
        for tag in tags:
            tag = tag.strip()
            _check_text("tag", tag, _TAG_LIMIT)
            if tag not in clean:
                clean.append(tag)
        if len(clean) > _TAGS_LIMIT:
            raise ConfigurationError(f"a printer has at most {_TAGS_LIMIT} tags")
        return self._set_printer(serial, tags=json.dumps(clean))

    def need_bed_clear(self, serial: str) -> PrinterSettings:
        """The printer's bed must be cleared before it takes another job."""
        return self._set_printer(serial, bed_clear_needed=True)

    def bed_cleared(self, serial: str) -> PrinterSettings:
        """Someone cleared the printer's bed: it may take jobs again."""
        return self._set_printer(serial, bed_clear_needed=False)

    # --- internals ----------------------------------------------------------------------

    def _create_tables(self) -> None:
        """The tables and indexes, unless they exist (two instances may start at once)."""
        for attempt in (1, 2):
            try:
                with self._write("connect") as conn:
                    metadata.create_all(conn)
                return
            except QueueError:
                # PostgreSQL: another instance created a table between the check and
                # the CREATE; the second look finds it. (SQLite writes one at a time.)
                if attempt == 2 or self._sqlite:
                    raise

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Database errors as one line that names the database without its password."""
        try:
            yield
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            raise TransportError(
                f"farm database {self._shown}: cannot {doing}: {self._detail(exc)}",
                url=self._shown,
            ) from exc
        except sa_exc.SQLAlchemyError as exc:
            raise QueueError(
                f"farm database {self._shown}: cannot {doing}: {self._detail(exc)}"
            ) from exc

    def _detail(self, exc: sa_exc.SQLAlchemyError) -> str:
        original = getattr(exc, "orig", None) or exc
        lines = [line.strip() for line in str(original).splitlines() if line.strip()]
        text = lines[0] if lines else type(original).__name__
        # the server's words, shown on terminals and in logs: no control characters
        return visible(_scrub(text, self._secrets))[:_DETAIL_LIMIT]

    @contextmanager
    def _write(self, doing: str) -> Iterator[Connection]:
        with self._guard(doing), self._engine.connect() as conn:
            if self._sqlite:
                conn.execution_options(farm_immediate=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self, doing: str) -> Iterator[Connection]:
        with self._guard(doing), self._engine.connect() as conn, conn.begin():
            yield conn

    def _fetch(self, conn: Connection, job_id: int) -> Job:
        row = conn.execute(sa.select(jobs_table).where(_J.id == job_id)).first()
        if row is None:
            raise UnknownJobError(job_id)
        return _job_of(row)

    def _locked(self, conn: Connection, job_id: int) -> Row[Any]:
        """The job's row, locked until the transaction ends (SQLite: the write lock is held)."""
        row = conn.execute(sa.select(jobs_table).where(_J.id == job_id).with_for_update()).first()
        if row is None:
            raise UnknownJobError(job_id)
        return row

    def _update(self, conn: Connection, row: Row[Any], **values: Any) -> None:
        done = conn.execute(
            sa.update(jobs_table)
            .where(_J.id == row.id, _J.state == row.state)
            .values(updated_at=self._clock(), **values)
        )
        if done.rowcount != 1:  # cannot happen under the row lock; refuse rather than guess
            raise QueueError(f"job {row.id} changed while it was being updated")

    def _simple(
        self, job_id: int, allowed: set[JobState], verb: str, wanted: str, *, state: JobState
    ) -> Job:
        with self._write(f"{verb} a job") as conn:
            row = self._locked(conn, job_id)
            _require(row, allowed, verb, wanted)
            self._update(conn, row, state=state.value)
            return self._fetch(conn, job_id)

    def _end(self, job_id: int, state: JobState, reason: str) -> Job:
        verb = "finish" if state is JobState.FINISHED else "fail"
        with self._write(f"{verb} a job") as conn:
            row = self._locked(conn, job_id)
            _require(row, ACTIVE_STATES, verb, "starting or printing")
            self._update(conn, row, state=state.value, reason=reason, finished_at=self._clock())
            # in the same transaction: a crash cannot leave a full bed unflagged
            self._flag_bed(conn, str(row.printer))
            return self._fetch(conn, job_id)

    def _flag_bed(self, conn: Connection, serial: str) -> None:
        self._ensure_printer(conn, serial)
        conn.execute(
            sa.update(printers_table)
            .where(_P.serial == serial, _P.auto_clear.is_(False))
            .values(bed_clear_needed=True, updated_at=self._clock())
        )

    def _position_before(self, conn: Connection, job_id: int, before: Row[Any]) -> float:
        """A position between ``before`` and the waiting job ahead of it, in its priority."""
        for _ in range(2):
            ahead = conn.execute(
                sa.select(_J.position)
                .where(
                    _J.state.in_(_QUEUE_VALUES),
                    _J.priority == before.priority,
                    _J.id != job_id,
                    _J.id != before.id,
                    sa.or_(
                        _J.position < before.position,
                        sa.and_(_J.position == before.position, _J.id < before.id),
                    ),
                )
                .order_by(_J.position.desc(), _J.id.desc())
                .limit(1)
            ).scalar()
            low = float(before.position) - 2.0 if ahead is None else float(ahead)
            position = (low + float(before.position)) / 2.0
            if low < position < float(before.position):
                return position
            # Halving ran out of precision (or two jobs share a position): number the
            # priority's waiting jobs 1, 2, 3... in their order and halve again.
            before = self._renumber(conn, int(before.priority), int(before.id))
        raise QueueError(f"cannot place job {job_id} before job {before.id}")

    def _renumber(self, conn: Connection, priority: int, keep: int) -> Row[Any]:
        ids = conn.execute(
            sa.select(_J.id)
            .where(_J.state.in_(_QUEUE_VALUES), _J.priority == priority)
            .order_by(_J.position, _J.id)
            .with_for_update()
        ).scalars()
        for n, job_id in enumerate(list(ids), start=1):
            conn.execute(
                sa.update(jobs_table).where(_J.id == job_id).values(position=float(n) * 2.0)
            )
        return self._locked(conn, keep)

    def _ensure_printer(self, conn: Connection, serial: str) -> None:
        """The printer's row exists (created with the defaults, racing creators tolerated)."""
        insert = sqlite_insert if self._sqlite else postgresql_insert
        conn.execute(
            insert(printers_table)
            .values(
                serial=serial,
                auto_clear=False,
                bed_clear_needed=False,
                tags="[]",
                updated_at=self._clock(),
            )
            .on_conflict_do_nothing(index_elements=["serial"])
        )

    def _set_printer(self, serial: str, **values: Any) -> PrinterSettings:
        _check_serial(serial)
        with self._write("change printer settings") as conn:
            self._ensure_printer(conn, serial)
            conn.execute(
                sa.update(printers_table)
                .where(_P.serial == serial)
                .values(updated_at=self._clock(), **values)
            )
            row = conn.execute(sa.select(printers_table).where(_P.serial == serial)).one()
            return _settings_of(row)


_QUEUE_ORDER = (_J.priority.desc(), _J.position.asc(), _J.id.asc())


def _after_in_queue(row: Row[Any]) -> sa.ColumnElement[bool]:
    """Rows after ``row`` in queue order (keyset paging of a claim's candidates)."""
    return sa.or_(
        _J.priority < row.priority,
        sa.and_(
            _J.priority == row.priority,
            sa.or_(
                _J.position > row.position,
                sa.and_(_J.position == row.position, _J.id > row.id),
            ),
        ),
    )


def _back_in_queue(reason: str) -> dict[str, Any]:
    return {
        "state": JobState.QUEUED.value,
        "printer": "",
        "owner": "",
        "claimed_at": None,
        "reason": reason,
    }


def _require(row: Row[Any], allowed: Iterable[JobState], verb: str, wanted: str) -> None:
    state = JobState(row.state)
    if state not in set(allowed):
        raise JobStateError(
            f"cannot {verb} job {row.id}: it is {state.value} (only a {wanted} job)",
            job_id=int(row.id),
            state=state,
        )


# --- rows <-> values --------------------------------------------------------------------


def _job_of(row: Row[Any]) -> Job:
    try:
        kind = row.target_kind
        target = Target(kind, row.target_value if kind != "any" else "")
    except ValueError:
        target = Target()  # not written by this module: dispatched anywhere rather than lost
    return Job(
        id=int(row.id),
        name=row.name,
        file=row.file,
        file_md5=row.file_md5,
        plate=int(row.plate),
        target=target,
        requirements=_requirements_of(row.requirements),
        state=JobState(row.state),
        priority=int(row.priority),
        position=float(row.position),
        group=row.grp,
        printer=row.printer,
        attempts=int(row.attempts),
        reason=row.reason,
        created_at=float(row.created_at),
        updated_at=float(row.updated_at),
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _settings_of(row: Row[Any]) -> PrinterSettings:
    try:
        tags = json.loads(row.tags)
    except ValueError:
        tags = []
    return PrinterSettings(
        serial=row.serial,
        auto_clear=bool(row.auto_clear),
        bed_clear_needed=bool(row.bed_clear_needed),
        tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
    )


_FILAMENT_FIELDS = tuple(f.name for f in dataclasses.fields(Filament))


def _requirements_json(requirements: Requirements) -> str:
    return json.dumps(
        {
            "model_id": requirements.model_id,
            "nozzle_diameter": requirements.nozzle_diameter,
            "filaments": [dataclasses.asdict(f) for f in requirements.filaments],
            "seconds": requirements.seconds,
            "grams": requirements.grams,
        },
        separators=(",", ":"),
    )


def _requirements_of(text: str) -> Requirements:
    """Requirements from their stored JSON (what this module wrote; unknown keys ignored)."""
    try:
        data = json.loads(text)
    except ValueError:
        return Requirements()
    if not isinstance(data, dict):
        return Requirements()
    filaments = tuple(
        Filament(**{k: v for k, v in item.items() if k in _FILAMENT_FIELDS})
        for item in data.get("filaments") or ()
        if isinstance(item, dict)
    )
    nozzle = data.get("nozzle_diameter")
    return Requirements(
        model_id=str(data.get("model_id") or ""),
        nozzle_diameter=float(nozzle) if isinstance(nozzle, int | float) else None,
        filaments=filaments,
        seconds=float(data.get("seconds") or 0.0),
        grams=float(data.get("grams") or 0.0),
    )


def _reason(text: str) -> str:
    """A reason as stored: one line, capped."""
    return " ".join(str(text).split())[:_REASON_LIMIT]


def _check_text(what: str, value: str, limit: int, *, empty: bool = False) -> None:
    if not isinstance(value, str):
        raise ConfigurationError(f"the {what} must be text")
    if not value and not empty:
        raise ConfigurationError(f"the {what} is empty")
    if len(value) > limit:
        raise ConfigurationError(f"the {what} is longer than {limit} characters")


def _check_serial(serial: str) -> None:
    _check_text("printer serial", serial, _SERIAL_LIMIT)
    if not serial.isprintable() or any(char.isspace() for char in serial):
        raise ConfigurationError("a printer serial has no spaces or control characters")


# --- URLs and engines -------------------------------------------------------------------

_URL_HELP = "sqlite:///path/to/farm.db or postgresql://user:password@host:port/database"


def _parse_url(url: str | None) -> tuple[URL, tuple[str, ...]]:
    """The SQLAlchemy URL to open, and the secrets it holds (to scrub from messages)."""
    if url is None:
        return URL.create("sqlite", database=str(default_database_path())), ()
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError, TypeError):
        raise ConfigurationError(f"not a database URL (use {_URL_HELP})") from None
    secrets = tuple(
        s for s in (parsed.password, *_query_values(parsed)) if isinstance(s, str) and len(s) >= 3
    )
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigurationError(f"the farm's SQLite database needs a file ({_URL_HELP})")
        return parsed.set(drivername="sqlite"), secrets
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg"), secrets
    raise ConfigurationError(
        f"unsupported database {parsed.drivername!r}: the farm uses SQLite or PostgreSQL "
        f"with psycopg 3 ({_URL_HELP})"
    )


def _query_values(parsed: URL) -> list[str]:
    values: list[str] = []
    for value in parsed.query.values():
        values.extend([value] if isinstance(value, str) else list(value))
    return values


def _shown_url(parsed: URL) -> str:
    """The URL as messages and reprs show it: no password, no query (it may hold one)."""
    if parsed.get_backend_name() == "sqlite":
        return f"sqlite:///{parsed.database}"
    shown = parsed.set(drivername="postgresql", password=None, query={})
    return shown.render_as_string(hide_password=True)


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _sqlite_engine(parsed: URL) -> Engine:
    path = Path(str(parsed.database)).expanduser()
    try:
        private_dir(path.parent)
        # Created owner-only before SQLite sees it; SQLite gives its -wal and -shm
        # files the mode of the database file.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the farm database {path}: {exc.strerror or exc}"
        ) from exc
    else:
        os.fchmod(fd, PRIVATE_FILE)
        os.close(fd)
    engine = sa.create_engine(
        URL.create("sqlite", database=str(path)),
        connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # sqlite3 would BEGIN (deferred) on its own; the store says which BEGIN it needs.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed claim survives a power cut too, not only a killed process
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock before it reads: its checks stay true until commit.
        immediate = conn.get_execution_options().get("farm_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _postgresql_engine(parsed: URL) -> Engine:
    settings = " ".join(f"-c {name}={value}" for name, value in _PG_SETTINGS.items())
    try:
        return sa.create_engine(
            parsed,
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": _CONNECT_TIMEOUT_S,
                "options": settings,
                # a silent server is noticed (no read waits forever on a dead peer)
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
            },
        )
    except ModuleNotFoundError as exc:  # pragma: no cover - the farm extra brings psycopg
        raise ConfigurationError(
            "PostgreSQL needs psycopg 3: pip install 'bambulab[farm]'"
        ) from exc
