"""The options every live command shares, declared once; and the bounded wait's message.

The twelve live commands take their connection options from one place
(``bambulab.cli.live.live_command``): each lists every one in ``--help``, and
``--pin-file`` (the newest) really decides where LAN certificates are pinned.
When a printer sends no report, the one error line names the time actually
waited.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import time
import tomllib
from pathlib import Path

import pytest

from bambulab.sim import Simulator
from tests.cli.conftest import Bambu
from tests.cli.test_cli_live import one_error_line
from tests.cli.test_cli_pins import bambu, sim
from tests.cli.test_cli_startup import probe

__all__ = ["bambu", "sim"]  # the fixtures: one simulator for this module, a runner per test

LIVE_COMMANDS = (
    "status", "watch", "pause", "resume", "stop", "light",
    "temp", "fan", "speed", "gcode", "ams", "hms",
)  # fmt: skip
# Written out here, not read from the CLI: what every live command must accept.
SHARED = (
    "--lan", "--serial", "--access-code", "--port", "--ca-file", "--pin-file",
    "--insecure", "--cloud",
)  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", LIVE_COMMANDS)
def test_every_live_command_lists_every_shared_option(command: str) -> None:
    out, report = probe(command, "--help")
    assert report["code"] == 0, out
    assert out.startswith(f"Usage: bambu {command} ")
    for option in SHARED:
        assert re.search(rf"^\s+{option}\b", out, re.MULTILINE), (command, option, out)
    # --help stays light: the protocol's words come from a stdlib-only module.
    assert report["loaded"] == [], report


def test_the_shared_options_are_declared_once() -> None:
    from bambulab.cli.live import SHARED_OPTIONS

    assert SHARED_OPTIONS == SHARED
    source = (ROOT / "src" / "bambulab" / "cli" / "live.py").read_text(encoding="utf-8")
    for option in SHARED:
        assert source.count(f'"{option}"') == 1, option


def test_choices_come_from_the_protocol_vocabulary() -> None:
    from bambulab.vocabulary import FANS, HEATERS, LIGHT_NODES, SPEED_LEVELS

    for command, words in (
        ("light", LIGHT_NODES),
        ("fan", tuple(FANS)),
        ("temp", HEATERS),
        ("speed", tuple(SPEED_LEVELS)),
    ):
        out, _ = probe(command, "--help")
        assert "|".join(words) in out, (command, out)


def test_the_typer_floor_admits_only_working_pairs() -> None:
    """From 0.26 typer ships its own click: no installable pair can break ``--help``."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (spec,) = [d for d in meta["project"]["optional-dependencies"]["cli"] if d.startswith("typer")]
    floor = tuple(int(p) for p in spec.split(">=")[1].split("."))
    assert floor >= (0, 26)
    installed = tuple(int(p) for p in importlib.metadata.version("typer").split(".")[:2])
    assert installed >= floor
    requires = importlib.metadata.requires("typer") or []
    assert not [r for r in requires if r.split()[0].lower().startswith("click")], requires


# --- against a simulator ----------------------------------------------------------------------


def lan_options(sim: Simulator, prefix: str) -> tuple[str, list[str]]:
    serial = next(e.serial for e in sim.endpoints() if e.serial.startswith(prefix))
    host, port = sim.lan_address(serial)
    code = sim.printers[serial].access_code
    return serial, ["--lan", host, "--port", str(port), "--serial", serial, "--access-code", code]


def test_pin_file_decides_where_the_certificate_is_pinned(
    sim: Simulator, bambu: Bambu, tmp_path: Path
) -> None:
    serial, options = lan_options(sim, "030")
    pins = tmp_path / "elsewhere" / "pins.json"
    first = bambu("status", "--json", *options, "--pin-file", str(pins))
    assert first.returncode == 0, first
    assert serial in json.loads(pins.read_text(encoding="utf-8"))
    default = bambu.home / ".config" / "bambulab" / "printer_certs.json"
    assert not default.exists()
    # Another command reads the same file: a pin that does not match is refused, naming it.
    pins.write_text(json.dumps({serial: {"pem": _other_pem(sim), "pinned_at": 1}}))
    refused = bambu("light", "on", *options, "--pin-file", str(pins))
    line = one_error_line(refused)
    assert str(pins) in line, line
    # And the environment variable is the same option.
    again = bambu("hms", *options, BAMBU_PIN_FILE=str(pins))
    assert str(pins) in one_error_line(again)
    # bambu pin list/forget read the same file.
    assert [
        p["serial"] for p in bambu("pin", "list", "--json", "--pin-file", str(pins)).json()
    ] == [serial]
    assert bambu("pin", "forget", serial, BAMBU_PIN_FILE=str(pins)).returncode == 0
    assert json.loads(pins.read_text(encoding="utf-8")) == {}


def _other_pem(sim: Simulator) -> str:
    """A valid certificate that is not this printer's: another printer's."""
    from bambulab.mqtt.tls import fetch_certificate

    other = next(e.serial for e in sim.endpoints() if e.serial.startswith("01P"))
    return fetch_certificate(*sim.lan_address(other))


def test_no_report_names_the_time_actually_waited(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bambulab.cli import live_session
    from bambulab.cli.base import CliError

    # An online printer that goes quiet (the demo fleet's A1 is powered off, and a
    # printer that is off refuses LAN connections as a real one does).
    serial, _ = lan_options(sim, "030")
    host, port = sim.lan_address(serial)
    assert sim.ca_file is not None
    conn = live_session.Connect(
        lan=host,
        serial=serial,
        access_code=sim.printers[serial].access_code,
        port=port,
        ca_file=sim.ca_file,
    )
    monkeypatch.setattr(live_session, "REPORT_TIMEOUT", 2.0)
    sim.stall(serial, 20)
    try:
        started = time.monotonic()
        with pytest.raises(CliError) as caught, live_session.one_printer(conn, None):
            pass
        waited = time.monotonic() - started
    finally:
        sim.stall(serial, 0)
    claimed = float(re.search(r"within (\d+(?:\.\d+)?) s", str(caught.value)).group(1))  # type: ignore[union-attr]
    # The wait includes connecting (a moment on loopback), never less than claimed.
    assert claimed <= waited < claimed + 1.5, (claimed, waited, str(caught.value))
