"""``bambu files ls|get|put|rm|mkdir``: a printer's SD card over implicit FTPS (LAN).

The printer is reached like the live commands' LAN mode: ``--lan HOST``
(``BAMBU_PRINTER_HOST``), ``--serial`` (``BAMBU_SERIAL``), ``--access-code``
(``BAMBU_ACCESS_CODE``, prompted at a terminal), the certificate checked
against ``--ca-file`` or pinned on first use (CN = serial); ``--ftp-port``
(``BAMBU_PRINTER_FTP_PORT``, default 990) and ``--tls12``. Transfers show a
progress bar on a terminal (stderr); ``--json`` prints one document. Names
read from the card come from elsewhere: they reach the terminal through
:mod:`bambulab.safetext` (the output helpers), never raw.

Only typer is imported at module level (this module is loaded for
``bambu --help``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .base import OPTIONS, CliError, new_typer
from .live import live_command
from .output import transfer_progress

if TYPE_CHECKING:
    from ..local.ftps import LocalFTPClient
    from .live_session import Connect

files_app = new_typer(
    help="A printer's SD card over the LAN (implicit FTPS): list, get, put, rm, mkdir."
)

FtpPort = Annotated[
    int | None,
    typer.Option(
        "--ftp-port",
        metavar="PORT",
        envvar="BAMBU_PRINTER_FTP_PORT",
        min=1,
        max=65535,
        help="The printer's FTPS port (default 990).",
    ),
]
Tls12 = Annotated[
    bool,
    typer.Option("--tls12", help="Cap TLS at 1.2 (some firmware breaks TLS 1.3 session reuse)."),
]
Remote = Annotated[
    str, typer.Argument(metavar="REMOTE", help="Path on the card, e.g. /cache/part.3mf.")
]


@contextlib.contextmanager
def _card(conn: Connect, ftp_port: int | None, tls12: bool) -> Iterator[LocalFTPClient]:
    """A logged-in FTPS client for the printer the options name."""
    from ..local.ftps import FTPS_PORT, LocalFTPClient
    from .live_session import _access_code

    if not conn.lan_mode:
        raise CliError(
            "bambu files talks to the printer's SD card on the LAN: pass --lan HOST "
            "(or set BAMBU_PRINTER_HOST) with --serial and --access-code",
            exit_code=2,
        )
    serial = (conn.serial or "").strip()
    if not serial:
        raise CliError(
            "LAN mode needs the printer's serial: pass --serial SERIAL (or set BAMBU_SERIAL)",
            exit_code=2,
        )
    client = LocalFTPClient(
        conn.lan or "",
        _access_code(conn),
        serial,
        port=ftp_port or FTPS_PORT,
        ca_file=conn.ca_file,
        pin_file=conn.pin_file,
        insecure=conn.insecure,
        tls12=tls12,
    )
    with client:
        yield client


def _size(value: int | None) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


@files_app.command("ls")
@live_command
def ls(
    path: Annotated[str, typer.Argument(metavar="PATH", help="Folder on the card.")] = "/",
    ftp_port: FtpPort = None,
    tls12: Tls12 = False,
    *,
    conn: Connect,
) -> None:
    """List a folder of the card: name, size, modified, kind."""
    with _card(conn, ftp_port, tls12) as card:
        entries = card.list(path)
    entries.sort(key=lambda e: (not e.is_dir, e.name.lower()))
    if OPTIONS.json:
        from .output import emit_json

        emit_json([e.as_dict() for e in entries])
        return
    from .output import table, when

    table(
        path,
        ["Name", "Size", "Modified", "Kind"],
        [
            (
                e.name + ("/" if e.is_dir else ""),
                "" if e.is_dir else _size(e.size),
                when(e.mtime) if e.mtime else "",
                "folder" if e.is_dir else "file",
            )
            for e in entries
        ],
    )


@files_app.command("get")
@live_command
def get(
    remote: Remote,
    local: Annotated[
        Path | None,
        typer.Argument(metavar="LOCAL", help="Where to save it (default: its name, here)."),
    ] = None,
    ftp_port: FtpPort = None,
    tls12: Tls12 = False,
    *,
    conn: Connect,
) -> None:
    """Download a file from the card (complete or not at all)."""
    from ..protocol import ftp

    name = ftp.split(remote)[1]
    target = local if local is not None else Path(name)
    with _card(conn, ftp_port, tls12) as card, transfer_progress(name) as progress:
        moved = card.download(remote, target, progress=progress)
    final = target / name if target.is_dir() else target
    _done({"remote": ftp.normalise(remote), "local": str(final), "bytes": moved}, "saved")


@files_app.command("put")
@live_command
def put(
    local: Annotated[
        Path,
        typer.Argument(metavar="LOCAL", help="The file to send.", dir_okay=False),
    ],
    remote: Annotated[
        str | None,
        typer.Argument(
            metavar="REMOTE", help="Path on the card (default: /<name>; a folder ends in /)."
        ),
    ] = None,
    ftp_port: FtpPort = None,
    tls12: Tls12 = False,
    *,
    conn: Connect,
) -> None:
    """Upload a file to the card (under its name only once complete)."""
    from ..protocol import ftp

    if not local.is_file():
        raise CliError(f"no such file: {str(local)!r}", exit_code=2)
    where = remote or "/"
    target = ftp.join(where, local.name) if where.endswith("/") else ftp.normalise(where)
    with _card(conn, ftp_port, tls12) as card, transfer_progress(local.name) as progress:
        moved = card.upload(local, target, progress=progress)
    _done({"local": str(local), "remote": target, "bytes": moved}, "sent")


@files_app.command("rm")
@live_command
def rm(
    remote: Remote,
    ftp_port: FtpPort = None,
    tls12: Tls12 = False,
    *,
    conn: Connect,
) -> None:
    """Delete a file from the card."""
    from ..protocol import ftp

    with _card(conn, ftp_port, tls12) as card:
        card.delete(remote)
    _done({"removed": ftp.normalise(remote)}, "removed")


@files_app.command("mkdir")
@live_command
def mkdir(
    remote: Remote,
    ftp_port: FtpPort = None,
    tls12: Tls12 = False,
    *,
    conn: Connect,
) -> None:
    """Create a folder on the card (already there is fine)."""
    from ..protocol import ftp

    with _card(conn, ftp_port, tls12) as card:
        card.mkdir(remote)
    _done({"created": ftp.normalise(remote)}, "created")


def _done(document: dict[str, Any], verb: str) -> None:
    if OPTIONS.json:
        from .output import emit_json

        emit_json(document)
        return
    from .output import esc, say

    if "bytes" in document:
        say(
            f"{verb} {esc(document.get('remote') if verb == 'sent' else document['local'])} "
            f"({_size(document['bytes'])})"
        )
    else:
        say(f"{verb} {esc(next(iter(document.values())))}")
