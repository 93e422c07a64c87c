"""``bambu sim``: the simulated Bambu cloud, with the simulator's own options.

Every argument after ``sim`` goes to :func:`bambulab.sim.main` untouched
(including ``--help``), so the simulator has one command-line parser and one
help text, whichever way it is started. It also handles Ctrl-C and SIGTERM
itself (both stop it with status 0).
"""

from __future__ import annotations

import typer

from .base import sim_extra

SIM_CONTEXT = {
    "allow_extra_args": True,
    "ignore_unknown_options": True,
    "help_option_names": [],
}


def sim(ctx: typer.Context) -> None:
    """Run the simulated Bambu cloud (see `bambu sim --help` for its options)."""
    with sim_extra("sim"):
        from ..sim import main as sim_main

    raise typer.Exit(sim_main(list(ctx.args)))
