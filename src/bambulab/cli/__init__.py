"""The ``bambu`` command line: everything the library does, for a person at a terminal.

:func:`main` is the console script. It does three things before and after
typer parses the command line:

* hoists the global flags (``--api-url``, ``--region``, ``--json``,
  ``--debug``, ``--token-file``) out of wherever they were typed, so
  ``bambu devices --json`` and ``bambu --json devices`` mean the same;
* keeps start-up light: this package imports only the standard library, the
  command modules import only typer, and everything heavy (httpx, pydantic,
  rich, the cloud layer, the simulator) is imported inside the command that
  needs it, so ``bambu --help`` costs less than an argparse script that
  imports its HTTP client;
* turns every failure into one ``error: ...`` line on stderr and an exit
  status (1 for a :class:`~bambulab.errors.BambuError`, 2 for bad usage, 130
  for Ctrl-C), with the traceback only under ``--debug``. Error messages
  quote server text (a printer's name, the cloud's ``message``): they are
  printed with every control character made visible
  (:func:`bambulab.safetext.visible`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["hoist_global_options", "main"]

# Global options: flags, and options that take one value.
GLOBAL_FLAGS = frozenset({"--json", "--debug"})
GLOBAL_VALUES = frozenset({"--api-url", "--region", "--token-file"})
# Commands whose arguments belong to someone else (``bambu sim`` hands its
# whole command line to the simulator's own parser): nothing after them is hoisted.
PASSTHROUGH_COMMANDS = frozenset({"sim"})
# No error line is longer than this, whatever was typed or answered.
MAX_ERROR_LINE = 1000
# Quoted values in other errors (paths among them) keep more before the cut.
REPORT_QUOTE_LIMIT = 120


def hoist_global_options(argv: Sequence[str]) -> list[str]:
    """``argv`` with the global options moved in front of the command."""
    front, rest = _split_global_options(argv)
    return front + rest


def _split_global_options(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The global options, and everything else in its order.

    Typer only accepts an option on the command that declares it; people type
    ``--json`` at the end. Moving the known global options to the front (where
    the root command declares them) makes both places work. Nothing after
    ``--`` or after a passthrough command (``sim``) is touched.
    """
    front: list[str] = []
    rest: list[str] = []
    command_seen = False
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            rest.extend(argv[i:])
            break
        name, has_value, _ = token.partition("=")
        if token in GLOBAL_FLAGS:
            front.append(token)
        elif name in GLOBAL_VALUES:
            if has_value or i + 1 >= len(argv):
                front.append(token)  # a missing value is reported by the parser
            else:
                front.extend(argv[i : i + 2])
                i += 1
        else:
            rest.append(token)
            if not command_seen and not token.startswith("-"):
                command_seen = True
                if token in PASSTHROUGH_COMMANDS:
                    rest.extend(argv[i + 1 :])
                    break
        i += 1
    return front, rest


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bambu`` with ``argv`` (default: the process arguments); returns the exit status."""
    front, rest = _split_global_options(sys.argv[1:] if argv is None else argv)
    args = front + rest
    debug = "--debug" in front

    import typer
    from typer.core import TyperGroup
    from typer.main import get_command

    from . import completion
    from .app import build_app, help_text
    from .base import CliError

    command = get_command(build_app())
    assert isinstance(command, TyperGroup)  # the root has subcommands
    if os.environ.get(completion.COMPLETE_VAR):
        # The shell asks for candidates: typer answers and exits.
        try:
            command.main(args=args, prog_name="bambu")
        except SystemExit as done:
            return done.code if isinstance(done.code, int) else 0
        return 0
    asked = completion.request(args)
    if asked is not None:
        return completion.run(*asked)
    try:
        page = help_text(command, args)
        if page is not None:
            print(page, flush=True)
            return 0
        result = command.main(args=args, prog_name="bambu", standalone_mode=False)
    except typer.Exit as done:
        if done.exit_code == 130:  # typer's translation of Ctrl-C
            print("\ninterrupted", file=sys.stderr)
        return done.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except typer.TyperException as exc:
        # Usage errors: one line like every other error, naming the help page.
        _error_line(_usage_message(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # ``bambu tasks | head``: the reader left; say nothing more.
        _silence_stdout()
        return 1
    except Exception as exc:  # the one place every failure is shown
        return _report(exc, debug, CliError)
    return result if isinstance(result, int) else 0


def _usage_message(exc: Exception) -> str:
    """Typer's message for a usage error, made one line, with where to find help."""
    format_message = getattr(exc, "format_message", None)
    text = format_message() if callable(format_message) else str(exc)
    message = clip_quotes(" ".join(str(text).split()))
    if message:
        message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "bambu"
    return f"{message} (see '{path} --help')"


def clip_quotes(message: str, limit: int | None = None) -> str:
    """``message`` with every long quoted value cut to a short prefix.

    Usage errors quote what was typed (``No such command '...'``); a pasted
    megabyte stays a one-line error. Messages of our own quote through
    :func:`bambulab.errors.excerpt` already.
    """
    import re

    from ..errors import EXCERPT_LIMIT

    keep = limit or EXCERPT_LIMIT
    # A quoted value starts and ends at a word boundary: the text between the
    # closing quote of one value and the opening quote of the next is not one.
    pattern = re.compile(r"(?<!\w)(['\"])([^'\"]{" + str(keep + 1) + r",})\1(?!\w)")
    clipped = pattern.sub(lambda m: f"{m[1]}{m[2][:keep]}…{m[1]}", message)
    if len(clipped) > MAX_ERROR_LINE:
        clipped = clipped[:MAX_ERROR_LINE] + "…"
    return clipped


def _report(exc: Exception, debug: bool, cli_error: type[Exception]) -> int:
    """One ``error:`` line (and the traceback under ``--debug``); the exit status."""
    from ..errors import BambuError
    from ..safetext import visible

    if debug:
        import traceback

        lines = "".join(traceback.format_exception(exc))
        sys.stderr.write(visible(lines, multiline=True))
    text = str(exc).strip()
    if isinstance(exc, (BambuError, cli_error)):
        # Ours are one line by design: a line break in one came from a name or
        # a server message, and is shown (as \n) with what follows it.
        message = text or type(exc).__name__
    else:
        # Others may add details on further lines: the first line is enough.
        message = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, OSError) and not isinstance(exc, BambuError) and exc.strerror:
        message = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    elif not isinstance(exc, (BambuError, cli_error, OSError)):
        # Not one of ours: a bug. Say so, and where to look, still in one line.
        hint = "" if debug else " (run with --debug for the traceback)"
        message = f"internal error: {type(exc).__name__}: {message}{hint}"
    _error_line(clip_quotes(message, REPORT_QUOTE_LIMIT))
    return int(getattr(exc, "exit_code", 1)) if isinstance(exc, cli_error) else 1


def _error_line(message: str) -> None:
    """``error: message`` on stderr, as one line with every control character made visible."""
    from ..safetext import visible

    print(f"error: {visible(message)}", file=sys.stderr)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
