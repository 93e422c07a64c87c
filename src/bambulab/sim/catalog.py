"""What the simulator adds to the model table: hardware, firmware, filaments.

Every protocol fact about a model (``dev_model_name``, product, serial
prefix, camera, report style, capabilities) is a row of the library's table,
:data:`bambulab.models.printer.MODELS`; an entry here points at its row and
adds only what a simulated printer needs besides: a short key for configs,
its frame structure (the cloud's ``dev_structure``), the AMS units fitted by
default (module prefixes from PROTOCOL.md §2.3) and its boards. Firmware
versions are plausible values chosen for the simulator (the real ones move
every month); what matters is their format ``XX.XX.XX.XX`` and that one
device can lag behind ``latest``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..models.printer import PrinterModel as ModelRow
from ..models.printer import model_of

Structure = Literal["CoreXY", "I3"]
# Firmware module prefix of the AMS kind: "ams" AMS, "ams_f1" AMS Lite,
# "n3f" AMS 2 Pro, "n3s" AMS HT (ids 128-135, one slot each).
AmsKind = Literal["ams", "ams_f1", "n3f", "n3s"]


@dataclass(frozen=True, slots=True)
class PrinterModel:
    """One model the simulator can play: a row of the model table plus its hardware."""

    key: str  # short name used in configs and on the command line
    row: ModelRow  # the model table's row: every protocol fact about the model
    structure: Structure
    ams_kinds: tuple[AmsKind, ...]  # AMS units fitted by default, in id order
    firmware: str  # latest ``ota`` version the simulated cloud offers
    previous_firmware: str  # what an "outdated" device runs
    board_modules: tuple[tuple[str, str], ...]  # (module name, hw_ver) besides ota

    @property
    def model_name(self) -> str:
        """``dev_model_name`` on the wire (the table's ``code``)."""
        return self.row.code

    @property
    def product(self) -> str:
        """``dev_product_name`` on the wire."""
        return self.row.product

    @property
    def serial_prefix(self) -> str:
        """The first three characters of this model's serials."""
        return self.row.serial_prefix

    @property
    def family(self) -> str:
        """``X1``, ``P1``, ``A1``, ``H2``..."""
        return self.row.family


def _model(
    key: str,
    code: str,
    structure: Structure,
    ams: tuple[AmsKind, ...],
    firmware: tuple[str, str],
    boards: tuple[tuple[str, str], ...],
) -> PrinterModel:
    row = model_of(code)
    if row is None:  # pragma: no cover - a typo in the table below
        raise ValueError(f"{code!r} is not in the model table")
    return PrinterModel(key, row, structure, ams, firmware[0], firmware[1], boards)


# The X1's main board is the ``rv1126`` (hw_ver AP05, PROTOCOL.md §2.6.1; the
# X1E's reads AP02 in field captures); P1 and A1 printers report an ``esp32``
# module (PROTOCOL.md §2.6.1), hw_ver AP04 on a P1 and AP05 on an A1 (field
# captures: a Home Assistant library tells the four models apart by exactly
# these pairs with project_name).
_X1_BOARDS = (("rv1126", "AP05"), ("mc", "MC07"), ("th", "TH09"))
_X1E_BOARDS = (("rv1126", "AP02"), ("mc", "MC07"), ("th", "TH09"))
_P1_BOARDS = (("esp32", "AP04"), ("mc", "MC03"), ("th", "TH01"))
_A1_BOARDS = (("esp32", "AP05"), ("mc", "MC_A1"), ("th", "TH_A1"))
_H2_BOARDS = (("ap", "AP08"), ("mc", "MC09"), ("th", "TH11"))

MODELS: dict[str, PrinterModel] = {
    m.key: m
    for m in (
        _model("x1c", "BL-P001", "CoreXY", ("ams",), ("01.08.02.00", "01.07.02.00"), _X1_BOARDS),
        _model("x1", "BL-P002", "CoreXY", ("ams",), ("01.08.02.00", "01.07.02.00"), _X1_BOARDS),
        _model("x1e", "C13", "CoreXY", ("ams",), ("01.01.03.00", "01.01.02.00"), _X1E_BOARDS),
        _model("p1p", "C11", "CoreXY", ("ams",), ("01.08.00.00", "01.07.00.00"), _P1_BOARDS),
        _model("p1s", "C12", "CoreXY", ("ams",), ("01.08.00.00", "01.07.00.00"), _P1_BOARDS),
        _model("a1mini", "N1", "I3", ("ams_f1",), ("01.05.00.00", "01.04.00.00"), _A1_BOARDS),
        _model("a1", "N2S", "I3", ("ams_f1",), ("01.05.00.00", "01.04.00.00"), _A1_BOARDS),
        _model("a2l", "N9", "I3", ("ams_f1",), ("01.00.01.00", "01.00.00.00"), _A1_BOARDS),
        _model("p2s", "N7", "CoreXY", ("n3f",), ("01.01.00.00", "01.00.00.00"), _H2_BOARDS),
        _model("x2d", "N6", "CoreXY", ("n3f",), ("01.00.01.00", "01.00.00.00"), _H2_BOARDS),
        _model("h2d", "O1D", "CoreXY", ("n3f", "n3s"), ("01.02.00.00", "01.01.00.00"), _H2_BOARDS),
        _model("h2s", "O1S", "CoreXY", ("n3f",), ("01.01.00.00", "01.00.00.00"), _H2_BOARDS),
        _model("h2c", "O1C", "CoreXY", ("n3f",), ("01.00.00.00", "00.09.00.00"), _H2_BOARDS),
    )
}  # fmt: skip


# Modules that name the printer in ``get_version`` (besides ``ota``): the main board.
MAIN_BOARDS = frozenset({"rv1126", "esp32", "ap"})

# ``product_name`` of each AMS kind's firmware module.
AMS_PRODUCT: dict[AmsKind, str] = {
    "ams": "AMS",
    "ams_f1": "AMS Lite",
    "n3f": "AMS 2 Pro",
    "n3s": "AMS HT",
}

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
