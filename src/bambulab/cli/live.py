"""Live printer commands over MQTT: status, watch, print control, lights, heaters, fans, AMS, HMS.

Every command works in two modes. Cloud (the default): the account's
printers through the cloud broker, with the saved token; ``PRINTER`` is a
serial or a printer's name, and defaults to the only (else the first online)
printer. LAN: ``--lan HOST --serial SERIAL --access-code CODE`` talks to the
printer's own broker, TLS verified with ``--ca-file`` or a certificate
pinned on first use. Control commands print one line once the printer has
confirmed, e.g. ``P1S 1: paused``.

Only typer is imported here (this module is loaded for ``bambu --help``);
the MQTT client, rich and the models arrive when a command runs.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer

from ..vocabulary import HEATER_LIMITS, HEATERS, LIGHT_MODES, LIGHT_NODES, SPEED_LEVELS
from .base import OPTIONS, CliError, not_empty

if TYPE_CHECKING:
    from ..models.state import PrinterState
    from ..mqtt.client import BambuMQTT
    from ..protocol.mqtt import Incoming
    from .live_session import Connect, PrinterRef

    # The choices below are the protocol's own words (bambulab.vocabulary);
    # typer reads them as Literal types at run time, mypy sees plain strings.
    LightNode = str
    LightMode = str
    Heater = str
    Fan = str
    SpeedLevel = str
else:
    from ..vocabulary import FANS, SPEED_NAMES

    LightNode = Literal[LIGHT_NODES]
    LightMode = Literal[LIGHT_MODES]
    Heater = Literal[HEATERS]
    Fan = Literal[tuple(FANS)]
    SpeedLevel = Literal[(*SPEED_LEVELS, *(str(level) for level in SPEED_NAMES))]

F = TypeVar("F", bound=Callable[..., Any])

# --- the options every live command takes ------------------------------------------------

Lan = Annotated[
    str | None,
    typer.Option(
        "--lan",
        metavar="HOST",
        envvar="BAMBU_PRINTER_HOST",
        help="Talk to the printer at HOST on the LAN (its own MQTT broker) instead of the cloud.",
    ),
]
SerialOpt = Annotated[
    str | None,
    typer.Option(
        "--serial",
        metavar="SERIAL",
        envvar="BAMBU_SERIAL",
        callback=not_empty,
        help="The printer's serial (LAN mode); in cloud mode, the default printer.",
    ),
]
AccessCode = Annotated[
    str | None,
    typer.Option(
        "--access-code",
        metavar="CODE",
        envvar="BAMBU_ACCESS_CODE",
        help="The printer's LAN access code (LAN mode; prompted at a terminal when missing).",
    ),
]
Port = Annotated[
    int | None,
    typer.Option(
        "--port",
        metavar="PORT",
        envvar="BAMBU_PRINTER_PORT",
        min=1,
        max=65535,
        help="The printer's MQTT port (LAN mode, default 8883).",
    ),
]
CaFile = Annotated[
    str | None,
    typer.Option(
        "--ca-file",
        metavar="PATH",
        envvar="BAMBU_CA_FILE",
        help="CA certificate to verify the broker with (default: pin the printer's "
        "certificate on first use; the cloud: the system's CAs).",
    ),
]
Insecure = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Do not verify the printer's certificate (LAN mode; warns: anyone on the "
        "network could pose as the printer).",
    ),
]
Cloud = Annotated[
    bool,
    typer.Option("--cloud", help="Use the cloud broker even when BAMBU_PRINTER_HOST is set."),
]
PinFile = Annotated[
    str | None,
    typer.Option(
        "--pin-file",
        metavar="PATH",
        envvar="BAMBU_PIN_FILE",
        help="Where certificates pinned on first use are kept (LAN mode without --ca-file; "
        "default ~/.config/bambulab/printer_certs.json).",
    ),
]
Printer = Annotated[
    str | None,
    typer.Argument(
        metavar="PRINTER",
        callback=not_empty,
        help="Serial or name of the printer (default: the only, else the first online, one).",
        show_default=False,
    ),
]
PrinterOpt = Annotated[
    str | None,
    typer.Option(
        "--printer",
        "-p",
        metavar="PRINTER",
        callback=not_empty,
        help="Serial or name of the printer (default: the only, else the first online, one).",
    ),
]


# (name, annotation, default) of every shared option, in the order --help lists them.
_SHARED: tuple[tuple[str, Any, Any], ...] = (
    ("lan", Lan, None),
    ("serial", SerialOpt, None),
    ("access_code", AccessCode, None),
    ("port", Port, None),
    ("ca_file", CaFile, None),
    ("pin_file", PinFile, None),
    ("insecure", Insecure, False),
    ("cloud", Cloud, False),
)
SHARED_OPTIONS = tuple("--" + name.replace("_", "-") for name, _, _ in _SHARED)


def live_command(function: F) -> F:
    """Give a live command the shared options: it declares ``conn: Connect`` and gets them.

    typer reads the returned function's signature: the command's own
    parameters, then every shared option (``--lan``, ``--serial``, ...
    ``--pin-file``), so they are declared once and appear on every live
    command, after its name like any option.
    """
    own = inspect.signature(function)
    # The command's own annotations, evaluated as typer would; ``conn`` is not
    # typer's to see (and Connect is not imported before a command runs).
    scope = function.__globals__
    params = [_evaluated(p, scope) for name, p in own.parameters.items() if name != "conn"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, kind, default in _SHARED
    ]

    @functools.wraps(function)
    def command(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name, default) for name, _, default in _SHARED}
        return function(*args, conn=_conn(**values), **kwargs)

    command.__signature__ = own.replace(  # type: ignore[attr-defined]
        parameters=[*params, *shared], return_annotation=None
    )
    command.__annotations__ = {
        **{p.name: p.annotation for p in params},
        **{name: kind for name, kind, _ in _SHARED},
        "return": None,
    }
    del command.__wrapped__  # typer must see this signature, not the function's
    return command  # type: ignore[return-value]


def _evaluated(param: inspect.Parameter, scope: dict[str, Any]) -> inspect.Parameter:
    """``param`` with its annotation evaluated (this module postpones annotations)."""
    if not isinstance(param.annotation, str):
        return param
    return param.replace(annotation=eval(param.annotation, scope))  # noqa: S307


def _conn(
    lan: str | None,
    serial: str | None,
    access_code: str | None,
    port: int | None,
    ca_file: str | None,
    pin_file: str | None,
    insecure: bool,
    cloud: bool,
) -> Connect:
    from .live_session import Connect

    return Connect(
        lan=(lan or "").strip() or None,
        serial=(serial or "").strip() or None,
        access_code=access_code,
        port=port,
        ca_file=(ca_file or "").strip() or None,
        pin_file=(pin_file or "").strip() or None,
        insecure=insecure,
        cloud=cloud,
    )


# --- reading ---------------------------------------------------------------------------------


def _snapshot(conn: Connect, printer: str | None) -> tuple[PrinterRef, PrinterState]:
    """The printer's full state; the connection is closed before anything is drawn."""
    from .live_session import one_printer

    with one_printer(conn, printer) as (mqtt, ref):
        state = mqtt.state(ref.serial)
        if not state.model.code:
            # On the LAN nothing names the model of a serial without a known
            # prefix; the firmware modules do (``get_version``'s reply makes a new
            # state, with ``info``: read it again).
            from ..errors import BambuError

            with contextlib.suppress(BambuError):
                mqtt.get_version(ref.serial)
                state = mqtt.state(ref.serial)
    return ref, state


