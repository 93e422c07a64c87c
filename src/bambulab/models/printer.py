"""Printer models and families, HMS and print-error codes (PROTOCOL.md §2.3, §2.6).

Pure tables and decoders: a printer is identified from its serial prefix,
its ``dev_model_name`` or its ``get_version`` modules; HMS entries and
``print_error`` integers decode to code strings, severity, module, wiki URL
and an English text for every code the simulator raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

from ..vocabulary import CHAMBER_LIGHT, CHAMBER_LIGHT2, WORK_LIGHT

ReportStyle = Literal["full", "delta"]
Camera = Literal["rtsps", "jpeg"]
UrlScheme = Literal["file", "ftp"]
DoorSource = Literal["home_flag", "stat", ""]

# Light nodes per family (``system.ledctrl`` / ``lights_report``): every model
# has the chamber light; the X1 adds the toolhead's work light, H2 and X2 a
# second chamber light as well (field reports of ``lights_report``).
_ONE_LIGHT = (CHAMBER_LIGHT,)
_X1_LIGHTS = (CHAMBER_LIGHT, WORK_LIGHT)
_TWO_CHAMBER_LIGHTS = (CHAMBER_LIGHT, CHAMBER_LIGHT2, WORK_LIGHT)

# ``project_file`` URL schemes for a file on the printer's storage (PROTOCOL.md
# §2.4, §2.6.1): X1/P1/A1 take ``file:///sdcard/<path>``, the H2 family
# ``ftp:///<path>``. Newer families (P2, X2, A2) are not documented either
# way; ``ftp:///`` is what a widely used LAN library sends to every model, so
# the client sends that and accepts that either may work.
_FILE_URL: tuple[UrlScheme, ...] = ("file",)
_FTP_URL: tuple[UrlScheme, ...] = ("ftp",)
_EITHER_URL: tuple[UrlScheme, ...] = ("ftp", "file")


@dataclass(frozen=True, slots=True)
class PrinterModel:
    """One printer model, and what it can do: one row of :data:`MODELS`.

    The only model table of the project: the client, the CLI and the
    simulator all read it. Names, serial prefixes, camera kind and report
    style are PROTOCOL.md §2.6; the report style is "full" for the X1 series
    only (§2.3), every other model is treated as "delta" (reports carry what
    changed and must be merged; Bambu Studio decides per message, from
    ``print.msg``, not per model, so a client that merges is right either
    way). Capabilities follow Bambu Studio's per-model printer descriptions
    (``resources/printers/<model>.json``: ``support_chamber_temp_edit``,
    ``support_aux_fan``, ``support_chamber_fan``, ``printer_is_enclosed``).
    Only a chamber *heater* counts for ``chamber_heater``: the X1 Carbon, X1
    and P2S measure their chamber but cannot heat it. ``chamber_sensor`` is
    false where the printer has no chamber thermometer and reports a
    placeholder (A1, A1 mini, A2L, P1P, P1S: PROTOCOL.md §2.6.1; Bambu
    Studio's ``DevChamber::HasChamber`` reads ``support_chamber`` from the
    same per-model descriptions). ``door`` says where the door sensor is
    reported: ``home_flag`` on the X1 series, ``stat`` on H2/P2/X2 (bit
    0x00800000 in both), nowhere on open or sensorless frames.
    """

    code: str  # dev_model_name
    product: str
    family: str
    serial_prefix: str
    camera: Camera  # "rtsps" (port 322) or "jpeg" (TLS port 6000)
    report_style: ReportStyle
    dual_nozzle: bool = False
    chamber_heater: bool = False
    aux_fan: bool = True
    chamber_fan: bool = True
    enclosed: bool = True
    lights: tuple[str, ...] = _ONE_LIGHT
    # project_file URL schemes for a file on the printer; the first is what to send.
    url_schemes: tuple[UrlScheme, ...] = _FILE_URL
    # The RTSPS stream must be switched on on the printer first (H2D: "LAN stream off by default").
    camera_off_by_default: bool = False
    chamber_sensor: bool = True
    door: DoorSource = ""

    @property
    def known(self) -> bool:
        """Whether this is a real model (an unknown one is allowed everything)."""
        return bool(self.code)

    def lan_url(self, path: str) -> str:
        """The ``project_file`` URL of ``path`` on this printer's storage (SD card)."""
        clean = path.strip().lstrip("/")
        for prefix in ("sdcard/", "mnt/sdcard/"):
            if clean.startswith(prefix):
                clean = clean[len(prefix) :]
        if self.url_schemes[0] == "ftp":
            return f"ftp:///{clean}"
        return f"file:///sdcard/{clean}"


