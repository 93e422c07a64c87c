"""What differs between printer families, as the simulated printer needs it.

Every protocol fact about a model (name, product, report style, camera,
light nodes, nozzles, chamber heater, enclosure, the LAN URL scheme) comes
from the library's model table (:data:`bambulab.models.printer.MODELS`);
the simulator's hardware and firmware come from :mod:`bambulab.sim.catalog`.
What is left here is simulated behaviour: temperature limits, xcam modules,
the idle stage id and default nozzle are plausible values chosen for the
simulator (tests need them to be stable, not exact).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...models.printer import PrinterModel as ModelRow
from ...models.printer import ReportStyle, UrlScheme, model_of
from ..catalog import MODELS, PrinterModel

# Models the table lists that the catalog carries no hardware for: they play
# with their closest catalog sibling's hardware under their own row.
_ALIASES = {"O1E": "h2d", "O1C2": "h2c"}
# Families whose reports carry the packed ``device`` block besides the plain
# fields (PROTOCOL.md §2.6.1 "current firmware"; the simulator plays older
# X1/P1/A1 firmware without it).
_DEVICE_BLOCK_FAMILIES = frozenset({"H2", "X2", "P2"})

# xcam detectors per family; the X1's lidar adds the first-layer inspector.
_XCAM_BASE = ("buildplate_marker_detector", "printing_monitor", "spaghetti_detector")
_XCAM_NEW = (
    "first_layer_inspector",
    *_XCAM_BASE,
    "clump_detector",
    "pileup_detector",
    "airprint_detector",
)
_XCAM = {"X1": ("first_layer_inspector", *_XCAM_BASE), "H2": _XCAM_NEW, "X2": _XCAM_NEW}

# Families whose current firmware sends each AMS tray's ``state`` (11 loaded,
# 0 empty, and an empty tray as only ``{"id", "state"}``) and the newer tray
# keys (``drying_temp``/``drying_time``/``total_len``); P1/A1 firmware sends the
# older shape, an empty tray as only ``{"id"}`` (PROTOCOL.md §2.6.1, public
# captures of X1C, H2D and X2D reports).
_TRAY_STATE_FAMILIES = frozenset({"X1", "H2", "X2", "P2"})
# Families without a chamber sensor: ``chamber_temper`` is a placeholder 5
# (PROTOCOL.md §2.6.1; public A1 captures show the int 5). The P1P and P1S
# measure nothing either, enclosure or not.
_NO_CHAMBER_SENSOR_FAMILIES = frozenset({"P1", "A1", "A2"})
# Families with a door sensor: the X1 reports the door in ``home_flag``, the
# H2/P2/X2 in ``stat`` (PROTOCOL.md §2.6.1); only these advertise the door
# check (``fun`` bit 12, Bambu Studio ``parse_new_info``).
_DOOR_FAMILIES = frozenset({"X1", "H2", "X2", "P2"})
# Models with a speaker for prompt sounds: Bambu Studio's printer descriptions
# say ``support_prompt_sound: true`` for the A1 (N2S.json) and false for the
# H2D (O1D.json); the A-series siblings share the A1's board.
_PROMPT_SOUND_FAMILIES = frozenset({"A1", "A2"})
# ``get_version``'s ``product_name``: "Bambu Lab " and Bambu's own spelling of
# the product (PROTOCOL.md §2.6.1: "Bambu Lab X1-Carbon", "Bambu Lab A1 mini").
_PRODUCT_SPELLING = {"X1 Carbon": "X1-Carbon"}


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything family-specific the state machine and the report writer consult."""

    model: PrinterModel  # the catalog entry: hardware and firmware
    row: ModelRow  # the model table's row: every protocol fact
    xcam_modules: tuple[str, ...]
    nozzle_max: int
    bed_max: int
    chamber_max: int
    idle_stage: int  # stg_cur when nothing runs: 255 or -1 (PROTOCOL.md §2.5)
    default_nozzle_type: str

    # Read-only views of the row, under the names the state machine uses.
    @property
    def code(self) -> str:
        """``dev_model_name`` on the wire."""
        return self.row.code

    @property
    def product(self) -> str:
        """The product name (``H2D Pro``)."""
        return self.row.product

    @property
    def family(self) -> str:
        """``X1``, ``P1``, ``A1``, ``H2``..."""
        return self.row.family

    @property
    def report_style(self) -> ReportStyle:
        """``full`` (X1) or ``delta``."""
        return self.row.report_style

    @property
    def dual_nozzle(self) -> bool:
        """Two nozzles (H2D, H2C, X2D...)."""
        return self.row.dual_nozzle

    @property
    def chamber_heater(self) -> bool:
        """A chamber heater (X1E, H2, X2D)."""
        return self.row.chamber_heater

    @property
    def enclosed(self) -> bool:
        """A chamber at all (open-frame printers have none to warm up)."""
        return self.row.enclosed

    @property
    def lights(self) -> tuple[str, ...]:
        """Light nodes."""
        return self.row.lights

    @property
    def rtsp(self) -> bool:
        """RTSPS camera (X1, P2S, H2) rather than the port-6000 JPEG stream."""
        return self.row.camera == "rtsps"

    @property
    def rtsp_on_by_default(self) -> bool:
        """Whether the LAN stream is on out of the box (H2: off)."""
        return not self.row.camera_off_by_default

    @property
    def url_schemes(self) -> tuple[UrlScheme, ...]:
        """``project_file`` URL schemes accepted for a LAN file."""
        return self.row.url_schemes

    @property
    def device_block(self) -> bool:
        """Newer firmware: packed ``device.*`` beside the plain fields."""
        return self.row.family in _DEVICE_BLOCK_FAMILIES

    @property
    def product_name(self) -> str:
        """``product_name`` in ``get_version`` (``Bambu Lab H2D Pro``)."""
        return f"Bambu Lab {_PRODUCT_SPELLING.get(self.product, self.product)}"

    @property
    def tray_state(self) -> bool:
        """AMS trays carry ``state`` (current X1/P2/H2/X2 firmware)."""
        return self.row.family in _TRAY_STATE_FAMILIES

    @property
    def chamber_sensor(self) -> bool:
        """A chamber thermometer; without one ``chamber_temper`` is the placeholder 5."""
        return self.row.family not in _NO_CHAMBER_SENSOR_FAMILIES

    @property
    def door_sensor(self) -> bool:
        """A door switch the firmware reports (and a door-open check it offers)."""
        return self.row.family in _DOOR_FAMILIES

    @property
    def prompt_sound(self) -> bool:
        """A speaker for prompt sounds (``home_flag`` bit 18, ``fun`` bit 8)."""
        return self.row.family in _PROMPT_SOUND_FAMILIES

    @property
    def integer_targets(self) -> bool:
        """Target temperatures as JSON integers.

        Public A1 captures carry ``"nozzle_target_temper": 240`` and
        ``"bed_target_temper": 80``; X1C and X2D captures carry ``0.0``.
        The P1/A1/A2 firmware writes integers, the others floats.
        """
        return self.row.family in _NO_CHAMBER_SENSOR_FAMILIES

    @property
    def aux_fan(self) -> bool:
        """An auxiliary part fan (``M106 P2``)."""
        return self.row.aux_fan

    @property
    def chamber_fan(self) -> bool:
        """A chamber/exhaust fan (``M106 P3``)."""
        return self.row.chamber_fan

    @property
    def extruders(self) -> int:
        """Number of nozzles (2 on dual-nozzle printers)."""
        return 2 if self.dual_nozzle else 1


def profile_for(model_code: str) -> Profile:
    """The profile of a ``dev_model_name`` (``BL-P001``) or a catalog key (``x1c``)."""
    code = model_code.strip()
    model = next((m for m in MODELS.values() if m.model_name == code), None)
    if model is None and code in _ALIASES:
        model = MODELS[_ALIASES[code]]
    if model is None and code.lower() in MODELS:
        model = MODELS[code.lower()]
        code = model.model_name
    row = model_of(code)
    if model is None or row is None:
        known = sorted({m.model_name for m in MODELS.values()} | set(_ALIASES))
        raise ValueError(f"unknown printer model {model_code!r} (known: {', '.join(known)})")
    family = row.family
    return Profile(
        model=model,
        row=row,
        xcam_modules=_XCAM.get(family, _XCAM_BASE),
        nozzle_max=350 if family in ("H2", "X2") else 300,
        bed_max={"N1": 80, "N2S": 100, "N9": 100}.get(code, 120 if family == "H2" else 110),
        chamber_max=65 if family == "H2" else 60,
        idle_stage=255 if family in ("X1", "H2", "X2") else -1,
        default_nozzle_type="hardened_steel" if family in ("X1", "H2", "X2") else "stainless_steel",
    )
