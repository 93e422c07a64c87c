"""What a print request says and what came of it, shared by cloud and LAN printing.

:class:`PrintOptions` carries the choices of ``print.project_file`` (PROTOCOL.md
§2.4) independently of the path the file takes to the printer;
:class:`PrintOutcome` is one printer's answer when a file goes to several, so
one failure never hides the others' results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

AmsChoice = Literal["auto", "none"] | Sequence[int]


@dataclass(frozen=True, slots=True)
class PrintOptions:
    """The options of one print; the defaults are the slicer's.

    ``ams_mapping`` is ``"auto"`` (computed from the file's filaments and the
    trays loaded), ``"none"`` (print from the external spool, ``use_ams`` off)
    or an explicit list of global tray ids, one per filament of the file.
    """

    plate: int = 1
    timelapse: bool = False
    bed_levelling: bool = True
    flow_cali: bool = False
    vibration_cali: bool = False
    layer_inspect: bool = False
    ams_mapping: AmsChoice = "auto"
    bed_type: str = "auto"
    subtask_name: str = ""

    def switches(self) -> dict[str, Any]:
        """The ``print.project_file`` fields these options decide as they are.

        The mapping and ``use_ams`` are worked out against the printer's trays,
        and the job's name against the file, so they are not among them.
        """
        return {
            "timelapse": self.timelapse,
            "bed_levelling": self.bed_levelling,
            "flow_cali": self.flow_cali,
            "vibration_cali": self.vibration_cali,
            "layer_inspect": self.layer_inspect,
            "bed_type": self.bed_type,
        }


@dataclass(frozen=True, slots=True)
class PrintOutcome:
    """What happened on one printer."""

    serial: str
    ok: bool
    error: str | None = None  # one line, safe to show; None when ok
    url: str = ""  # what the printer was told to print
    task_id: str = ""  # the cloud task, for cloud prints
    uploaded: bool = False  # whether the file had to be transferred first
    ams_mapping: tuple[int, ...] = ()
    seconds: float = 0.0
    detail: dict[str, str] = field(default_factory=dict)
