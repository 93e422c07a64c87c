"""Farm statistics: one list of prints from the farm's history and the cloud's tasks, totals.

Sans-IO: the caller reads the farm's ended jobs (:meth:`FarmStore.history
<bambulab.farm.store.FarmStore.history>`) and the cloud's task records
(:class:`~bambulab.models.cloud.Task`) and hands them here.

* :func:`from_job` / :func:`from_task` make a :class:`PrintRecord` of each
  (``None`` for what never printed: a job cancelled in the queue or whose
  start failed, a task still running);
* :func:`merge` counts a print the farm started and the cloud also recorded
  once: same printer, start times within ``tolerance`` seconds. The farm's
  record wins; its grams come from the cloud's AMS detail when the farm has
  none;
* :func:`aggregate` totals them per printer and for the farm: prints,
  finished, failed, cancelled, success rate (finished over finished and
  failed: a print the user cancelled is no failure), printing hours, grams
  by (filament type, colour), failures by HMS / print-error code.

Grams: a finished farm print used what the 3MF says; a failed or cancelled
one the same share of it as of the planned time it ran (an estimate); a
cloud task what its AMS detail says (else its ``weight``, type unknown).

A failed job's ``reason`` carries the printer's code when the dispatcher saw
one (``HMS 0300_8016: The nozzle is clogged with filament.``):
:func:`failure_code` reads it back, :func:`code_info` gives its text and
wiki page where the library knows them.

:class:`FarmCounters` keeps the Prometheus totals of the farm's own history
up to date incrementally (only the jobs ended since the last read are
fetched), so a scrape stays cheap with a long history. The SVG charts of the
statistics page are drawn here (:func:`svg_prints`, :func:`svg_grams`,
:func:`svg_failures`), and the CSV export written (:func:`csv_prints`,
:func:`csv_printers`).
"""

from __future__ import annotations

import csv
import functools
import html
import io
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from ..models.printer import PRINT_ERRORS, HMSEntry
from ..safetext import visible
from .models import Job, JobState

__all__ = [
    "DEDUP_TOLERANCE",
    "EndedJob",
    "FarmCounters",
    "FarmStats",
    "FarmTotals",
    "PrintRecord",
    "PrinterStats",
    "aggregate",
    "code_info",
    "csv_printers",
    "csv_prints",
    "failure_code",
    "from_ended",
    "from_job",
    "from_task",
    "merge",
    "stats_json",
    "svg_failures",
    "svg_grams",
    "svg_prints",
]

DEDUP_TOLERANCE = 300.0  # seconds between the farm's and the cloud's start of one print
RESULTS = ("finished", "failed", "cancelled")
NO_CODE = "unknown"  # the failure code of a failed print that carried none
_CODE = re.compile(r"\bHMS[ _]([0-9A-Fa-f]{4}(?:_[0-9A-Fa-f]{4}){1,3})\b")
_HEX_COLOUR = re.compile(r"^#?([0-9A-Fa-f]{6})(?:[0-9A-Fa-f]{2})?$")
_TASK_RESULTS = {2: "finished", 3: "failed"}

Grams = tuple[tuple[str, str, float], ...]  # (filament type, #RRGGBB, grams), sorted


# --- one print ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrintRecord:
    """One print that ran on a printer (from the farm, the cloud, or both)."""

    printer: str  # serial
    name: str  # the printer's name ("" when unknown)
    title: str  # the job's name or the task's title
    start: float
    end: float
    result: str  # finished, failed, cancelled
    seconds: float
    grams: Grams = ()
    code: str = ""  # of a failure: XXXX_XXXX or XXXX_XXXX_XXXX_XXXX ("" when none)
    source: str = "farm"  # farm, cloud, farm+cloud
    job_id: int | None = None
    task_id: str = ""

    @property
    def total_grams(self) -> float:
        return sum(g for _, _, g in self.grams)


def colour_of(text: Any) -> str:
    """``#RRGGBB`` (upper case) of ``#RRGGBBAA``, ``RRGGBBAA``, ``#RRGGBB``...; ``""`` if none."""
    found = _HEX_COLOUR.match(str(text or "").strip())
    return f"#{found.group(1).upper()}" if found else ""


def failure_code(reason: str) -> str:
    """The printer's code a failed job's reason carries (``HMS 0300_8016: ...``), or ``""``."""
    found = _CODE.search(reason or "")
    return found.group(1).upper() if found else ""


