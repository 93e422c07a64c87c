"""Private directories and files: owner-only from the start, whatever the umask.

``mkdir`` and ``open`` apply the process umask to the mode they are given, so
under ``umask 000`` a plain ``mkdir(parents=True)`` makes world-writable
directories, and a file written with ``write_bytes`` is world-writable too.
Tokens, keys and the simulator's state live in what these helpers make.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
PUBLIC_FILE = 0o644


def private_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a directory; every part of it created here is mode 0700.

    Directories that already exist are left as they are: they may be shared
    on purpose (``/tmp``, a project directory).
    """
    target = Path(path).expanduser()
    missing: list[Path] = []
    current = target
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs to choose the mode
        os.chmod(directory, PRIVATE_DIR)  # the umask may have taken bits away, or not enough
    if not target.is_dir():
        raise NotADirectoryError(f"not a directory: {target}")
    return target


def write_file(path: str | os.PathLike[str], data: bytes, mode: int = PRIVATE_FILE) -> Path:
    """Write ``data`` to ``path`` with exactly ``mode`` (created or replaced in place)."""
    target = Path(path)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(descriptor, mode)  # an existing file keeps its old mode otherwise
        with os.fdopen(descriptor, "wb") as handle:
            descriptor = -1
            handle.write(data)
    finally:
        if descriptor >= 0:
            os.close(descriptor)
    return target
