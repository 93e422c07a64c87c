"""A simulated printer's SD card: a real directory, so FTPS and printing share it.

The card appears on disk only when something first looks at it (the FTPS
server, a print, a listing), so a fleet of a thousand printers costs nothing
until a printer is used. It is then seeded with the sample jobs and gets the
folders a real card has (PROTOCOL.md §3). Names arrive in every form the
printers accept (``/sdcard/x``, ``sdcard/x``, ``/mnt/sdcard/x``,
``file:///sdcard/x``, ``ftp:///x``, ``x``); a name that would leave the card
(``..``, absolute after stripping) is refused, never resolved.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

FOLDERS = ("cache", "timelapse", "image", "logger")
DEFAULT_CAPACITY = 32 << 30  # a 32 GB card
_PREFIXES = ("file:///", "ftp:///", "ftp://", "file://")
_ROOTS = ("mnt/sdcard/", "sdcard/")


def card_name(path: str) -> str | None:
    """``path`` relative to the card's root (POSIX), or None when it leaves the card."""
    text = path.strip()
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    text = text.lstrip("/")
    for root in _ROOTS:
        if text.startswith(root):
            text = text[len(root) :]
            break
    parts = PurePosixPath(text).parts
    if not parts or any(p in ("..", ".") or "\\" in p or "\x00" in p for p in parts):
        return None
    return "/".join(parts)


class SdCard:
    """The files of one printer's card, on disk under :attr:`root`.

    ``samples`` gives the files a fresh card holds (name → bytes), called once
    when the card first appears. ``root`` None means a private temporary
    directory, removed by :meth:`close`.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        samples: Callable[[], Mapping[str, bytes]] | None = None,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self._root = root
        self._owned = root is None
        self._samples = samples
        self.capacity = capacity
        self._lock = threading.Lock()
        self._ready = False
        self._cleanup: weakref.finalize[Any, Any] | None = None

    @property
    def root(self) -> Path:
        """The card's directory, created (and seeded) on first use."""
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="bambu-sdcard-"))
                # a card nobody closed (a printer dropped unclosed) leaves nothing behind
                self._cleanup = weakref.finalize(
                    self, shutil.rmtree, self._root, ignore_errors=True
                )
            if not self._ready:
                self._root.mkdir(parents=True, exist_ok=True)
                for folder in FOLDERS:
                    (self._root / folder).mkdir(exist_ok=True)
                for name, data in (self._samples() if self._samples else {}).items():
                    target = self._root / name
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(data)
                self._ready = True
            return self._root

    def path(self, name: str) -> Path | None:
        """Where ``name`` lives on disk (it may not exist), or None if it leaves the card."""
        relative = card_name(name)
        return None if relative is None else self.root / relative

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a file on the card."""
        found = self.path(name)
        return found is not None and found.is_file()

    def find(self, name: str) -> str | None:
        """The card-relative name of an existing file, or None."""
        relative = card_name(name)
        if relative is None or not (self.root / relative).is_file():
            return None
        return relative

    def names(self) -> list[str]:
        """Every file on the card, relative to its root, sorted."""
        root = self.root
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def open(self, name: str) -> BinaryIO:
        """Open a file on the card for reading."""
        found = self.path(name)
        if found is None:
            raise FileNotFoundError(name)
        return found.open("rb")

    def write(self, name: str, data: bytes) -> str:
        """Write a file (a timelapse, a log); returns its card-relative name."""
        found = self.path(name)
        if found is None:
            raise ValueError(f"{name!r} is not a path on the card")
        found.parent.mkdir(parents=True, exist_ok=True)
        found.write_bytes(data)
        return found.relative_to(self.root).as_posix()

    def used_bytes(self) -> int:
        """Bytes the files on the card take."""
        root = self.root
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

    def free_bytes(self) -> int:
        """What still fits on the card (:attr:`capacity` set low simulates a full card)."""
        return max(0, self.capacity - self.used_bytes())

    def close(self) -> None:
        """Remove the card's directory if this card made it."""
        with self._lock:
            if self._cleanup is not None:
                self._cleanup()
                self._cleanup = None
                self._root = None
                self._ready = False
