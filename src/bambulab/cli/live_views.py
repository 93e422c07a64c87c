"""What live commands show: a printer's status, its AMS, its HMS, and the watch table.

Every function takes a :class:`~bambulab.models.state.PrinterState` (and the
name the command knows the printer by) and prints, or returns a rich
renderable for :mod:`rich.live`. Server text always goes into ``Text`` cells,
never into markup, through :func:`~.output.text` / :func:`~.output.styled`,
which make control characters visible. rich is imported here, and this module
only when a live command runs.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..vocabulary import AMS_HT_IDS, FANS, TRAY_EXTERNAL
from .base import OPTIONS
from .live_session import PrinterRef, describe
from .output import Col, console, duration, emit_json, fields, styled, table, text

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from ..models.events import ConnectionEvent, ConnectionStatus
    from ..models.printer import HMSEntry
    from ..models.state import AmsUnit, PrinterState, Tray

STATE_STYLES = {
    "RUNNING": "cyan",
    "PREPARE": "cyan",
    "SLICING": "cyan",
    "PAUSE": "yellow",
    "FAILED": "red",
    "FINISH": "green",
    "IDLE": "",
    "OFFLINE": "dim",
}
SEVERITY_STYLES = {"fatal": "bold red", "serious": "red", "common": "yellow", "info": "dim"}
SWATCH = "\u2588\u2588"  # two full blocks: a colour chip that reads at any terminal width
_HEX_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")


# --- small formatters ----------------------------------------------------------------


def temp_pair(current: float | None, target: float | None) -> str:
    """``215 / 220 °C``, ``32 °C`` or ``-``."""
    if current is None and target is None:
        return "-"
    now = "-" if current is None else f"{current:.0f}"
    if target is None:
        return f"{now} °C"
    return f"{now} / {target:.0f} °C"


def minutes(value: int | None) -> str:
    """Minutes left as ``1h 05m``; ``-`` when unknown or none."""
    return duration(value * 60) if value else "-"


def percent(value: int | None) -> str:
    """``45%`` or ``-``."""
    return "-" if value is None else f"{value}%"


def layers(state: PrinterState) -> str:
    """``12/120``, or ``-`` when no job with layers is known."""
    if not state.total_layers and not state.layer:
        return "-"
    layer = "-" if state.layer is None else str(state.layer)
    total = "-" if state.total_layers is None else str(state.total_layers)
    return f"{layer}/{total}"


def state_cell(state_name: str) -> Text:
    """The ``gcode_state`` coloured by what it means."""
    text: Text = styled(state_name or "-", STATE_STYLES.get(state_name, ""))
    return text


def severity_cell(entry: HMSEntry) -> Text:
    name = entry.severity.name.lower()
    cell: Text = styled(name, SEVERITY_STYLES.get(name, ""))
    return cell


def swatch(tray: Tray) -> Text:
    """A block in the tray's colour, followed by its hex code."""
    from rich.text import Text

    if tray.empty:
        return Text("empty", style="dim")
    colour = tray.colour_rgb
    cell = Text()
    if colour:
        # The printer's string: a style only when it is a colour, shown only made visible.
        cell.append(SWATCH, style=colour if _HEX_COLOUR.fullmatch(colour) else "")
        cell.append(f" {text(colour)}")
    else:
        cell.append("?", style="dim")
    return cell


def fans(state: PrinterState) -> str:
    speeds = ((name, getattr(state, f"{name}_fan")) for name in FANS)
    parts = [f"{name} {value}%" for name, value in speeds if value is not None]
    if state.aux_fan2 is not None:
        parts.append(f"aux 2 {state.aux_fan2}%")
    return ", ".join(parts) or "-"


def nozzle_text(diameter: float | None, kind: Any) -> str | None:
    """``0.4 mm, Hardened Steel, High Flow``; ``None`` when nothing is known."""
    parts = [f"{diameter:g} mm" if diameter is not None else "", str(kind) if kind else ""]
    return ", ".join(p for p in parts if p) or None


