"""``bambu profile`` and ``bambu profile set``: the account's public profile."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from .base import OPTIONS, CliError, new_typer, open_client

if TYPE_CHECKING:
    from ..models import Profile

profile_app = new_typer(name="profile", help="The account's profile: show it, or change it.")


@profile_app.callback(invoke_without_command=True)
def profile(ctx: typer.Context) -> None:
    """Show the account's profile (``profile set`` changes it)."""
    if ctx.invoked_subcommand is not None:
        return
    with open_client() as client:
        _show(client.get_profile())


@profile_app.command("set")
def set_(
    name: Annotated[str | None, typer.Option("--name", help="The display name.")] = None,
    bio: Annotated[str | None, typer.Option("--bio", help="The profile text.")] = None,
) -> None:
    """Change the display name and/or bio."""
    changes: dict[str, Any] = {k: v for k, v in (("name", name), ("bio", bio)) if v is not None}
    if not changes:
        raise CliError("nothing to change: pass --name and/or --bio", exit_code=2)
    with open_client() as client:
        updated = client.update_profile(**changes)
    _show(updated, title="Profile updated")


def _show(found: Profile, title: str = "Profile") -> None:
    from .output import emit_json, fields

    if OPTIONS.json:
        emit_json(found.to_dict())
        return
    fields(
        title,
        [
            ("uid", found.uid),
            ("name", found.name),
            ("handle", found.handle),
            ("account", found.account),
            ("bio", found.bio),
            ("avatar", found.avatar),
        ],
    )
