"""``bambu 3mf FILE``: a written 3MF shown as tables and JSON; hostile files are one line."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from bambulab.sim.threemf_writer import PlateSpec, write_3mf
from tests.cli.conftest import Bambu

HOSTILE = "Lid\u202e\u200fgpj.exe"  # reads backwards on a terminal that obeys it


@pytest.fixture
def bambu(tmp_path: Path) -> Bambu:
    # No cloud is needed: the command reads a local file (an unreachable URL proves it).
    return Bambu(home=tmp_path, api_url="http://127.0.0.1:9")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "gadget.3mf"
    write_3mf(
        path,
        name="Gadget",
        plates=[
            PlateSpec(objects=("Base", HOSTILE), layers=80, seconds=3900, grams=(10.0, 2.5)),
            PlateSpec(objects=("Clip",), layers=20, seconds=300, grams=(1.0, 0.0)),
        ],
        printer_model="A1 mini",
        filaments=[("PLA", "#FF8800FF"), ("PETG", "#112233FF")],
    )
    return path


def test_tables_for_people(bambu: Bambu, project: Path) -> None:
    result = bambu("3mf", str(project))
    assert result.returncode == 0, result
    out = result.stdout
    assert "A1 mini" in out and "2 (2 sliced)" in out
    assert "1h 05m" in out and "80" in out  # plate 1: time and layers
    assert "PLA" in out and "#FF8800FF" in out and "10 g" in out
    assert "100" in out and "Base" in out  # object ids skip_objects takes
    assert "\u202e" not in out and "\\u202e" in out  # the name is shown, neutralised


def test_json_and_one_plate(bambu: Bambu, project: Path) -> None:
    result = bambu("3mf", str(project), "--plate", "2", "--json")
    assert result.returncode == 0, result
    data = result.json()
    assert data["printer_model_id"] == "N1" and data["printer_model"] == "A1 mini"
    assert [p["index"] for p in data["plates"]] == [2]
    plate = data["plates"][0]
    assert (plate["layers"], plate["seconds"], plate["weight_g"]) == (20, 300.0, 1.0)
    assert plate["objects"] == [{"identify_id": 112, "name": "Clip", "skipped": False}]
    assert [f["type"] for f in plate["filaments"]] == ["PLA", "PETG"]
    full = bambu("3mf", str(project), "--json").json()
    assert full["plates"][0]["objects"][1]["name"] == HOSTILE  # JSON keeps the real value
    assert full["md5"] and full["size"] == project.stat().st_size


def test_thumbnail_is_saved(bambu: Bambu, project: Path, tmp_path: Path) -> None:
    out = tmp_path / "thumb.png"
    result = bambu("3mf", str(project), "--plate", "2", "--thumbnail", str(out))
    assert result.returncode == 0, result
    assert out.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a zip at all", "not a 3MF file"),
        (None, "unsafe member name"),
    ],
    ids=["garbage", "traversal"],
)
def test_hostile_files_are_one_line(
    bambu: Bambu, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "bad.3mf"
    if content is None:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("../../escape.txt", "x")
    else:
        path.write_bytes(content)
    result = bambu("3mf", str(path))
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result
    assert "Traceback" not in result.stderr


def test_missing_plate_and_missing_file(bambu: Bambu, project: Path, tmp_path: Path) -> None:
    result = bambu("3mf", str(project), "--plate", "5")
    assert result.returncode == 1 and "no plate 5 (plates: 1, 2)" in result.stderr, result
    result = bambu("3mf", str(tmp_path / "nope.3mf"))
    assert result.returncode == 1 and "No such file" in result.stderr, result
