"""The ``bambu`` command tree: the root command with the global options, and its groups.

Each group lives in its own module; all of them import only typer at module
level, so building this tree for ``--help`` costs a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from . import (
    auth,
    camera,
    camera_serve,
    demo,
    devices,
    files,
    live,
    messages,
    notifications,
    pins,
    printing,
    profile,
    projects,
    serve,
    sim,
    tasks,
    threemf,
    upload,
)
from .base import OPTIONS, check_api_url, check_region, new_typer

HELP = """Bambu Lab printers from the command line: cloud account, printers, history.

The global options can also be given after the command (bambu devices --json).
Environment: BAMBU_TOKEN (a token to use instead of the saved one),
BAMBU_TOKEN_FILE (where the token is saved, default ~/.bambu_token),
BAMBU_API_URL (another API host, e.g. the simulator: see bambu sim / bambu demo),
BAMBU_TIMEOUT (seconds one cloud request may take in all, default 15).

Live commands (status, watch, pause, light, temp, ams, ...) reach the printers
through the cloud's MQTT broker (BAMBU_MQTT_HOST/BAMBU_MQTT_PORT override it),
or one printer on the LAN with --lan HOST --serial SERIAL --access-code CODE
(BAMBU_PRINTER_HOST, BAMBU_SERIAL, BAMBU_ACCESS_CODE).
"""


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"bambu {__version__}")
        raise typer.Exit(0)


def root(
    ctx: typer.Context,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            metavar="URL",
            callback=check_api_url,
            help="API host to use instead of the region's (default: BAMBU_API_URL).",
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            "--region",
            metavar="REGION",
            envvar="BAMBU_REGION",
            callback=check_region,
            help="global or china (default: the region saved with the token, else global).",
        ),
    ] = None,
    json: Annotated[
        bool, typer.Option("--json", help="Print JSON on stdout for scripts, nothing else.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and the library's debug log.")
    ] = False,
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file",
            metavar="PATH",
            help="Token file to read and write (default: BAMBU_TOKEN_FILE or ~/.bambu_token).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_version, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Set the global options for whichever command runs next."""
    OPTIONS.api_url = api_url
    OPTIONS.region = region
    OPTIONS.json = json
    OPTIONS.debug = debug
    OPTIONS.token_file = token_file
    if ctx.invoked_subcommand != "sim":  # the simulator configures its own logging
        _configure_logging(debug)


def _configure_logging(debug: bool) -> None:
    """Library warnings as ``warning: ...`` lines on stderr; everything under ``--debug``.

    Log lines quote names and server messages: the formatter makes their
    control characters visible.
    """
    import logging
    import sys

    from ..safetext import VisibleFormatter

    handler = logging.StreamHandler(sys.stderr)
    if debug:
        handler.setFormatter(VisibleFormatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(VisibleFormatter("warning: %(message)s"))
    top = logging.getLogger()
    top.handlers[:] = [handler]
    top.setLevel(logging.DEBUG if debug else logging.WARNING)


def build_app() -> typer.Typer:
    """The root command with every group attached."""
    app = new_typer(name="bambu", help=HELP, no_args_is_help=True, add_completion=True)
    app.callback()(root)
    app.command("login")(auth.login)
    app.command("logout")(auth.logout)
    app.command("whoami")(auth.whoami)
    app.command("devices")(devices.devices)
    app.add_typer(devices.device_app, name="device")
    app.command("tasks")(tasks.tasks)
    app.add_typer(projects.projects_app, name="projects")
    app.command("messages")(messages.messages)
    app.add_typer(notifications.notifications_app, name="notifications")
    app.add_typer(profile.profile_app, name="profile")
    app.command("status")(live.status)
    app.command("watch")(live.watch)
    app.command("pause")(live.pause)
    app.command("resume")(live.resume)
    app.command("stop")(live.stop)
    app.command("light")(live.light)
    app.command("temp")(live.temp)
    app.command("fan")(live.fan)
    app.command("speed")(live.speed)
    app.command("gcode")(live.gcode)
    app.command("ams")(live.ams)
    app.command("hms")(live.hms)
    app.add_typer(pins.pin_app, name="pin")
    app.command("3mf")(threemf.threemf)
    app.command("upload")(upload.upload)
    app.add_typer(files.files_app, name="files")
    app.command("print")(printing.print_file)
    camera.camera_app.command("serve")(camera_serve.serve)
    app.add_typer(camera.camera_app, name="camera")
    app.add_typer(serve.serve_app, name="serve")
    app.command(
        "sim",
        context_settings=sim.SIM_CONTEXT,
        add_help_option=False,
    )(sim.sim)
    app.command("demo")(demo.demo)
    return app


def help_text(root: TyperGroup, args: Sequence[str]) -> str | None:
    """The help page that ``args`` ask for, or ``None`` when they do not ask for help.

    Typer coerces every parameter it parses through pydantic, and the root
    options are parsed before the subcommand sees ``--help``, so plain parsing
    would import pydantic just to print ``bambu devices --help``. Instead the
    command path is read from ``args`` by name, and the page is formatted from
    contexts that parse nothing. A group named without a subcommand
    (``bambu``, ``bambu device``) gets its help page too.
    """
    from . import GLOBAL_FLAGS, GLOBAL_VALUES

    command: TyperGroup | TyperCommand = root
    words = list(args[: args.index("--")] if "--" in args else args)
    ctx = typer.Context(command, info_name="bambu")
    complete = True  # every word named a command, and no other option was given
    skip = False
    for word in words:
        if skip:
            skip = False  # the value of a global option
            continue
        if word.startswith("-"):
            skip = word in GLOBAL_VALUES
            if word not in GLOBAL_FLAGS and word.partition("=")[0] not in GLOBAL_VALUES:
                complete = False  # `bambu --version`, `bambu device --bogus`: not ours
            continue
        sub = command.get_command(ctx, word) if isinstance(command, TyperGroup) else None
        if not isinstance(sub, (TyperGroup, TyperCommand)):
            complete = False
            break
        if not sub.add_help_option:
            return None  # a passthrough command (sim): its own parser prints its help
        command = sub
        ctx = typer.Context(sub, info_name=word, parent=ctx)
    wants_help = "--help" in words
    if not wants_help and complete and isinstance(command, TyperGroup):
        wants_help = bool(command.no_args_is_help)
    return command.get_help(ctx) if wants_help else None