def yes_no(value: bool | None, yes: str, no: str) -> str | None:
    return None if value is None else (yes if value else no)


def speed(state: PrinterState) -> str:
    name = state.speed_name or (str(state.speed_level) if state.speed_level else "")
    if state.speed_percent is not None:
        return f"{name or '-'} ({state.speed_percent}%)"
    return name or "-"


def lights(state: PrinterState) -> str:
    return ", ".join(f"{node} {mode}" for node, mode in state.lights.items()) or "-"


def tray_place(tray: Tray) -> str:
    """``AMS 1 slot 2``, ``AMS HT 128`` or ``external``."""
    if tray.ams_id == TRAY_EXTERNAL:
        return "external spool" if tray.id in (TRAY_EXTERNAL, -1) else f"external spool {tray.id}"
    if tray.ams_id in AMS_HT_IDS:
        return f"AMS HT {tray.ams_id}"
    return f"AMS {tray.ams_id + 1} slot {tray.id + 1}"


# --- status --------------------------------------------------------------------------------


def show_status(ref: PrinterRef, state: PrinterState) -> None:
    """Everything a person asks about one printer, or ``state.to_dict()`` under ``--json``."""
    if OPTIONS.json:
        emit_json(state.to_dict())
        return
    model = state.model
    model_text = (
        f"{model.product} ({model.code})" if model.code and model.product else model.product
    )
    active = state.active_tray
    filament = None
    if active is not None and not active.empty:
        filament = f"{active.type} {active.colour_rgb} ({tray_place(active)})".replace("  ", " ")
    error = state.print_error
    hms = state.hms
    rows: list[tuple[str, Any]] = [
        ("model", model_text or None),
        ("state", state_cell(state.gcode_state)),
        ("stage", state.stage_name),
        ("job", state.job_name),
        ("progress", percent(state.percent)),
        ("layer", layers(state)),
        ("remaining", minutes(state.remaining_minutes)),
        ("nozzle", temp_pair(state.nozzle_temp, state.nozzle_target)),
    ]
    if state.dual_nozzle and len(state.extruders) > 1:
        # Both nozzles, the active one marked (the top row is the active one's).
        for extruder in state.extruders:
            mark = " (active)" if extruder.index == state.active_extruder else ""
            nozzle = extruder.nozzle
            kind = nozzle_text(nozzle.diameter, nozzle.kind) if nozzle is not None else None
            rows.append(
                (
                    f"{extruder.name or extruder.index} nozzle",
                    f"{temp_pair(extruder.temp, extruder.target)}{mark}"
                    + (f", {kind}" if kind else ""),
                )
            )
    else:
        rows.append(("nozzle type", nozzle_text(state.nozzle_diameter, state.nozzle)))
    rows.append(("bed", temp_pair(state.bed_temp, state.bed_target)))
    if state.chamber_temp is not None or state.chamber_target is not None:
        rows.append(("chamber", temp_pair(state.chamber_temp, state.chamber_target)))
    rows += [
        ("door", yes_no(state.door_open, "open", "closed")),
        ("SD card", state.sd_card),
        ("fans", fans(state)),
        ("speed", speed(state)),
        ("lights", lights(state)),
        ("Wi-Fi", f"{state.wifi_dbm} dBm" if state.wifi_dbm is not None else None),
        ("filament", filament),
        (
            "print error",
            styled(str(error), "red") if error else styled("none", "dim"),
        ),
        ("HMS", styled(f"{len(hms)} active", "yellow") if hms else styled("none", "dim")),
    ]
    fields(f"{describe(ref)}", rows)
    if hms:
        hms_table(hms)


def hms_table(entries: Sequence[HMSEntry], title: str = "Health (HMS)") -> None:
    """HMS entries decoded: code, severity, module, text, wiki page."""
    table(
        title,
        [
            Col("Code", wrap=False),
            Col("Severity"),
            Col("Module"),
            Col("Message"),
            Col("Wiki", wrap=False),
        ],
        (
            [e.code_string, severity_cell(e), e.module, e.text, e.wiki_url]
            for e in sorted(entries, key=lambda e: (e.severity or 99, e.code_string))
        ),
    )


