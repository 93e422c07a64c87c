"""Shell completion: ``bambu --show-completion [SHELL]`` and ``bambu --install-completion [SHELL]``.

The root command carries typer's two completion options (``add_completion``),
and the completion itself is typer's: the script it prints calls ``bambu``
back with ``_BAMBU_COMPLETE=complete_bash`` (``complete_zsh``, ...), and typer
answers with the candidates. Only choosing the shell is done here, because
typer's options walk the process tree for it: under ``make`` or a script that
finds ``sh``, which has no completion, and a shell named after the option is
silently ignored. :func:`bambulab.cli.main` therefore hands these two options
to :func:`run`: the shell named after the option, else the one running
``bambu`` when completion knows it, else the login shell (``$SHELL``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

PROG = "bambu"
COMPLETE_VAR = "_BAMBU_COMPLETE"
SHOW = "--show-completion"
INSTALL = "--install-completion"
SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def request(args: Sequence[str]) -> tuple[str, str | None] | None:
    """``(option, shell or None)`` when ``args`` ask for a completion script, else ``None``.

    Only at the root, as typer accepts them: the first word that is not a
    global option must be one of the two options.
    """
    from . import GLOBAL_FLAGS, GLOBAL_VALUES

    words = list(args)
    i = 0
    while i < len(words):
        word = words[i]
        name, has_value, value = word.partition("=")
        if word in GLOBAL_FLAGS:
            i += 1
            continue
        if name in GLOBAL_VALUES:
            i += 1 if has_value else 2
            continue
        if name not in (SHOW, INSTALL):
            return None
        if has_value:
            return name, value
        following = words[i + 1] if i + 1 < len(words) else None
        named = following is not None and not following.startswith("-")
        return name, following if named else None
    return None


def detect_shell() -> str | None:
    """The shell to complete for when none was named, or ``None`` when it cannot be told."""
    try:
        import shellingham  # type: ignore[import-untyped]

        running, _ = shellingham.detect_shell()
    except Exception:  # detection is a guess; $SHELL is the fallback
        running = None
    if running in SHELLS:
        return str(running)
    login = os.path.basename(os.environ.get("SHELL", "")).lower()
    return login if login in SHELLS else None


def run(option: str, shell: str | None) -> int:
    """Print (``--show-completion``) or install the script; the exit status."""
    from typer._completion_shared import get_completion_script, install

    chosen = shell or detect_shell()
    if chosen is None:
        print(
            f"error: cannot tell which shell this is: name it, e.g. `bambu {option} bash` "
            f"({', '.join(SHELLS)})",
            file=sys.stderr,
        )
        return 2
    if chosen not in SHELLS:
        print(
            f"error: no completion for {_short(chosen)}: use one of {', '.join(SHELLS)}",
            file=sys.stderr,
        )
        return 2
    if option == SHOW:
        print(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=chosen))
        return 0
    _, path = install(shell=chosen, prog_name=PROG, complete_var=COMPLETE_VAR)
    print(f"{chosen} completion for bambu installed in {path}; it works in new shells")
    return 0


def _short(text: str) -> str:
    from ..errors import excerpt

    return excerpt(text)
