"""Read a sliced Bambu 3MF without loading it: plates, filaments, objects, MD5 (sans-IO).

The layout is Bambu Studio's (``src/libslic3r/Format/bbs_3mf.cpp``):

* ``Metadata/slice_info.config`` (XML): per ``<plate>`` the metadata keys
  ``index``, ``printer_model_id``, ``nozzle_diameters``, ``prediction``
  (seconds), ``weight`` (grams), then ``<object identify_id name skipped>``
  and ``<filament id tray_info_idx type color used_m used_g>``;
* ``Metadata/model_settings.config`` (XML): per ``<plate>`` the keys
  ``plater_id``, ``plater_name``, ``gcode_file``, ``thumbnail_file``,
  ``thumbnail_no_light_file``, ``top_file``, ``pick_file``;
* ``Metadata/plate_<N>.gcode`` (+ ``.md5``), ``Metadata/plate_<N>.json``
  (``bed_type``, ``nozzle_diameter``), ``Metadata/project_settings.config``
  (JSON: ``printer_model``, ``filament_type``, ``filament_colour``...).

Only the zip's central directory and these small members are read; meshes
(``3D/3dmodel.model``) and G-code bodies are never decompressed (the G-code's
first :data:`GCODE_HEADER_BYTES` are, for its layer count). The MD5 streams
the file in chunks. Every hostile shape (not a zip, bad CRC, bomb, traversal
names, huge or entity-laden metadata) is one :class:`~bambulab.errors.ThreeMFError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import IO, Any

from ..errors import ThreeMFError, excerpt
from ..models.printer import model_named
from ..models.threemf import Filament, Plate, PlateObject, ThreeMF

SLICE_INFO = "Metadata/slice_info.config"
MODEL_SETTINGS = "Metadata/model_settings.config"
PROJECT_SETTINGS = "Metadata/project_settings.config"
_PLATE_GCODE = re.compile(r"^Metadata/plate_(\d{1,4})\.gcode$")

# Limits for what is read out of an archive from elsewhere.
MAX_ENTRIES = 20_000  # members in the central directory
MAX_METADATA_BYTES = 16 << 20  # one metadata member, uncompressed
MAX_THUMBNAIL_BYTES = 16 << 20
MAX_TOTAL_BYTES = 64 << 20  # all members read by one call, uncompressed
MAX_RATIO = 200  # uncompressed / compressed of a member that is read (XML/JSON reach ~20)
GCODE_HEADER_BYTES = 64 << 10
CHUNK = 1 << 20
# Thumbnail kinds → model_settings keys and the default member names.
THUMBNAIL_KEYS = {
    "plate": ("thumbnail_file", "Metadata/plate_{n}.png"),
    "no_light": ("thumbnail_no_light_file", "Metadata/plate_no_light_{n}.png"),
    "top": ("top_file", "Metadata/top_{n}.png"),
    "pick": ("pick_file", "Metadata/pick_{n}.png"),
}

Source = bytes | bytearray | memoryview | IO[bytes]


def read_3mf(source: Source, *, md5: bool = True) -> ThreeMF:
    """The project in ``source`` (bytes or a seekable binary file, left open).

    Raises :class:`ThreeMFError` for anything that is not a sane 3MF. An
    unsliced project reads fine (its plates have no ``gcode_path``); asking
    :meth:`ThreeMF.plate` for a plate to print is what refuses it.
    ``md5=False`` skips hashing the whole file (``ThreeMF.md5`` is then ``""``):
    the metadata alone costs only the few members read.
    """
    stream = _stream(source)
    if md5:
        digest, size = _md5(stream)
    else:
        digest, size = "", stream.seek(0, 2)
        stream.seek(0)
    with _Archive(stream) as archive:
        return _read(archive, digest, size)


def thumbnail(source: Source, plate: int = 1, kind: str = "plate") -> bytes:
    """The PNG of a plate (``kind``: plate, no_light, top, pick); ThreeMFError when absent."""
    if kind not in THUMBNAIL_KEYS:
        raise ThreeMFError(f"unknown thumbnail kind {excerpt(kind)}")
    stream = _stream(source)
    with _Archive(stream) as archive:
        settings = _model_settings(archive)
        info = settings.get(plate, {})
        key, default = THUMBNAIL_KEYS[kind]
        name = info.get(key) or default.format(n=plate)
        if not archive.has(name):
            raise ThreeMFError(f"plate {plate} has no {kind} thumbnail", entry=name)
        return archive.read(name, MAX_THUMBNAIL_BYTES)


def gcode_header(text: str) -> dict[str, str]:
    """``key: value`` comments of a G-code header (Bambu: between ``HEADER_BLOCK_*``)."""
    out: dict[str, str] = {}
    for line in text.splitlines()[:400]:
        stripped = line.strip()
        if not stripped.startswith(";"):
            if stripped:
                break  # the first move: the header is over
            continue
        body = stripped.lstrip(";").strip()
        if body == "HEADER_BLOCK_END":
            break
        key, sep, value = body.partition(":")
        if sep and key.strip() and key.strip() not in out:
            out[key.strip().lower()] = value.strip()
    return out


def gcode_layers(header: Mapping[str, str]) -> int:
    """``; total layer number: N`` (0 when absent or not a number)."""
    for key in ("total layer number", "total layers count", "total_layer_number"):
        value = header.get(key, "")
        if value.isdigit():
            return int(value)
    return 0


def gcode_seconds(header: Mapping[str, str]) -> float:
    """Seconds of ``; model printing time: 1h 2m 3s; total estimated time: ...`` (0 when absent)."""
    text = header.get("model printing time", "") or header.get("estimated printing time", "")
    text = text.split(";", 1)[0]
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([dhms])", text):
        total += float(number) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
    return total


def read_gcode_info(source: Source) -> tuple[int, float]:
    """(layers, seconds) from a plain G-code file's header (only its start is read)."""
    stream = _stream(source)
    stream.seek(0)
    head = stream.read(GCODE_HEADER_BYTES)
    header = gcode_header(head.decode("utf-8", "replace"))
    return gcode_layers(header), gcode_seconds(header)