def code_info(code: str) -> tuple[str, str]:
    """(text, wiki URL) of a failure code where the library knows them (``""`` otherwise)."""
    parts = code.split("_") if code else []
    try:
        numbers = [int(p, 16) for p in parts]
    except ValueError:
        return "", ""
    if len(parts) == 4:
        entry = HMSEntry(numbers[0] << 16 | numbers[1], numbers[2] << 16 | numbers[3])
        return entry.text, entry.wiki_url
    if len(parts) == 2:
        return PRINT_ERRORS.get(code.upper(), ""), ""
    return "", ""


def _grams(items: Iterable[tuple[str, str, float]]) -> Grams:
    summed: dict[tuple[str, str], float] = defaultdict(float)
    for kind, colour, grams in items:
        if grams > 0:
            summed[(kind or "?", colour)] += grams
    return tuple(sorted((k, c, round(g, 3)) for (k, c), g in summed.items()))


class EndedJob(NamedTuple):
    """An ended job as :meth:`FarmStore.ended <bambulab.farm.store.FarmStore.ended>` reads it."""

    id: int
    name: str
    printer: str
    state: str
    reason: str
    requirements: str  # the stored JSON
    started_at: float | None
    finished_at: float | None


# (planned seconds, grams of the plate, ((type, colour, grams) a filament))
_Plan = tuple[float, float, tuple[tuple[str, str, float], ...]]


@functools.lru_cache(maxsize=4096)
def _plan(text: str) -> _Plan:
    """What a stored requirements JSON plans (copies of one file share one parse)."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return 0.0, 0.0, ()
    if not isinstance(data, dict):
        return 0.0, 0.0, ()
    filaments = tuple(
        (str(f.get("type") or "?"), colour_of(f.get("colour")), _number(f.get("grams")))
        for f in data.get("filaments") or ()
        if isinstance(f, dict)
    )
    return _number(data.get("seconds")), _number(data.get("grams")), filaments


def _record(
    job_id: int,
    title: str,
    printer: str,
    state: str,
    reason: str,
    plan: _Plan,
    start: float,
    end: float,
    name: str,
) -> PrintRecord:
    planned, plate_grams, filaments = plan
    seconds = max(0.0, end - start)
    share = 1.0
    if state != "finished":
        share = min(1.0, seconds / planned) if planned > 0 else 0.0
    if any(g > 0 for _, _, g in filaments):
        items = [(kind, colour, g * share) for kind, colour, g in filaments]
    elif plate_grams > 0:
        items = [("?", "", plate_grams * share)]
    else:
        items = []
    return PrintRecord(
        printer=printer,
        name=name,
        title=title,
        start=start,
        end=end,
        result=state,
        seconds=seconds,
        grams=_grams(items),
        code=failure_code(reason) if state == "failed" else "",
        source="farm",
        job_id=job_id,
    )


def from_ended(row: EndedJob | tuple[Any, ...], name: str = "") -> PrintRecord | None:
    """The print of a row of :meth:`FarmStore.ended`; ``None`` if it never printed."""
    job_id, title, printer, state, reason, requirements, started, finished = row
    if state not in RESULTS or started is None or not printer:
        return None
    end = float(finished if finished is not None else started)
    plan = _plan(requirements or "")
    return _record(job_id, title, printer, state, reason, plan, float(started), end, name)


def from_job(job: Job, name: str = "") -> PrintRecord | None:
    """The print a farm job was; ``None`` if it never printed (or has not ended)."""
    if job.state not in (JobState.FINISHED, JobState.FAILED, JobState.CANCELLED):
        return None
    if job.started_at is None or not job.printer:
        return None
    req = job.requirements
    plan = (
        req.seconds,
        req.grams,
        tuple((f.type, colour_of(f.colour), f.grams) for f in req.filaments),
    )
    end = job.finished_at if job.finished_at is not None else job.updated_at
    return _record(
        job.id,
        job.name,
        job.printer,
        job.state.value,
        job.reason,
        plan,
        float(job.started_at),
        float(end),
        name,
    )


def _time(text: Any) -> float | None:
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return 0.0
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number and number >= 0 else 0.0  # NaN, negatives: nothing


def from_task(task: Any) -> PrintRecord | None:
    """The print a cloud task record was (a :class:`~bambulab.models.cloud.Task`); ``None``
    for one that has not ended, or has no printer or start."""
    status = task.status
    if isinstance(status, str) and status.strip().isdigit():
        status = int(status)
    result = _TASK_RESULTS.get(status) if isinstance(status, int) else None
    start = _time(task.start_time)
    if result is None or start is None or not task.device_id:
        return None
    end = _time(task.end_time)
    cost = _number(task.cost_time)
    seconds = cost or (max(0.0, end - start) if end is not None else 0.0)
    if end is None or end < start:
        end = start + seconds
    raw = task.raw if hasattr(task, "raw") else {}
    detail = raw.get("amsDetailMapping") if isinstance(raw, Mapping) else None
    items: list[tuple[str, str, float]] = []
    if isinstance(detail, list):
        for slot in detail:
            if isinstance(slot, Mapping):
                kind = str(slot.get("filamentType") or slot.get("targetFilamentType") or "?")
                colour = colour_of(slot.get("sourceColor") or slot.get("targetColor"))
                items.append((kind, colour, _number(slot.get("weight"))))
    if not any(g > 0 for _, _, g in items) and _number(task.weight) > 0:
        items = [("?", "", _number(task.weight))]
    return PrintRecord(
        printer=str(task.device_id),
        name=str(task.device_name or ""),
        title=str(task.title or task.design_title or ""),
        start=start,
        end=end,
        result=result,
        seconds=seconds,
        grams=_grams(items),
        source="cloud",
        task_id=str(task.id),
    )


def merge(
    farm: Iterable[PrintRecord],
    cloud: Iterable[PrintRecord],
    tolerance: float = DEDUP_TOLERANCE,
) -> list[PrintRecord]:
    """Every print once, oldest start first (see the module): the farm's record wins."""
    by_printer: dict[str, list[PrintRecord]] = defaultdict(list)
    for task in cloud:
        by_printer[task.printer].append(task)
    out: list[PrintRecord] = []
    for record in sorted(farm, key=lambda r: r.start):
        candidates = by_printer.get(record.printer, [])
        best = min(
            (t for t in candidates if abs(t.start - record.start) <= tolerance),
            key=lambda t: abs(t.start - record.start),
            default=None,
        )
        if best is None:
            out.append(record)
            continue
        candidates.remove(best)
        out.append(
            PrintRecord(
                printer=record.printer,
                name=record.name or best.name,
                title=record.title or best.title,
                start=record.start,
                end=record.end,
                result=record.result,
                seconds=record.seconds,
                grams=record.grams or best.grams,
                code=record.code,
                source="farm+cloud",
                job_id=record.job_id,
                task_id=best.task_id,
            )
        )
    for rest in by_printer.values():
        out.extend(rest)
    out.sort(key=lambda r: (r.start, r.printer))
    return out


