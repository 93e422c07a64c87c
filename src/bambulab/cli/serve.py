"""``bambu serve``: the servers (API proxy, compatibility API, live API, metrics) and their tokens.

``bambu serve`` mounts every part on one port; ``bambu serve proxy --mode
strict|full`` and ``bambu serve compat`` serve one part each (see
:mod:`bambulab.servers`). They follow the account's printers over one MQTT
connection, read the account token from ``bambu login``'s token file (never
shown to a client), and answer only requests with a token of their own:

``bambu serve token create|list|revoke``: the tokens the servers issue to their clients.
A token is shown once, when it is created, and stored only as a hash (see
:mod:`bambulab.servers.tokens`); ``list`` shows ids, scopes, printers,
expiry and last use, never a secret. ``--store PATH`` (``BAMBU_TOKEN_STORE``)
picks another store than the one in the user's state directory.

Only typer is imported at module level (this module is loaded for ``bambu --help``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from .base import OPTIONS, CliError, new_typer

if TYPE_CHECKING:
    from ..servers.tokens import TokenStore

serve_app = new_typer(
    help=(
        "The servers: API proxy, compatibility API, live API and metrics (all on one port "
        "by default), and the tokens they issue to their clients."
    ),
    invoke_without_command=True,
)
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


# --- the servers --------------------------------------------------------------------------

Host = Annotated[
    str,
    typer.Option("--host", help="Address to listen on (another than loopback warns)."),
]
Port = Annotated[
    int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free one).")
]
Rate = Annotated[
    str,
    typer.Option(
        "--rate",
        metavar="N/UNIT",
        help="Requests per token: 120/min (the default), 10/s, 1000/h; 0 for none.",
    ),
]
Redis = Annotated[
    str | None,
    typer.Option(
        "--redis",
        metavar="URL",
        envvar="BAMBU_REDIS_URL",
        help="Share rate limits and the event stream with other instances (redis://host:6379/0).",
    ),
]
Cors = Annotated[
    list[str] | None,
    typer.Option("--cors", metavar="ORIGIN", help="Allow this browser origin (repeatable)."),
]
Printers = Annotated[
    str,
    typer.Option("--printers", metavar="S1,S2", help="Serve only these printers (serial or name)."),
]
Broker = Annotated[
    str | None,
    typer.Option(
        "--broker",
        metavar="URL",
        envvar="BAMBU_SERVE_BROKER",
        help=(
            "Follow the printers through a shared broker (mqtts://user:pass@host:8883) "
            "instead of the cloud's: several instances, one session (docs/fleet.md)."
        ),
    ),
]
BrokerCa = Annotated[
    str | None,
    typer.Option("--broker-ca", metavar="FILE", help="CA file of the shared broker's certificate."),
]
Mode = Annotated[
    str,
    typer.Option(
        "--mode",
        metavar="strict|full",
        help="strict: an allowlist of read endpoints; full: everything, for control tokens.",
    ),
]


@serve_app.callback()
def serve_all(
    ctx: typer.Context,
    host: Host = "127.0.0.1",
    port: Port = 8088,
    mode: Mode = "strict",
    rate: Rate = "120/min",
    redis: Redis = None,
    cors: Cors = None,
    printers: Printers = "",
    store: Store = None,
    broker: Broker = None,
    broker_ca: BrokerCa = None,
) -> None:
    """Serve the proxy, the compatibility API, the live API, /metrics and the farm on one port."""
    if ctx.invoked_subcommand is not None:
        return
    run_server(("proxy", "compat", "live", "metrics", "farm"), host, port, mode, rate, redis, cors,
               printers, store, broker=broker, broker_ca=broker_ca)  # fmt: skip


@serve_app.command("proxy")
def serve_proxy(
    mode: Mode = "strict",
    host: Host = "127.0.0.1",
    port: Port = 8088,
    rate: Rate = "120/min",
    redis: Redis = None,
    cors: Cors = None,
    store: Store = None,
) -> None:
    """The Bambu API through tokens of this server: strict (reads only) or full."""
    run_server(("proxy",), host, port, mode, rate, redis, cors, "", store)


@serve_app.command("compat")
def serve_compat(
    host: Host = "127.0.0.1",
    port: Port = 8088,
    rate: Rate = "120/min",
    redis: Redis = None,
    cors: Cors = None,
    printers: Printers = "",
    store: Store = None,
    broker: Broker = None,
    broker_ca: BrokerCa = None,
) -> None:
    """The legacy local API (/api/v1/status...) fed live, plus /api/v2 and /metrics."""
    run_server(("compat", "live", "metrics"), host, port, "strict", rate, redis, cors,
               printers, store, broker=broker, broker_ca=broker_ca)  # fmt: skip


@serve_app.command("farm")
def serve_farm(
    host: Host = "127.0.0.1",
    port: Port = 8088,
    rate: Rate = "120/min",
    redis: Redis = None,
    printers: Printers = "",
    store: Store = None,
    broker: Broker = None,
    broker_ca: BrokerCa = None,
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            metavar="URL",
            help="The queue's database: postgresql://... shared by several farm instances "
            "(default: SQLite in the state directory; or BAMBU_FARM_DATABASE).",
        ),
    ] = None,
    files: Annotated[
        str | None,
        typer.Option("--files", metavar="DIR", help="Where queued 3MF files are kept."),
    ] = None,
    notify: Annotated[
        str | None,
        typer.Option(
            "--notify",
            metavar="FILE",
            help="Notification routes (TOML or JSON: Apprise URLs per event; docs/farm.md).",
        ),
    ] = None,
) -> None:
    """The print farm: dashboard (/farm), a queue that dispatches itself, notifications."""
    run_server(("farm", "live", "metrics"), host, port, "strict", rate, redis, None,
               printers, store, broker=broker, broker_ca=broker_ca, database=database,
               files=files, notify=notify)  # fmt: skip


def run_server(
    parts: tuple[str, ...],
    host: str,
    port: int,
    mode: str,
    rate: str,
    redis: str | None,
    cors: list[str] | None,
    printers: str,
    store: str | None,
    quiet: bool = False,
    broker: str | None = None,
    broker_ca: str | None = None,
    database: str | None = None,
    files: str | None = None,
    notify: str | None = None,
) -> None:
    """Build the server from the options and the saved login, serve until Ctrl-C."""
    import logging
    import sys

    from ..regions import endpoints
    from ..safetext import VisibleFormatter
    from ..servers.common import parse_rate
    from ..servers.config import ServeOptions, environment_mqtt, open_server
    from ..servers.runner import is_loopback
    from .base import region, token_source
    from .output import esc, note, say

    chosen_mode = mode.strip().lower()
    if chosen_mode not in ("strict", "full"):
        raise CliError("--mode must be strict or full", exit_code=2)
    try:
        limit = None if rate.strip() in ("0", "", "none") else parse_rate(rate)
    except ValueError as exc:
        raise CliError(f"--rate: {exc}", exit_code=2) from None
    redis_url = (redis or "").strip() or None
    if redis_url:
        import asyncio

        from ..servers.shared import check_redis

        asyncio.run(check_redis(redis_url))  # one clear line now, not 503s later
    source = token_source()
    if not source.token:
        raise CliError(
            f"the server needs the Bambu account and no token is in {source.origin}: "
            "run `bambu login` (or set BAMBU_TOKEN)"
        )
    mqtt_host, mqtt_port, ca_file = environment_mqtt()
    chosen_region = region(source)
    options = ServeOptions(
        parts=parts,
        host=host,
        port=port,
        proxy_mode=chosen_mode,
        store=(store or "").strip() or None,
        rate=limit,
        redis=redis_url,
        cors=tuple(o.strip() for o in cors or () if o.strip()),
        printers=tuple(p.strip() for p in printers.split(",") if p.strip()),
        mqtt_host=mqtt_host,
        mqtt_port=mqtt_port,
        ca_file=ca_file,
        broker=(broker or "").strip() or None,
        broker_ca=(broker_ca or "").strip() or None,
        farm_database=(database or os.environ.get("BAMBU_FARM_DATABASE") or "").strip() or None,
        farm_files=(files or "").strip() or None,
        farm_notify=(notify or "").strip() or None,
    )
    server = open_server(
        options,
        account_token=source.token,
        cloud_url=endpoints(chosen_region, OPTIONS.api_url).api,
        region=chosen_region,
    )
    if not is_loopback(host):
        logging.getLogger("bambulab.servers").warning(
            "listening on %s, not loopback: anyone who can reach it and holds a token "
            "of this server can use it",
            host,
        )
    audit = logging.getLogger("bambulab.servers.audit")
    if not quiet:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(VisibleFormatter("%(asctime)s %(message)s"))
        audit.addHandler(handler)
        audit.setLevel(logging.INFO)
        audit.propagate = False
    server.start()
    hub = server.ctx.hub
    count = len(server.call(hub.printers)) if hub is not None else 0
    plural = "s" if count != 1 else ""
    say(
        f"Serving {', '.join(server.parts)} at {esc(server.url)} "
        f"({count} printer{plural}; API docs at {esc(server.url)}/docs)",
        wrap=False,
    )
    if not server.ctx.gate.store.tokens():
        note("No tokens yet: create one with `bambu serve token create --scope read`")
    note("Ctrl-C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