def _open_frame(code: str, product: str, family: str, prefix: str) -> PrinterModel:
    """A-series: open frame, part fan only, JPEG camera, delta reports."""
    return PrinterModel(
        code,
        product,
        family,
        prefix,
        "jpeg",
        "delta",
        aux_fan=False,
        chamber_fan=False,
        enclosed=False,
        url_schemes=_FILE_URL if family == "A1" else _EITHER_URL,
        chamber_sensor=False,
    )


def _h2(code: str, product: str, prefix: str, *, dual: bool = True) -> PrinterModel:
    """H2 family: chamber heater, two chamber lights; all but the H2S have two nozzles."""
    return PrinterModel(
        code,
        product,
        "H2",
        prefix,
        "rtsps",
        "delta",
        dual_nozzle=dual,
        chamber_heater=True,
        lights=_TWO_CHAMBER_LIGHTS,
        url_schemes=_FTP_URL,
        camera_off_by_default=True,
        door="stat",
    )


MODELS: tuple[PrinterModel, ...] = (
    PrinterModel(
        "BL-P001", "X1 Carbon", "X1", "00M", "rtsps", "full", lights=_X1_LIGHTS, door="home_flag"
    ),
    PrinterModel(
        "BL-P002", "X1", "X1", "00W", "rtsps", "full", lights=_X1_LIGHTS, door="home_flag"
    ),
    PrinterModel(
        "C13",
        "X1E",
        "X1",
        "03W",
        "rtsps",
        "full",
        chamber_heater=True,
        lights=_X1_LIGHTS,
        door="home_flag",
    ),
    # Bambu Studio: the P1P has both fan ports but no enclosure. Neither P1 has a
    # chamber thermometer (a placeholder 5 is reported) nor a door sensor.
    PrinterModel("C11", "P1P", "P1", "01S", "jpeg", "delta", enclosed=False, chamber_sensor=False),
    PrinterModel("C12", "P1S", "P1", "01P", "jpeg", "delta", chamber_sensor=False),
    _open_frame("N1", "A1 mini", "A1", "030"),
    _open_frame("N2S", "A1", "A1", "039"),
    _open_frame("N9", "A2L", "A2", "26A"),
    PrinterModel("N7", "P2S", "P2", "22E", "rtsps", "delta", url_schemes=_EITHER_URL, door="stat"),
    PrinterModel(
        "N6",
        "X2D",
        "X2",
        "20P",
        "rtsps",
        "delta",
        dual_nozzle=True,
        chamber_heater=True,
        lights=_TWO_CHAMBER_LIGHTS,
        url_schemes=_EITHER_URL,
        door="stat",
    ),
    _h2("O1D", "H2D", "094"),
    _h2("O1E", "H2D Pro", ""),
    _h2("O1S", "H2S", "093", dual=False),
    _h2("O1C", "H2C", "31B"),
    _h2("O1C2", "H2C", "31B"),
)

UNKNOWN_MODEL = PrinterModel("", "unknown", "unknown", "", "jpeg", "delta", url_schemes=_EITHER_URL)
_BY_CODE = {m.code: m for m in MODELS}
_BY_PREFIX: dict[str, PrinterModel] = {}
for _m in MODELS:
    # The first row wins where two codes share a prefix (H2C: O1C, O1C2).
    if _m.serial_prefix:
        _BY_PREFIX.setdefault(_m.serial_prefix, _m)


