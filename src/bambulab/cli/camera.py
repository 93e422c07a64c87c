"""``bambu camera snapshot|stream|serve|url``: the printers' cameras.

P1/A1 printers stream JPEG over TLS port 6000, X1/P2S/H2 printers serve
RTSPS (decoded with PyAV, the ``camera`` extra); the commands take the same
options either way. Only typer is imported at module level (this module is
loaded for ``bambu --help``).
"""

from __future__ import annotations

from .base import new_typer

camera_app = new_typer(
    help="Printer cameras: save a snapshot, stream frames, serve them to many viewers, show URLs."
)