# --- totals ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrinterStats:
    """The totals of one printer, or of the farm (``printer == ""``)."""

    printer: str
    name: str
    prints: int
    finished: int
    failed: int
    cancelled: int
    seconds: float
    grams: Grams  # (type, colour, grams), sorted
    failures: tuple[tuple[str, int], ...]  # (code, count), most first

    @property
    def success_rate(self) -> float | None:
        """Finished over finished and failed (``None`` before either)."""
        ended = self.finished + self.failed
        return self.finished / ended if ended else None

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    @property
    def total_grams(self) -> float:
        return sum(g for _, _, g in self.grams)


@dataclass(frozen=True, slots=True)
class FarmStats:
    """Per printer (by serial order) and for the whole farm."""

    printers: tuple[PrinterStats, ...]
    total: PrinterStats
    since: float | None = None


def _totals(printer: str, name: str, prints: Sequence[PrintRecord]) -> PrinterStats:
    counts = {r: 0 for r in RESULTS}
    failures: dict[str, int] = defaultdict(int)
    for p in prints:
        counts[p.result] = counts.get(p.result, 0) + 1
        if p.result == "failed":
            failures[p.code or NO_CODE] += 1
    return PrinterStats(
        printer=printer,
        name=name,
        prints=len(prints),
        finished=counts["finished"],
        failed=counts["failed"],
        cancelled=counts["cancelled"],
        seconds=round(sum(p.seconds for p in prints), 3),
        grams=_grams(g for p in prints for g in p.grams),
        failures=tuple(sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


def aggregate(
    prints: Iterable[PrintRecord],
    since: float | None = None,
    names: Mapping[str, str] | None = None,
) -> FarmStats:
    """Totals of ``prints`` that ended at or after ``since`` (all when ``None``).

    ``names`` (serial -> name) names the printers; else the records' names.
    """
    chosen = [p for p in prints if since is None or p.end >= since]
    by_printer: dict[str, list[PrintRecord]] = defaultdict(list)
    for p in chosen:
        by_printer[p.printer].append(p)
    known = dict(names or {})
    rows = []
    for serial in sorted(by_printer):
        records = by_printer[serial]
        name = known.get(serial) or next((r.name for r in records if r.name), "")
        rows.append(_totals(serial, name, records))
    return FarmStats(tuple(rows), _totals("", "farm", chosen), since)


def stats_json(stats: FarmStats, prints: Sequence[PrintRecord] = ()) -> dict[str, Any]:
    """The JSON body of ``/farm/api/stats`` (``prints`` listed when given)."""

    def one(s: PrinterStats) -> dict[str, Any]:
        return {
            "printer": s.printer,
            "name": s.name,
            "prints": s.prints,
            "finished": s.finished,
            "failed": s.failed,
            "cancelled": s.cancelled,
            "success_rate": s.success_rate,
            "seconds": s.seconds,
            "hours": round(s.hours, 4),
            "grams": round(s.total_grams, 3),
            "filaments": [{"type": k, "colour": c, "grams": g} for k, c, g in s.grams],
            "failures": [
                {"code": code, "count": n, "text": code_info(code)[0], "wiki": code_info(code)[1]}
                for code, n in s.failures
            ],
        }

    body: dict[str, Any] = {
        "since": stats.since,
        "farm": one(stats.total),
        "printers": [one(s) for s in stats.printers],
    }
    if prints:
        body["prints"] = [print_json(p) for p in prints]
    return body


def print_json(p: PrintRecord) -> dict[str, Any]:
    return {
        "printer": p.printer,
        "name": p.name,
        "title": p.title,
        "start": p.start,
        "end": p.end,
        "result": p.result,
        "seconds": p.seconds,
        "grams": round(p.total_grams, 3),
        "filaments": [{"type": k, "colour": c, "grams": g} for k, c, g in p.grams],
        "code": p.code,
        "source": p.source,
        "job_id": p.job_id,
        "task_id": p.task_id,
    }


# --- CSV --------------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """One cell: text a spreadsheet would take for a formula gets a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:.6g}" if abs(value) < 1e15 else str(value)
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])
    return out.getvalue()


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _filaments_text(grams: Grams) -> str:
    return "; ".join(f"{k} {c or '?'} {g:g} g" for k, c, g in grams)


