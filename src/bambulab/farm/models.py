"""The farm's vocabulary: jobs, their targets and what they need of a printer (pure data).

A **job** is one plate of one sliced 3MF to print once. "Print this on N
printers" makes N jobs that share a ``group``. A job waits in the queue
(``queued``; ``held`` keeps it there without dispatching it), is claimed for
one printer (``starting``: the farm has decided and is sending the print),
then follows that printer (``printing``) to an end (``finished``, ``failed``)
or is ``cancelled``. A start that fails returns the job to ``queued`` with
the ``reason``; ``attempts`` counts the starts.

:class:`Requirements` is what the 3MF says the plate needs: the printer model
it was sliced for, the nozzle diameter, the filaments (type and colour per
slot, grams). The dispatch rules (:mod:`bambulab.farm.rules`) hold them
against a printer's live state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from ..models.threemf import Filament, Plate

__all__ = [
    "ACTIVE_STATES",
    "END_STATES",
    "Filament",
    "Job",
    "JobState",
    "Requirements",
    "Target",
]


class JobState(StrEnum):
    """Where a job is (stored as its value)."""

    QUEUED = "queued"
    HELD = "held"
    STARTING = "starting"
    PRINTING = "printing"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A job in one of these has a printer; in END_STATES it is history.
ACTIVE_STATES = frozenset({JobState.STARTING, JobState.PRINTING})
END_STATES = frozenset({JobState.FINISHED, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True, slots=True)
class Target:
    """Which printers may take a job: ``any``, one ``printer`` (serial), or a ``model`` code.

    A model code is the one :func:`bambulab.models.printer.model_named` gives
    (``C12`` for a P1S, ``N2S`` for an A1...): the class of printers a file
    sliced for that model runs on.
    """

    kind: Literal["any", "printer", "model"] = "any"
    value: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("any", "printer", "model"):
            raise ValueError(f"unknown target kind {self.kind!r}")
        if (self.kind == "any") != (not self.value):
            raise ValueError("a printer or model target names one; 'any' names none")

    def __str__(self) -> str:
        return "any printer" if self.kind == "any" else f"{self.kind} {self.value}"


@dataclass(frozen=True, slots=True)
class Requirements:
    """What a plate needs of a printer, read from the 3MF.

    ``model_id`` is the slicer's printer model id of the plate (``C12``...;
    ``""`` when the file does not say); ``nozzle_diameter`` in mm (``None``:
    not said); ``filaments`` the slots the plate uses, with their grams.
    """

    model_id: str = ""
    nozzle_diameter: float | None = None
    filaments: tuple[Filament, ...] = ()
    seconds: float = 0.0
    grams: float = 0.0

    @classmethod
    def of_plate(cls, plate: Plate) -> Requirements:
        """The requirements of a plate as :func:`~bambulab.protocol.threemf.read_3mf` read it."""
        used = tuple(f for f in plate.filaments if f.slot > 0)
        return cls(
            model_id=plate.printer_model_id,
            nozzle_diameter=plate.nozzle_diameter,
            filaments=used,
            seconds=plate.seconds,
            grams=plate.weight or sum(f.grams for f in used),
        )


@dataclass(frozen=True, slots=True)
class Job:
    """One job as the queue holds it (immutable: the store returns new ones)."""

    id: int
    name: str
    file: str  # the farm's copy of the 3MF (a path the farm owns)
    file_md5: str
    plate: int
    target: Target
    requirements: Requirements
    state: JobState = JobState.QUEUED
    priority: int = 0  # higher first
    position: float = 0.0  # order within a priority (reordering moves it)
    group: str = ""  # jobs made by one "print this on N printers"
    printer: str = ""  # the printer it was claimed for (starting/printing/ended)
    attempts: int = 0
    reason: str = ""  # why the last start failed, or why it failed or was cancelled
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
