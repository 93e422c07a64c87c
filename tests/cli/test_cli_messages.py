"""``bambu messages`` by type name, and unknown ``--type`` / ``--device`` values as usage errors.

The simulated inbox holds messages of the four types (1 system, 2 printing,
3 community, 4 makerworld); the table shows their names, ``--type`` takes a
name or a number, and anything else exits 2 naming the valid values before
any request. ``bambu tasks --device`` takes a serial or a printer's name;
one that matches no printer and no history exits 2 naming the printers.
"""

from __future__ import annotations

import pytest

from bambulab.models.cloud import MESSAGE_TYPES
from bambulab.sim import CloudSimulator
from tests.cli.conftest import Bambu, Result, login

NAMES = set(MESSAGE_TYPES.values())


@pytest.fixture(scope="module")
def user(bambu: Bambu, cli_sim: CloudSimulator) -> Bambu:
    login(bambu, cli_sim)
    return bambu


def usage_error(result: Result) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result
    assert result.stdout == ""
    return lines[0]


def test_the_table_shows_type_names(user: Bambu) -> None:
    rows = user("messages", "--all", "--json").json()
    kinds = {row["type"] for row in rows}
    assert kinds <= set(MESSAGE_TYPES) and len(kinds) > 1, kinds  # --json stays exact
    table = user("messages", "--all")
    assert table.returncode == 0, table
    cells = {
        line.split("│")[2].strip()
        for line in table.stdout.splitlines()
        if line.count("│") >= 5 and str(rows[0]["id"])[:4] in line
    }
    assert cells and cells <= NAMES, cells


@pytest.mark.parametrize("given", ["printing", "PRINTING", "2"])
def test_type_by_name_or_number(user: Bambu, given: str) -> None:
    rows = user("messages", "--all", "--type", given, "--json").json()
    assert rows and {row["type"] for row in rows} == {2}
    table = user("messages", "--all", "-t", given)
    assert "printing" in table.stdout and "community" not in table.stdout


@pytest.mark.parametrize("given", ["printer", "5", "0", ""])
def test_an_unknown_type_names_the_valid_ones(user: Bambu, given: str) -> None:
    line = usage_error(user("messages", "--type", given))
    assert repr(given) in line
    for number, name in MESSAGE_TYPES.items():
        assert f"{name} ({number})" in line


def test_tasks_of_a_printer_by_name_or_serial(user: Bambu, cli_sim: CloudSimulator) -> None:
    device = cli_sim.world.devices_of(cli_sim.demo_account.uid)[1]
    by_serial = user("tasks", "--all", "--device", device.dev_id, "--json").json()
    assert by_serial and {t["deviceId"] for t in by_serial} == {device.dev_id}
    by_name = user("tasks", "--all", "--device", device.name.upper(), "--json").json()
    assert [t["id"] for t in by_name] == [t["id"] for t in by_serial]


def test_an_unknown_device_names_the_printers(user: Bambu, cli_sim: CloudSimulator) -> None:
    line = usage_error(user("tasks", "--device", "NOPE0000000000"))
    assert "'NOPE0000000000'" in line
    for device in cli_sim.world.devices_of(cli_sim.demo_account.uid):
        assert f"{device.name} ({device.dev_id})" in line
