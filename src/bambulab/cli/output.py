"""How results reach the screen: rich tables for people, JSON for scripts.

Under ``--json`` stdout carries exactly one JSON document and nothing else;
messages for people go to stdout otherwise, prompts and warnings to stderr.
Every JSON document passes through :func:`bambulab.secrets.redact` unless the
caller asked for a secret explicitly. rich is imported on first use, never by
``--help``.

Server text (names, titles, messages, file names) never reaches the terminal
raw: every helper here that prints a value passes it through
:func:`bambulab.safetext.visible` (``ESC`` shows as ``\\x1b``, ``U+202E`` as
``\\u202e``), and JSON leaves with no raw control or bidi character in it
(the parsed values are unchanged).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .base import OPTIONS

if TYPE_CHECKING:
    from rich.console import Console

# Wide enough for a devices or tasks table when stdout is a pipe (rich falls
# back to 80 columns there and would fold serial numbers).
PIPE_WIDTH = 160

_consoles: dict[str, Console] = {}


def console() -> Console:
    """The stdout console."""
    return _console("out")


def err_console() -> Console:
    """The stderr console: prompts, progress and warnings."""
    return _console("err")


def _console(which: str) -> Console:
    found = _consoles.get(which)
    if found is None:
        from rich.console import Console

        stream = sys.stderr if which == "err" else sys.stdout
        tty = stream.isatty()
        width = None if tty or os.environ.get("COLUMNS") else PIPE_WIDTH
        found = Console(file=stream, width=width, highlight=False, soft_wrap=False)
        _consoles[which] = found
    return found


def emit_json(data: Any, *, redact: bool = True) -> None:
    """Print one JSON document on stdout (secrets masked unless ``redact=False``)."""
    if redact:
        from ..secrets import redact as redact_secrets

        data = redact_secrets(data)
    from ..safetext import visible_json

    serialised = json.dumps(data, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write(visible_json(serialised) + "\n")
    sys.stdout.flush()


def say(message: str, *, wrap: bool = True) -> None:
    """A line for people on stdout (silent under ``--json``).

    ``message`` is rich markup; values embedded in it go through :func:`esc`.
    Control characters that slipped in anyway are made visible here.
    ``wrap=False`` never breaks the line (one that carries an address to copy).
    """
    if not OPTIONS.json:
        console().print(_visible(message, multiline=True), markup=True, soft_wrap=not wrap)


def note(message: str) -> None:
    """A line for people on stderr (also under ``--json``: it never spoils stdout)."""
    err_console().print(_visible(message, multiline=True), markup=True)


def esc(value: Any) -> str:
    """User or server text made safe to embed in a :func:`say` markup string.

    Safe twice: no control character (made visible, one line) and no markup.
    """
    from rich.markup import escape

    return escape(_visible(str(value)))


def _visible(value: str, *, multiline: bool = False) -> str:
    from ..safetext import visible

    return visible(value, multiline=multiline)


def _title(title: str | None) -> Any:
    """A table title as plain text: a printer's name in it is neither markup nor control."""
    from rich.text import Text

    return None if title is None else Text(_visible(title), style="table.title")


def ask(label: str, *, secret: bool = False) -> str:
    """Ask a person on stderr (hidden input when ``secret``); callers check it is a terminal."""
    from rich.prompt import Prompt
    from rich.text import Text

    return Prompt.ask(Text(_visible(label)), console=err_console(), password=secret).strip()


def confirm(question: str) -> bool:
    """A yes/no question to a person on stderr."""
    from rich.prompt import Confirm
    from rich.text import Text

    # Questions name printers and jobs: plain text, never markup.
    return bool(Confirm.ask(Text(_visible(question)), console=err_console()))


@dataclass(frozen=True, slots=True)
class Col:
    """A table column: header, alignment, and whether long values may wrap."""

    header: str
    justify: str = "left"
    wrap: bool = True


def table(title: str | None, columns: Sequence[Col | str], rows: Iterable[Sequence[Any]]) -> None:
    """Print rows as a rich table on stdout."""
    from rich.table import Table
    from rich.text import Text

    grid = Table(title=_title(title), title_justify="left", header_style="bold")
    for col in columns:
        spec = col if isinstance(col, Col) else Col(col)
        grid.add_column(
            spec.header,
            justify=spec.justify,  # type: ignore[arg-type]
            no_wrap=not spec.wrap,
            overflow="fold",
        )
    count = 0
    for row in rows:
        # Text(...) so that server data is never read as rich markup.
        grid.add_row(*(v if isinstance(v, Text) else Text(text(v)) for v in row))
        count += 1
    if count == 0:
        say(f"[dim]{esc(title or 'nothing')}: none[/dim]")
        return
    console().print(grid)


def fields(title: str | None, pairs: Iterable[tuple[str, Any]]) -> None:
    """Print ``name: value`` pairs as a two-column table."""
    from rich.table import Table
    from rich.text import Text

    grid = Table(
        title=_title(title), title_justify="left", show_header=False, box=None, padding=(0, 2)
    )
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in pairs:
        # Names are server keys for `device info`: Text, so never markup either.
        grid.add_row(Text(text(name)), value if isinstance(value, Text) else Text(text(value)))
    console().print(grid)


def styled(value: str, style: str) -> Any:
    """A table cell with a style (``green``, ``red``, ``dim``...), its text made visible."""
    from rich.text import Text

    return Text(_visible(value), style=style)


def yes_no(value: bool | None) -> Any:
    """``yes`` in green, ``no`` in red, ``-`` when unknown."""
    if value is None:
        return styled("-", "dim")
    return styled("yes", "green") if value else styled("no", "red")


def text(value: Any) -> str:
    """A cell's text: ``-`` for nothing, one visible line otherwise."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return _visible(str(value))


def when(value: Any) -> str:
    """A cloud timestamp (ISO text or epoch seconds/ms) as ``YYYY-MM-DD HH:MM`` UTC."""
    if value in (None, "", 0):
        return "-"
    try:
        if isinstance(value, (int, float)) or (isinstance(value, str) and value.isdigit()):
            seconds = float(value)
            if seconds > 1e11:  # milliseconds
                seconds /= 1000
            moment = datetime.fromtimestamp(seconds, UTC)
        else:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M")


def duration(seconds: Any) -> str:
    """Seconds as ``1h 05m`` / ``12m`` / ``40s``; ``-`` when unknown (or not started)."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0:
        return "-"
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


@contextlib.contextmanager
def transfer_progress(label: str) -> Iterator[Callable[[int, int | None], None] | None]:
    """A ``progress(done, total)`` callback drawing a bar on a terminal's stderr, else None.

    Never under ``--json`` or when stderr is not a terminal.
    """
    with transfer_bars() as bar:
        yield bar(label) if bar is not None else None


@contextlib.contextmanager
def transfer_bars() -> Iterator[Callable[[str], Callable[[int, int | None], None]] | None]:
    """Progress bars on a terminal's stderr, one per transfer: ``bar(label)`` gives its callback.

    None under ``--json`` or off a terminal. Labels (file names, printers:
    maybe from elsewhere) are neutralised and escaped for rich; callbacks may
    come from any thread (rich's Progress locks).
    """
    stream = err_console()
    if OPTIONS.json or not stream.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stream,
        transient=True,
    ) as bars:

        def bar(label: str) -> Callable[[int, int | None], None]:
            task = bars.add_task(esc(label[:60]), total=None)

            def update(done: int, total: int | None) -> None:
                bars.update(task, completed=done, total=total)

            return update

        yield bar
