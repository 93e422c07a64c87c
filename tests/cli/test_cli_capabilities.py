"""``bambu temp|fan|light`` refuse what the printer's model cannot do, with the reason, in one line.

LAN mode against the simulator's own brokers (the model comes from the
serial): a P1S has no chamber heater, an A1 no aux or chamber fan, and
neither has a second chamber light; an H2D has all of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bambulab.sim import Simulator
from bambulab.sim.config import parse_fleet
from tests.cli.conftest import Bambu, unlimited_config
from tests.cli.test_cli_live import one_error_line


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = unlimited_config().with_demo_fleet(parse_fleet(["p1s", "a1", "h2d"]))
    with Simulator(config, time_scale=20, tick_interval=0.5) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def bambu(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Bambu:
    runner = Bambu(home=tmp_path_factory.mktemp("caps"), api_url=sim.url)
    runner.secrets.update(e.access_code for e in sim.endpoints())
    return runner


def lan(sim: Simulator, prefix: str) -> list[str]:
    serial = next(e.serial for e in sim.endpoints() if e.serial.startswith(prefix))
    host, port = sim.lan_address(serial)
    assert sim.ca_file is not None
    return [
        "--lan", host, "--port", str(port), "--serial", serial,
        "--access-code", sim.printers[serial].access_code, "--ca-file", sim.ca_file,
    ]  # fmt: skip


def gcode_lines(sim: Simulator, args: list[str]) -> int:
    serial = args[args.index("--serial") + 1]
    names = sim.with_printer(serial, lambda p: [n for n, _ in p.received])
    return sum(name == "print.gcode_line" for name in names)


@pytest.mark.parametrize(
    ("prefix", "command", "reason"),
    [
        ("01P", ["temp", "chamber", "40"], "the P1S has no chamber heater"),
        ("039", ["temp", "chamber", "40"], "the A1 has no chamber heater"),
        ("039", ["fan", "aux", "50"], "the A1 has no aux fan"),
        ("039", ["fan", "chamber", "50"], "the A1 has no chamber fan"),
        ("01P", ["light", "on", "--node", "chamber_light2"], "the P1S has no chamber_light2"),
        ("01P", ["gcode", "M141 S50"], "the P1S has no chamber heater"),
    ],
)
def test_refused_with_the_reason(
    sim: Simulator, bambu: Bambu, prefix: str, command: list[str], reason: str
) -> None:
    args = lan(sim, prefix)
    before = gcode_lines(sim, args)
    result = bambu(*command, *args)
    assert result.returncode == 1
    line = one_error_line(result)
    assert reason in line and "nothing was sent" in line, line
    assert args[args.index("--serial") + 1] in line
    assert gcode_lines(sim, args) == before


def test_a_capable_model_still_does_it(sim: Simulator, bambu: Bambu, tmp_path: Path) -> None:
    args = lan(sim, "094")
    serial = args[args.index("--serial") + 1]
    heated = bambu("temp", "chamber", "45", *args)
    assert heated.returncode == 0, heated
    assert "chamber target 45 °C" in heated.stdout
    deadline = time.monotonic() + 5
    while sim.with_printer(serial, lambda p: p.state.chamber.target) != 45:
        assert time.monotonic() < deadline, "the H2D never took the chamber target"
        time.sleep(0.1)
    for command in (["fan", "chamber", "80"], ["light", "off", "--node", "chamber_light2"]):
        done = bambu(*command, *args)
        assert done.returncode == 0, done
    assert bambu("temp", "chamber", "0", *args).returncode == 0