def csv_prints(prints: Iterable[PrintRecord]) -> str:
    """One row a print (RFC 4180: CRLF, quoted where needed; a header row)."""
    header = (
        "printer",
        "name",
        "title",
        "start",
        "end",
        "result",
        "seconds",
        "grams",
        "filaments",
        "code",
        "source",
    )
    return _csv(
        header,
        (
            (
                p.printer,
                p.name,
                p.title,
                _iso(p.start),
                _iso(p.end),
                p.result,
                round(p.seconds, 1),
                round(p.total_grams, 2),
                _filaments_text(p.grams),
                p.code,
                p.source,
            )
            for p in prints
        ),
    )


def csv_printers(stats: FarmStats) -> str:
    """One row a printer, then the farm's (printer empty, name ``farm``)."""
    header = (
        "printer",
        "name",
        "prints",
        "finished",
        "failed",
        "cancelled",
        "success_rate",
        "hours",
        "grams",
        "filaments",
        "failures",
    )
    rows = []
    for s in (*stats.printers, stats.total):
        rate = s.success_rate
        rows.append(
            (
                s.printer,
                s.name,
                s.prints,
                s.finished,
                s.failed,
                s.cancelled,
                "" if rate is None else round(rate, 4),
                round(s.hours, 3),
                round(s.total_grams, 2),
                _filaments_text(s.grams),
                "; ".join(f"{code} x{n}" for code, n in s.failures),
            )
        )
    return _csv(header, rows)


# --- SVG charts -------------------------------------------------------------------------------

