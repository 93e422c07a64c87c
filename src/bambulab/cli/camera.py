"""``bambu camera snapshot|stream|url``: the printers' cameras.

P1/A1 printers stream JPEG over TLS port 6000, X1/P2S/H2 printers serve
RTSPS (decoded with PyAV, the ``camera`` extra); the commands take the same
options either way (:func:`bambulab.local.camera.open_camera` picks).

The printer is named like ``bambu files`` does (``--lan HOST --serial
--access-code``, ``--ca-file`` or a pinned certificate), or, like ``bambu
print --lan``, by number or serial among the ``BAMBU_PRINTER_<N>_*``
variables ``bambu sim`` exports (``_HOST``, ``_SERIAL``, ``_ACCESS_CODE``,
``_CAMERA_PORT``, ``_MODEL``). ``--camera-port`` (``BAMBU_PRINTER_CAMERA_PORT``)
overrides the port of the first form. Errors are one line (no traceback
unless ``--debug``); the access code never reaches the output, and URLs
are shown without credentials unless ``--show-secrets``. Only typer is
imported at module level (this module is loaded for ``bambu --help``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .base import OPTIONS, CliError, new_typer
from .live import live_command

if TYPE_CHECKING:
    from ..local.camera import CameraStream
    from .live_session import Connect

camera_app = new_typer(help="Printer cameras: save a snapshot, stream frames, show URLs.")

CameraPort = Annotated[
    int | None,
    typer.Option(
        "--camera-port",
        metavar="PORT",
        envvar="BAMBU_PRINTER_CAMERA_PORT",
        min=1,
        max=65535,
        help="The printer's camera port (default 6000 for P1/A1, 322 for RTSPS).",
    ),
]
Model = Annotated[
    str | None,
    typer.Option(
        "--model",
        metavar="MODEL",
        envvar="BAMBU_PRINTER_MODEL",
        help="The printer's model (P1S, A1, X1C...): which camera it has "
        "(default: from the serial).",
    ),
]
Timeout = Annotated[
    float,
    typer.Option(
        "--timeout", min=0.1, help="Seconds to wait for the camera's first frame.", metavar="S"
    ),
]
PrinterArg = Annotated[
    str | None,
    typer.Argument(
        metavar="[PRINTER]",
        help="Number or serial among BAMBU_PRINTER_<N>_* (default: the --lan printer).",
        show_default=False,
    ),
]
BOUNDARY = "bambuframe"


@dataclass(frozen=True)
class Target:
    """The camera to open: where, whose, with which code (never shown)."""

    host: str
    serial: str
    code: str = field(repr=False)
    port: int | None
    model: str | None
    options: dict[str, Any] = field(default_factory=dict)
    rtsp_url: str | None = None  # BAMBU_PRINTER_<N>_RTSP_URL (bambu sim's, or a report's)

    def open(self, **extra: Any) -> CameraStream:
        from ..local.camera import open_camera

        options = {**self.options, **extra}
        if self.port is not None:
            options["port"] = self.port
        try:
            return open_camera(
                self.host,
                self.code,
                self.serial,
                model=self.model,
                rtsp_url=self.rtsp_url,
                **options,
            )
        except ImportError as exc:
            raise CliError(
                f"printer {self.serial}'s RTSPS camera needs the camera extra "
                f"({exc.name or 'bambulab.local.rtsp'} is missing): pip install 'bambulab[camera]'"
            ) from None


def target(
    conn: Connect, printer: str | None, camera_port: int | None, model: str | None
) -> Target:
    """The printer the options or the ``BAMBU_PRINTER_<N>_*`` variables name."""
    from .live_session import _access_code
    from .printing import environment_printer

    tls: dict[str, Any] = {
        "ca_file": conn.ca_file,
        "pin_file": conn.pin_file,
        "insecure": conn.insecure,
    }
    serial = (conn.serial or "").strip()
    wanted = (printer or "").strip()
    if not wanted or wanted == serial:
        if not conn.lan_mode:
            raise CliError(
                "bambu camera talks to the printer on the LAN: pass --lan HOST (or set "
                "BAMBU_PRINTER_HOST) with --serial and --access-code, or name a printer of "
                "the BAMBU_PRINTER_<N>_* variables",
                exit_code=2,
            )
        if not serial:
            raise CliError(
                "LAN mode needs the printer's serial: pass --serial SERIAL (or set BAMBU_SERIAL)",
                exit_code=2,
            )
        return Target(conn.lan or "", serial, _access_code(conn), camera_port, model, tls)
    entry = environment_printer(wanted)
    code = entry["ACCESS_CODE"]
    host = entry.get("HOST") or conn.lan or ""
    if not host:
        raise CliError(f"printer {entry['SERIAL']} has no BAMBU_PRINTER_<N>_HOST", exit_code=2)
    port = entry.get("CAMERA_PORT")
    return Target(
        host,
        entry["SERIAL"],
        code,
        int(port) if port else None,
        model or entry.get("MODEL") or None,
        tls,
        rtsp_url=entry.get("RTSP_URL") or None,
    )


@camera_app.command("snapshot")
@live_command
def snapshot(
    printer: PrinterArg = None,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="FILE.jpg", help="Where to write the JPEG."),
    ] = Path("snapshot.jpg"),
    camera_port: CameraPort = None,
    model: Model = None,
    timeout: Timeout = 20.0,
    *,
    conn: Connect,
) -> None:
    """Save one picture of the printer's camera as a JPEG."""
    chosen = target(conn, printer, camera_port, model)
    stream = chosen.open(reconnect=False)
    try:
        frame = stream.snapshot(timeout=timeout)
    finally:
        stream.close()
    _write(output, frame.jpeg)
    if OPTIONS.json:
        from .output import emit_json

        emit_json(
            {
                "serial": chosen.serial,
                "path": str(output),
                "bytes": frame.size,
                "timestamp": frame.timestamp,
            }
        )
        return
    from .output import esc, say

    say(f"saved {esc(output)} ({frame.size} bytes) from printer {esc(chosen.serial)}")


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


