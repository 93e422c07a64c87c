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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import OPTIONS
from .live_session import PrinterRef, describe
from .output import Col, console, duration, emit_json, fields, styled, table, text

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

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
    parts = [
        f"{name} {value}%"
        for name, value in (
            ("part", state.part_fan),
            ("aux", state.aux_fan),
            ("chamber", state.chamber_fan),
        )
        if value is not None
    ]
    return ", ".join(parts) or "-"


def speed(state: PrinterState) -> str:
    name = state.speed_name or (str(state.speed_level) if state.speed_level else "")
    if state.speed_percent is not None:
        return f"{name or '-'} ({state.speed_percent}%)"
    return name or "-"


def lights(state: PrinterState) -> str:
    return ", ".join(f"{node} {mode}" for node, mode in state.lights.items()) or "-"


def tray_place(tray: Tray) -> str:
    """``AMS 1 slot 2``, ``AMS HT 128`` or ``external``."""
    if tray.ams_id == 254:
        return "external spool" if tray.id in (254, -1) else f"external spool {tray.id}"
    if tray.ams_id >= 128:
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
        ("bed", temp_pair(state.bed_temp, state.bed_target)),
    ]
    if state.chamber_temp is not None or state.chamber_target is not None:
        rows.append(("chamber", temp_pair(state.chamber_temp, state.chamber_target)))
    rows += [
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


def hms_dict(entry: HMSEntry) -> dict[str, Any]:
    """One HMS entry for scripts."""
    return {
        "code": entry.code_string,
        "severity": entry.severity.name.lower(),
        "module": entry.module,
        "text": entry.text,
        "wiki_url": entry.wiki_url,
        "attr": entry.attr,
        "hms_code": entry.code,
    }


def show_hms(ref: PrinterRef, state: PrinterState) -> None:
    """The printer's active HMS entries (and its print error)."""
    entries = state.hms
    error = state.print_error
    if OPTIONS.json:
        emit_json(
            {
                "serial": ref.serial,
                "hms": [hms_dict(e) for e in entries],
                "print_error": (
                    {"code": error.code_string, "text": error.text, "value": error.value}
                    if error
                    else None
                ),
            }
        )
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


def _tray_dict(tray: Tray, active: int | None) -> dict[str, Any]:
    return {
        "id": tray.global_id,
        "ams_id": tray.ams_id,
        "slot": tray.id,
        "type": tray.type,
        "colour": tray.colour,
        "remain": tray.remain,
        "active": active is not None and tray.global_id == active,
    }


def ams_dict(ref: PrinterRef, state: PrinterState) -> dict[str, Any]:
    """The AMS units, trays and external spools for scripts."""
    now = state.tray_now
    return {
        "serial": ref.serial,
        "tray_now": now,
        "units": [
            {
                "id": unit.id,
                "kind": unit.kind,
                "humidity_level": unit.humidity_level,
                "humidity_percent": unit.humidity_percent,
                "temp": unit.temp,
                "trays": [_tray_dict(t, now) for t in unit.trays],
            }
            for unit in state.ams_units
        ],
        "external": [dict(_tray_dict(t, None), active=now == 254) for t in state.external_spools],
    }


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

    now = state.tray_now
    units = state.ams_units
    rows: list[list[Any]] = []
    for unit in units:
        for index, tray in enumerate(unit.trays):
            rows.append(
                [
                    f"{unit.kind} {unit.id + 1}" if unit.id < 128 else f"{unit.kind} {unit.id}",
                    str(tray.id + 1) if unit.id < 128 else "1",
                    swatch(tray),
                    tray.type or None,
                    percent(tray.remain),
                    _humidity(unit) if index == 0 else "",
                    f"{unit.temp:g} °C" if index == 0 and unit.temp is not None else "",
                    _loaded(tray.global_id == now),
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
                _loaded(now == 254),
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


@dataclass(slots=True)
class Row:
    """What the watch table knows of one printer."""

    ref: PrinterRef
    state: PrinterState | None = None
    online: bool | None = None


def watch_table(rows: Iterable[Row], title: str | None = None) -> Table:
    """One line per printer: state, job, progress, layer, remaining, temperatures, HMS."""
    from rich.table import Table
    from rich.text import Text

    grid = Table(title=title, title_justify="left", header_style="bold")
    for col in (
        Col("Printer"),
        Col("Serial", wrap=False),
        Col("State"),
        Col("Job"),
        Col("%", justify="right"),
        Col("Layer", justify="right"),
        Col("Remaining", justify="right"),
        Col("Nozzle", justify="right", wrap=False),
        Col("Bed", justify="right", wrap=False),
        Col("HMS", justify="right"),
    ):
        grid.add_column(
            col.header,
            justify=col.justify,  # type: ignore[arg-type]
            no_wrap=not col.wrap,
            overflow="fold",
        )
    for row in rows:
        ref, state = row.ref, row.state
        if state is None or not state.gcode_state:
            word = "offline" if row.online is False else "waiting…"
            grid.add_row(
                Text(text(ref.name)),
                Text(text(ref.serial)),
                styled(word, "dim"),
                *(Text("") for _ in range(7)),
            )
            continue
        gcode_state = "OFFLINE" if row.online is False else state.gcode_state
        hms = len(state.hms)
        grid.add_row(
            Text(text(ref.name)),
            Text(text(ref.serial)),
            state_cell(gcode_state),
            Text(text(state.job_name)),
            Text(percent(state.percent)),
            Text(layers(state)),
            Text(minutes(state.remaining_minutes)),
            Text(temp_pair(state.nozzle_temp, state.nozzle_target)),
            Text(temp_pair(state.bed_temp, state.bed_target)),
            styled(str(hms), "yellow") if hms else Text("0"),
        )
    return grid


def state_line(serial: str, changed: Iterable[str], state: PrinterState) -> dict[str, Any]:
    """One ``watch --json`` line: the state as ``status --json`` shows it, and what changed."""
    return {
        "event": "StateChanged",
        "time": round(time.time(), 3),
        "serial": serial,
        "changed": sorted(changed),
        "state": state.to_dict(),
    }


class Watcher:
    """Keeps the watch rows up to date from the client's events (network thread).

    The callback only records and flags; the main thread draws, so rich is
    never touched from two threads. Under ``--json`` each ``StateChanged``
    becomes one line, serialised at event time (the state keeps changing).
    """

    def __init__(self, refs: Sequence[PrinterRef], *, as_json: bool = False) -> None:
        import queue
        import threading

        self.rows = {r.serial: Row(r, None, r.online) for r in refs}
        self.dirty = threading.Event()
        self.as_json = as_json
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()

    def on_event(self, event: Any) -> None:
        """The client's ``on_event`` callback."""
        from ..models.events import PrinterOffline, PrinterOnline, StateChanged

        row = self.rows.get(event.serial)
        if row is None:
            return
        if isinstance(event, StateChanged):
            row.state = event.state
            row.online = True
            if self.as_json:
                import json

                from ..safetext import visible_json

                line = state_line(event.serial, event.changed, event.state)
                self.lines.put(visible_json(json.dumps(line, separators=(",", ":"), default=str)))
        elif isinstance(event, PrinterOnline):
            row.online = True
        elif isinstance(event, PrinterOffline):
            row.online = False
        self.dirty.set()

    def flush_lines(self) -> None:
        """Print the JSON lines gathered so far (main thread)."""
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


REDRAW_INTERVAL = 0.1  # at most ten redraws a second, however fast reports come
IDLE_REDRAW = 1.0  # and at least one a second


def run_watch(
    watcher: Watcher,
    *,
    duration: float | None,
    title: str | None = None,
    fatal: Any = None,
) -> None:
    """Redraw the table in place until ``duration`` has passed (or Ctrl-C: a normal end).

    ``fatal`` is a callable returning the connection's fatal error, if any:
    a connection that gave up ends the watch with that error.
    """
    deadline = None if duration is None else time.monotonic() + max(0.0, duration)

    def left() -> float:
        return IDLE_REDRAW if deadline is None else deadline - time.monotonic()

    def check() -> None:
        error = fatal() if fatal is not None else None
        if error is not None:
            raise error

    try:
        if watcher.as_json:
            while left() > 0:
                watcher.dirty.wait(min(IDLE_REDRAW, max(0.0, left())))
                watcher.dirty.clear()
                watcher.flush_lines()
                check()
            watcher.flush_lines()
            return
        from rich.live import Live

        out = console()
        last: list[Table] = [watch_table(watcher.rows.values(), title)]

        def frame() -> Table:
            # The network thread merges reports while this thread reads them; a
            # read that races a merge skips one frame instead of failing.
            with contextlib.suppress(RuntimeError, KeyError, IndexError):
                last[0] = watch_table(watcher.rows.values(), title)
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
                live.update(frame(), refresh=True)
                check()
                time.sleep(min(REDRAW_INTERVAL, max(0.0, left())))
            live.update(frame(), refresh=True)
        if not out.is_terminal:
            out.line()  # rich ends the last frame with a newline only on a terminal
    except KeyboardInterrupt:
        if watcher.as_json:
            watcher.flush_lines()


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
