"""``bambu tasks``: the account's print history, newest first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .base import OPTIONS, not_empty, open_client

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
            metavar="SERIAL",
            callback=not_empty,
            help="Only this printer's tasks.",
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
        found = list(
            client.iter_tasks(
                device,
                page_size=MAX_PAGE if all_ else min(limit, MAX_PAGE),
                max_items=None if all_ else limit,
            )
        )
    show_tasks(found, title=f"{len(found)} task{'s' if len(found) != 1 else ''}")


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
