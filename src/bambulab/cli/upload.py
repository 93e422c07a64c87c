"""``bambu upload FILE``: send a file to the account's cloud storage, streamed from disk.

A progress bar on stderr when it is a terminal (never under ``--json``);
at the end the file id, name, size, MD5 and URL (without its signature).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from .base import OPTIONS, open_client


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


@contextmanager
def transfer_progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(sent, total)`` callback drawing a bar on a terminal's stderr, else None."""
    from .output import err_console, esc

    stderr = err_console()
    if OPTIONS.json or not stderr.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
    )
    task = bar.add_task(esc(label), total=None)

    def progress(sent: int, total: int) -> None:
        bar.update(task, completed=sent, total=total)

    with bar:
        yield progress
