"""Pictures for the simulated cameras: a 1280x720 JPEG of what the printer is doing.

A real P1/A1 camera shows the bed; the simulator shows a status card
instead, which is more useful when a test or a person looks at it: the
printer's name and model, the job, layer and progress (with a bar), the
temperatures with their targets, the state and the wall time, in big text on
a dark background whose hue follows the serial, so a wall of tiles shows
different pictures at a glance.

The JPEG is baseline (not progressive), quality 80, 4:2:0 chroma subsampling
and Pillow's standard Huffman tables (``optimize=False``): exactly what RTP/JPEG
(RFC 2435) can carry without tables of its own, so the RTSPS simulator can
packetise the same bytes. :func:`render_frame` is a pure function of a
:class:`CameraView`; the camera host decides how often to call it (at most once
per interval per printer, and only while someone watches).
"""

from __future__ import annotations

import functools
import hashlib
import io
import time
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from ..safetext import visible

WIDTH = 1280
HEIGHT = 720
QUALITY = 80
_MARGIN = 48
_TEXT = (235, 235, 235)
_DIM = (160, 160, 170)
_BAR_BACK = (60, 60, 70)
_BAR = (80, 200, 120)
_MAX_TEXT = 48  # characters of a name or job drawn before "…"


@dataclass(frozen=True, slots=True)
class CameraView:
    """What one picture shows; immutable, built on the printer host's thread.

    ``chamber`` is None for printers without a chamber sensor; ``wall_time``
    is ``time.time()`` when the view was taken.
    """

    serial: str
    name: str
    model: str  # the product name, e.g. "P1S"
    state: str  # gcode_state: IDLE, PREPARE, RUNNING, PAUSE, FINISH, FAILED
    job: str = ""
    layer: int = 0
    total_layers: int = 0
    percent: int = 0
    remaining_minutes: int = 0
    nozzle: float = 0.0
    nozzle_target: float = 0.0
    bed: float = 0.0
    bed_target: float = 0.0
    chamber: float | None = None
    wall_time: float = 0.0


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own font at ``size`` pixels, loaded once per size for the process."""
    return ImageFont.load_default(size=size)


def _background(serial: str) -> tuple[int, int, int]:
    """A dark colour that depends on the serial only (stable across runs)."""
    digest = hashlib.sha256(serial.encode("utf-8")).digest()
    return (16 + digest[0] % 40, 16 + digest[1] % 40, 24 + digest[2] % 48)


def _clip(text: str) -> str:
    # Names come from the cloud's world (users rename printers): no control
    # characters in the picture, and nothing longer than a line.
    shown = visible(text)
    return shown if len(shown) <= _MAX_TEXT else shown[: _MAX_TEXT - 1] + "…"


def _temperature(current: float, target: float) -> str:
    return f"{current:.0f}°C / {target:.0f}°C" if target > 0 else f"{current:.0f}°C"


def render_frame(view: CameraView) -> bytes:
    """The JPEG (baseline, quality 80, 4:2:0, standard tables) showing ``view``."""
    image = Image.new("RGB", (WIDTH, HEIGHT), _background(view.serial))
    draw = ImageDraw.Draw(image)
    big, medium, small = _font(64), _font(40), _font(28)
    x = _MARGIN
    draw.text((x, 36), _clip(view.name), font=big, fill=_TEXT)
    draw.text((x, 116), f"{_clip(view.model)}   {view.serial}", font=small, fill=_DIM)
    draw.text((WIDTH - _MARGIN, 44), view.state, font=medium, fill=_TEXT, anchor="ra")

    job = _clip(view.job) if view.job else "no job"
    draw.text((x, 190), job, font=medium, fill=_TEXT)
    layers = f"layer {view.layer}/{view.total_layers}" if view.total_layers else "layer -"
    draw.text((x, 250), layers, font=medium, fill=_TEXT)
    draw.text((WIDTH - _MARGIN, 250), f"{view.percent}%", font=big, fill=_TEXT, anchor="ra")

    bar_top, bar_bottom = 340, 380
    draw.rectangle((x, bar_top, WIDTH - _MARGIN, bar_bottom), fill=_BAR_BACK)
    done = max(0, min(100, view.percent))
    if done:
        right = x + (WIDTH - 2 * _MARGIN) * done // 100
        draw.rectangle((x, bar_top, right, bar_bottom), fill=_BAR)
    if view.remaining_minutes:
        hours, minutes = divmod(view.remaining_minutes, 60)
        draw.text((x, 392), f"{hours}h{minutes:02d}m left", font=small, fill=_DIM)

    rows = [
        ("nozzle", _temperature(view.nozzle, view.nozzle_target)),
        ("bed", _temperature(view.bed, view.bed_target)),
    ]
    if view.chamber is not None:
        rows.append(("chamber", f"{view.chamber:.0f}°C"))
    y = 460
    for label, value in rows:
        draw.text((x, y), label, font=medium, fill=_DIM)
        draw.text((x + 220, y), value, font=medium, fill=_TEXT)
        y += 56
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(view.wall_time))
    draw.text((WIDTH - _MARGIN, HEIGHT - 40), stamp, font=medium, fill=_TEXT, anchor="rb")

    out = io.BytesIO()
    image.save(
        out,
        "JPEG",
        quality=QUALITY,
        optimize=False,
        progressive=False,
        subsampling=2,
    )
    return out.getvalue()
