"""The 3MF reader: every field from a written file, round trips, and hostile archives.

The files are written here (bambulab.sim.threemf_writer, or zipfile by hand
for the hostile shapes); nothing is fetched or copied from elsewhere.
"""

from __future__ import annotations

import hashlib
import io
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from bambulab import ThreeMF, ThreeMFError, read_3mf
from bambulab.models.threemf import Filament, PlateObject
from bambulab.protocol import threemf as reader
from bambulab.protocol.threemf import (
    gcode_header,
    gcode_layers,
    gcode_seconds,
    normalise_colour,
    read_gcode_info,
    thumbnail,
)
from bambulab.sim.threemf_writer import (
    PlateSpec,
    gcode_bytes,
    gcode_text,
    threemf_bytes,
    write_3mf,
)

TWO_COLOURS = (("PLA", "#FF0000FF"), ("PETG", "#00ff00"))


@pytest.fixture(scope="module")
def project() -> bytes:
    return threemf_bytes(
        name="Gadget",
        plates=[
            PlateSpec(objects=("Base", "Lid"), layers=120, seconds=3725, grams=(10.5, 2.25)),
            PlateSpec(objects=("Clip",), layers=30, seconds=600, grams=(1.0, 0.0)),
        ],
        printer_model="P1S",
        filaments=TWO_COLOURS,
        bed_type="cool_plate",
        nozzle_diameter=0.6,
    )


def test_every_field_of_a_sliced_project(project: bytes) -> None:
    got = read_3mf(project)
    assert isinstance(got, ThreeMF)
    assert got.md5 == hashlib.md5(project).hexdigest()
    assert got.size == len(project)
    assert (got.printer_model_id, got.printer_model_name) == ("C12", "Bambu Lab P1S")
    assert got.model is not None and got.model.product == "P1S"
    assert got.title == "Gadget"
    assert got.filaments == (
        Filament(1, "PLA", "#FF0000FF"),
        Filament(2, "PETG", "#00FF00FF"),
    )
    assert got.mapping_length == 2
    first, second = got.plates
    assert [p.index for p in got.sliced] == [1, 2]
    assert first.index == 1 and first.name == "Plate 1"
    assert first.gcode_path == "Metadata/plate_1.gcode" and first.param == first.gcode_path
    assert first.seconds == 3725.0
    assert first.weight == pytest.approx(12.75)
    assert first.layers == 120
    assert first.bed_type == "cool_plate"
    assert first.nozzle_diameter == 0.6
    assert first.printer_model_id == "C12"
    assert dict(first.thumbnails) == {
        "plate": "Metadata/plate_1.png",
        "no_light": "Metadata/plate_no_light_1.png",
        "top": "Metadata/top_1.png",
        "pick": "Metadata/pick_1.png",
    }
    pla, petg = first.filaments
    assert (pla.slot, pla.type, pla.colour, pla.grams, pla.tray_info_idx) == (
        1,
        "PLA",
        "#FF0000FF",
        10.5,
        "GFL99",
    )
    assert pla.metres > 0
    assert (petg.slot, petg.type, petg.colour, petg.grams) == (2, "PETG", "#00FF00FF", 2.25)
    assert first.objects == (PlateObject(100, "Base"), PlateObject(101, "Lid"))
    assert [o.identify_id for o in second.objects] == [112]
    assert second.layers == 30 and second.seconds == 600.0
    # The .md5 member is the G-code's own MD5.
    with zipfile.ZipFile(io.BytesIO(project)) as zf:
        gcode = zf.read("Metadata/plate_1.gcode")
    assert first.gcode_md5 == hashlib.md5(gcode).hexdigest()


def test_thumbnails_are_pngs_drawn_per_plate(project: bytes) -> None:
    for kind in ("plate", "no_light", "top", "pick"):
        data = thumbnail(project, 2, kind)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ThreeMFError, match="has no plate thumbnail"):
        thumbnail(project, 7)
    with pytest.raises(ThreeMFError, match="unknown thumbnail kind"):
        thumbnail(project, 1, "side")


def test_reads_from_a_file_object_and_leaves_it_usable(tmp_path: Path, project: bytes) -> None:
    path = tmp_path / "p.3mf"
    path.write_bytes(project)
    with path.open("rb") as stream:
        assert read_3mf(stream).md5 == read_3mf(project).md5
        assert thumbnail(stream, 1).startswith(b"\x89PNG")


def test_md5_can_be_skipped(project: bytes) -> None:
    got = read_3mf(project, md5=False)
    assert (got.md5, got.size) == ("", len(project))
    assert got.plates == read_3mf(project).plates


def test_plate_lookup_errors(project: bytes) -> None:
    got = read_3mf(project)
    assert got.plate(2).index == 2
    with pytest.raises(ThreeMFError, match=r"no plate 3 \(plates: 1, 2\)"):
        got.plate(3)


def test_an_unsliced_project_reads_but_cannot_be_printed() -> None:
    got = read_3mf(threemf_bytes(sliced=False))
    assert got.plates and not got.sliced
    assert got.plates[0].gcode_path == "" and not got.plates[0].sliced
    with pytest.raises(ThreeMFError, match="not sliced"):
        got.plate(1)
    assert got.plate(1, sliced=False).index == 1


def test_writer_round_trip_of_counts_and_gcode() -> None:
    data = threemf_bytes(plates=3, objects=("A", "B", "C"), layers=7, seconds=61)
    got = read_3mf(data)
    assert [p.index for p in got.plates] == [1, 2, 3]
    assert all(p.layers == 7 and p.seconds == 61 for p in got.plates)
    ids = [o.identify_id for p in got.plates for o in p.objects]
    assert len(ids) == len(set(ids)) == 9  # skip_objects ids are unique across plates


