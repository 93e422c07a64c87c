"""``bambu serve token create|list|revoke``: the tokens the servers issue to their clients.

A token is shown once, when it is created, and stored only as a hash (see
:mod:`bambulab.servers.tokens`); ``list`` shows ids, scopes, printers,
expiry and last use, never a secret. ``--store PATH`` (``BAMBU_TOKEN_STORE``)
picks another store than the one in the user's state directory.

Only typer is imported at module level (this module is loaded for ``bambu --help``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .base import OPTIONS, CliError, new_typer

if TYPE_CHECKING:
    from ..servers.tokens import TokenStore

serve_app = new_typer(help="The servers: the tokens they issue to their clients.")
token_app = new_typer(
    help="Tokens for the servers' clients: create (shown once), list, revoke.",
    no_args_is_help=True,
)
serve_app.add_typer(token_app, name="token")

Store = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="PATH",
        envvar="BAMBU_TOKEN_STORE",
        help="The token store (default: tokens.sqlite3 in the user's state directory).",
    ),
]


def _store(path: str | None) -> TokenStore:
    from ..servers.tokens import TokenStore

    try:
        return TokenStore((path or "").strip() or None)
    except OSError as exc:
        raise CliError(f"cannot open the token store: {exc.strerror or exc}") from None


@token_app.command("create")
def create(
    scope: Annotated[
        str,
        typer.Option(
            "--scope", metavar="read|control|admin", help="What the token may do (default read)."
        ),
    ] = "read",
    printers: Annotated[
        str,
        typer.Option(
            "--printers", metavar="S1,S2", help="Only these printers' serials (default: all)."
        ),
    ] = "",
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires", metavar="30d", help="Lifetime: 30d, 12h, 90m, 2w (default: none)."
        ),
    ] = None,
    label: Annotated[str, typer.Option("--label", help="A note to tell tokens apart.")] = "",
    store: Store = None,
) -> None:
    """Create a token and print it once: it is stored only as a hash."""
    from ..servers.tokens import SCOPES, parse_duration
    from .output import emit_json, when

    wanted = scope.strip().lower()
    if wanted not in SCOPES:
        raise CliError(f"--scope must be one of {', '.join(SCOPES)}", exit_code=2)
    lifetime = parse_duration(expires) if expires else None
    serials = [p.strip() for p in printers.split(",") if p.strip()]
    secret, row = _store(store).create(
        wanted,
        printers=serials,
        expires_in=lifetime,
        label=label,
    )
    if OPTIONS.json:
        emit_json({**row.to_dict(), "token": secret})
        return
    typer.echo(secret)  # alone on stdout, for `TOKEN=$(bambu serve token create)`
    where = ", ".join(row.printers) if row.printers else "every printer"
    until = when(row.expires) if row.expires else "never"
    typer.echo(
        f"token {row.id}: {row.scope} on {where}, expires {until} "
        "(shown once: the store keeps only a hash)",
        err=True,
    )


@token_app.command("list")
def list_tokens(store: Store = None) -> None:
    """The tokens issued: id, scope, printers, expiry, last use (never a secret)."""
    import time

    from .output import Col, emit_json, esc, note, table, when

    chosen = _store(store)
    rows = chosen.tokens()
    if OPTIONS.json:
        emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        note(f"No tokens (in {esc(str(chosen.path))})")
        return
    now = time.time()

    def state(revoked: bool, expired: bool) -> str:
        return "revoked" if revoked else "expired" if expired else "active"

    table(
        f"{len(rows)} token{'s' if len(rows) != 1 else ''} ({chosen.path})",
        [
            Col("Id", wrap=False),
            Col("Scope", wrap=False),
            Col("Printers"),
            Col("Label"),
            Col("Expires (UTC)", wrap=False),
            Col("Last use (UTC)", wrap=False),
            Col("State", wrap=False),
        ],
        (
            [
                r.id,
                r.scope,
                ", ".join(r.printers) or "all",
                r.label,
                when(r.expires) if r.expires else "never",
                when(r.last_used),
                state(r.revoked, r.expired(now)),
            ]
            for r in rows
        ),
    )


@token_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id (or the token).")],
    store: Store = None,
) -> None:
    """Revoke a token: the servers refuse it from the next request on."""
    from .output import emit_json, say

    chosen = _store(store)
    if not chosen.revoke(token_id):
        known = [r.id for r in chosen.tokens() if not r.revoked]
        raise CliError(
            f"no active token with that id in {chosen.path} (active: {', '.join(known) or 'none'})"
        )
    if OPTIONS.json:
        emit_json({"revoked": True})
        return
    say("Revoked: the servers refuse it from the next request on")
