"""Which tray feeds each filament of a sliced file: ``project_file``'s ``ams_mapping`` (sans-IO).

The mapping has one entry per filament of the project (a printer given a
shorter list cannot build its mapping table: print_error 0x07008012 "Failed
to get AMS mapping table", reported by users): the global tray id
(``ams*4+slot``; AMS HT units 128-135; external spool 254, the second
external spool of dual-nozzle printers 255) for each filament the plate
uses, -1 for the others (PROTOCOL.md §2.4).

The automatic rule is the slicer's: a tray of the same filament type first,
then the nearest colour (CIE76 distance in Lab), each tray used once unless
it is the only one of that type.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import AmsMappingError
from ..models.state import Tray
from ..models.threemf import Filament

UNUSED = -1


def ams_mapping(
    filaments: Sequence[Filament],
    trays: Sequence[Tray],
    *,
    length: int | None = None,
    explicit: Sequence[int] | None = None,
) -> list[int]:
    """The ``ams_mapping`` for a plate using ``filaments``, fed from ``trays``.

    ``length`` is the number of filaments in the project (default: the
    highest slot used). ``explicit`` is a mapping given by the user, checked
    against the trays instead of computed. Raises :class:`AmsMappingError`
    naming the filament and what is loaded when no tray fits.
    """
    used = [f for f in filaments if f.slot > 0]
    size = max([length or 0, *(f.slot for f in used)])
    loaded = [t for t in trays if not t.empty]
    if explicit is not None:
        return _check(list(explicit), used, trays, size)
    mapping = [UNUSED] * size
    taken: set[int] = set()
    pairs = sorted(
        (colour_distance(f.colour, t.colour), f.slot, t.global_id)
        for f in used
        for t in loaded
        if same_type(f.type, t.type)
    )
    for _, slot, tray in pairs:  # nearest pairs first: each tray once
        if mapping[slot - 1] == UNUSED and tray not in taken:
            mapping[slot - 1] = tray
            taken.add(tray)
    for filament in used:  # more filaments of a type than trays: share the nearest
        if mapping[filament.slot - 1] != UNUSED:
            continue
        fits = [p for p in pairs if p[1] == filament.slot]
        if not fits:
            raise AmsMappingError(
                f"filament {filament.slot} ({filament.type} {filament.colour[:7]}) has no tray "
                f"of that type loaded; loaded: {describe(loaded)}",
                filament=filament.slot,
            )
        mapping[filament.slot - 1] = fits[0][2]
    return mapping


def _check(
    mapping: list[int], used: Sequence[Filament], trays: Sequence[Tray], size: int
) -> list[int]:
    if len(mapping) < size:
        raise AmsMappingError(
            f"the AMS mapping has {len(mapping)} entries; the file has {size} filaments"
        )
    by_id = {t.global_id: t for t in trays}
    for value in mapping:
        if value != UNUSED and value not in by_id:
            raise AmsMappingError(f"the AMS mapping names tray {value}, which the printer lacks")
    for filament in used:
        tray_id = mapping[filament.slot - 1]
        if tray_id == UNUSED:
            raise AmsMappingError(
                f"filament {filament.slot} ({filament.type}) is used but mapped to no tray",
                filament=filament.slot,
            )
        tray = by_id[tray_id]
        if tray.empty:
            raise AmsMappingError(
                f"filament {filament.slot} is mapped to tray {tray_id}, which is empty",
                filament=filament.slot,
            )
        if not same_type(filament.type, tray.type):
            raise AmsMappingError(
                f"filament {filament.slot} is {filament.type} but tray {tray_id} holds {tray.type}",
                filament=filament.slot,
            )
    return mapping


def describe(trays: Sequence[Tray]) -> str:
    """``"0 PLA #FF0000, 254 PETG #FFFFFF"``, or ``"nothing"``."""
    shown = [f"{t.global_id} {t.type} {t.colour_rgb}".strip() for t in trays if not t.empty]
    return ", ".join(shown) or "nothing"


def same_type(a: str, b: str) -> bool:
    """Whether two filament type names are the same material (case and spacing aside)."""
    return a.strip().upper().replace(" ", "") == b.strip().upper().replace(" ", "")


def colour_distance(a: str, b: str) -> float:
    """CIE76 ΔE between two ``#RRGGBB[AA]`` colours (a large value when either is not one)."""
    la, lb = _lab(a), _lab(b)
    if la is None or lb is None:
        return 1000.0
    return float(sum((x - y) ** 2 for x, y in zip(la, lb, strict=True)) ** 0.5)


def _lab(colour: str) -> tuple[float, float, float] | None:
    text = colour.strip().lstrip("#")
    if len(text) < 6:
        return None
    try:
        rgb = [int(text[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    except ValueError:
        return None
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    r, g, b = linear
    # sRGB → XYZ (D65), normalised by the white point.
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)