def show_hms(ref: PrinterRef, state: PrinterState) -> None:
    """The printer's active HMS entries (and its print error)."""
    entries = state.hms
    error = state.print_error
    if OPTIONS.json:
        from ..models.output import HmsOut

        emit_json(HmsOut.from_state(state, ref.serial).model_dump(mode="json"))
        return
    from .output import esc, say

    if error:
        say(f"[red]print error[/red] {esc(error)}")
    if not entries:
        say(f"[green]{esc(describe(ref))}: no active HMS entries[/green]")
        return
    count = len(entries)
    hms_table(entries, f"{describe(ref)}: {count} active HMS entr{'ies' if count > 1 else 'y'}")


# --- AMS -----------------------------------------------------------------------------------


def ams_dict(ref: PrinterRef, state: PrinterState) -> dict[str, Any]:
    """The AMS units, trays and external spools for scripts (``AmsOut``)."""
    from ..models.output import AmsOut

    return AmsOut.from_state(state, ref.serial).model_dump(mode="json")


def _humidity(unit: AmsUnit) -> str:
    parts = []
    if unit.humidity_percent is not None:
        parts.append(f"{unit.humidity_percent}%")
    if unit.humidity_level is not None:
        parts.append(f"level {unit.humidity_level}")
    return " ".join(parts) or "-"


def show_ams(ref: PrinterRef, state: PrinterState) -> None:
    """One table of every slot: a colour swatch, type, remaining, humidity; then external."""
    if OPTIONS.json:
        emit_json(ams_dict(ref, state))
        return
    from .output import esc, say

    loaded = state.active_tray
    units = state.ams_units
    rows: list[list[Any]] = []
    for unit in units:
        for index, tray in enumerate(unit.trays):
            rows.append(
                [
                    f"{unit.kind} {unit.id if unit.id in AMS_HT_IDS else unit.id + 1}",
                    "1" if unit.id in AMS_HT_IDS else str(tray.id + 1),
                    swatch(tray),
                    tray.type or None,
                    percent(tray.remain),
                    _humidity(unit) if index == 0 else "",
                    f"{unit.temp:g} °C" if index == 0 and unit.temp is not None else "",
                    _loaded(tray is loaded),
                ]
            )
    for tray in state.external_spools:
        rows.append(
            [
                "External",
                "-",
                swatch(tray),
                tray.type or None,
                percent(tray.remain),
                "",
                "",
                _loaded(tray is loaded),
            ]
        )
    if not rows:
        say(f"[dim]{esc(describe(ref))}: no AMS and no external spool reported[/dim]")
        return
    table(
        f"{describe(ref)}: {len(units)} AMS unit{'s' if len(units) != 1 else ''}",
        [
            Col("Unit"),
            Col("Slot", justify="right"),
            Col("Colour", wrap=False),
            Col("Type"),
            Col("Remaining", justify="right"),
            Col("Humidity"),
            Col("Temp", justify="right"),
            Col("Loaded"),
        ],
        rows,
    )


def _loaded(active: bool) -> Any:
    return styled("\u25c0 loaded", "bold green") if active else ""


# --- watch ---------------------------------------------------------------------------------
#
# The watch never shows more confidence than it has: a status line says whether
# the connection is up (or which retry comes when), every row says how old its
# printer's last report is, and rows that are not current (connection down,
# report older than the printer's report period, printer offline) are dimmed.
# Off a terminal it writes one timestamped line per change instead of a table.


@dataclass(slots=True)
class Row:
    """What the watch knows of one printer."""

    ref: PrinterRef
    state: PrinterState | None = None
    online: bool | None = None
    seen: float | None = None  # time.monotonic() of its last report
    said: tuple[Any, ...] | None = None  # what its last line (off a terminal) said


@dataclass(frozen=True, slots=True)
class WatchColumn:
    """A column of the watch table, and how readily it goes on a narrow terminal."""

    key: str
    header: str
    priority: int  # 1 stays longest; the highest number is the first to go
    justify: str = "left"
    shrink_to: int = 0  # may be cut (with …) down to this width; 0: never cut