@camera_app.command("stream")
@live_command
def stream(
    printer: PrinterArg = None,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            metavar="DIR",
            help="Write each frame as DIR/frame-000001.jpg, ...",
            file_okay=False,
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="-",
            help="'-': the frames as MJPEG (multipart/x-mixed-replace) on stdout.",
        ),
    ] = None,
    frames: Annotated[
        int | None, typer.Option("--frames", min=1, metavar="N", help="Stop after N frames.")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option("--seconds", min=0.1, metavar="S", help="Stop after S seconds.")
    ] = None,
    camera_port: CameraPort = None,
    model: Model = None,
    *,
    conn: Connect,
) -> None:
    """Read frames (to a folder, to stdout as MJPEG, or only count them); frames/s on stderr."""
    if output is not None and output != "-":
        raise CliError("--output takes '-' (MJPEG on stdout); use --dir DIR for files", exit_code=2)
    if output == "-" and directory is not None:
        raise CliError("--dir and -o - cannot be used together", exit_code=2)
    if directory is not None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"cannot make {directory}: {exc.strerror or exc}") from None
    from ..errors import CameraStallError

    chosen = target(conn, printer, camera_port, model)
    camera = chosen.open()
    meter = _Meter()
    started = time.monotonic()
    out = sys.stdout.buffer if output == "-" else None
    count = 0
    try:
        while frames is None or count < frames:
            left = None if seconds is None else seconds - (time.monotonic() - started)
            if left is not None and left <= 0:
                break
            try:
                frame = camera.next_frame(timeout=left)
            except CameraStallError:
                if left is not None and seconds is not None and count:
                    break  # the time is up while waiting: not an error
                raise
            count += 1
            if directory is not None:
                _write(directory / f"frame-{frame.index:06d}.jpg", frame.jpeg)
            elif out is not None:
                _mjpeg(out, frame.jpeg)
            meter.tick(count, started)
    except BrokenPipeError:
        pass  # the reader of stdout went away: done
    except KeyboardInterrupt:
        pass
    finally:
        camera.close()
        meter.done()
    elapsed = max(time.monotonic() - started, 1e-9)
    from .output import note

    rate = count / elapsed
    note(f"{count} frames in {elapsed:.1f} s ({rate:.2f} frames/s) from printer {chosen.serial}")


