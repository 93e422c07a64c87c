"""``bambu messages``: the account's inbox, newest first."""

from __future__ import annotations

from typing import Annotated

import typer

from .base import OPTIONS, CliError, open_client

MAX_PAGE = 100


def messages(
    type_: Annotated[
        str | None,
        typer.Option(
            "--type",
            "-t",
            metavar="TYPE",
            help="Only messages of this type: system, printing, community or makerworld "
            "(or its number, 1-4).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many messages.")] = 20,
    all_: Annotated[bool, typer.Option("--all", help="Every message, paging through.")] = False,
) -> None:
    """The account's messages."""
    from ..models.cloud import MESSAGE_TYPES, message_type
    from .output import Col, emit_json, table, when, yes_no

    wanted: int | None = None
    if type_ is not None:
        wanted = message_type(type_)
        if wanted is None:
            valid = ", ".join(f"{name} ({number})" for number, name in MESSAGE_TYPES.items())
            raise CliError(f"unknown message type {type_!r}: one of {valid}", exit_code=2)
    with open_client() as client:
        found = list(
            client.iter_messages(
                str(wanted) if wanted is not None else None,
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
        (
            [m.id, m.type_name, m.title or m.content, when(m.create_time), yes_no(m.read)]
            for m in found
        ),
    )
