"""``bambu tasks``: the account's print history, newest first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from .base import OPTIONS, CliError, not_empty, open_client

if TYPE_CHECKING:
    from ..models import Task

# The cloud serves at most 100 history entries per request.
MAX_PAGE = 100


def tasks(
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            "-d",
            metavar="PRINTER",
            callback=not_empty,
            help="Only this printer's tasks (serial or name).",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="How many of the most recent tasks.")
    ] = 20,
    all_: Annotated[
        bool, typer.Option("--all", help="Every task, paging through the whole history.")
    ] = False,
) -> None:
    """Recent print tasks (print history)."""
    with open_client() as client:
        known: dict[str, str] | None = None
        if device is not None:
            known = {d.serial: d.name for d in client.get_devices()}
            device = _serial_of(device, known)
        found = list(
            client.iter_tasks(
                device,
                page_size=MAX_PAGE if all_ else min(limit, MAX_PAGE),
                max_items=None if all_ else limit,
            )
        )
        if device is not None and known is not None and not found and device not in known:
            _unknown_device(device, known)
    show_tasks(found, title=f"{len(found)} task{'s' if len(found) != 1 else ''}")


def _serial_of(wanted: str, known: dict[str, str]) -> str:
    """The serial a ``--device`` value names: a bound printer's serial or name (any case)."""
    text = wanted.strip()
    if text in known:
        return text
    by_name = [serial for serial, name in known.items() if name.lower() == text.lower()]
    return by_name[0] if len(by_name) == 1 else text


def _unknown_device(wanted: str, known: dict[str, str]) -> NoReturn:
    """A typo gives an empty history; say so, naming the account's printers.

    Only when nothing was found: a printer unbound since still has its history.
    """
    listed = ", ".join(f"{name} ({serial})" if name else serial for serial, name in known.items())
    raise CliError(
        f"no printer {wanted!r} on this account and no tasks for it (printers: {listed or 'none'})",
        exit_code=2,
    )


def show_tasks(found: list[Task], *, title: str) -> None:
    """Print tasks as a table (or JSON); the demo uses it too."""
    from .output import Col, emit_json, styled, table, when
    from .output import duration as fmt_duration

    if OPTIONS.json:
        emit_json([t.to_dict() for t in found])
        return
    colour = {"finished": "green", "failed": "red", "printing": "cyan"}
    table(
        title,
        [
            Col("ID", wrap=False),
            Col("Title"),
            Col("Status"),
            Col("Printer"),
            Col("Started (UTC)", wrap=False),
            Col("Time", justify="right"),
            Col("Filament", justify="right"),
        ],
        (
            [
                t.id,
                t.title or t.design_title,
                styled(t.status_text or "-", colour.get(t.status_text, "")),
                t.device_name or t.device_id,
                when(t.start_time),
                fmt_duration(t.cost_time),
                f"{t.weight:g} g" if t.weight else None,
            ]
            for t in found
        ),
    )