def _mjpeg(out: Any, jpeg: bytes) -> None:
    head = (
        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    ).encode("ascii")
    out.write(head + jpeg + b"\r\n")
    out.flush()


class _Meter:
    """Frames and frames/s on one line of a terminal's stderr (nothing elsewhere)."""

    def __init__(self) -> None:
        from .output import err_console

        self.live = not OPTIONS.json and err_console().is_terminal
        self.shown = 0.0

    def tick(self, count: int, started: float) -> None:
        now = time.monotonic()
        if not self.live or now - self.shown < 0.25:
            return
        self.shown = now
        rate = count / max(now - started, 1e-9)
        sys.stderr.write(f"\r{count} frames, {rate:.1f} frames/s ")
        sys.stderr.flush()

    def done(self) -> None:
        if self.live and self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


@camera_app.command("url")
@live_command
def url(
    printer: PrinterArg = None,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="Show the access code and P2P keys in URLs.")
    ] = False,
    camera_port: CameraPort = None,
    model: Model = None,
    *,
    conn: Connect,
) -> None:
    """The camera's URLs: RTSPS on the LAN (X1/P2S/H2), or the TUTK one with a cloud login."""
    from ..models.printer import detect_model, model_named
    from ..protocol.camera import CAMERA_PORT, RTSPS_PORT, rtsps_url, with_credentials

    lan_named = bool(printer) or conn.lan_mode
    found: dict[str, Any] = {}
    lines: list[str] = []
    serial = (conn.serial or printer or "").strip()
    if lan_named:
        chosen = target(conn, printer, camera_port, model)
        serial = chosen.serial
        kind = (model_named(chosen.model) if chosen.model else None) or detect_model(serial)
        found["serial"] = serial
        found["model"] = kind.product if kind.known else ""
        if kind.known and kind.camera == "jpeg":
            where = f"{chosen.host}:{chosen.port or CAMERA_PORT}"
            found["jpeg"] = where
            lines.append(
                f"printer {serial} ({kind.product}) has no RTSPS camera: its camera is the TLS "
                f"JPEG stream at {where} (bambu camera snapshot/stream read it)"
            )
        else:
            plain = chosen.rtsp_url or rtsps_url(chosen.host, chosen.port or RTSPS_PORT)
            shown = (
                with_credentials(plain, chosen.code)
                if show_secrets
                else plain.replace("rtsps://", "rtsps://bblp:***@", 1)
            )
            found["rtsps"] = shown
            lines.append(f"RTSPS: {shown}")
            if kind.camera_off_by_default:
                lines.append("(LAN liveview is off by default on this model: switch it on first)")
    cloud = _tutk(serial, show_secrets)
    if cloud is not None:
        found["tutk"] = cloud
        lines.append(f"TUTK (remote): {cloud}")
        lines.append(
            "no open implementation of Bambu's TUTK P2P protocol exists: the URL is for the "
            "slicer's camera plugin"
        )
    if not found.get("rtsps") and not found.get("jpeg") and cloud is None:
        raise CliError(
            "name a LAN printer (--lan HOST --serial ..., or a BAMBU_PRINTER_<N> number) for "
            "its RTSPS URL, or log in (bambu login) for the remote camera's URL",
            exit_code=2,
        )
    if OPTIONS.json:
        from .output import emit_json

        emit_json(found, redact=False)
        return
    from .output import esc, say

    for line in lines:
        say(esc(line))


def _tutk(serial: str, show_secrets: bool) -> str | None:
    """The TUTK URL of ``serial``'s camera from the cloud, when logged in (masked unless asked)."""
    from .base import token_source

    if not serial or not token_source().token:
        return None
    from ..secrets import mask
    from .base import open_client

    with open_client() as client:
        creds = client.get_camera_credentials(serial)
    if show_secrets:
        return creds.url
    return (
        f"bambu:///tutk?uid={mask(creds.ttcode)}&authkey={mask(creds.authkey)}"
        f"&passwd={mask(creds.passwd)}&region={creds.region}"
    )