@live_command
def status(
    printer: Printer = None,
    *,
    conn: Connect,
) -> None:
    """A printer's live state: job, progress, temperatures, fans, lights, HMS."""
    from .live_views import show_status

    ref, state = _snapshot(conn, printer)
    show_status(ref, state)


@live_command
def ams(
    printer: Printer = None,
    *,
    conn: Connect,
) -> None:
    """AMS units and their trays: colour, type, remaining, humidity; the external spool."""
    from .live_views import show_ams

    ref, state = _snapshot(conn, printer)
    show_ams(ref, state)


@live_command
def hms(
    printer: Printer = None,
    *,
    conn: Connect,
) -> None:
    """Active HMS (health) entries, decoded, with their wiki pages."""
    from .live_views import show_hms

    ref, state = _snapshot(conn, printer)
    show_hms(ref, state)


@live_command
def watch(
    printers: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="PRINTER",
            help="Printers to watch (default: every printer of the account, or the LAN one).",
            show_default=False,
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            metavar="SECONDS",
            min=0,
            help="Stop by itself after SECONDS (default: until Ctrl-C or SIGTERM).",
        ),
    ] = None,
    stale_after: Annotated[
        float | None,
        typer.Option(
            "--stale-after",
            metavar="SECONDS",
            min=0.1,
            help="Call a printer stale when its last report is older than SECONDS "
            "(default: 10 s for X1 printers, which report every second or two; "
            "60 s for P1/A1 and newer, which report only changes).",
        ),
    ] = None,
    *,
    conn: Connect,
) -> None:
    """A live table of the printers, redrawn as they report.

    A status line tells whether the connection is up (or which reconnect
    attempt comes when); each row tells how old the printer's last report is,
    and rows that are not current (connection down, report overdue, printer
    offline) are dimmed. Off a terminal (a pipe or a file): one timestamped
    line per change, connection changes included. --json: one JSON line per
    event. Ctrl-C or SIGTERM ends it with status 0.
    """
    from .live_session import connected, plan
    from .live_views import Watcher, run_watch, sigterm_ends_watch

    try:
        with sigterm_ends_watch():
            chosen = plan(conn, printers or [], every=True)
            watcher = Watcher(chosen.printers, as_json=OPTIONS.json, stale_after=stale_after)
            with connected(conn, chosen, watcher.on_event) as mqtt:
                run_watch(
                    watcher,
                    duration=duration,
                    hint=None if duration is not None else "Ctrl-C to stop",
                    fatal=lambda: mqtt.connection.fatal,
                )
    except KeyboardInterrupt:
        return  # Ctrl-C (or SIGTERM) is how a watch ends: not a failure


