"""``bambu pin list`` and ``bambu pin forget SERIAL``: the printer certificates pinned on first use.

LAN mode without a CA file trusts a printer's certificate the first time it
connects and refuses any other one afterwards. When a printer's certificate
changes on purpose (a reset, new firmware), the person checks the new
fingerprint and forgets the old pin; the next connection pins the new one.

Only typer is imported here (this module is loaded for ``bambu --help``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from .base import OPTIONS, CliError, new_typer
from .live import PinFile

pin_app = new_typer(
    name="pin",
    help="Printer certificates pinned on first use (LAN mode): list, forget.",
    no_args_is_help=True,
)


@pin_app.command("list")
def list_pins(pin_file: PinFile = None) -> None:
    """Every pinned printer certificate: serial, SHA-256 fingerprint, when it was pinned."""
    from ..mqtt.tls import PinStore
    from .output import Col, emit_json, esc, note, table, when

    store = PinStore((pin_file or "").strip() or None)
    pins = store.entries()
    if OPTIONS.json:
        emit_json(
            [{"serial": p.serial, "sha256": p.fingerprint, "pinned_at": p.pinned_at} for p in pins]
        )
        return
    if not pins:
        note(f"No pinned certificates (in {esc(store.path)})")
        return
    table(
        f"{len(pins)} pinned certificate{'s' if len(pins) != 1 else ''} ({store.path})",
        [Col("Serial", wrap=False), Col("SHA-256", wrap=False), Col("Pinned (UTC)", wrap=False)],
        ([p.serial, p.fingerprint, when(p.pinned_at)] for p in pins),
    )


@pin_app.command("forget")
def forget(
    serial: Annotated[str, typer.Argument(metavar="SERIAL", help="The printer's serial.")],
    pin_file: PinFile = None,
) -> None:
    """Forget a printer's pinned certificate; the next LAN connection pins the one it offers."""
    from ..mqtt.tls import PinStore
    from .output import emit_json, esc, say

    wanted = serial.strip()
    if not wanted:
        raise CliError("give the serial of the printer whose pin to forget", exit_code=2)
    store = PinStore((pin_file or "").strip() or None)
    known = [p.serial for p in store.entries()]
    if not store.forget(wanted):
        listed = ", ".join(known) if known else "none"
        raise CliError(f"no certificate pinned for {wanted!r} in {store.path} (pinned: {listed})")
    if OPTIONS.json:
        emit_json({"serial": wanted, "forgotten": True})
        return
    say(f"Forgot the certificate pinned for {esc(wanted)}: the next LAN connection pins a new one")