_RESULT_COLOURS = {"finished": "#2e7d32", "failed": "#d32f2f", "cancelled": "#9e9e9e"}
_ROW = 22
_LABEL = 180
_BAR = 360


def _e(text: Any) -> str:
    return html.escape(visible(str(text)), quote=True)


def _svg(title: str, height: int, body: str) -> str:
    width = _LABEL + _BAR + 170
    return (
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>'
        f"{body}</svg>"
    )


def _label(y: int, text: str) -> str:
    shown = text if len(text) <= 28 else text[:27] + "…"
    return (
        f'<text x="{_LABEL - 6}" y="{y + 15}" text-anchor="end">{_e(shown)}'
        f"<title>{_e(text)}</title></text>"
    )


def svg_prints(stats: FarmStats) -> str:
    """Prints per printer: one bar each, finished / failed / cancelled stacked."""
    rows = stats.printers
    most = max((s.prints for s in rows), default=0) or 1
    parts = []
    for i, s in enumerate(rows):
        y = 4 + i * _ROW
        parts.append(_label(y, s.name or s.printer))
        x = float(_LABEL)
        for result in RESULTS:
            count = getattr(s, result)
            if not count:
                continue
            w = _BAR * count / most
            parts.append(
                f'<rect class="r-{result}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" '
                f'height="{_ROW - 6}" fill="{_RESULT_COLOURS[result]}">'
                f"<title>{_e(s.name or s.printer)}: {count} {result}</title></rect>"
            )
            x += w
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y + 15}">{s.prints} ({s.finished} ok, {s.failed} failed)'
            "</text>"
        )
    return _svg("Prints per printer", 8 + len(rows) * _ROW, "".join(parts))


def _ink(colour: str) -> str:
    """A bar's outline: dark for a light filament, so white PLA shows on a white page."""
    if not colour:
        return "#667085"
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#667085" if 0.299 * r + 0.587 * g + 0.114 * b > 200 else colour


def svg_grams(stats: FarmStats) -> str:
    """Grams by filament type and colour: a bar each, in the filament's colour."""
    rows = sorted(stats.total.grams, key=lambda item: -item[2])
    most = max((g for _, _, g in rows), default=0.0) or 1.0
    parts = []
    for i, (kind, colour, grams) in enumerate(rows):
        y = 4 + i * _ROW
        label = f"{kind} {colour or '(colour unknown)'}"
        parts.append(_label(y, label))
        w = max(1.0, _BAR * grams / most)
        fill = colour or "#bdbdbd"
        parts.append(
            f'<rect class="filament" x="{_LABEL}" y="{y + 3}" width="{w:.1f}" '
            f'height="{_ROW - 6}" fill="{_e(fill)}" stroke="{_e(_ink(colour))}">'
            f"<title>{_e(label)}: {grams:.1f} g</title></rect>"
        )
        parts.append(f'<text x="{_LABEL + w + 6:.1f}" y="{y + 15}">{grams:.1f} g</text>')
    return _svg("Filament used by type and colour", 8 + len(rows) * _ROW, "".join(parts))


def svg_failures(stats: FarmStats) -> str:
    """Failures by code: a bar each, labelled with the code."""
    rows = stats.total.failures
    most = max((n for _, n in rows), default=0) or 1
    parts = []
    for i, (code, count) in enumerate(rows):
        y = 4 + i * _ROW
        text, _ = code_info(code)
        parts.append(_label(y, code))
        w = _BAR * count / most
        parts.append(
            f'<rect class="failure" x="{_LABEL}" y="{y + 3}" width="{w:.1f}" '
            f'height="{_ROW - 6}" fill="{_RESULT_COLOURS["failed"]}">'
            f"<title>{_e(code)}: {_e(text or 'no text known')}</title></rect>"
        )
        parts.append(f'<text x="{_LABEL + w + 6:.1f}" y="{y + 15}">{count}</text>')
    return _svg("Failures by code", 8 + len(rows) * _ROW, "".join(parts))


# --- Prometheus counters of the farm's own history ---------------------------------------------


