"""``bambu upload FILE``: send a file to the account's cloud storage, streamed from disk.

A progress bar on stderr when it is a terminal (never under ``--json``);
at the end the file id, name, size, MD5 and URL (without its signature).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .base import OPTIONS, open_client
from .output import transfer_progress


def upload(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="The .3mf, .gcode, .stl or .step file.", show_default=False
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="NAME", help="Name in the cloud (default: the file's)."),
    ] = None,
) -> None:
    """Upload a file to cloud storage (streamed; retried on transient failures)."""
    from .output import emit_json, fields

    label = name or file.name
    with open_client() as client, transfer_progress(label) as progress:
        result = client.upload_file(label, file, progress=progress)
    if OPTIONS.json:
        emit_json(result.to_dict())
        return
    fields(
        f"Uploaded {label}",
        [
            ("file id", result.file_id),
            ("name", result.file_name),
            ("size", f"{result.size} bytes"),
            ("md5", result.md5),
            ("url", result.file_url),
        ],
    )
