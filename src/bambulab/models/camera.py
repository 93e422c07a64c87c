"""A camera frame, whichever camera a printer has (JPEG stream or RTSPS).

Frames are immutable: the fan-out server hands the same object to every
viewer, and callbacks read it on their own threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CameraKind = Literal["jpeg", "rtsps"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One picture: JPEG bytes, when it arrived (``time.time()``), its number on the stream.

    ``index`` counts frames from 1 on one client (across reconnects);
    ``monotonic`` is ``time.monotonic()`` at arrival, for rates and ages.
    ``width``/``height`` are known when the client decoded the frame
    (RTSPS), else 0.
    """

    jpeg: bytes = field(repr=False)
    timestamp: float
    index: int
    monotonic: float = 0.0
    serial: str = ""
    width: int = 0
    height: int = 0

    @property
    def size(self) -> int:
        """Bytes of JPEG."""
        return len(self.jpeg)

    def save(self, path: str) -> None:
        """Write the JPEG to ``path``."""
        with open(path, "wb") as out:
            out.write(self.jpeg)
