"""``bambu 3mf FILE``: what a sliced 3MF holds (plates, times, filaments, objects).

Only the archive's directory and metadata are read, never the meshes or the
G-code bodies, so a large project answers at once. Names inside the file
come from elsewhere: they reach the terminal through the output helpers
(:mod:`bambulab.safetext`), never raw.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .base import OPTIONS, CliError

if TYPE_CHECKING:
    from ..models.threemf import Plate, ThreeMF


def threemf(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="A 3MF project (sliced or not).", dir_okay=False, exists=False
        ),
    ],
    plate: Annotated[
        int | None, typer.Option("--plate", "-p", min=1, help="Only this plate.")
    ] = None,
    thumbnail_out: Annotated[
        Path | None,
        typer.Option(
            "--thumbnail",
            metavar="OUT.png",
            dir_okay=False,
            help="Save the plate's thumbnail (the first sliced plate without --plate).",
        ),
    ] = None,
) -> None:
    """Plates, print times, filaments and objects (with the ids skip takes) of a 3MF."""
    from ..protocol.threemf import read_3mf, thumbnail

    with file.open("rb") as stream:
        project = read_3mf(stream)
        plates = project.plates
        if plate is not None:
            plates = (project.plate(plate, sliced=False),)
        if thumbnail_out is not None:
            chosen = plate or next((p.index for p in project.sliced), None)
            if chosen is None:
                chosen = project.plates[0].index if project.plates else 1
            data = thumbnail(stream, chosen)
            thumbnail_out.write_bytes(data)
    if OPTIONS.json:
        from .output import emit_json

        document = to_dict(project)
        document["plates"] = [plate_dict(p) for p in plates]
        if thumbnail_out is not None:
            document["thumbnail"] = str(thumbnail_out)
        emit_json(document)
        return
    show(project, plates, file.name)
    if thumbnail_out is not None:
        from .output import esc, say

        say(f"thumbnail saved to {esc(thumbnail_out)}")


def to_dict(project: ThreeMF) -> dict[str, Any]:
    """The project as JSON-ready data."""
    return {
        "md5": project.md5,
        "size": project.size,
        "title": project.title,
        "printer_model_id": project.printer_model_id,
        "printer_model_name": project.printer_model_name,
        "printer_model": project.model.product if project.model else None,
        "filaments": [
            {"slot": f.slot, "type": f.type, "colour": f.colour} for f in project.filaments
        ],
        "plates": [plate_dict(p) for p in project.plates],
    }


def plate_dict(plate: Plate) -> dict[str, Any]:
    """One plate as JSON-ready data."""
    return {
        "index": plate.index,
        "name": plate.name,
        "sliced": plate.sliced,
        "gcode": plate.gcode_path,
        "seconds": plate.seconds,
        "weight_g": plate.weight,
        "layers": plate.layers,
        "bed_type": plate.bed_type,
        "nozzle_diameter": plate.nozzle_diameter,
        "thumbnails": dict(plate.thumbnails),
        "filaments": [
            {
                "slot": f.slot,
                "type": f.type,
                "colour": f.colour,
                "grams": f.grams,
                "metres": f.metres,
            }
            for f in plate.filaments
        ],
        "objects": [
            {"identify_id": o.identify_id, "name": o.name, "skipped": o.skipped}
            for o in plate.objects
        ],
    }


def show(project: ThreeMF, plates: tuple[Plate, ...], label: str) -> None:
    """The project for people: a summary, then each plate's filaments and objects."""
    from .output import Col, duration, fields, styled, table

    model = project.printer_model_name or project.printer_model_id or "-"
    if project.model is not None and project.model.product not in model:
        model = f"{model} ({project.model.product})"
    fields(
        label,
        [
            ("Sliced for", model),
            ("Plates", f"{len(project.plates)} ({len(project.sliced)} sliced)"),
            ("Size", f"{project.size:,} bytes"),
            ("MD5", project.md5),
        ],
    )
    if not plates:
        raise CliError("the file has no plates")
    for plate in plates:
        named = plate.name and plate.name != f"Plate {plate.index}"
        title = f"Plate {plate.index}" + (f" - {plate.name}" if named else "")
        if not plate.sliced:
            fields(title, [("Sliced", "no (no G-code: slice and export it to print)")])
            continue
        fields(
            title,
            [
                ("Time", duration(plate.seconds)),
                ("Layers", plate.layers or "-"),
                ("Filament", f"{plate.weight:g} g"),
                ("Bed", plate.bed_type or "-"),
                ("Nozzle", f"{plate.nozzle_diameter:g} mm" if plate.nozzle_diameter else "-"),
            ],
        )
        table(
            None,
            [Col("Slot", justify="right"), Col(""), Col("Type"), Col("Colour"), Col("Used")],
            (
                [
                    f.slot,
                    styled("██", f.colour[:7]) if f.colour else "",
                    f.type,
                    f.colour,
                    f"{f.grams:g} g, {f.metres:g} m",
                ]
                for f in plate.filaments
            ),
        )
        table(
            None,
            [Col("Object id", justify="right"), Col("Name"), Col("Skipped")],
            ([o.identify_id, o.name, o.skipped] for o in plate.objects),
        )
