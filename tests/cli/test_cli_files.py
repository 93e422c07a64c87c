"""``bambu files`` against a simulated printer's FTPS server, in real subprocesses.

The printer is named the way ``bambu sim`` exports it (BAMBU_PRINTER_HOST,
BAMBU_SERIAL, BAMBU_ACCESS_CODE, BAMBU_PRINTER_FTP_PORT, BAMBU_CA_FILE), or
with the options. Every output is checked for the access code.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from bambulab.sim import Simulator
from bambulab.sim.config import parse_fleet
from tests.cli.conftest import Bambu, Result, unlimited_config
from tests.cli.test_cli_commands import Terminal

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = unlimited_config().with_demo_fleet(parse_fleet(["p1s:idle"]))
    with Simulator(config, time_scale=20, tick_interval=0.5) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def printer(sim: Simulator) -> dict[str, str]:
    endpoint = sim.endpoints()[0]
    host, port = sim.ftps_address(endpoint.serial)
    assert sim.ca_file is not None
    return {
        "BAMBU_PRINTER_HOST": host,
        "BAMBU_SERIAL": endpoint.serial,
        "BAMBU_ACCESS_CODE": endpoint.access_code,
        "BAMBU_PRINTER_FTP_PORT": str(port),
        "BAMBU_CA_FILE": sim.ca_file,
    }


@pytest.fixture(scope="module")
def bambu(
    sim: Simulator, printer: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Bambu:
    runner = Bambu(home=tmp_path_factory.mktemp("home"), api_url=sim.url)
    runner.secrets.add(printer["BAMBU_ACCESS_CODE"])
    return runner


def card(sim: Simulator, serial: str) -> Path:
    return Path(sim.with_printer(serial, lambda p: str(p.card.root)))


def run(bambu: Bambu, printer: dict[str, str], *args: str, **extra: str) -> Result:
    return bambu(*args, **{**printer, **extra})


def test_put_ls_get_mkdir_rm(
    sim: Simulator, bambu: Bambu, printer: dict[str, str], tmp_path: Path
) -> None:
    root = card(sim, printer["BAMBU_SERIAL"])
    data = secrets.token_bytes(300_000)
    local = tmp_path / "part.gcode"
    local.write_bytes(data)

    sent = run(bambu, printer, "files", "put", str(local), "/cache/")
    assert sent.returncode == 0, sent
    assert "sent /cache/part.gcode" in sent.stdout
    assert (root / "cache" / "part.gcode").read_bytes() == data

    listed = run(bambu, printer, "--json", "files", "ls", "/cache")
    assert listed.returncode == 0, listed
    entry = next(e for e in listed.json() if e["name"] == "part.gcode")
    assert entry == {**entry, "path": "/cache/part.gcode", "size": len(data), "is_dir": False}
    table = run(bambu, printer, "files", "ls", "/cache")
    assert "part.gcode" in table.stdout

    out = tmp_path / "back.gcode"
    got = run(bambu, printer, "--json", "files", "get", "/cache/part.gcode", str(out))
    assert got.returncode == 0, got
    assert got.json()["bytes"] == len(data)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()

    made = run(bambu, printer, "files", "mkdir", "/jobs")
    assert made.returncode == 0 and (root / "jobs").is_dir()
    gone = run(bambu, printer, "files", "rm", "/cache/part.gcode")
    assert gone.returncode == 0 and not (root / "cache" / "part.gcode").exists()

    missing = run(bambu, printer, "files", "rm", "/cache/part.gcode")
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "part.gcode" in missing.stderr


def test_wrong_access_code_is_one_line(bambu: Bambu, printer: dict[str, str]) -> None:
    result = run(bambu, printer, "files", "ls", BAMBU_ACCESS_CODE="00000000")
    assert result.returncode == 1, result
    assert result.stderr.strip().startswith("error:") and "access code" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "00000000" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_needs_the_lan(bambu: Bambu, printer: dict[str, str]) -> None:
    env = {**printer, "BAMBU_PRINTER_HOST": ""}
    result = bambu("files", "ls", **env)
    assert result.returncode == 2 and "--lan HOST" in result.stderr


def test_hostile_names_on_the_card_reach_the_terminal_neutralised(
    sim: Simulator, bambu: Bambu, printer: dict[str, str]
) -> None:
    root = card(sim, printer["BAMBU_SERIAL"])
    hostile = "evil\x1b]0;pwned\x07\u202ename.3mf"
    (root / "cache" / hostile).write_bytes(b"x")
    try:
        for args in (("files", "ls", "/cache"), ("--json", "files", "ls", "/cache")):
            result = run(bambu, printer, *args)
            assert result.returncode == 0, result
            assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
            assert "\\x1b" in result.stdout or "\\u001b" in result.stdout
    finally:
        (root / "cache" / hostile).unlink()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a pseudo-terminal")
def test_progress_bar_on_a_terminal(
    sim: Simulator, bambu: Bambu, printer: dict[str, str], tmp_path: Path
) -> None:
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(8 << 20))
    terminal = Terminal(
        bambu.env(**printer, COLUMNS="120"), "files", "put", str(local), "/cache/big.bin"
    )
    assert terminal.wait() == 0
    shown = terminal.seen.decode(errors="replace")
    assert "big.bin" in shown
    # the bar itself (the final "sent ... (8.0 MiB)" line has no bar and no "/s")
    assert "━" in shown and "B/s" in shown, shown[-400:]
    assert printer["BAMBU_ACCESS_CODE"] not in shown
    (card(sim, printer["BAMBU_SERIAL"]) / "cache" / "big.bin").unlink()
