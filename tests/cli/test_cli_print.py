"""``bambu print`` in real subprocesses: one file to several printers, over the cloud and the LAN.

The file is a sliced 3MF written here with one ABS filament, a type the
chosen simulated printers have loaded (the fleet is seeded, so its trays are
stable). One printer of the fleet is printing: it must refuse while the
others start, and the command must say so and exit 1.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bambulab.sim import Simulator
from bambulab.sim.config import parse_fleet
from bambulab.sim.threemf_writer import write_3mf
from tests.cli.conftest import unlimited_config
from tests.cli.test_cli_commands import Terminal
from tests.cli.test_cli_live import LiveBambu, one_error_line
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(180)

FLEET = "x1c:idle,p1s:idle,a1mini:idle,p1s:printing"
BUSY = ("PREPARE", "RUNNING", "PAUSE")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = unlimited_config().with_demo_fleet(parse_fleet(FLEET))
    with Simulator(config, time_scale=5, tick_interval=0.2) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def user(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> LiveBambu:
    runner = LiveBambu.logged_in(sim, tmp_path_factory.mktemp("print-home"))
    for endpoint in sim.endpoints():
        runner.secrets.add(endpoint.access_code)
    return runner


@pytest.fixture
def printers(sim: Simulator) -> Iterator[dict[str, str]]:
    """Product → serial of the demo fleet, every printer idle but one ("busy") printing."""
    found: dict[str, str] = {}
    for device in sim.world.devices_of(sim.user_id):  # in fleet order: the second P1S is "busy"
        found["busy" if device.model.product in found else device.model.product] = device.dev_id
    for serial in found.values():
        sim.with_printer(serial, _idle)
    sim.with_printer(found["busy"], lambda p: p.start_job("Long job", progress=0.2))
    yield found
    for serial in found.values():
        sim.with_printer(serial, _idle)


def _idle(printer: Any) -> None:
    if printer.state.active:
        printer.state.stop()


def cube(tmp_path: Path, stem: str = "abs-cube") -> Path:
    path = tmp_path / f"{stem}.3mf"
    write_3mf(path, name="ABS cube", filaments=(("ABS", "#202020FF"),), seconds=1200)
    return path


def job_of(sim: Simulator, serial: str) -> tuple[str, str]:
    return sim.with_printer(serial, lambda p: (p.state.gcode_state, p.truth()["subtask_name"]))


def test_cloud_print_on_several_printers_one_busy(
    sim: Simulator, user: LiveBambu, printers: dict[str, str], tmp_path: Path
) -> None:
    x1c, a1mini, busy = printers["X1 Carbon"], printers["A1 mini"], printers["busy"]
    result = user("--json", "print", str(cube(tmp_path)), x1c, a1mini, busy, "--name", "Cube")
    assert result.returncode == 1, result
    outcomes = {o["serial"]: o for o in result.json()}
    assert outcomes[x1c]["ok"] and outcomes[a1mini]["ok"], outcomes
    assert outcomes[x1c]["task_id"] and outcomes[x1c]["url"].startswith("http")
    assert not outcomes[busy]["ok"] and "busy" in outcomes[busy]["error"], outcomes[busy]
    for serial in (x1c, a1mini):
        state, name = wait_for(lambda s=serial: job_of(sim, s)[0] in BUSY and job_of(sim, s))
        assert name == "Cube", (serial, state)
    assert job_of(sim, busy)[1] == "Long job"  # the busy printer kept its own job


def test_cloud_print_table_at_a_terminal_width(
    user: LiveBambu, printers: dict[str, str], tmp_path: Path
) -> None:
    result = user("print", str(cube(tmp_path)), printers["X1 Carbon"], "--ams-map", "2")
    assert result.returncode == 0, result
    assert "started on 1 of 1 printers" in result.stdout
    assert printers["X1 Carbon"] in result.stdout


def exported(sim: Simulator) -> dict[str, str]:
    """The variables ``bambu sim`` prints, as a shell would set them."""
    env: dict[str, str] = {}
    for line in sim.export_lines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0] if value else ""
    return env


def test_lan_print_on_printers_named_from_the_environment(
    sim: Simulator, user: LiveBambu, printers: dict[str, str], tmp_path: Path
) -> None:
    env = exported(sim)
    x1c, a1mini, busy = printers["X1 Carbon"], printers["A1 mini"], printers["busy"]
    result = user("--json", "print", str(cube(tmp_path)), x1c, a1mini, busy, **env)
    assert result.returncode == 1, result
    outcomes = {o["serial"]: o for o in result.json()}
    assert outcomes[x1c]["ok"] and outcomes[a1mini]["ok"], outcomes
    assert outcomes[x1c]["uploaded"] is True
    assert outcomes[x1c]["url"] == "file:///sdcard/abs-cube.3mf"
    assert "busy" in outcomes[busy]["error"]
    for serial in (x1c, a1mini):
        wait_for(lambda s=serial: job_of(sim, s)[0] in BUSY)
        assert sim.with_printer(serial, lambda p: p.card.find("/abs-cube.3mf"))
    assert not sim.with_printer(busy, lambda p: p.card.find("/abs-cube.3mf"))


def test_lan_print_on_the_printer_of_the_options_skips_an_identical_upload(
    sim: Simulator, user: LiveBambu, printers: dict[str, str], tmp_path: Path
) -> None:
    env = exported(sim)
    serial = printers["X1 Carbon"]
    number = next(k.split("_")[2] for k, v in env.items() if v == serial and k.endswith("SERIAL"))
    prefix = f"BAMBU_PRINTER_{number}_"
    one = {
        "BAMBU_CA_FILE": env["BAMBU_CA_FILE"],
        "BAMBU_PRINTER_HOST": env[prefix + "HOST"],
        "BAMBU_PRINTER_PORT": env[prefix + "PORT"],
        "BAMBU_PRINTER_FTP_PORT": env[prefix + "FTP_PORT"],
        "BAMBU_SERIAL": serial,
        "BAMBU_ACCESS_CODE": env[prefix + "ACCESS_CODE"],
    }
    path = cube(tmp_path, "only-here")
    first = user("--json", "print", str(path), **one)
    assert first.returncode == 0, first
    assert first.json()[0]["uploaded"] is True
    sim.with_printer(serial, _idle)
    again = user("--json", "print", str(path), "--no-bed-level", **one)
    assert again.returncode == 0, again
    assert again.json()[0]["uploaded"] is False  # the same bytes were already on the card


def test_bad_ams_map_is_one_line(user: LiveBambu, tmp_path: Path) -> None:
    line = one_error_line(user("print", str(cube(tmp_path)), "--ams-map", "left"))
    assert "--ams-map takes auto, none or tray ids" in line


def test_missing_file_is_one_line(user: LiveBambu, tmp_path: Path) -> None:
    line = one_error_line(user("print", str(tmp_path / "nope.3mf")))
    assert "no such file" in line


def test_lan_print_draws_a_bar_per_printer_on_a_terminal(
    sim: Simulator, user: LiveBambu, printers: dict[str, str], tmp_path: Path
) -> None:
    env = exported(sim)
    x1c, a1mini = printers["X1 Carbon"], printers["A1 mini"]
    path = tmp_path / "big-cube.3mf"
    write_3mf(path, name="Big", filaments=(("ABS", "#202020FF"),), padding=24 << 20)
    terminal = Terminal(user.env(**env, COLUMNS="140"), "print", str(path), x1c, a1mini)
    assert terminal.wait() == 0
    shown = terminal.seen.decode(errors="replace")
    assert f"big-cube.3mf to {x1c}" in shown and f"big-cube.3mf to {a1mini}" in shown
    assert "━" in shown and "B/s" in shown, shown[-400:]
    assert "started on 2 of 2 printers" in shown
    assert not any(code in shown for code in user.secrets)
