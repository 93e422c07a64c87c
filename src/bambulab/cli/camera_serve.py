"""``bambu camera serve``: one camera connection per printer, shared with any number of viewers.

Printers accept one or two camera clients; this command holds one upstream
per printer (:class:`bambulab.servers.camera.CameraServer`) and serves an
index page with every printer's live picture, MJPEG streams, snapshots and a
JSON listing to browsers and players on the network.

Printers come from ``--lan HOST --serial SERIAL --access-code CODE`` (one
printer), or from the ``BAMBU_PRINTER_<N>_*`` variables ``bambu sim``
exports (``SERIAL``, ``HOST``, ``ACCESS_CODE``, ``CAMERA_PORT``, ``MODEL``).
Every route needs a token: ``--token`` / ``BAMBU_CAMERA_TOKEN``, or one is
generated and printed once, in the URL to open. The server listens on
127.0.0.1 unless ``--host`` says otherwise (with a warning).

Only typer is imported at module level (this module is loaded for
``bambu --help``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .base import CliError
from .live import CaFile, Insecure, PinFile

if TYPE_CHECKING:
    from ..servers.camera import AsyncFrameSource, CameraPrinter


@dataclass(frozen=True, slots=True)
class CameraTarget:
    """Where one printer's camera is, and how to open it (the access code stays out of reprs)."""

    serial: str
    host: str
    access_code: str = field(repr=False)
    model: str = ""
    name: str = ""
    port: int | None = None  # the camera port; None: the family's default
    rtsp_url: str | None = None  # an RTSPS camera's URL when not the standard one (bambu sim's)


def environment_targets() -> list[CameraTarget]:
    """The printers of ``BAMBU_PRINTER_<N>_*`` (``bambu sim`` exports them), in ``N`` order."""
    from .printing import environment_printers

    targets = []
    for number, fields in environment_printers().items():
        serial, host = fields.get("SERIAL", ""), fields.get("HOST", "")
        if not serial or not host:
            continue
        port = fields.get("CAMERA_PORT", "")
        model = fields.get("MODEL", "")
        targets.append(
            CameraTarget(
                serial=serial,
                host=host,
                access_code=fields.get("ACCESS_CODE", ""),
                model=model,
                name=f"{model} {number}" if model else serial,
                port=int(port) if port.isdigit() else None,
                rtsp_url=fields.get("RTSP_URL") or None,
            )
        )
    return targets


@dataclass(frozen=True, slots=True)
class Trust:
    """How printer certificates are checked (as for MQTT: a CA file, pins, or not at all)."""

    ca_file: str | None = None
    pin_file: str | None = None
    insecure: bool = False


def opener_for(targets: list[CameraTarget], trust: Trust) -> Callable[[str], AsyncFrameSource]:
    """The hub's opener: the camera client of each printer's family, checked like MQTT."""
    by_serial = {t.serial: t for t in targets}

    def open_camera(serial: str) -> AsyncFrameSource:
        from ..local.camera import open_async_camera

        target = by_serial[serial]
        options: dict[str, Any] = {}
        if target.port is not None:
            options["port"] = target.port
        source: AsyncFrameSource = open_async_camera(
            target.host,
            target.access_code,
            target.serial,
            model=target.model or None,
            rtsp_url=target.rtsp_url,
            ca_file=trust.ca_file,
            pin_file=trust.pin_file,
            insecure=trust.insecure,
            **options,
        )
        return source

    return open_camera


def printers_of(targets: list[CameraTarget]) -> list[CameraPrinter]:
    """What the index page and ``/api/cameras`` show."""
    from ..servers.camera import CameraPrinter

    return [CameraPrinter(t.serial, t.name or t.serial, t.model) for t in targets]


def serve(
    lan: Annotated[
        str | None,
        typer.Option("--lan", metavar="HOST", help="Serve the one printer at HOST on the LAN."),
    ] = None,
    serial: Annotated[
        str | None,
        typer.Option("--serial", metavar="SERIAL", envvar="BAMBU_SERIAL", help="Its serial."),
    ] = None,
    access_code: Annotated[
        str | None,
        typer.Option(
            "--access-code",
            metavar="CODE",
            envvar="BAMBU_ACCESS_CODE",
            help="Its LAN access code (prompted at a terminal when missing).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Its model (P1S, A1, X1C, ...): picks JPEG or RTSPS."),
    ] = None,
    camera_port: Annotated[
        int | None,
        typer.Option(
            "--camera-port",
            min=1,
            max=65535,
            help="Its camera port (default: the family's own, 6000 or 322).",
        ),
    ] = None,
    ca_file: CaFile = None,
    pin_file: PinFile = None,
    insecure: Insecure = False,
    host: Annotated[
        str,
        typer.Option("--host", help="Address to listen on (another than loopback warns)."),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free one)."),
    ] = 8090,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="BAMBU_CAMERA_TOKEN",
            help="The token viewers need (default: a new one, printed once).",
            show_default=False,
        ),
    ] = None,
    linger: Annotated[
        float,
        typer.Option(
            "--linger", min=0, help="Seconds an unwatched printer's camera stays connected."
        ),
    ] = 10.0,
) -> None:
    """Serve every printer's camera to many viewers over one connection per printer."""
    from ..servers.camera import CameraServer
    from .output import esc, note, say

    targets = _lan_target(lan, serial, access_code, model, camera_port)
    if targets is None:
        targets = environment_targets()
    if not targets:
        raise CliError(
            "no printer to serve: pass --lan HOST --serial SERIAL --access-code CODE, "
            "or set BAMBU_PRINTER_<N>_SERIAL/HOST/ACCESS_CODE (bambu sim exports them)",
            exit_code=2,
        )
    trust = Trust((ca_file or "").strip() or None, (pin_file or "").strip() or None, insecure)
    server = CameraServer(
        opener_for(targets, trust),
        printers_of(targets),
        token=(token or "").strip() or None,
        host=host,
        port=port,
        linger=linger,
    )
    server.start()
    try:
        if not (token or "").strip():
            note("A new access token was generated; it is shown only in this URL.")
        say(f"Camera server for {len(targets)} printer(s): open {esc(server.login_url)}")
        say(f"API: {esc(server.url)}/api/cameras (Authorization: Bearer TOKEN). Ctrl-C stops.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _lan_target(
    lan: str | None,
    serial: str | None,
    access_code: str | None,
    model: str | None,
    camera_port: int | None,
) -> list[CameraTarget] | None:
    """The one ``--lan`` printer, or None without ``--lan``."""
    host = (lan or "").strip()
    if not host:
        return None
    name = (serial or "").strip()
    if not name:
        raise CliError("--lan needs the printer's serial: pass --serial SERIAL", exit_code=2)
    code = (access_code or "").strip()
    if not code:
        from .base import interactive

        if not interactive():
            raise CliError(
                "--lan needs the printer's access code: pass --access-code CODE "
                "(or set BAMBU_ACCESS_CODE)",
                exit_code=2,
            )
        from .output import ask

        code = ask("Access code (on the printer's screen)", secret=True)
    return [CameraTarget(name, host, code, (model or "").strip(), name, camera_port)]