# --- control -----------------------------------------------------------------------------------


def _control(
    conn: Connect,
    printer: str | None,
    send: Callable[[BambuMQTT, str], Incoming],
    done: str,
    *,
    ask: Callable[[PrinterRef, PrinterState], str] | None = None,
) -> None:
    """Connect, (optionally confirm,) send, and print the one line the printer's reply earns."""
    from .live_session import one_printer

    with one_printer(conn, printer) as (mqtt, ref):
        if ask is not None:
            from .output import confirm

            if not confirm(ask(ref, mqtt.state(ref.serial))):
                raise CliError("nothing was sent")
        reply = send(mqtt, ref.serial)
    _confirmed(ref, reply, done)


def _confirmed(ref: PrinterRef, reply: Incoming, done: str) -> None:
    from .output import emit_json, esc, say

    if OPTIONS.json:
        emit_json(
            {
                "printer": ref.label,
                "serial": ref.serial,
                "command": reply.command,
                "result": str(reply.body.get("result", "success")).lower() or "success",
                "reply": reply.body,
            }
        )
        return
    extra = f" ({reply.reason})" if reply.reason else ""
    say(f"{esc(ref.label)}: {esc(done)}{esc(extra)}")


@live_command
def pause(
    printer: Printer = None,
    *,
    conn: Connect,
) -> None:
    """Pause the running print."""
    _control(conn, printer, lambda m, s: m.pause(s), "paused")


@live_command
def resume(
    printer: Printer = None,
    *,
    conn: Connect,
) -> None:
    """Resume a paused print."""
    _control(conn, printer, lambda m, s: m.resume(s), "resumed")


