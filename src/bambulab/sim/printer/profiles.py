"""What differs between printer families, as the simulated printer needs it.

Model names, report style (X1 full, everything else delta), camera kind and
the LAN URL scheme come from PROTOCOL.md §2.3, §2.4 and §2.6. Temperature
limits, heating rates and light nodes are plausible values chosen for the
simulator: tests need them to be stable, not exact.

The catalog (:mod:`bambulab.sim.catalog`) stays the single source of model
names, products and firmware versions, so a printer here and the cloud's
device record for the same serial agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..catalog import MODELS, PrinterModel

ReportStyle = Literal["full", "delta"]

# Models PROTOCOL.md §2.6 lists that the catalog does not carry: they play
# as their closest catalog sibling under their own wire name.
_ALIASES = {"O1E": ("h2d", "H2D Pro"), "O1C2": ("h2c", "H2C")}

# dev_model_name → dual nozzle / chamber heater. PROTOCOL.md names the H2D
# (§2.3) and the X1E/H2 chamber heaters (§2.4); the rest follows the
# project's model table (bambulab.models.printer), kept in step by hand.
_DUAL = frozenset({"O1D", "O1E", "O1C", "O1C2", "N6"})
_CHAMBER_HEATER = frozenset({"C13", "N6", "O1D", "O1E", "O1S", "O1C", "O1C2"})
# Open-frame printers have no chamber to warm up.
_OPEN_FRAME = frozenset({"N1", "N2S", "N9", "C11"})
# Families whose reports carry the packed ``device`` block besides the plain fields.
_DEVICE_BLOCK_FAMILIES = frozenset({"H2", "X2", "P2"})

# xcam detectors per family; the X1's lidar adds the first-layer inspector.
_XCAM_BASE = ("buildplate_marker_detector", "printing_monitor", "spaghetti_detector")
_XCAM = {
    "X1": ("first_layer_inspector", *_XCAM_BASE),
    "H2": (
        "first_layer_inspector",
        *_XCAM_BASE,
        "clump_detector",
        "pileup_detector",
        "airprint_detector",
    ),
    "X2": (
        "first_layer_inspector",
        *_XCAM_BASE,
        "clump_detector",
        "pileup_detector",
        "airprint_detector",
    ),
}

_LIGHTS = {
    "X1": ("chamber_light", "work_light"),
    "H2": ("chamber_light", "chamber_light2", "work_light"),
    "X2": ("chamber_light", "chamber_light2", "work_light"),
}


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything family-specific the state machine and the report writer consult."""

    model: PrinterModel
    code: str  # dev_model_name on the wire
    product: str
    family: str  # "X1", "P1", "A1", "H2", ...
    report_style: ReportStyle
    dual_nozzle: bool
    chamber_heater: bool
    enclosed: bool
    device_block: bool  # newer firmware: packed ``device.*`` beside the plain fields
    rtsp: bool  # RTSPS camera (X1, P2S, H2) rather than the port-6000 JPEG stream
    rtsp_on_by_default: bool  # H2: "LAN stream off by default"
    lan_scheme: Literal["file", "ftp", "any"]  # project_file URL scheme on LAN
    lights: tuple[str, ...]
    xcam_modules: tuple[str, ...]
    nozzle_max: int
    bed_max: int
    chamber_max: int
    idle_stage: int  # stg_cur when nothing runs: 255 or -1 (PROTOCOL.md §2.5)
    default_nozzle_type: str

    @property
    def extruders(self) -> int:
        """Number of nozzles (2 on dual-nozzle printers)."""
        return 2 if self.dual_nozzle else 1


def profile_for(model_code: str) -> Profile:
    """The profile of a ``dev_model_name`` (``BL-P001``) or a catalog key (``x1c``)."""
    code = model_code.strip()
    model: PrinterModel | None = None
    product = ""
    for candidate in MODELS.values():
        if candidate.model_name == code:
            model = candidate
    if model is None and code in _ALIASES:
        key, product = _ALIASES[code]
        model = MODELS[key]
    if model is None and code.lower() in MODELS:
        model = MODELS[code.lower()]
        code = model.model_name
    if model is None:
        known = sorted({m.model_name for m in MODELS.values()} | set(_ALIASES))
        raise ValueError(f"unknown printer model {model_code!r} (known: {', '.join(known)})")
    family = model.family
    return Profile(
        model=model,
        code=code,
        product=product or model.product,
        family=family,
        # PROTOCOL.md §2.3: only the X1 series sends the whole object every time.
        report_style="full" if family == "X1" else "delta",
        dual_nozzle=code in _DUAL,
        chamber_heater=code in _CHAMBER_HEATER,
        enclosed=code not in _OPEN_FRAME,
        device_block=family in _DEVICE_BLOCK_FAMILIES,
        rtsp=model.camera == "rtsps",
        rtsp_on_by_default=family != "H2",
        lan_scheme="file" if family in ("X1", "P1", "A1") else "ftp" if family == "H2" else "any",
        lights=_LIGHTS.get(family, ("chamber_light",)),
        xcam_modules=_XCAM.get(family, _XCAM_BASE),
        nozzle_max=350 if family in ("H2", "X2") else 300,
        bed_max={"N1": 80, "N2S": 100, "N9": 100}.get(code, 120 if family == "H2" else 110),
        chamber_max=65 if family == "H2" else 60,
        idle_stage=255 if family in ("X1", "H2", "X2") else -1,
        default_nozzle_type="hardened_steel" if family in ("X1", "H2", "X2") else "stainless_steel",
    )
