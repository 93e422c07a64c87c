"""Static facts about the printers and filaments the simulator can play.

Model names, product names and serial prefixes come from PROTOCOL.md §2.6;
AMS module prefixes from §2.3. Firmware versions are plausible values chosen
for the simulator (the real ones move every month); what matters is their
format ``XX.XX.XX.XX`` and that one device can lag behind ``latest``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Structure = Literal["CoreXY", "I3"]
# Firmware module prefix of the AMS kind: "ams" AMS, "ams_f1" AMS Lite,
# "n3f" AMS 2 Pro, "n3s" AMS HT (ids 128-135, one slot each).
AmsKind = Literal["ams", "ams_f1", "n3f", "n3s"]


@dataclass(frozen=True, slots=True)
class PrinterModel:
    """One printer model as the cloud describes it."""

    key: str  # short name used in configs and on the command line
    model_name: str  # ``dev_model_name`` on the wire
    product: str  # ``dev_product_name`` on the wire
    serial_prefix: str
    structure: Structure
    ams_kinds: tuple[AmsKind, ...]  # AMS units fitted by default, in id order
    firmware: str  # latest ``ota`` version the simulated cloud offers
    previous_firmware: str  # what an "outdated" device runs
    camera: Literal["rtsps", "jpeg"]
    report_style: Literal["full", "delta"]
    board_modules: tuple[tuple[str, str], ...]  # (module name, hw_ver) besides ota

    @property
    def family(self) -> str:
        """``X1``, ``P1``, ``A1``, ``H2``... (the first two letters of the product)."""
        return self.product[:2]


def _model(
    key: str,
    model_name: str,
    product: str,
    prefix: str,
    structure: Structure,
    ams: tuple[AmsKind, ...],
    firmware: tuple[str, str],
    camera: Literal["rtsps", "jpeg"],
    style: Literal["full", "delta"],
    boards: tuple[tuple[str, str], ...],
) -> PrinterModel:
    return PrinterModel(
        key=key,
        model_name=model_name,
        product=product,
        serial_prefix=prefix,
        structure=structure,
        ams_kinds=ams,
        firmware=firmware[0],
        previous_firmware=firmware[1],
        camera=camera,
        report_style=style,
        board_modules=boards,
    )


_X1_BOARDS = (("rv1126", "AP05"), ("mc", "MC07"), ("th", "TH09"))
_P1_BOARDS = (("mc", "MC03"), ("th", "TH01"))
_A1_BOARDS = (("mc", "MC_A1"), ("th", "TH_A1"))
_H2_BOARDS = (("ap", "AP08"), ("mc", "MC09"), ("th", "TH11"))

MODELS: dict[str, PrinterModel] = {
    m.key: m
    for m in (
        _model(
            "x1c", "BL-P001", "X1 Carbon", "00M", "CoreXY", ("ams",),
            ("01.08.02.00", "01.07.02.00"), "rtsps", "full", _X1_BOARDS,
        ),
        _model(
            "x1", "BL-P002", "X1", "00W", "CoreXY", ("ams",),
            ("01.08.02.00", "01.07.02.00"), "rtsps", "full", _X1_BOARDS,
        ),
        _model(
            "x1e", "C13", "X1E", "03W", "CoreXY", ("ams",),
            ("01.01.03.00", "01.01.02.00"), "rtsps", "full", _X1_BOARDS,
        ),
        _model(
            "p1p", "C11", "P1P", "01S", "CoreXY", ("ams",),
            ("01.08.00.00", "01.07.00.00"), "jpeg", "delta", _P1_BOARDS,
        ),
        _model(
            "p1s", "C12", "P1S", "01P", "CoreXY", ("ams",),
            ("01.08.00.00", "01.07.00.00"), "jpeg", "delta", _P1_BOARDS,
        ),
        _model(
            "a1mini", "N1", "A1 mini", "030", "I3", ("ams_f1",),
            ("01.05.00.00", "01.04.00.00"), "jpeg", "delta", _A1_BOARDS,
        ),
        _model(
            "a1", "N2S", "A1", "039", "I3", ("ams_f1",),
            ("01.05.00.00", "01.04.00.00"), "jpeg", "delta", _A1_BOARDS,
        ),
        _model(
            "a2l", "N9", "A2L", "26A", "I3", ("ams_f1",),
            ("01.00.01.00", "01.00.00.00"), "jpeg", "delta", _A1_BOARDS,
        ),
        _model(
            "p2s", "N7", "P2S", "22E", "CoreXY", ("n3f",),
            ("01.01.00.00", "01.00.00.00"), "rtsps", "delta", _H2_BOARDS,
        ),
        _model(
            "x2d", "N6", "X2D", "20P", "CoreXY", ("n3f",),
            ("01.00.01.00", "01.00.00.00"), "rtsps", "full", _H2_BOARDS,
        ),
        _model(
            "h2d", "O1D", "H2D", "094", "CoreXY", ("n3f", "n3s"),
            ("01.02.00.00", "01.01.00.00"), "rtsps", "full", _H2_BOARDS,
        ),
        _model(
            "h2s", "O1S", "H2S", "093", "CoreXY", ("n3f",),
            ("01.01.00.00", "01.00.00.00"), "rtsps", "full", _H2_BOARDS,
        ),
        _model(
            "h2c", "O1C", "H2C", "31B", "CoreXY", ("n3f",),
            ("01.00.00.00", "00.09.00.00"), "rtsps", "full", _H2_BOARDS,
        ),
    )
}  # fmt: skip


# AMS hardware/firmware per kind: (hw_ver, sw_ver, trays per unit).
AMS_HARDWARE: dict[AmsKind, tuple[str, str, int]] = {
    "ams": ("AMS08", "00.00.06.49", 4),
    "ams_f1": ("AMS_F102", "00.00.07.89", 4),
    "n3f": ("N3F05", "00.00.01.22", 4),
    "n3s": ("N3S05", "00.00.01.10", 1),
}


@dataclass(frozen=True, slots=True)
class Filament:
    """One Bambu filament profile as trays and tasks refer to it."""

    tray_type: str
    info_idx: str  # ``tray_info_idx`` / ``filamentId``
    sub_brand: str
    temp_min: int
    temp_max: int


FILAMENTS: tuple[Filament, ...] = (
    Filament("PLA", "GFA00", "PLA Basic", 190, 230),
    Filament("PLA", "GFA01", "PLA Matte", 190, 230),
    Filament("PETG", "GFG02", "PETG HF", 230, 260),
    Filament("ABS", "GFB00", "ABS", 240, 270),
    Filament("ASA", "GFB01", "ASA", 240, 270),
    Filament("TPU", "GFU01", "TPU 95A HF", 200, 250),
    Filament("PLA-CF", "GFA50", "PLA-CF", 210, 240),
    Filament("PLA-S", "GFS02", "Support for PLA", 190, 220),
)

# RRGGBBAA, the way trays report colours.
COLOURS: tuple[str, ...] = (
    "FFFFFFFF",
    "000000FF",
    "F72323FF",
    "0A2989FF",
    "FEC600FF",
    "00AE42FF",
    "898989FF",
    "FF6A13FF",
    "8E47A3FF",
    "F4A925FF",
)

BED_TYPES: tuple[str, ...] = (
    "textured_plate",
    "cool_plate",
    "hot_plate",
    "eng_plate",
)


def parse_model_key(key: str) -> PrinterModel:
    """Look a model up by its short key, with a message naming the valid ones."""
    try:
        return MODELS[key.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ValueError(f"unknown printer model {key!r} (known: {known})") from None
