"""``bambu messages``: the account's inbox, newest first."""

from __future__ import annotations

from typing import Annotated

import typer

from .base import OPTIONS, open_client

MAX_PAGE = 100


def messages(
    type_: Annotated[
        str | None, typer.Option("--type", "-t", help="Only messages of this type.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many messages.")] = 20,
    all_: Annotated[bool, typer.Option("--all", help="Every message, paging through.")] = False,
) -> None:
    """The account's messages."""
    from .output import Col, emit_json, table, when, yes_no

    with open_client() as client:
        found = list(
            client.iter_messages(
                type_,
                page_size=MAX_PAGE if all_ else min(limit, MAX_PAGE),
                max_items=None if all_ else limit,
            )
        )
    if OPTIONS.json:
        emit_json([m.to_dict() for m in found])
        return
    table(
        f"{len(found)} message{'s' if len(found) != 1 else ''}",
        [
            Col("ID", wrap=False),
            Col("Type"),
            Col("Title"),
            Col("Date (UTC)", wrap=False),
            Col("Read"),
        ],
        ([m.id, m.type, m.title or m.content, when(m.create_time), yes_no(m.read)] for m in found),
    )