@live_command
def stop(
    printer: Printer = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    *,
    conn: Connect,
) -> None:
    """Stop (cancel) the running print; it cannot be resumed."""
    from .base import interactive

    if not yes and not interactive():
        raise CliError("stopping a print needs confirmation: pass --yes", exit_code=2)
    _control(
        conn,
        printer,
        lambda m, s: m.stop(s),
        "stopped",
        ask=None if yes else _stop_question,
    )


def _stop_question(ref: PrinterRef, state: PrinterState) -> str:
    from .live_session import describe

    job = f" {state.job_name!r}" if state.job_name else ""
    progress = f" at {state.percent}%" if state.percent is not None else ""
    return (
        f"Stop the print{job}{progress} on {describe(ref)} "
        f"(state {state.gcode_state or 'unknown'})? It cannot be resumed"
    )


@live_command
def light(
    mode: Annotated[
        LightMode,
        typer.Argument(metavar="MODE", help="What the light should do."),
    ],
    printer: Printer = None,
    node: Annotated[
        LightNode,
        typer.Option("--node", help="Which light."),
    ] = LIGHT_NODES[0],
    *,
    conn: Connect,
) -> None:
    """Switch a light on, off or flashing."""
    _control(conn, printer, lambda m, s: m.set_light(mode, node, s), f"{node} {mode}")


@live_command
def temp(
    heater: Annotated[
        Heater,
        typer.Argument(metavar="HEATER", help="Which heater."),
    ],
    target: Annotated[
        float,
        typer.Argument(metavar="TEMP", min=0, help="Target in °C (0 switches the heater off)."),
    ],
    printer: Printer = None,
    *,
    conn: Connect,
) -> None:
    """Set a heater's target temperature."""
    limit = HEATER_LIMITS[heater]
    if target > limit:
        raise CliError(f"the {heater} target must be 0-{limit} °C, got {target:g}", exit_code=2)

    def send(mqtt: BambuMQTT, s: str) -> Incoming:
        if heater == "nozzle":
            return mqtt.set_nozzle_temp(target, s)
        if heater == "bed":
            return mqtt.set_bed_temp(target, s)
        return mqtt.set_chamber_temp(target, s)

    _control(conn, printer, send, f"{heater} target {target:g} °C")


@live_command
def fan(
    which: Annotated[
        Fan,
        typer.Argument(metavar="FAN", help="Which fan."),
    ],
    speed_percent: Annotated[
        int, typer.Argument(metavar="PERCENT", min=0, max=100, help="Speed, 0-100 %.")
    ],
    printer: Printer = None,
    *,
    conn: Connect,
) -> None:
    """Set a fan's speed."""
    _control(
        conn,
        printer,
        lambda m, s: m.set_fan_speed(which, speed_percent, s),
        f"{which} fan {speed_percent}%",
    )


@live_command
def speed(
    level: Annotated[
        SpeedLevel,
        typer.Argument(metavar="LEVEL", help="Speed level."),
    ],
    printer: Printer = None,
    *,
    conn: Connect,
) -> None:
    """Set the print speed level."""
    number = SPEED_LEVELS.get(level) or int(level)
    name = next(k for k, v in SPEED_LEVELS.items() if v == number)
    _control(
        conn,
        printer,
        lambda m, s: m.set_print_speed(number, s),
        f"speed {name} ({number})",
    )


@live_command
def gcode(
    lines: Annotated[
        list[str],
        typer.Argument(metavar="LINE...", help='G-code lines, e.g. "M104 S200" "G28".'),
    ],
    printer: PrinterOpt = None,
    *,
    conn: Connect,
) -> None:
    """Send G-code lines to the printer."""
    sent = [part.strip() for line in lines for part in line.splitlines() if part.strip()]
    if not sent:
        raise CliError("no G-code to send", exit_code=2)
    shown = "; ".join(sent) if len(sent) <= 3 else f"{len(sent)} lines"
    _control(conn, printer, lambda m, s: m.send_gcode(sent, s), f"G-code sent ({shown})")
