"""``bambu print FILE [PRINTER...]``: print a local 3MF or G-code file on one printer or many.

Cloud (the default): the file is uploaded once to the account's storage and
each printer is told, over the cloud broker, to print it
(:func:`bambulab.cloud.printing.print_many_cloud`); ``PRINTER`` is a serial
or a name, and defaults to the account's only printer.

LAN (``--lan HOST --serial SERIAL --access-code CODE``): the file goes to the
printer's SD card over implicit FTPS (skipped when the same bytes are already
there) and ``print.project_file`` goes to its own broker
(:func:`bambulab.local.lan_print.print_many`). Several LAN printers are named
by serial (or number) among the ``BAMBU_PRINTER_<N>_SERIAL``/``_HOST``/
``_ACCESS_CODE``/``_PORT``/``_FTP_PORT`` variables ``bambu sim`` exports (and
a user can set for their own printers).

Every printer gets its own line: one failing never stops the others, and the
exit status is 1 when any failed. Only typer is imported at module level.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .base import OPTIONS, CliError
from .files import FtpPort, Tls12
from .live import live_command
from .output import transfer_bars, transfer_progress

if TYPE_CHECKING:
    from ..local.lan_print import LanPrinter
    from ..models.printing import AmsChoice, PrintOptions, PrintOutcome
    from .live_session import Connect

_ENV = re.compile(
    r"BAMBU_PRINTER_(\d+)_(SERIAL|HOST|ACCESS_CODE|PORT|FTP_PORT|CAMERA_PORT|RTSP_URL|MODEL)"
)


@live_command
def print_file(
    file: Annotated[
        Path,
        typer.Argument(metavar="FILE", help="A sliced .3mf or a .gcode file.", show_default=False),
    ],
    printers: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[PRINTER]...",
            help="Serials or names (cloud), serials or numbers of BAMBU_PRINTER_<N>_* (LAN).",
            show_default=False,
        ),
    ] = None,
    plate: Annotated[int, typer.Option("--plate", min=1, help="The plate to print.")] = 1,
    ams_map: Annotated[
        str,
        typer.Option(
            "--ams-map",
            metavar="auto|none|LIST",
            help="auto: match the file's filaments to the loaded trays (type, then colour); "
            "none: the external spool; or global tray ids, one per filament (0,4,-1,254).",
        ),
    ] = "auto",
    timelapse: Annotated[bool, typer.Option("--timelapse", help="Record a timelapse.")] = False,
    no_bed_level: Annotated[
        bool, typer.Option("--no-bed-level", help="Skip automatic bed levelling.")
    ] = False,
    flow_cali: Annotated[
        bool, typer.Option("--flow-cali", help="Run flow (extrusion) calibration first.")
    ] = False,
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="NAME", help="The job's name on the printer."),
    ] = None,
    ftp_port: FtpPort = None,
    tls12: Tls12 = False,
    *,
    conn: Connect,
) -> None:
    """Print a local file on one printer or several (cloud by default, --lan for the LAN)."""
    from ..models.printing import PrintOptions

    if not file.is_file():
        raise CliError(f"no such file: {file}", exit_code=2)
    options = PrintOptions(
        plate=plate,
        timelapse=timelapse,
        bed_levelling=not no_bed_level,
        flow_cali=flow_cali,
        ams_mapping=parse_ams_map(ams_map),
        subtask_name=name or "",
    )
    wanted = [p for p in printers or [] if p.strip()]
    if conn.lan_mode:
        outcomes = _lan(file, wanted, options, conn, ftp_port, tls12)
    else:
        outcomes = _cloud(file, wanted, options, conn)
    show_outcomes(file.name, outcomes)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


def parse_ams_map(text: str) -> AmsChoice:
    """``auto``, ``none`` or a comma-separated list of global tray ids."""
    word = text.strip().lower()
    if word in ("auto", "none"):
        return "auto" if word == "auto" else "none"
    try:
        return tuple(int(part) for part in word.split(","))
    except ValueError:
        raise CliError(
            f"--ams-map takes auto, none or tray ids like 0,4,-1,254; not {text!r}", exit_code=2
        ) from None


def _cloud(
    file: Path, wanted: list[str], options: PrintOptions, conn: Connect
) -> list[PrintOutcome]:
    from ..cloud.printing import print_many_cloud
    from .base import open_client
    from .live_session import connected, plan

    chosen = plan(conn, wanted)
    serials = [p.serial for p in chosen.printers]
    with (
        open_client() as client,
        connected(conn, chosen) as mqtt,
        transfer_progress(f"{file.name} to the cloud") as progress,
    ):
        return print_many_cloud(client, file, serials, options, mqtt=mqtt, progress=progress)


def _lan(
    file: Path,
    wanted: list[str],
    options: PrintOptions,
    conn: Connect,
    ftp_port: int | None,
    tls12: bool,
) -> list[PrintOutcome]:
    from ..local.lan_print import print_many

    targets = lan_printers(conn, wanted, ftp_port, tls12)
    with transfer_bars() as bars:
        if bars is None:
            return print_many(file, targets, options)
        each = {t.serial: bars(f"{file.name} to {t.serial}") for t in targets}
        return print_many(
            file, targets, options, progress=lambda serial, done, total: each[serial](done, total)
        )


def lan_printers(
    conn: Connect, wanted: list[str], ftp_port: int | None, tls12: bool
) -> list[LanPrinter]:
    """The LAN printers to print on: the one of the options, or those named from the environment."""
    from ..local.ftps import FTPS_PORT
    from ..local.lan_print import LAN_MQTT_PORT, LanPrinter
    from .live_session import _access_code

    common: dict[str, Any] = {
        "ca_file": conn.ca_file,
        "pin_file": conn.pin_file,
        "insecure": conn.insecure,
        "tls12": tls12,
    }
    serial = (conn.serial or "").strip()
    if not wanted or wanted == [serial]:
        if not serial:
            raise CliError(
                "LAN mode needs the printer's serial: pass --serial SERIAL (or set BAMBU_SERIAL)",
                exit_code=2,
            )
        return [
            LanPrinter(
                conn.lan or "",
                serial,
                _access_code(conn),
                mqtt_port=conn.port or LAN_MQTT_PORT,
                ftp_port=ftp_port or FTPS_PORT,
                **common,
            )
        ]
    chosen: list[LanPrinter] = []
    for key in dict.fromkeys(wanted):
        entry = environment_printer(key)
        chosen.append(
            LanPrinter(
                entry.get("HOST") or conn.lan or "",
                entry["SERIAL"],
                entry["ACCESS_CODE"],
                model=entry.get("MODEL") or None,
                mqtt_port=int(entry.get("PORT") or LAN_MQTT_PORT),
                ftp_port=int(entry.get("FTP_PORT") or FTPS_PORT),
                **common,
            )
        )
    return chosen


def environment_printer(key: str) -> dict[str, str]:
    """The ``BAMBU_PRINTER_<N>_*`` printer that ``key`` names (its ``N`` or its serial).

    Its ``SERIAL`` and ``ACCESS_CODE`` are there; otherwise one CliError line.
    """
    from ..safetext import visible

    wanted = key.strip()
    known = environment_printers()
    entry = known.get(wanted) or next(
        (e for e in known.values() if e.get("SERIAL", "").lower() == wanted.lower()), None
    )
    if entry is None or not entry.get("SERIAL"):
        listed = ", ".join(visible(e.get("SERIAL", "?")) for e in known.values())
        raise CliError(
            f"no printer {visible(wanted)!r} among the BAMBU_PRINTER_<N>_SERIAL variables "
            f"({listed or 'none set'})",
            exit_code=2,
        )
    if not entry.get("ACCESS_CODE"):
        raise CliError(f"printer {entry['SERIAL']} has no BAMBU_PRINTER_<N>_ACCESS_CODE")
    return entry


def environment_printers() -> dict[str, dict[str, str]]:
    """``BAMBU_PRINTER_<N>_<FIELD>`` variables, by ``N``."""
    found: dict[str, dict[str, str]] = {}
    for variable, value in os.environ.items():
        match = _ENV.fullmatch(variable)
        if match:
            found.setdefault(match.group(1), {})[match.group(2)] = value.strip()
    return dict(sorted(found.items(), key=lambda item: int(item[0])))


def show_outcomes(file_name: str, outcomes: list[PrintOutcome]) -> None:
    """One line per printer (a table), or the outcomes as JSON."""
    from .output import Col, emit_json, styled, table

    if OPTIONS.json:
        emit_json(
            [
                {
                    "serial": o.serial,
                    "ok": o.ok,
                    "error": o.error,
                    "url": o.url,
                    "task_id": o.task_id,
                    "uploaded": o.uploaded,
                    "ams_mapping": list(o.ams_mapping),
                    "seconds": o.seconds,
                }
                for o in outcomes
            ]
        )
        return
    started = sum(o.ok for o in outcomes)
    table(
        f"{file_name}: started on {started} of {len(outcomes)} printers",
        ["Printer", "Result", Col("Detail"), Col("Seconds", justify="right")],
        [
            (
                o.serial,
                styled("started", "green") if o.ok else styled("failed", "red"),
                (o.task_id and f"task {o.task_id}") or o.url if o.ok else o.error or "",
                f"{o.seconds:.1f}",
            )
            for o in outcomes
        ],
    )
