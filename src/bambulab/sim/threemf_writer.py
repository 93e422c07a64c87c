"""Write small, valid, sliced Bambu-style 3MFs (and plain G-code) for tests and the demo.

Nothing is fetched or shipped: the mesh is a cube computed here, the G-code
walks its walls layer by layer, the thumbnails are drawn with Pillow. The
members and keys are the ones Bambu Studio writes (``bbs_3mf.cpp``):
``3D/3dmodel.model``, ``Metadata/model_settings.config`` (``plater_id``,
``gcode_file``, ``thumbnail_file``, ``thumbnail_no_light_file``,
``top_file``, ``pick_file``), ``Metadata/slice_info.config`` (``index``,
``printer_model_id``, ``nozzle_diameters``, ``prediction``, ``weight``,
``<object identify_id name skipped>``, ``<filament id tray_info_idx type
color used_m used_g>``), ``Metadata/plate_<N>.gcode`` + ``.md5``,
``Metadata/plate_<N>.json`` and ``Metadata/project_settings.config``. The
G-code marks layers as Bambu's does (``; CHANGE_LAYER``, ``M73 L<n>``) under
a header with ``; total layer number: N`` and ``; model printing time: ...``.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from xml.sax.saxutils import quoteattr

from ..models.printer import model_named

# filament type → (density g/cm³, tray_info_idx of the generic profile)
_FILAMENTS = {
    "PLA": (1.24, "GFL99"),
    "PETG": (1.27, "GFG99"),
    "ABS": (1.04, "GFB99"),
    "ASA": (1.05, "GFB98"),
    "TPU": (1.22, "GFU99"),
    "PLA-CF": (1.22, "GFL98"),
}
_AREA_MM2 = 3.1416 * 0.875**2  # 1.75 mm filament
CUBE_MM = 20.0
LAYER_MM = 0.2
THUMBNAIL_SIZE = 256
PADDING_MEMBER = "Auxiliaries/padding.bin"


@dataclass(frozen=True, slots=True)
class PlateSpec:
    """What one plate holds: object names, layers, seconds, grams per filament."""

    objects: Sequence[str] = ("Cube",)
    layers: int = 50
    seconds: float = 600.0
    grams: Sequence[float] | None = None  # per filament; None → a default share


def write_3mf(
    target: str | Path | IO[bytes],
    *,
    name: str = "Cube",
    plates: int | Sequence[PlateSpec] = 1,
    printer_model: str = "X1C",
    filaments: Sequence[tuple[str, str]] = (("PLA", "#FF0000FF"),),
    objects: Sequence[str] = ("Cube",),
    layers: int = 50,
    seconds: float = 600.0,
    grams: Sequence[float] | None = None,
    bed_type: str = "textured_plate",
    nozzle_diameter: float = 0.4,
    sliced: bool = True,
    padding: int = 0,
) -> None:
    """Write a sliced project to a path or a binary file object.

    ``plates`` is a count (every plate gets ``objects``, ``layers``,
    ``seconds``, ``grams``) or one :class:`PlateSpec` per plate.
    ``filaments`` are ``(type, colour)``; each plate uses all of them, with
    ``grams`` per filament (default: the cube's walls split evenly).
    ``sliced`` False leaves the G-code out (an unsliced project);
    ``padding`` adds a stored member of that many incompressible bytes (big
    files for benchmarks) without holding them in memory.
    """
    specs = (
        [PlateSpec(objects, layers, seconds, grams) for _ in range(plates)]
        if isinstance(plates, int)
        else list(plates)
    )
    model = model_named(printer_model)
    model_id = model.code if model is not None else printer_model
    model_name = f"Bambu Lab {model.product}" if model is not None else printer_model
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", _CONTENT_TYPES)
        zf.writestr("_rels/.rels", _RELS)
        ids = _identify_ids(specs)
        zf.writestr("3D/3dmodel.model", _model_xml(name, specs, ids))
        zf.writestr("Metadata/model_settings.config", _model_settings(specs, ids, sliced))
        zf.writestr(
            "Metadata/project_settings.config",
            json.dumps(
                {
                    "name": name,
                    "printer_model": model_name,
                    "printer_settings_id": f"{model_name} {nozzle_diameter} nozzle",
                    "nozzle_diameter": [str(nozzle_diameter)],
                    "filament_type": [t for t, _ in filaments],
                    "filament_colour": [c[:7] for _, c in filaments],
                    "curr_bed_type": bed_type,
                    "layer_height": str(LAYER_MM),
                },
                indent=4,
            ),
        )
        infos = []
        for index, spec in enumerate(specs, start=1):
            used = _grams(spec, len(filaments))
            png = _thumbnails(index, filaments)
            for member, data in png.items():
                zf.writestr(member, data)
            zf.writestr(
                f"Metadata/plate_{index}.json",
                json.dumps(
                    {
                        "bed_type": bed_type,
                        "nozzle_diameter": nozzle_diameter,
                        "version": 2,
                        "filament_colors": [c[:7] for _, c in filaments],
                        "filament_ids": list(range(len(filaments))),
                        "first_extruder": 0,
                        "is_seq_print": False,
                    }
                ),
            )
            if not sliced:
                continue
            gcode = gcode_text(
                layers=spec.layers,
                seconds=spec.seconds,
                filaments=filaments,
                grams=used,
                objects=spec.objects,
            ).encode()
            zf.writestr(f"Metadata/plate_{index}.gcode", gcode)
            zf.writestr(
                f"Metadata/plate_{index}.gcode.md5",
                hashlib.md5(gcode, usedforsecurity=False).hexdigest().upper(),
            )
            infos.append(
                _plate_info(index, spec, ids[index - 1], filaments, used, model_id, nozzle_diameter)
            )
        if sliced:
            zf.writestr("Metadata/slice_info.config", _slice_info(infos))
        if padding > 0:
            _pad(zf, padding)


def threemf_bytes(**options: object) -> bytes:
    """:func:`write_3mf` into memory (small files only)."""
    buffer = io.BytesIO()
    write_3mf(buffer, **options)  # type: ignore[arg-type]
    return buffer.getvalue()


def write_gcode(
    target: str | Path | IO[bytes],
    *,
    layers: int = 50,
    seconds: float = 600.0,
    filament: tuple[str, str] = ("PLA", "#FF0000FF"),
    grams: float | None = None,
) -> None:
    """Write a plain ``.gcode`` file with the same header and layer markers."""
    share = _grams(PlateSpec(layers=layers, grams=None if grams is None else [grams]), 1)
    text = gcode_text(layers=layers, seconds=seconds, filaments=[filament], grams=share).encode()
    if isinstance(target, (str, Path)):
        Path(target).write_bytes(text)
    else:
        target.write(text)


def gcode_bytes(**options: object) -> bytes:
    """:func:`write_gcode` into memory."""
    buffer = io.BytesIO()
    write_gcode(buffer, **options)  # type: ignore[arg-type]
    return buffer.getvalue()


# --- G-code ---------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h " if hours else "") + f"{minutes}m {secs}s"


def gcode_text(
    *,
    layers: int,
    seconds: float,
    filaments: Sequence[tuple[str, str]],
    grams: Sequence[float],
    objects: Sequence[str] = ("Cube",),
) -> str:
    """G-code drawing a cube's walls: a Bambu-style header, then one block per layer."""
    layers = max(1, layers)
    metres = [_metres(t, g) for (t, _), g in zip(filaments, grams, strict=True)]
    types = ";".join(t for t, _ in filaments)
    lines = [
        "; HEADER_BLOCK_START",
        "; generated by bambulab's 3MF writer (a Bambu Studio-shaped file)",
        f"; model printing time: {_duration(seconds)}; total estimated time: "
        f"{_duration(seconds + 120)}",
        f"; total layer number: {layers}",
        f"; total filament length [mm] : {','.join(f'{m * 1000:.2f}' for m in metres)}",
        f"; total filament weight [g] : {','.join(f'{g:.2f}' for g in grams)}",
        f"; filament_type = {types}",
        f"; max_z_height: {layers * LAYER_MM:.2f}",
        "; HEADER_BLOCK_END",
        "",
        "; CONFIG_BLOCK_START",
        f"; layer_height = {LAYER_MM}",
        f"; nozzle_temperature = {','.join(_temp(t)[0] for t, _ in filaments)}",
        "; CONFIG_BLOCK_END",
        "",
        "M73 P0 R" + str(int(seconds // 60)),
        f"M140 S{_temp(filaments[0][0])[1]}",
        f"M104 S{_temp(filaments[0][0])[0]}",
        "G28",
        "G90",
        "M83",
    ]
    per_layer_e = sum(metres) * 1000 / layers / 4 if metres else 0.0
    half = CUBE_MM / 2
    x0, y0 = 128 - half, 128 - half
    for n in range(1, layers + 1):
        z = n * LAYER_MM
        left = int(seconds * (1 - n / layers) // 60)
        lines += [
            "; CHANGE_LAYER",
            f"; Z_HEIGHT: {z:.2f}",
            f"; LAYER_HEIGHT: {LAYER_MM}",
            f"M73 L{n}",
            f"M991 S0 P{n - 1} ;notify layer change",
            f"M73 P{int(100 * (n - 1) / layers)} R{left}",
            f"G1 Z{z:.2f} F600",
            f"; printing object {objects[0] if objects else 'Cube'}",
            f"G1 X{x0:.3f} Y{y0:.3f} F12000",
            f"G1 X{x0 + CUBE_MM:.3f} Y{y0:.3f} E{per_layer_e:.5f} F3000",
            f"G1 X{x0 + CUBE_MM:.3f} Y{y0 + CUBE_MM:.3f} E{per_layer_e:.5f}",
            f"G1 X{x0:.3f} Y{y0 + CUBE_MM:.3f} E{per_layer_e:.5f}",
            f"G1 X{x0:.3f} Y{y0:.3f} E{per_layer_e:.5f}",
        ]
    lines += ["M73 P100 R0", "M140 S0", "M104 S0", "M106 S0", "; EXECUTABLE_BLOCK_END", ""]
    return "\n".join(lines)


def _temp(kind: str) -> tuple[str, str]:
    nozzle, bed = {"PETG": (255, 70), "ABS": (260, 90), "ASA": (260, 90), "TPU": (230, 35)}.get(
        kind, (220, 55)
    )
    return str(nozzle), str(bed)


def _metres(kind: str, grams: float) -> float:
    density = _FILAMENTS.get(kind, (1.24, ""))[0]
    return round(grams / density / _AREA_MM2, 2)  # g / (g/cm³) = cm³; / mm² → m


def _grams(spec: PlateSpec, count: int) -> list[float]:
    if spec.grams is not None:
        if len(spec.grams) != count:
            raise ValueError(f"grams has {len(spec.grams)} entries for {count} filaments")
        return [float(g) for g in spec.grams]
    # The cube's walls: 4 × 20 mm × 0.45 mm line per 0.2 mm layer, PLA density.
    total = 4 * CUBE_MM * 0.45 * LAYER_MM * max(1, spec.layers) / 1000 * 1.24
    return [round(total / count, 2)] * count


# --- metadata -------------------------------------------------------------------------

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">\n'
    ' <Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>\n'
    ' <Default Extension="model" '
    'ContentType="application/vnd.ms-package.3dmanufacturing-3dmodel+xml"/>\n'
    ' <Default Extension="png" ContentType="image/png"/>\n'
    ' <Default Extension="gcode" ContentType="text/x.gcode"/>\n'
    "</Types>\n"
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">\n'
    ' <Relationship Target="/3D/3dmodel.model" Id="rel-1" '
    'Type="http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"/>\n'
    "</Relationships>\n"
)


def _identify_ids(specs: Sequence[PlateSpec]) -> list[list[int]]:
    """Distinct object ids per plate, the way the slicer numbers them (not from 0 or 1)."""
    out, next_id = [], 100
    for spec in specs:
        out.append(list(range(next_id, next_id + len(spec.objects))))
        next_id += len(spec.objects) + 10
    return out


def _model_xml(name: str, specs: Sequence[PlateSpec], ids: Sequence[Sequence[int]]) -> str:
    h = CUBE_MM
    vertices = "".join(
        f'<vertex x="{x}" y="{y}" z="{z}"/>' for z in (0, h) for y in (0, h) for x in (0, h)
    )
    faces = (
        (0, 2, 1), (1, 2, 3), (4, 5, 6), (5, 7, 6), (0, 1, 4), (1, 5, 4),
        (2, 6, 3), (3, 6, 7), (0, 4, 2), (2, 4, 6), (1, 3, 5), (3, 7, 5),
    )  # fmt: skip
    triangles = "".join(f'<triangle v1="{a}" v2="{b}" v3="{c}"/>' for a, b, c in faces)
    objects, items = [], []
    for spec, plate_ids in zip(specs, ids, strict=True):
        for object_name, object_id in zip(spec.objects, plate_ids, strict=True):
            objects.append(
                f'  <object id="{object_id}" name={quoteattr(object_name)} type="model">'
                f"<mesh><vertices>{vertices}</vertices><triangles>{triangles}</triangles>"
                "</mesh></object>\n"
            )
            items.append(f'  <item objectid="{object_id}" printable="1"/>\n')
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<model unit="millimeter" xml:lang="en-US" '
        'xmlns="http://schemas.microsoft.com/3dmanufacturing/core/2015/02">\n'
        f' <metadata name="Title">{_escape(name)}</metadata>\n'
        ' <metadata name="Application">bambulab</metadata>\n'
        " <resources>\n" + "".join(objects) + " </resources>\n"
        " <build>\n" + "".join(items) + " </build>\n</model>\n"
    )


def _escape(text: str) -> str:
    return quoteattr(text)[1:-1]


def _meta(key: str, value: object) -> str:
    return f"    <metadata key={quoteattr(key)} value={quoteattr(str(value))}/>\n"


def _model_settings(specs: Sequence[PlateSpec], ids: Sequence[Sequence[int]], sliced: bool) -> str:
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<config>\n']
    for spec, plate_ids in zip(specs, ids, strict=True):
        for object_name, object_id in zip(spec.objects, plate_ids, strict=True):
            parts.append(
                f'  <object id="{object_id}">\n' + _meta("name", object_name) + "  </object>\n"
            )
    for index, plate_ids in enumerate(ids, start=1):
        parts.append("  <plate>\n")
        parts.append(_meta("plater_id", index))
        parts.append(_meta("plater_name", f"Plate {index}" if len(specs) > 1 else ""))
        parts.append(_meta("locked", "false"))
        parts.append(_meta("gcode_file", f"Metadata/plate_{index}.gcode" if sliced else ""))
        parts.append(_meta("thumbnail_file", f"Metadata/plate_{index}.png"))
        parts.append(_meta("thumbnail_no_light_file", f"Metadata/plate_no_light_{index}.png"))
        parts.append(_meta("top_file", f"Metadata/top_{index}.png"))
        parts.append(_meta("pick_file", f"Metadata/pick_{index}.png"))
        for object_id in plate_ids:
            parts.append(
                "    <model_instance>\n"
                f'      <metadata key="object_id" value="{object_id}"/>\n'
                '      <metadata key="instance_id" value="0"/>\n'
                f'      <metadata key="identify_id" value="{object_id}"/>\n'
                "    </model_instance>\n"
            )
        parts.append("  </plate>\n")
    parts.append("</config>\n")
    return "".join(parts)


def _plate_info(
    index: int,
    spec: PlateSpec,
    plate_ids: Sequence[int],
    filaments: Sequence[tuple[str, str]],
    grams: Sequence[float],
    model_id: str,
    nozzle: float,
) -> str:
    parts = ["  <plate>\n", _meta("index", index), _meta("printer_model_id", model_id)]
    parts.append(_meta("nozzle_diameters", nozzle))
    parts.append(_meta("timelapse_type", 0))
    parts.append(_meta("prediction", round(spec.seconds)))
    parts.append(_meta("weight", f"{sum(grams):.2f}"))
    parts.append(_meta("outside", "false"))
    parts.append(_meta("support_used", "false"))
    parts.append(_meta("label_object_enabled", "true"))
    for object_name, object_id in zip(spec.objects, plate_ids, strict=True):
        parts.append(
            f'    <object identify_id="{object_id}" name={quoteattr(object_name)} '
            'skipped="false" />\n'
        )
    for slot, ((kind, colour), used) in enumerate(zip(filaments, grams, strict=True), start=1):
        info_idx = _FILAMENTS.get(kind, (0.0, "GFL99"))[1]
        parts.append(
            f'    <filament id="{slot}" tray_info_idx="{info_idx}" type={quoteattr(kind)} '
            f'color={quoteattr(colour[:7])} used_m="{_metres(kind, used):.2f}" '
            f'used_g="{used:.2f}" />\n'
        )
    parts.append("  </plate>\n")
    return "".join(parts)


def _slice_info(plates: Sequence[str]) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<config>\n  <header>\n'
        '    <header_item key="X-BBL-Client-Type" value="slicer"/>\n'
        '    <header_item key="X-BBL-Client-Version" value="02.01.00.00"/>\n'
        "  </header>\n" + "".join(plates) + "</config>\n"
    )


# --- thumbnails and padding -------------------------------------------------------------

_PNG_CACHE: dict[tuple[int, tuple[tuple[str, str], ...]], dict[str, bytes]] = {}


def _thumbnails(index: int, filaments: Sequence[tuple[str, str]]) -> dict[str, bytes]:
    """The four PNGs of a plate: a cube in the first filament's colour, drawn here."""
    key = (index, tuple(filaments))
    cached = _PNG_CACHE.get(key)
    if cached is None:
        colour = filaments[0][1] if filaments else "#808080FF"
        cached = {
            f"Metadata/plate_{index}.png": _cube_png(colour, light=True),
            f"Metadata/plate_no_light_{index}.png": _cube_png(colour, light=False),
            f"Metadata/top_{index}.png": _square_png(colour),
            f"Metadata/pick_{index}.png": _square_png("#010101FF"),
        }
        if len(_PNG_CACHE) < 64:
            _PNG_CACHE[key] = cached
    return cached


def _rgb(colour: str) -> tuple[int, int, int]:
    text = colour.lstrip("#")
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    r, g, b = rgb
    return int(min(255, r * factor)), int(min(255, g * factor)), int(min(255, b * factor))


def _png(image: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)  # type: ignore[attr-defined]
    return buffer.getvalue()


def _cube_png(colour: str, *, light: bool) -> bytes:
    from PIL import Image, ImageDraw  # the sim extra

    size = THUMBNAIL_SIZE
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    base = _rgb(colour)
    c, s = size // 2, size // 4
    top = [(c, c - s), (c + s, c - s // 2), (c, c), (c - s, c - s // 2)]
    left = [(c - s, c - s // 2), (c, c), (c, c + s), (c - s, c + s // 2)]
    right = [(c + s, c - s // 2), (c, c), (c, c + s), (c + s, c + s // 2)]
    draw.polygon(top, fill=_shade(base, 1.25 if light else 1.0))
    draw.polygon(left, fill=_shade(base, 0.85 if light else 1.0))
    draw.polygon(right, fill=_shade(base, 0.65 if light else 1.0))
    return _png(image)


def _square_png(colour: str) -> bytes:
    from PIL import Image

    size = THUMBNAIL_SIZE
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    image.paste(_rgb(colour), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return _png(image)


def _pad(zf: zipfile.ZipFile, size: int) -> None:
    rng = random.Random(size)
    info = zipfile.ZipInfo(PADDING_MEMBER)
    info.compress_type = zipfile.ZIP_STORED
    with zf.open(info, "w", force_zip64=size > (1 << 31)) as member:
        left = size
        while left > 0:
            chunk = min(left, 1 << 20)
            member.write(rng.randbytes(chunk))
            left -= chunk