@dataclass(frozen=True, slots=True)
class FarmTotals:
    """The counters at one moment (immutable; read by the metrics collector)."""

    prints: tuple[tuple[tuple[str, str], int], ...]  # ((printer, result), n)
    seconds: tuple[tuple[str, float], ...]  # (printer, s)
    grams: tuple[tuple[tuple[str, str, str], float], ...]  # ((printer, type, colour), g)
    failures: tuple[tuple[tuple[str, str], int], ...]  # ((printer, code), n)

    def only(self, printers: Iterable[str]) -> FarmTotals:
        """The counters of ``printers`` alone (a token's allowlist)."""
        keep = set(printers)
        return FarmTotals(
            tuple(x for x in self.prints if x[0][0] in keep),
            tuple(x for x in self.seconds if x[0] in keep),
            tuple(x for x in self.grams if x[0][0] in keep),
            tuple(x for x in self.failures if x[0][0] in keep),
        )


@dataclass
class FarmCounters:
    """The farm's totals, kept up to date from ``ended(since)`` (:meth:`FarmStore.ended`).

    Each :meth:`read` older than ``ttl`` fetches only the jobs that ended
    since the newest one counted, less ``margin`` seconds (farm instances
    sharing a database may disagree on the clock by that much); the ids seen
    in that margin are remembered, so no job counts twice. Thread-safe: while
    one thread refreshes, another reader gets the last totals rather than
    waiting (a scrape never waits for the first read of a long history;
    :meth:`warm` does that read when the server starts).
    """

    ended: Callable[[float | None], Iterable[tuple[Any, ...]]]
    ttl: float = 5.0
    margin: float = 600.0
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _read_at: float | None = field(default=None, init=False)
    _newest: float | None = field(default=None, init=False)
    _recent: dict[int, float] = field(default_factory=dict, init=False)
    _prints: dict[tuple[str, str], int] = field(default_factory=dict, init=False)
    _seconds: dict[str, float] = field(default_factory=dict, init=False)
    _grams: dict[tuple[str, str, str], float] = field(default_factory=dict, init=False)
    _failures: dict[tuple[str, str], int] = field(default_factory=dict, init=False)
    _totals: FarmTotals = field(default_factory=lambda: FarmTotals((), (), (), ()), init=False)
    _records: dict[int, PrintRecord] = field(default_factory=dict, init=False)
    _all: tuple[PrintRecord, ...] = field(default=(), init=False)  # a snapshot of _records

    def read(self) -> FarmTotals:
        """The totals, refreshed when older than the TTL (the last ones while another reads)."""
        if not self._lock.acquire(blocking=False):
            return self._totals
        try:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.ttl:
                self._refresh()
                self._read_at = self.clock()
            return self._totals
        finally:
            self._lock.release()

    def records(self) -> tuple[PrintRecord, ...]:
        """Every print counted so far, refreshed as :meth:`read` refreshes (the statistics
        page and its exports read these rather than the whole history each time)."""
        self.read()
        return self._all

    def warm(self) -> FarmTotals:
        """Read now, waiting for a read in progress (the server's start runs it)."""
        with self._lock:
            self._refresh()
            self._read_at = self.clock()
            return self._totals

    def _refresh(self) -> None:
        since = None if self._newest is None else self._newest - self.margin
        for row in self.ended(since):
            job_id, finished = int(row[0]), row[7]
            if job_id in self._recent or finished is None:
                continue
            self._recent[job_id] = finished
            self._newest = finished if self._newest is None else max(self._newest, finished)
            self._count(row)
        if self._newest is not None:
            floor = self._newest - self.margin
            self._recent = {k: v for k, v in self._recent.items() if v >= floor}
        self._all = tuple(self._records.values())
        self._totals = FarmTotals(
            tuple(sorted(self._prints.items())),
            tuple(sorted(self._seconds.items())),
            tuple(sorted(self._grams.items())),
            tuple(sorted(self._failures.items())),
        )

    def _count(self, row: tuple[Any, ...]) -> None:
        record = from_ended(row)
        if record is None:
            return
        self._records[int(row[0])] = record
        serial = record.printer
        key = (serial, record.result)
        self._prints[key] = self._prints.get(key, 0) + 1
        self._seconds[serial] = self._seconds.get(serial, 0.0) + record.seconds
        for kind, colour, grams in record.grams:
            gkey = (serial, kind, colour)
            self._grams[gkey] = self._grams.get(gkey, 0.0) + grams
        if record.result == "failed":
            fkey = (serial, record.code or NO_CODE)
            self._failures[fkey] = self._failures.get(fkey, 0) + 1