def test_gcode_marks_layers_like_bambu() -> None:
    text = gcode_text(layers=5, seconds=3725, filaments=[("PLA", "#FFFFFFFF")], grams=[1.5])
    header = gcode_header(text)
    assert gcode_layers(header) == 5
    assert gcode_seconds(header) == 3725
    assert text.count("; CHANGE_LAYER") == 5
    assert [f"M73 L{n}" in text for n in range(1, 6)] == [True] * 5
    assert "G1 X" in text and " E" in text  # it moves and extrudes
    assert read_gcode_info(gcode_bytes(layers=9, seconds=120)) == (9, 120)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("#ff0000", "#FF0000FF"),
        ("00AE42FF", "#00AE42FF"),
        ("#abc", "#AABBCCFF"),
        ("red", ""),
        ("#12345", ""),
        (None, ""),
    ],
)
def test_colours_are_normalised(raw: object, want: str) -> None:
    assert normalise_colour(raw) == want


# --- hostile archives -------------------------------------------------------------------


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _with(name: str, data: bytes) -> bytes:
    """A valid project plus one extra member."""
    base = io.BytesIO(threemf_bytes())
    with zipfile.ZipFile(base, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return base.getvalue()


def _replace(name: str, data: bytes) -> bytes:
    """A valid project whose member ``name`` is ``data`` instead."""
    with zipfile.ZipFile(io.BytesIO(threemf_bytes())) as source:
        members = {i.filename: source.read(i) for i in source.infolist()}
    members[name] = data
    return _zip(members)


LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE config [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><config>&b;</config>'
)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a zip"),
        (b"PK\x03\x04 this is no archive", "not a zip"),
        (b"plain text, not a 3MF", "not a zip"),
        (_zip({"../evil.txt": b"x", "3D/3dmodel.model": b"<model/>"}), "unsafe member name"),
        (_zip({"/etc/passwd": b"x"}), "unsafe member name"),
        (_zip({"Metadata\\plate_1.gcode": b"x"}), "unsafe member name"),
        (_zip({"C:/x": b"x"}), "unsafe member name"),
        (_zip({"readme.txt": b"hello"}), "not a 3MF project"),
        (_replace("Metadata/slice_info.config", LAUGHS), "DOCTYPE"),
        (_replace("Metadata/model_settings.config", b"<config><plate>"), "not well-formed"),
        (_replace("Metadata/project_settings.config", b"{not json"), "not valid JSON"),
        # A bomb: a megabyte of zeros per kilobyte stored, in a member the reader must open.
        (_replace("Metadata/slice_info.config", b"<config>" + b" " * (8 << 20)), "zip bomb"),
    ],
    ids=[
        "empty",
        "zip-magic-garbage",
        "text",
        "dotdot",
        "absolute",
        "backslash",
        "drive",
        "no-model",
        "billion-laughs",
        "broken-xml",
        "broken-json",
        "bomb-ratio",
    ],
)
def test_hostile_files_give_one_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(ThreeMFError, match=message) as caught:
        read_3mf(data)
    assert "\n" not in str(caught.value)


def test_a_huge_metadata_member_is_refused_before_it_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reader, "MAX_METADATA_BYTES", 4096)
    big = _replace("Metadata/project_settings.config", b'{"x": "' + b"y" * 10_000 + b'"}')
    with pytest.raises(ThreeMFError, match="at most 4096"):
        read_3mf(big)


def test_too_many_members_or_too_much_metadata_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = threemf_bytes()
    monkeypatch.setattr(reader, "MAX_ENTRIES", 5)
    with pytest.raises(ThreeMFError, match="members \\(at most 5\\)"):
        read_3mf(data)
    monkeypatch.setattr(reader, "MAX_ENTRIES", 20_000)
    monkeypatch.setattr(reader, "MAX_TOTAL_BYTES", 2000)  # all members read by one call
    with pytest.raises(ThreeMFError, match="over 2000 bytes in all"):
        read_3mf(data)


def test_a_member_whose_header_lies_about_its_size_is_refused() -> None:
    data = bytearray(_replace("Metadata/slice_info.config", b"<config>" + b"<a/>" * 2000))
    name = data.find(b"Metadata/slice_info.config", data.find(b"PK\x01\x02"))
    header = data.rfind(b"PK\x01\x02", 0, name)  # its central directory entry
    data[header + 24 : header + 28] = (100).to_bytes(4, "little")  # "uncompressed: 100 bytes"
    with pytest.raises(ThreeMFError, match="slice_info"):
        read_3mf(bytes(data))


def test_a_corrupt_member_is_a_clear_error() -> None:
    data = bytearray(threemf_bytes())
    start = data.find(b"Metadata/slice_info.config")  # the local header's name
    data[start + 60 : start + 80] = b"\x00" * 20  # inside the deflated body
    with pytest.raises(ThreeMFError, match=r"damaged|not well-formed|corrupt"):
        read_3mf(bytes(data))


def test_metadata_read_does_not_load_the_archive(tmp_path: Path) -> None:
    path = tmp_path / "big.3mf"
    write_3mf(path, padding=24 << 20)
    tracemalloc.start()
    try:
        with path.open("rb") as stream:
            got = read_3mf(stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.size > 24 << 20
    assert peak < 4 << 20  # the 24 MiB stored member never sits in memory