# Display order. The priorities are what a narrow terminal keeps: which printer,
# its state, its progress and whether that is current first; fans and lights last.
WATCH_COLUMNS = (
    WatchColumn("printer", "Printer", 1, shrink_to=8),
    WatchColumn("serial", "Serial", 11),
    WatchColumn("state", "State", 2),
    WatchColumn("job", "Job", 7, shrink_to=8),
    WatchColumn("percent", "%", 3, "right"),
    WatchColumn("layer", "Layer", 8, "right"),
    WatchColumn("left", "Left", 6, "right"),
    WatchColumn("nozzle", "Nozzle", 9, "right"),
    WatchColumn("bed", "Bed", 10, "right"),
    WatchColumn("hms", "HMS", 5, "right"),
    WatchColumn("age", "Age", 4, "right"),
    WatchColumn("fans", "Fans", 12, shrink_to=10),
    WatchColumn("lights", "Lights", 13, shrink_to=10),
)


@dataclass(frozen=True, slots=True)
class RowView:
    """One printer as the watch shows it at one moment."""

    cells: dict[str, str]
    style: str  # of the state cell
    current: bool  # reports flow and are recent: drawn normally, else dimmed
    stale: bool  # the last report is older than the printer's report period
    age: float | None
    limit: float  # that period, seconds
    key: tuple[Any, ...]  # what a new line off a terminal is written for


def _shown(value: object) -> str:
    """Server text with control and format characters shown as escapes, never executed."""
    from ..safetext import visible

    return visible(str(value))


