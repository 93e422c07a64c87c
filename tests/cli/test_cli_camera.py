"""``bambu camera`` against the simulated P1/A1 cameras, in real subprocesses.

The printer is named as ``bambu sim`` exports it (BAMBU_PRINTER_HOST,
BAMBU_SERIAL, BAMBU_ACCESS_CODE, BAMBU_PRINTER_CAMERA_PORT, BAMBU_CA_FILE),
or by number among the BAMBU_PRINTER_<N>_* variables. Every output is
checked for the access code (the runner does), except where it is asked for.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from bambulab.protocol.camera import is_jpeg
from bambulab.sim import Simulator
from bambulab.sim.config import parse_fleet
from tests.cli.conftest import Bambu, unlimited_config
from tests.cli.test_cli_commands import Terminal

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = unlimited_config().with_demo_fleet(parse_fleet(["p1s:idle", "a1:idle", "x1c:idle"]))
    with Simulator(config, time_scale=20, tick_interval=0.5, camera_interval=0.05) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def exported(sim: Simulator) -> dict[str, str]:
    """Every variable ``bambu sim`` would export (the first printer is the default one)."""
    found: dict[str, str] = {}
    for line in sim.export_lines():
        name, _, value = line.removeprefix("export ").partition("=")
        found[name] = shlex.split(value)[0] if value else ""
    return found


@pytest.fixture
def bambu(
    sim: Simulator, exported: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Bambu:
    runner = Bambu(home=tmp_path_factory.mktemp("home"), api_url=sim.url)
    runner.secrets.update(v for k, v in exported.items() if k.endswith("ACCESS_CODE"))
    return runner


def printer_env(exported: dict[str, str]) -> dict[str, str]:
    keys = ("BAMBU_SERIAL", "BAMBU_ACCESS_CODE", "BAMBU_PRINTER_CAMERA_PORT", "BAMBU_CA_FILE")
    return {"BAMBU_PRINTER_HOST": exported["BAMBU_PRINTER_HOST"], **{k: exported[k] for k in keys}}


def number_of(exported: dict[str, str], model: str) -> str:
    for name, value in exported.items():
        found = re.fullmatch(r"BAMBU_PRINTER_(\d+)_MODEL", name)
        if found and value == model:
            return found.group(1)
    raise AssertionError(f"no {model} exported")


def test_snapshot_of_the_lan_printer(
    bambu: Bambu, exported: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "shot.jpg"
    result = bambu("camera", "snapshot", "-o", str(out), **printer_env(exported))
    assert result.returncode == 0, result
    assert is_jpeg(out.read_bytes())
    assert exported["BAMBU_SERIAL"] in result.stdout and "shot.jpg" in result.stdout


def test_snapshot_of_a_printer_by_number(
    bambu: Bambu, exported: dict[str, str], tmp_path: Path, sim: Simulator
) -> None:
    number = number_of(exported, "N2S")
    out = tmp_path / "a1.jpg"
    result = bambu("--json", "camera", "snapshot", number, "-o", str(out), **exported)
    assert result.returncode == 0, result
    answer = result.json()
    assert answer["serial"] == exported[f"BAMBU_PRINTER_{number}_SERIAL"]
    assert answer["bytes"] == out.stat().st_size and is_jpeg(out.read_bytes())


def test_stream_to_a_folder(bambu: Bambu, exported: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    result = bambu(
        "camera", "stream", "--dir", str(folder), "--frames", "3", **printer_env(exported)
    )
    assert result.returncode == 0, result
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["frame-000001.jpg", "frame-000002.jpg", "frame-000003.jpg"]
    assert all(is_jpeg((folder / n).read_bytes()) for n in names)
    assert re.search(r"3 frames in [\d.]+ s \([\d.]+ frames/s\)", result.stderr)


def test_stream_mjpeg_to_stdout(bambu: Bambu, exported: dict[str, str]) -> None:
    import subprocess
    import sys

    env = bambu.env(**printer_env(exported))
    proc = subprocess.run(
        [sys.executable, "-m", "bambulab.cli", "camera", "stream", "-o", "-", "--frames", "2"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    parts = proc.stdout.split(b"--bambuframe\r\n")[1:]
    assert len(parts) == 2
    for part in parts:
        head, _, body = part.partition(b"\r\n\r\n")
        size = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        assert b"Content-Type: image/jpeg" in head
        assert body.endswith(b"\r\n") and is_jpeg(body[:-2]) and len(body) - 2 == size


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a pseudo-terminal")
def test_stream_for_some_seconds_shows_the_rate_on_a_terminal(
    bambu: Bambu, exported: dict[str, str]
) -> None:
    terminal = Terminal(bambu.env(**printer_env(exported)), "camera", "stream", "--seconds", "1")
    assert terminal.wait() == 0
    shown = terminal.seen.decode(errors="replace")
    assert re.search(r"\r\d+ frames, [\d.]+ frames/s", shown), shown[-400:]
    counted = int(re.search(r"(\d+) frames in", shown).group(1))  # type: ignore[union-attr]
    assert counted >= 5
    assert exported["BAMBU_ACCESS_CODE"] not in shown


def test_wrong_access_code_is_one_line(bambu: Bambu, exported: dict[str, str]) -> None:
    env = {**printer_env(exported), "BAMBU_ACCESS_CODE": "00000000"}
    result = bambu("camera", "snapshot", "-o", "/dev/null", **env)
    assert result.returncode == 1, result
    line = result.stderr.strip()
    assert line.startswith("error:") and line.count("\n") == 0
    assert "access code" in line and "bambu camera serve" in line
    assert "00000000" not in result.stdout + result.stderr and "Traceback" not in line


def test_refused_port_is_one_line(bambu: Bambu, exported: dict[str, str]) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**printer_env(exported), "BAMBU_PRINTER_CAMERA_PORT": str(port)}
    result = bambu("camera", "snapshot", "-o", "/dev/null", **env)
    assert result.returncode == 1, result
    assert "refused the connection" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_unknown_printer_and_no_lan(bambu: Bambu, exported: dict[str, str]) -> None:
    unknown = bambu("camera", "snapshot", "99", **exported)
    assert unknown.returncode == 2 and "no printer '99'" in unknown.stderr
    nothing = bambu("camera", "snapshot")
    assert nothing.returncode == 2 and "--lan HOST" in nothing.stderr


def test_url_of_a_jpeg_camera_says_so(bambu: Bambu, exported: dict[str, str]) -> None:
    result = bambu("camera", "url", **printer_env(exported))
    assert result.returncode == 0, result
    assert "no RTSPS camera" in result.stdout and "JPEG stream" in result.stdout


def test_url_of_an_rtsps_camera_is_masked_unless_asked(
    sim: Simulator, exported: dict[str, str], tmp_path: Path
) -> None:
    number = number_of(exported, "BL-P001")
    code = exported[f"BAMBU_PRINTER_{number}_ACCESS_CODE"]
    host = exported[f"BAMBU_PRINTER_{number}_HOST"]
    runner = Bambu(home=tmp_path, api_url=sim.url)  # this one may print the code when asked
    # bambu sim exports the stream's URL (its own port): the URL shown is that one
    port = exported[f"BAMBU_PRINTER_{number}_RTSP_URL"].split(":")[2].split("/")[0]
    masked = runner("camera", "url", number, **exported)
    assert masked.returncode == 0, masked
    assert f"rtsps://bblp:***@{host}:{port}/streaming/live/1" in masked.stdout
    assert code not in masked.stdout + masked.stderr
    shown = runner("camera", "url", number, "--show-secrets", **exported)
    assert f"rtsps://bblp:{code}@{host}:{port}/streaming/live/1" in shown.stdout
    # without the variable, the printer's standard port
    plain = {k: v for k, v in exported.items() if not k.endswith("RTSP_URL")}
    masked = runner("camera", "url", number, **plain)
    assert f"rtsps://bblp:***@{host}:322/streaming/live/1" in masked.stdout


def test_snapshot_of_an_rtsps_printer_by_number(
    bambu: Bambu, exported: dict[str, str], tmp_path: Path
) -> None:
    number = number_of(exported, "BL-P001")
    out = tmp_path / "x1c.jpg"
    result = bambu("--json", "camera", "snapshot", number, "-o", str(out), **exported)
    assert result.returncode == 0, result
    assert result.json()["serial"] == exported[f"BAMBU_PRINTER_{number}_SERIAL"]
    assert is_jpeg(out.read_bytes())


def test_url_with_a_cloud_login_gives_the_tutk_url(
    sim: Simulator, bambu: Bambu, exported: dict[str, str]
) -> None:
    token = sim.issue_token(sim.demo_account.email)
    bambu.secrets.add(token)
    serial = exported["BAMBU_SERIAL"]
    masked = bambu("camera", "url", "--serial", serial, BAMBU_TOKEN=token)
    assert masked.returncode == 0, masked
    assert "bambu:///tutk?uid=***&authkey=***&passwd=***&region=" in masked.stdout
    assert "no open implementation" in masked.stdout
    shown = bambu(
        "--json", "camera", "url", "--serial", serial, "--show-secrets", BAMBU_TOKEN=token
    )
    secret = shown.json()["tutk"]
    assert "***" not in secret and re.search(r"uid=\w{10,}", secret)