def normalise_colour(value: Any) -> str:
    """``#RRGGBBAA`` (upper case) from ``#RGB``, ``RRGGBB`` or ``RRGGBBAA``; ``""`` if none."""
    if not isinstance(value, str):
        return ""
    text = value.strip().lstrip("#").upper()
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    if len(text) == 6:
        text += "FF"
    if len(text) != 8 or any(c not in "0123456789ABCDEF" for c in text):
        return ""
    return f"#{text}"


# --- the archive --------------------------------------------------------------------


def _stream(source: Source) -> IO[bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    if not source.seekable():
        raise ThreeMFError("the 3MF must be read from a seekable file")
    return source


def _md5(stream: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.md5(usedforsecurity=False)
    stream.seek(0)
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    stream.seek(0)
    return digest.hexdigest(), size


def _safe_name(name: str) -> bool:
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return False
    if re.match(r"^[A-Za-z]:", name):
        return False
    return all(part not in ("..", ".") for part in name.rstrip("/").split("/"))


class _Archive:
    """The zip's central directory, checked; members read with caps."""

    def __init__(self, stream: IO[bytes]) -> None:
        try:
            self._zip = zipfile.ZipFile(stream)
        except zipfile.BadZipFile:
            raise ThreeMFError("not a 3MF file (not a zip archive, or a damaged one)") from None
        except (OSError, ValueError, EOFError) as exc:
            raise ThreeMFError(f"cannot read the 3MF: {type(exc).__name__}") from None
        infos = self._zip.infolist()
        if len(infos) > MAX_ENTRIES:
            self._zip.close()
            raise ThreeMFError(f"the 3MF has {len(infos)} members (at most {MAX_ENTRIES})")
        self._members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if not _safe_name(info.filename):
                self._zip.close()
                raise ThreeMFError(
                    f"the 3MF holds an unsafe member name {excerpt(info.filename)}",
                    entry=excerpt(info.filename),
                )
            self._members[info.filename] = info
        self._budget = MAX_TOTAL_BYTES

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zip.close()

    def names(self) -> Iterator[str]:
        return iter(self._members)

    def has(self, name: str) -> bool:
        return name in self._members

    def read(self, name: str, cap: int | None = None, *, head: bool = False) -> bytes:
        """A member's bytes (``head``: only its first ``cap`` bytes), within every limit."""
        if cap is None:
            cap = MAX_METADATA_BYTES
        info = self._members.get(name)
        if info is None:
            raise ThreeMFError(f"the 3MF has no {name}", entry=name)
        if not head and info.file_size > cap:
            raise ThreeMFError(
                f"{name} is {info.file_size} bytes (at most {cap} are read)", entry=name
            )
        if info.compress_size and info.file_size > MAX_RATIO * info.compress_size + 4096:
            raise ThreeMFError(f"{name} looks like a zip bomb (compression ratio)", entry=name)
        limit = min(cap, self._budget)
        try:
            with self._zip.open(info) as member:
                data = member.read(limit + 1)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
            raise ThreeMFError(
                f"{name} is damaged ({type(exc).__name__}: the archive is corrupt)", entry=name
            ) from None
        except NotImplementedError:
            raise ThreeMFError(f"{name} uses an unsupported compression", entry=name) from None
        if len(data) > limit:
            if head and limit == cap:
                data = data[:limit]
            elif limit < cap:
                raise ThreeMFError(
                    f"the 3MF's metadata is over {MAX_TOTAL_BYTES} bytes in all (zip bomb?)",
                    entry=name,
                )
            else:
                raise ThreeMFError(f"{name} is larger than it claims (zip bomb?)", entry=name)
        self._budget -= len(data)
        return data


# --- parsing ------------------------------------------------------------------------


def _xml(archive: _Archive, name: str) -> ET.Element | None:
    if not archive.has(name):
        return None
    data = archive.read(name)
    # No DTDs at all: that refuses entity expansion (billion laughs) and external entities.
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise ThreeMFError(f"{name} declares a DOCTYPE or entities (refused)", entry=name)
    try:
        return ET.fromstring(data)  # noqa: S314  (DTDs refused above; expat has no external entities)
    except ET.ParseError:
        raise ThreeMFError(f"{name} is not well-formed XML", entry=name) from None


def _json(archive: _Archive, name: str) -> dict[str, Any]:
    if not archive.has(name):
        return {}
    try:
        value = json.loads(archive.read(name))
    except (ValueError, RecursionError):
        raise ThreeMFError(f"{name} is not valid JSON", entry=name) from None
    return value if isinstance(value, dict) else {}


def _metadata(element: ET.Element) -> dict[str, str]:
    return {
        m.get("key", ""): m.get("value", "")
        for m in element.findall("metadata")
        if m.get("key") is not None
    }


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _float(value: Any, default: float = 0.0) -> float:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return default
    return number if number == number and abs(number) != float("inf") else default


def _true(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def _model_settings(archive: _Archive) -> dict[int, dict[str, str]]:
    root = _xml(archive, MODEL_SETTINGS)
    plates: dict[int, dict[str, str]] = {}
    if root is None:
        return plates
    for element in root.findall("plate"):
        meta = _metadata(element)
        index = _int(meta.get("plater_id"), 0)
        if index > 0:
            plates[index] = meta
    return plates


def _slice_info(archive: _Archive) -> dict[int, ET.Element]:
    root = _xml(archive, SLICE_INFO)
    plates: dict[int, ET.Element] = {}
    if root is None:
        return plates
    for element in root.findall("plate"):
        index = _int(_metadata(element).get("index"), 0)
        if index > 0:
            plates[index] = element
    return plates


def _first(value: Any) -> str:
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


def _read(archive: _Archive, md5: str, size: int) -> ThreeMF:
    settings = _model_settings(archive)
    sliced = _slice_info(archive)
    project = _json(archive, PROJECT_SETTINGS)
    gcode_plates = {
        int(m.group(1)): name for name in archive.names() if (m := _PLATE_GCODE.match(name))
    }
    indexes = sorted(set(settings) | set(sliced) | set(gcode_plates))
    if not indexes and not archive.has("3D/3dmodel.model"):
        raise ThreeMFError("not a 3MF project (no 3D/3dmodel.model, no plates)")
    types = project.get("filament_type")
    types = [str(t) for t in types] if isinstance(types, list) else []
    colours = project.get("filament_colour")
    colours = colours if isinstance(colours, list) else []
    filaments = tuple(
        Filament(
            slot=i + 1, type=t, colour=normalise_colour(colours[i] if i < len(colours) else "")
        )
        for i, t in enumerate(types)
    )
    plates = tuple(
        _plate(archive, n, settings.get(n, {}), sliced.get(n), gcode_plates.get(n, ""))
        for n in indexes
    )
    model_id = next((p.printer_model_id for p in plates if p.printer_model_id), "")
    model_name = str(project.get("printer_model") or "")
    model = model_named(model_id) or model_named(model_name)
    return ThreeMF(
        plates=plates,
        md5=md5,
        size=size,
        filaments=filaments,
        printer_model_id=model_id,
        printer_model_name=model_name,
        model=model,
        title=str(project.get("name") or ""),
    )


def _plate(
    archive: _Archive,
    index: int,
    settings: Mapping[str, str],
    sliced: ET.Element | None,
    gcode: str,
) -> Plate:
    named = settings.get("gcode_file", "")
    if named and archive.has(named) and _PLATE_GCODE.match(named):
        gcode = named
    thumbnails: dict[str, str] = {}
    for kind, (key, default) in THUMBNAIL_KEYS.items():
        name = settings.get(key) or default.format(n=index)
        if archive.has(name):
            thumbnails[kind] = name
    meta = _metadata(sliced) if sliced is not None else {}
    filaments: tuple[Filament, ...] = ()
    objects: tuple[PlateObject, ...] = ()
    if sliced is not None:
        filaments = tuple(
            Filament(
                slot=_int(f.get("id"), 0),
                type=f.get("type", ""),
                colour=normalise_colour(f.get("color")),
                grams=_float(f.get("used_g")),
                metres=_float(f.get("used_m")),
                tray_info_idx=f.get("tray_info_idx", ""),
            )
            for f in sliced.findall("filament")
        )
        objects = tuple(
            PlateObject(
                identify_id=_int(o.get("identify_id"), -1),
                name=o.get("name", ""),
                skipped=_true(o.get("skipped")),
            )
            for o in sliced.findall("object")
        )
    plate_json = _json(archive, f"Metadata/plate_{index}.json")
    nozzle = meta.get("nozzle_diameters", "").split(",")[0] or _first(
        plate_json.get("nozzle_diameter")
    )
    layers = 0
    gcode_md5 = ""
    if gcode:
        head = archive.read(gcode, GCODE_HEADER_BYTES, head=True)
        layers = gcode_layers(gcode_header(head.decode("utf-8", "replace")))
        if archive.has(f"{gcode}.md5"):
            gcode_md5 = archive.read(f"{gcode}.md5", 64, head=True).decode("ascii", "replace")
            gcode_md5 = gcode_md5.strip().lower()
    return Plate(
        index=index,
        name=settings.get("plater_name", ""),
        gcode_path=gcode,
        gcode_md5=gcode_md5,
        thumbnails=MappingProxyType(thumbnails),
        seconds=_float(meta.get("prediction")),
        weight=_float(meta.get("weight")),
        filaments=filaments,
        bed_type=str(plate_json.get("bed_type") or ""),
        nozzle_diameter=_float(nozzle, 0.0) or None,
        objects=objects,
        layers=layers,
        printer_model_id=meta.get("printer_model_id", ""),
    )