def _name_key(value: str) -> str:
    """A printer name folded for lookup: ``"Bambu Lab X1-Carbon"`` -> ``"x1carbon"``.

    Case, spaces, dashes and underscores do not matter, nor the ``Bambu Lab``
    brand (``get_version`` ``product_name`` carries it, Bambu Studio's
    ``display_name`` too) or the ``3DPrinter-`` prefix of older binding
    records' ``dev_product_name``.
    """
    key = "".join(ch for ch in value.lower() if ch.isalnum())
    for prefix in ("bambulab", "3dprinter"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


# Every spelling a printer's name is seen in, folded by _name_key: the product
# names of §2.6, the dev_model_name codes (O1D, "BL-P001" -> "blp001"), Bambu
# Studio's display names ("Bambu Lab X1 Carbon", "Bambu Lab H2D Pro", ...) and
# the short form "X1C" other clients and the app use.
_BY_NAME: dict[str, PrinterModel] = {}
for _m in MODELS:
    _BY_NAME.setdefault(_name_key(_m.product), _m)
    _BY_NAME.setdefault(_name_key(_m.code), _m)
del _m
_BY_NAME["x1c"] = _BY_CODE["BL-P001"]

# get_version ``hw_ver`` of the X1 series' main board (``rv1126``): ``AP05``
# (PROTOCOL.md §2.6.1) on the X1 Carbon and X1, ``AP02`` on the X1E (field
# captures); which X1 it is comes from the serial prefix when that is known.
_X1_BOARDS = {"AP05": "BL-P001", "AP02": "C13"}


def model_of(code: str) -> PrinterModel | None:
    """The row of a ``dev_model_name`` (``BL-P001``, ``O1D``), or ``None``."""
    return _BY_CODE.get(code.strip())


def model_named(name: Any) -> PrinterModel | None:
    """The row a name or code designates in any of its spellings, or ``None``.

    ``"Bambu Lab H2D Pro"``, ``"H2D Pro"``, ``"O1E"``, ``"X1-Carbon"``,
    ``"X1 Carbon"``, ``"X1C"``, ``"BL-P001"``, ``"A1 mini"``... An AMS's
    ``product_name`` (``"AMS 2 Pro (1)"``) names no printer.
    """
    if not isinstance(name, str) or not name.strip():
        return None
    return _BY_CODE.get(name.strip()) or _BY_NAME.get(_name_key(name))


def model_from_modules(
    modules: Iterable[Mapping[str, Any]], serial: str | None = None
) -> PrinterModel | None:
    """The model a ``get_version`` reply names, or ``None`` when it names none.

    In order of trust: a ``product_name`` (the ``ota`` module first, then any
    module that carries one: current firmware names the printer there, AMS
    modules name themselves and match nothing), then a ``project_name`` code
    (older firmware: ``C11``, ``N2S``), then the main board's ``hw_ver``
    (``AP05``: an X1, told apart by ``serial`` when its prefix is an X1's;
    not when the reply has the ``esp32`` module of P1/A1 printers, nor when
    the serial prefix is another family's).
    """
    listed = [m for m in modules if isinstance(m, Mapping)]
    ordered = sorted(listed, key=lambda m: m.get("name") != "ota")  # stable: ota first
    for key in ("product_name", "project_name"):
        for module in ordered:
            found = model_named(module.get(key))
            if found:
                return found
    if any(m.get("name") == "esp32" for m in ordered):
        return None  # a P1/A1 (PROTOCOL.md §2.6.1); their boards also read AP0x
    for module in ordered:
        board = _X1_BOARDS.get(str(module.get("hw_ver") or "").strip().upper())
        if board:
            by_prefix = _BY_PREFIX.get((serial or "").strip()[:3].upper())
            if by_prefix is None:
                return _BY_CODE[board]
            # A known prefix of another family is better evidence than a board name.
            return by_prefix if by_prefix.family == "X1" else None
    return None


def detect_model(
    serial: str | None = None,
    dev_model_name: str | None = None,
    modules: Iterable[Mapping[str, Any]] | None = None,
) -> PrinterModel:
    """The model from the best evidence: ``dev_model_name``, then modules, then serial prefix.

    ``dev_model_name`` (the binding list, the simulator's config) and the
    printer's own ``get_version`` reply name the model; a serial prefix only
    suggests it (prefixes of new models are learnt late, and one is not
    known at all: the H2D Pro's), so it comes last.
    """
    found = model_named(dev_model_name)
    if found:
        return found
    if modules is not None:
        found = model_from_modules(modules, serial)
        if found:
            return found
    if serial:
        found = _BY_PREFIX.get(serial.strip()[:3].upper())
        if found:
            return found
    return UNKNOWN_MODEL


# --- HMS -------------------------------------------------------------------------------


class Severity(IntEnum):
    """HMS severity, ``code >> 16``."""

    UNKNOWN = 0
    FATAL = 1
    SERIOUS = 2
    COMMON = 3
    INFO = 4


MODULES = {
    0x03: "motion controller",
    0x05: "mainboard",
    0x07: "AMS",
    0x08: "toolhead",
    0x0C: "camera",
    0x12: "AMS Lite",
}

# English texts for the HMS codes this project knows, keyed by the wiki code string.
HMS_TEXTS = {
    "0700_2000_0002_0001": "AMS A Slot 1 filament has run out.",
    "0700_2100_0002_0001": "AMS A Slot 2 filament has run out.",
    "0700_2200_0002_0001": "AMS A Slot 3 filament has run out.",
    "0700_2300_0002_0001": "AMS A Slot 4 filament has run out.",
    "0700_0100_0001_0001": "The AMS A assist motor has slipped; the extrusion wheel may be worn.",
    "0700_4000_0002_0001": "AMS A filament may be tangled or stuck.",
    "0300_0100_0001_0007": "The heatbed temperature is abnormal; the heater may be shorted.",
    "0300_0D00_0001_000B": "The Z axis motor seems to be stuck while moving.",
    "0500_0100_0003_0004": "The storage is full or not available; the print may stop.",
    "0500_0400_0001_0001": "Failed to download the print job; check the network.",
    "0C00_0300_0002_0001": "Spaghetti defects were detected by the AI Print Monitoring.",
    "0C00_0100_0003_0001": "The build plate marker was not detected.",
    "0800_0100_0003_0001": "The nozzle temperature is abnormal.",
    "0300_1000_0002_0001": "The front door was opened during printing.",
}


@dataclass(frozen=True, slots=True)
class HMSEntry:
    """One Health Management System entry (``hms[] {attr, code}``)."""

    attr: int
    code: int

    @property
    def code_string(self) -> str:
        """``AAAA_AAAA_CCCC_CCCC``, as the wiki and the app show it."""
        return (
            f"{self.attr >> 16 & 0xFFFF:04X}_{self.attr & 0xFFFF:04X}_"
            f"{self.code >> 16 & 0xFFFF:04X}_{self.code & 0xFFFF:04X}"
        )

    @property
    def severity(self) -> Severity:
        """Fatal, serious, common or info."""
        value = self.code >> 16 & 0xFFFF
        return Severity(value) if value in Severity._value2member_map_ else Severity.UNKNOWN

    @property
    def module(self) -> str:
        """The module that raised it (AMS, toolhead, ...)."""
        return MODULES.get(self.attr >> 24 & 0xFF, f"module 0x{self.attr >> 24 & 0xFF:02X}")

    @property
    def wiki_url(self) -> str:
        """The Bambu wiki page of this code."""
        return f"https://wiki.bambulab.com/en/hms/{self.code_string.lower()}"

    @property
    def text(self) -> str:
        """An English description (or a generic one for unknown codes)."""
        known = HMS_TEXTS.get(self.code_string)
        if known:
            return known
        runout = _runout_text(self.attr, self.code)
        return runout or f"{self.module} reported HMS {self.code_string}"

    def __str__(self) -> str:
        return f"HMS_{self.code_string} [{self.severity.name.lower()}] {self.text}"


def _unit_name(unit: int) -> str | None:
    if 0 <= unit <= 3:
        return f"AMS {'ABCD'[unit]}"
    if 0x80 <= unit <= 0x87:
        return f"AMS HT {'ABCDEFGH'[unit - 0x80]}"
    return None


def _runout_text(attr: int, code: int) -> str | None:
    """Filament runout: attr ``07UU_2S00`` (unit UU, slot S), code ``0002_0001``."""
    if code != 0x00020001 or attr >> 24 != 0x07 or attr & 0xF0FF != 0x2000:
        return None
    unit, slot = attr >> 16 & 0xFF, attr >> 8 & 0x0F
    if unit == 0xFF:
        return "The external spool has run out of filament."
    name = _unit_name(unit)
    return f"{name} Slot {slot + 1} filament has run out." if name else None


def hms_entries(items: Any) -> list[HMSEntry]:
    """Decode ``hms[]``; malformed entries are skipped."""
    out: list[HMSEntry] = []
    if not isinstance(items, list):
        return out
    for item in items:
        if not isinstance(item, Mapping):
            continue
        try:
            out.append(
                HMSEntry(
                    int(item.get("attr", 0)) & 0xFFFFFFFF, int(item.get("code", 0)) & 0xFFFFFFFF
                )
            )
        except (TypeError, ValueError):
            continue
    return out


PRINT_ERRORS = {
    "0300_400C": "The print was cancelled by the user.",
    "0700_8011": "AMS filament ran out; insert new filament to continue.",
    "0500_4005": "The print file could not be read.",
    "0300_8000": "Printing was paused by the user.",
    "0C00_8005": "Spaghetti defects were detected; the print was paused.",
    "0300_8016": "The nozzle is clogged with filament.",
}


@dataclass(frozen=True, slots=True)
class PrintError:
    """A decoded ``print_error`` value (0 = none)."""

    value: int

    @property
    def code_string(self) -> str:
        """``XXXX_XXXX``."""
        text = f"{self.value & 0xFFFFFFFF:08X}"
        return f"{text[:4]}_{text[4:]}"

    @property
    def text(self) -> str:
        """An English description."""
        return PRINT_ERRORS.get(self.code_string, f"printer error {self.code_string}")

    def __bool__(self) -> bool:
        return self.value != 0

    def __str__(self) -> str:
        return f"{self.code_string}: {self.text}" if self.value else "no error"


# --- stages ----------------------------------------------------------------------------

STAGES = {
    0: "printing",
    1: "auto bed levelling",
    2: "heatbed preheating",
    3: "sweeping XY mech mode",
    4: "changing filament",
    5: "M400 pause",
    6: "paused due to filament runout",
    7: "heating hotend",
    8: "calibrating extrusion",
    9: "scanning bed surface",
    10: "inspecting first layer",
    11: "identifying build plate type",
    12: "calibrating micro lidar",
    13: "homing toolhead",
    14: "cleaning nozzle tip",
    15: "checking extruder temperature",
    16: "paused by the user",
    17: "paused: front cover falling",
    18: "calibrating the micro lidar",
    19: "calibrating extrusion flow",
    20: "paused: nozzle temperature malfunction",
    21: "paused: heat bed temperature malfunction",
    22: "filament unloading",
    23: "paused: skipped step",
    24: "filament loading",
    25: "calibrating motor noise",
    26: "paused: AMS lost",
    27: "paused: low speed of the heatbreak fan",
    28: "paused: chamber temperature control error",
    29: "cooling chamber",
    30: "paused by the G-code",
    31: "motor noise showoff",
    32: "paused: nozzle filament covered detected",
    33: "paused: cutter error",
    34: "paused: first layer error",
    35: "paused: nozzle clog",
}


def stage_name(stage: Any) -> str:
    """The name of a ``stg_cur`` id; ``idle`` for -1/255, ``stage N`` when unknown."""
    try:
        value = int(stage)
    except (TypeError, ValueError):
        return ""
    if value in (-1, 255):
        return "idle"
    return STAGES.get(value, f"stage {value}")
