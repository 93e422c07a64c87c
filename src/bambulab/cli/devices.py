"""``bambu devices`` and ``bambu device info|version|bind|unbind|rename``: the printers.

LAN access codes are secrets: masked in tables and JSON unless
``--show-access-code`` asks for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from .base import OPTIONS, CliError, interactive, new_typer, not_empty, open_client

if TYPE_CHECKING:
    from ..models import Device

device_app = new_typer(
    name="device",
    help="One printer: details, firmware, bind, unbind, rename.",
    no_args_is_help=True,
)

Serial = Annotated[
    str,
    typer.Argument(metavar="SERIAL", callback=not_empty, help="The printer's serial (dev_id)."),
]


def devices(
    show_access_code: Annotated[
        bool,
        typer.Option("--show-access-code", help="Show the LAN access codes (secrets)."),
    ] = False,
) -> None:
    """List the printers bound to the account."""
    with open_client() as client:
        found = client.get_devices()
    show_devices(found, show_access_code=show_access_code)


def show_devices(found: list[Device], *, show_access_code: bool = False) -> None:
    """Print printers as a table (or JSON); the demo uses it too."""
    from ..secrets import MASK, redact
    from .output import Col, emit_json, styled, table, yes_no

    if OPTIONS.json:
        rows = [d.to_dict() for d in found]
        if not show_access_code:
            rows = redact(rows)
        emit_json(rows, redact=False)
        return
    table(
        f"{len(found)} printer{'s' if len(found) != 1 else ''}",
        [
            Col("Name"),
            Col("Serial", wrap=False),
            Col("Model"),
            Col("Online"),
            Col("Status"),
            Col("Nozzle", justify="right"),
            Col("Access code", wrap=False),
        ],
        (
            [
                d.name,
                d.serial,
                _model(d),
                yes_no(d.online),
                _status(d.print_status),
                f"{d.nozzle_diameter:g} mm" if d.nozzle_diameter else None,
                d.access_code if show_access_code else styled(MASK, "dim"),
            ]
            for d in found
        ),
    )


def _model(device: Device) -> str:
    product, model = device.dev_product_name, device.dev_model_name
    if product and model and product != model:
        return f"{product} ({model})"
    return product or model


def _status(status: str) -> Any:
    from .output import styled

    style = {
        "RUNNING": "cyan",
        "PRINTING": "cyan",
        "PAUSE": "yellow",
        "FAILED": "red",
        "FINISH": "green",
        "SUCCESS": "green",
        "ACTIVE": "cyan",
        "OFFLINE": "dim",
    }.get((status or "").upper(), "")
    return styled(status or "-", style)


def _not_found(serial: str, exc: Exception) -> CliError:
    from ..errors import excerpt

    return CliError(f"no printer {excerpt(serial)} on this account ({exc})")


@device_app.command("info")
def info(serial: Serial) -> None:
    """Details of one printer."""
    from ..errors import NotFoundError
    from .output import emit_json, fields

    with open_client() as client:
        try:
            details = client.get_device_info(serial)
        except NotFoundError as exc:
            raise _not_found(serial, exc) from exc
    data = details.to_dict()
    if OPTIONS.json:
        emit_json(data)
        return
    from ..secrets import redact

    shown = redact(data)
    fields(f"Printer {serial}", ((k, _plain(v)) for k, v in shown.items()))


def _plain(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, separators=(",", ":"), default=str)
    return value


@device_app.command("version")
def version(serial: Serial) -> None:
    """Firmware of one printer and its modules (AMS included)."""
    from ..errors import NotFoundError
    from .output import Col, emit_json, fields, table, yes_no

    with open_client() as client:
        try:
            firmware = client.get_firmware_version(serial)
        except NotFoundError as exc:
            raise _not_found(serial, exc) from exc
    modules = firmware.modules(serial) or firmware.modules()
    if OPTIONS.json:
        data = firmware.to_dict()
        data["modules"] = [m.to_dict() for m in modules]
        emit_json(data)
        return
    fields(
        f"Firmware of {serial}",
        [
            ("current", firmware.current_version),
            ("latest", firmware.latest_version),
            ("update available", yes_no(firmware.update_available)),
            ("release notes", firmware.release_notes),
        ],
    )
    table(
        "Modules",
        [Col("Module"), Col("Firmware"), Col("Hardware"), Col("Serial", wrap=False)],
        ([m.name, m.sw_ver, m.hw_ver, m.sn] for m in modules),
    )


@device_app.command("bind")
def bind(
    serial: Serial,
    code: Annotated[
        str | None,
        typer.Option("--code", help="The bind code the printer shows (prompted when missing)."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A name for the printer.")] = None,
) -> None:
    """Bind a printer to the account with the code it shows on its screen."""
    from .output import emit_json, esc, say

    if not code:
        if not interactive():
            raise CliError("no bind code: pass --code CODE", exit_code=2)
        from .output import ask

        code = ask("Bind code shown on the printer")
    with open_client() as client:
        client.bind_device(serial, code, name)
    if OPTIONS.json:
        emit_json({"bound": True, "device_id": serial, "name": name or serial})
        return
    say(f"[green]Bound[/green] {esc(serial)}" + (f" as {esc(repr(name))}" if name else ""))


@device_app.command("unbind")
def unbind(
    serial: Serial,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a printer from the account (binding it again needs its bind code)."""
    from ..errors import NotFoundError
    from .output import emit_json, esc, say

    if not yes:
        if not interactive():
            raise CliError(f"unbinding {serial} needs confirmation: pass --yes", exit_code=2)
        from .output import confirm

        if not confirm(f"Remove {serial} from the account?"):
            raise CliError("not unbound")
    with open_client() as client:
        try:
            client.unbind_device(serial)
        except NotFoundError as exc:
            raise _not_found(serial, exc) from exc
    if OPTIONS.json:
        emit_json({"unbound": True, "device_id": serial})
        return
    say(f"[green]Unbound[/green] {esc(serial)}")


@device_app.command("rename")
def rename(
    serial: Serial,
    name: Annotated[str, typer.Argument(metavar="NAME", callback=not_empty, help="The new name.")],
) -> None:
    """Give a printer a new name."""
    from ..errors import NotFoundError
    from .output import emit_json, esc, say

    with open_client() as client:
        try:
            client.rename_device(serial, name)
        except NotFoundError as exc:
            raise _not_found(serial, exc) from exc
    if OPTIONS.json:
        emit_json({"renamed": True, "device_id": serial, "name": name})
        return
    say(f"[green]Renamed[/green] {esc(serial)} to {esc(repr(name))}")
