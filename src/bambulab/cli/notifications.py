"""``bambu notifications`` and ``bambu notifications read ID``."""

from __future__ import annotations

from typing import Annotated

import typer

from .base import OPTIONS, CliError, new_typer, not_empty, open_client

notifications_app = new_typer(
    name="notifications", help="Device and account notifications: list, mark read."
)


@notifications_app.callback(invoke_without_command=True)
def notifications(
    ctx: typer.Context,
    unread: Annotated[bool, typer.Option("--unread", help="Only unread notifications.")] = False,
) -> None:
    """List notifications (``notifications read ID`` marks one read)."""
    if ctx.invoked_subcommand is not None:
        return
    from .output import Col, emit_json, table, when, yes_no

    with open_client() as client:
        found = client.get_notifications(unread=unread)
    if OPTIONS.json:
        emit_json([n.to_dict() for n in found])
        return
    table(
        f"{len(found)} {'unread ' if unread else ''}notification{'s' if len(found) != 1 else ''}",
        [
            Col("ID", wrap=False),
            Col("Type"),
            Col("Title"),
            Col("Message"),
            Col("Date (UTC)", wrap=False),
            Col("Read"),
        ],
        ([n.id, n.type, n.title, n.content, when(n.create_time), yes_no(n.read)] for n in found),
    )


@notifications_app.command("read")
def read(
    notification_id: Annotated[
        str, typer.Argument(metavar="ID", callback=not_empty, help="The notification id.")
    ],
    unread: Annotated[bool, typer.Option("--unread", help="Mark it unread instead.")] = False,
) -> None:
    """Mark one notification read."""
    from ..errors import NotFoundError, excerpt
    from .output import emit_json, esc, say

    # Ids are numbers on the wire; send them as numbers when they look like one.
    wire_id: int | str = int(notification_id) if notification_id.isdigit() else notification_id
    with open_client() as client:
        try:
            client.mark_notification_read(wire_id, read=not unread)
        except NotFoundError as exc:
            raise CliError(f"no notification {excerpt(notification_id)} ({exc})") from exc
    if OPTIONS.json:
        emit_json({"id": wire_id, "read": not unread})
        return
    say(f"Notification {esc(notification_id)} marked {'unread' if unread else 'read'}")