def age_text(seconds: float | None) -> str:
    """``4s``, ``3m 05s``, ``1h 02m``; ``-`` for never."""
    if seconds is None:
        return "-"
    total = int(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m {total % 60:02d}s"
    return f"{total // 3600}h {total % 3600 // 60:02d}m"


def report_limit(row: Row, override: float | None = None) -> float:
    """Seconds after which the row's last report is stale: ``override``, else its model's."""
    if override:
        return override
    from ..models.printer import detect_model
    from ..protocol.mqtt import stale_after

    model = (
        row.state.model if row.state is not None else detect_model(row.ref.serial, row.ref.model)
    )
    return stale_after(model.report_style)


def row_view(row: Row, *, now: float, connected: bool, stale_after: float | None = None) -> RowView:
    """The row's cells, whether it is current, and how old its last report is."""
    ref, state = row.ref, row.state
    cells = dict.fromkeys((c.key for c in WATCH_COLUMNS), "")
    cells["printer"] = _shown(ref.name)
    cells["serial"] = _shown(ref.serial)
    age = None if row.seen is None else max(0.0, now - row.seen)
    limit = report_limit(row, stale_after)
    stale = age is not None and age > limit
    offline = row.online is False
    key: tuple[Any, ...]
    if state is None or not state.gcode_state:
        word, style = ("offline" if offline else "waiting…"), "dim"
        key = (word,)
    else:
        word = "OFFLINE" if offline else state.gcode_state
        style = STATE_STYLES.get(word, "")
        hms = len(state.hms)
        cells.update(
            job=_shown(state.job_name or "-"),
            percent=percent(state.percent),
            layer=layers(state),
            left=minutes(state.remaining_minutes),
            nozzle=temp_pair(state.nozzle_temp, state.nozzle_target),
            bed=temp_pair(state.bed_temp, state.bed_target),
            hms=str(hms),
            fans=fans(state),
            lights=_shown(lights(state)),
        )
        # Current temperatures drift with every report: a line per degree would drown the log.
        key = (word, cells["job"], cells["percent"], cells["layer"], cells["left"])
        key += (state.nozzle_target, state.bed_target, hms, stale)
    cells["state"] = word
    cells["age"] = age_text(age) + (" stale" if stale else "")
    current = connected and not offline and not stale and age is not None
    return RowView(cells, style, current, stale, age, limit, key)


def _layout(views: Sequence[RowView], width: int) -> list[tuple[WatchColumn, int]]:
    """The columns that fit in ``width`` (by priority) and their widths, in display order."""
    from rich.cells import cell_len

    natural = {
        c.key: max([cell_len(c.header)] + [cell_len(v.cells[c.key]) for v in views])
        for c in WATCH_COLUMNS
    }
    least = {
        c.key: max(cell_len(c.header), min(natural[c.key], c.shrink_to))
        if c.shrink_to
        else natural[c.key]
        for c in WATCH_COLUMNS
    }
    ranked = sorted(WATCH_COLUMNS, key=lambda c: c.priority)
    used = 1  # the left border; each column adds its width, two padding cells and a border
    chosen: dict[str, int] = {}
    for col in ranked:
        cost = least[col.key] + 3
        if used + cost <= width:
            chosen[col.key] = least[col.key]
            used += cost
    spare = width - used
    for col in ranked:  # room left: uncut the cut columns, most important first
        if col.key in chosen and spare > 0:
            grow = min(spare, natural[col.key] - chosen[col.key])
            chosen[col.key] += grow
            spare -= grow
    return [(c, chosen[c.key]) for c in WATCH_COLUMNS if c.key in chosen]


def watch_table(views: Sequence[RowView], title: str | None = None, width: int = 80) -> Table:
    """One line per printer, with the columns that fit in ``width``; not current rows dimmed."""
    from rich.table import Table
    from rich.text import Text

    grid = Table(title=title, title_justify="left", header_style="bold")
    layout = _layout(views, width)
    for col, size in layout:
        grid.add_column(
            col.header,
            justify=col.justify,  # type: ignore[arg-type]
            no_wrap=True,
            overflow="ellipsis",
            width=size,
        )
    for view in views:
        cells = []
        for col, _ in layout:
            value = view.cells[col.key]
            if col.key == "state":
                cells.append(Text(value, style=view.style))
            elif (col.key == "hms" and value not in ("", "0")) or (col.key == "age" and view.stale):
                cells.append(Text(value, style="yellow"))
            else:
                cells.append(Text(value))
        grid.add_row(*cells, style=None if view.current else "dim")
    return grid


def _clock(moment: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(moment))


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def connection_text(status: ConnectionStatus | None, now: float) -> str:
    """The connection in one line: state first, then what happens next and why."""
    if status is None:
        return "connecting…"
    state = status.state
    broker = _shown(status.broker)
    error = _shown(status.last_error or "")
    if state == "connected":
        again = f" (connection #{status.connects})" if status.connects > 1 else ""
        return f"connected since {_clock(status.since)}{again} · {broker}"
    if state in ("connecting", "reconnecting"):
        parts = [f"{state.upper()}: attempt {status.attempt}"]
        if status.next_retry is not None:
            wait = max(0.0, status.next_retry - now)
            parts[0] += f", next try in {_seconds(wait)} ({_clock(status.next_retry)})"
        else:
            parts[0] += " under way"
        if state == "reconnecting":
            parts.append(f"down {age_text(now - status.since)}")
        if error:
            parts.append(error)
        parts.append(broker)
        return " · ".join(parts)
    if state == "failed":
        return f"FAILED: {error or 'gave up'}"
    return "closed"


CONNECTION_STYLES = {"connected": "green", "failed": "bold red"}


def connection_event_line(
    event: ConnectionEvent, previous: ConnectionStatus | None, now: float
) -> str:
    """What one connection event says in the log written off a terminal."""
    from ..models.events import (
        Connected,
        ConnectionFailed,
        ConnectionLost,
        Reconnected,
        RetryScheduled,
    )

    status = event.status
    broker = _shown(status.broker)
    error = _shown(status.last_error or "")
    nxt = ""
    if status.next_retry is not None:
        wait = max(0.0, status.next_retry - now)
        nxt = (
            f"attempt {status.attempt}, next try in {_seconds(wait)} ({_clock(status.next_retry)})"
        )
    if isinstance(event, Reconnected):
        down = ""
        if previous is not None and previous.state == "reconnecting":
            down = f" after {age_text(now - previous.since)} down ({previous.attempt} attempts)"
        return f"reconnected to {broker}{down}: live again"
    if isinstance(event, Connected):
        return f"connected to {broker}"
    if isinstance(event, ConnectionLost):
        why = f" ({error})" if error and error != "connection lost" else ""
        return f"connection lost{why}; reconnecting, {nxt} · {broker}"
    if isinstance(event, RetryScheduled):
        word = "reconnecting" if status.state == "reconnecting" else "connecting"
        return f"{word}: attempt {status.attempt - 1} failed ({error}); {nxt}"
    if isinstance(event, ConnectionFailed):
        return f"connection failed: {error}"
    return f"{type(event).__name__}: {connection_text(status, now)}"


def row_line(view: RowView, previous: tuple[Any, ...] | None) -> str | None:
    """What one printer's line off a terminal says (``None``: nothing worth a line yet)."""
    c = view.cells
    who = c["printer"] if c["printer"] == c["serial"] else f"{c['printer']} ({c['serial']})"
    state = c["state"]
    if state == "waiting…":
        return None
    if state == "offline":
        return f"{who}: offline"
    parts = [state]
    for key, fmt in (
        ("job", "{}"),
        ("percent", "{}"),
        ("layer", "layer {}"),
        ("left", "{} left"),
        ("nozzle", "nozzle {}"),
        ("bed", "bed {}"),
        ("hms", "HMS {}"),
    ):
        if c[key] not in ("", "-"):
            parts.append(fmt.format(c[key]))
    summary = ", ".join(parts)
    if view.stale:
        return (
            f"{who}: stale, no report for {_seconds(view.age or 0.0)} "
            f"(expected within {view.limit:g} s); last known {summary}"
        )
    again = "reporting again: " if previous is not None and previous[-1:] == (True,) else ""
    return f"{who}: {again}{summary}"


def state_line(serial: str, changed: Iterable[str], state: PrinterState) -> dict[str, Any]:
    """One ``watch --json`` line: the state as ``status --json`` shows it, and what changed."""
    return {
        "event": "StateChanged",
        "time": round(time.time(), 3),
        "serial": serial,
        "changed": sorted(changed),
        "state": state.to_dict(),
    }


def connection_json(event: ConnectionEvent) -> dict[str, Any]:
    """One ``watch --json`` line for a connection event (``Connected``, ``ConnectionLost``...)."""
    status = event.status
    return {
        "event": type(event).__name__,
        "time": round(time.time(), 3),
        "connection": {
            "state": status.state,
            "since": round(status.since, 3),
            "attempt": status.attempt,
            "next_retry": None if status.next_retry is None else round(status.next_retry, 3),
            "last_error": status.last_error,
            "connects": status.connects,
            "broker": status.broker,
        },
    }


def _stamp(moment: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(moment).astimezone().isoformat(timespec="seconds")


class Watcher:
    """Keeps the watch rows and the connection's status up to date from the client's events.

    The callback (network thread) only records and flags; the main thread
    draws, so rich is never touched from two threads. Under ``--json`` each
    ``StateChanged`` and each connection event becomes one line, serialised
    at event time (the state keeps changing); connection events are also kept
    with their time (they may come before the display starts: ``Connected``
    arrives during ``connect()``) for the lines written off a terminal.
    """

    def __init__(
        self,
        refs: Sequence[PrinterRef],
        *,
        as_json: bool = False,
        stale_after: float | None = None,
    ) -> None:
        import queue
        import threading

        self.rows = {r.serial: Row(r, None, r.online) for r in refs}
        self.dirty = threading.Event()
        self.as_json = as_json
        self.stale_after = stale_after
        self.connection: ConnectionStatus | None = None
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        # (when, event, the status before it): what the connection did, in order.
        self.news: queue.SimpleQueue[tuple[float, ConnectionEvent, ConnectionStatus | None]] = (
            queue.SimpleQueue()
        )

    @property
    def connected(self) -> bool:
        """Whether the connection is up, as far as the events told."""
        return self.connection is not None and self.connection.connected

    def on_event(self, event: Any) -> None:
        """The client's ``on_event`` callback."""
        from ..models.events import (
            ConnectionEvent,
            PrinterOffline,
            PrinterOnline,
            StateChanged,
        )

        if isinstance(event, ConnectionEvent):
            self._on_connection(event)
            return
        row = self.rows.get(event.serial)
        if row is None:
            return
        if isinstance(event, StateChanged):
            row.state = event.state
            row.online = True
            row.seen = time.monotonic()
            if self.as_json:
                import json

                from ..safetext import visible_json

                line = state_line(event.serial, event.changed, event.state)
                self.lines.put(visible_json(json.dumps(line, separators=(",", ":"), default=str)))
        elif isinstance(event, PrinterOnline):
            row.online = True
        elif isinstance(event, PrinterOffline) and self.connected:
            # While the connection is down the client marks every printer offline;
            # that says nothing about the printers, and the status line says the rest.
            row.online = False
        self.dirty.set()

    def _on_connection(self, event: ConnectionEvent) -> None:
        previous, self.connection = self.connection, event.status
        if self.as_json:
            import json

            from ..safetext import visible_json

            line = json.dumps(connection_json(event), separators=(",", ":"))
            self.lines.put(visible_json(line))
        else:
            self.news.put((time.time(), event, previous))
        self.dirty.set()

    def connection_lines(self) -> list[str]:
        """The connection's news since the last call, one timestamped line each."""
        import queue

        said: list[str] = []
        while True:
            try:
                when, event, previous = self.news.get_nowait()
            except queue.Empty:
                return said
            said.append(f"{_stamp(when)} {connection_event_line(event, previous, when)}")

    def views(self, now: float | None = None) -> list[RowView]:
        """Every row as shown now."""
        moment = time.monotonic() if now is None else now
        connected = self.connected
        return [
            row_view(row, now=moment, connected=connected, stale_after=self.stale_after)
            for row in list(self.rows.values())
        ]

    def frame(self, width: int, hint: str | None = None) -> Any:
        """The status line and the table, for a terminal ``width`` columns wide."""
        from rich.console import Group
        from rich.text import Text

        status = self.connection
        count = len(self.rows)
        printers = f"{count} printer{'s' if count != 1 else ''}"
        if self.connected:
            title = f"{printers}, live" + (f" ({hint})" if hint else "")
        else:
            title = f"{printers}, NOT live: last known state" + (f" ({hint})" if hint else "")
        views = self.views()
        said = connection_text(status, time.time())
        style = CONNECTION_STYLES.get(status.state if status else "", "bold yellow")
        heard = [v for v in views if v.age is not None]
        if self.connected and heard and all(v.stale for v in heard):
            # A broker that died without closing the socket looks connected until the
            # keepalive runs out; silence from every printer is the earlier sign.
            quiet = min(v.age or 0.0 for v in heard)
            said = f"connected, but no printer reported for {age_text(quiet)} · {said}"
            style = "bold yellow"
        line = Text(said, style=style)
        line.no_wrap = True
        line.overflow = "ellipsis"
        return Group(line, watch_table(views, title, width))

    def flush_lines(self) -> None:
        """Print the lines gathered so far (main thread)."""
        import queue
        import sys

        wrote = False
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            sys.stdout.write(line + "\n")
            wrote = True
        if wrote:
            sys.stdout.flush()

    def write_changes(self) -> None:
        """Off a terminal: the connection's news, then a line per printer whose row changed."""
        import sys

        out = self.connection_lines()
        stamp = _stamp(time.time())
        for row, view in zip(list(self.rows.values()), self.views(), strict=True):
            if view.key == row.said:
                continue
            said = row_line(view, row.said)
            row.said = view.key
            if said is not None:
                out.append(f"{stamp} {said}")
        if out:
            sys.stdout.write("".join(line + "\n" for line in out))
            sys.stdout.flush()


REDRAW_INTERVAL = 0.1  # at most ten redraws a second, however fast reports come
IDLE_REDRAW = 1.0  # and at least one a second (ages and countdowns move)


def run_watch(
    watcher: Watcher,
    *,
    duration: float | None,
    hint: str | None = None,
    fatal: Any = None,
    lines: bool | None = None,
) -> None:
    """Show the printers until ``duration`` has passed (or Ctrl-C / SIGTERM: a normal end).

    At a terminal the table is redrawn in place under a status line; off a
    terminal (``lines``, the default there) one timestamped line is written,
    and flushed, per change; ``--json`` writes one JSON line per event.
    ``fatal`` is a callable returning the connection's fatal error, if any:
    a connection that gave up ends the watch with that error.
    """
    deadline = None if duration is None else time.monotonic() + max(0.0, duration)
    out = console()
    if lines is None:
        lines = not out.is_terminal

    def left() -> float:
        return IDLE_REDRAW if deadline is None else deadline - time.monotonic()

    def check() -> None:
        error = fatal() if fatal is not None else None
        if error is not None:
            raise error

    def write() -> None:
        # Each row holds the immutable state of its last event: reading it
        # here while the client delivers the next one needs no guard.
        if watcher.as_json:
            watcher.flush_lines()
        else:
            watcher.write_changes()

    try:
        if watcher.as_json or lines:
            while left() > 0:
                watcher.dirty.wait(min(IDLE_REDRAW, max(0.0, left())))
                watcher.dirty.clear()
                write()
                check()
                # Reports of many printers come in bursts: one pass over them per tick.
                time.sleep(min(REDRAW_INTERVAL, max(0.0, left())))
            write()
            return
        from rich.live import Live

        last: list[Any] = [watcher.frame(out.width, hint)]

        def frame() -> Any:
            last[0] = watcher.frame(out.width, hint)
            return last[0]

        with (
            Live(
                last[0],
                console=out,
                auto_refresh=False,
                redirect_stdout=False,
                redirect_stderr=False,
            ) as live,
            _LogsAbove(live),
        ):
            while left() > 0:
                watcher.dirty.wait(min(IDLE_REDRAW, max(0.0, left())))
                watcher.dirty.clear()
                watcher.connection_lines()  # the status line says it: keep no backlog
                live.update(frame(), refresh=True)
                check()
                time.sleep(min(REDRAW_INTERVAL, max(0.0, left())))
            live.update(frame(), refresh=True)
        if not out.is_terminal:
            out.line()  # rich ends the last frame with a newline only on a terminal
    except KeyboardInterrupt:
        if watcher.as_json or lines:
            with contextlib.suppress(OSError, ValueError):
                write()


@contextlib.contextmanager
def sigterm_ends_watch() -> Iterator[None]:
    """SIGTERM ends a watch as Ctrl-C does: display closed, lines flushed, status 0.

    A service manager or ``timeout`` stops a watch with SIGTERM; dying on it
    would leave a hidden cursor and half a table behind.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal fired
        if not fired:  # the first one is already ending the watch
            fired = True
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _LogsAbove:
    """While the table is live on a terminal, log lines print above it, not through it."""

    def __init__(self, live: Any) -> None:
        self.live = live
        self.swapped: list[tuple[Any, Any]] = []

    def __enter__(self) -> None:
        import logging
        import sys

        out = console()
        if not (out.is_terminal and sys.stderr.isatty()):
            return
        above = _AboveLive(self.live)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                self.swapped.append((handler, handler.setStream(above)))

    def __exit__(self, *exc: object) -> None:
        for handler, stream in self.swapped:
            handler.setStream(stream)


class _AboveLive:
    """A text stream that prints through the live display's console."""

    def __init__(self, live: Any) -> None:
        self.live = live

    def write(self, text: str) -> int:
        stripped = text.rstrip("\n")
        if stripped:
            self.live.console.print(stripped, markup=False, highlight=False)
        return len(text)

    def flush(self) -> None:
        pass
