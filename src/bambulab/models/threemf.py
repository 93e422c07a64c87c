"""What a sliced Bambu 3MF says: plates, filaments, objects, the printer it was sliced for.

Pure data, built by :func:`bambulab.protocol.threemf.read_3mf`. Field names
follow Bambu Studio's ``Metadata/slice_info.config`` and
``Metadata/model_settings.config`` (``bbs_3mf.cpp``): a plate's ``index``,
``prediction`` (seconds), ``weight`` (grams), ``<filament id type color
used_g used_m>`` and ``<object identify_id name skipped>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..errors import ThreeMFError
from .printer import PrinterModel

_NO_THUMBNAILS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Filament:
    """One filament of the project (``slot`` 1-based, as ``<filament id>`` counts them).

    ``colour`` is ``#RRGGBBAA`` (upper case); ``grams``/``metres`` are what a
    plate uses of it (0 for a project-level entry).
    """

    slot: int
    type: str
    colour: str
    grams: float = 0.0
    metres: float = 0.0
    tray_info_idx: str = ""


@dataclass(frozen=True, slots=True)
class PlateObject:
    """An object on a plate; ``identify_id`` is what ``print.skip_objects`` takes."""

    identify_id: int
    name: str
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class Plate:
    """One plate of the project.

    ``gcode_path`` is the archive member (``Metadata/plate_<N>.gcode``) or
    ``""`` when the plate was not sliced; ``thumbnails`` maps a kind
    (``plate``, ``no_light``, ``top``, ``pick``) to its member. ``layers``
    comes from the G-code header (``; total layer number: N``), 0 when unknown.
    """

    index: int
    name: str = ""
    gcode_path: str = ""
    gcode_md5: str = ""
    thumbnails: Mapping[str, str] = field(default_factory=lambda: _NO_THUMBNAILS)
    seconds: float = 0.0
    weight: float = 0.0
    filaments: tuple[Filament, ...] = ()
    bed_type: str = ""
    nozzle_diameter: float | None = None
    objects: tuple[PlateObject, ...] = ()
    layers: int = 0
    printer_model_id: str = ""

    @property
    def sliced(self) -> bool:
        """Whether the plate carries G-code (it can be printed)."""
        return bool(self.gcode_path)

    @property
    def param(self) -> str:
        """The ``project_file`` ``param`` that prints this plate."""
        return self.gcode_path or f"Metadata/plate_{self.index}.gcode"


@dataclass(frozen=True, slots=True)
class ThreeMF:
    """A 3MF project as the printer and the slicer see it.

    ``printer_model_id`` is the raw id the file names (``BL-P001``, ``C12``),
    ``printer_model_name`` the profile's name (``Bambu Lab X1 Carbon``),
    ``model`` our row for it when known. ``md5`` is the hex MD5 of the whole
    file (what the cloud ``project_file`` carries), ``size`` its bytes.
    ``filaments`` is the project's list (its length is the length an
    ``ams_mapping`` must have).
    """

    plates: tuple[Plate, ...]
    md5: str
    size: int
    filaments: tuple[Filament, ...] = ()
    printer_model_id: str = ""
    printer_model_name: str = ""
    model: PrinterModel | None = None
    title: str = ""

    @property
    def sliced(self) -> tuple[Plate, ...]:
        """The plates that carry G-code."""
        return tuple(p for p in self.plates if p.sliced)

    def plate(self, index: int, *, sliced: bool = True) -> Plate:
        """Plate ``index`` (1-based); ThreeMFError when absent or (``sliced``) without G-code."""
        for plate in self.plates:
            if plate.index == index:
                if sliced and not plate.sliced:
                    raise ThreeMFError(
                        f"plate {index} is not sliced (no G-code): slice and export it first"
                    )
                return plate
        if sliced and not self.sliced:
            raise ThreeMFError("the project is not sliced (no plate has G-code)")
        known = ", ".join(str(p.index) for p in self.plates) or "none"
        raise ThreeMFError(f"the file has no plate {index} (plates: {known})")

    @property
    def mapping_length(self) -> int:
        """How many entries an ``ams_mapping`` for this file needs (one per project filament)."""
        used = max((f.slot for p in self.plates for f in p.filaments), default=0)
        return max(len(self.filaments), used)
