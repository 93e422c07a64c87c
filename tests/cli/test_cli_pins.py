"""``bambu pin list|forget`` and a changed LAN certificate, end to end in subprocesses.

LAN mode without a CA file pins the printer's certificate on first use. When
the simulator gives the printer a new certificate, ``bambu status`` must fail
with one line naming both fingerprints and the way out; ``bambu pin forget``
then lets the next ``bambu status`` succeed and pin the new certificate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bambulab.mqtt.tls import fetch_certificate, fingerprint
from bambulab.sim import Simulator
from tests.cli.conftest import Bambu, unlimited_config
from tests.cli.test_cli_live import one_error_line


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(unlimited_config(), time_scale=20, tick_interval=0.5) as simulator:
        yield simulator


@pytest.fixture
def bambu(sim: Simulator, tmp_path: Path) -> Bambu:
    runner = Bambu(home=tmp_path, api_url=sim.url)
    runner.secrets.update(e.access_code for e in sim.endpoints() if e.access_code[0] != "0")
    return runner


@pytest.fixture
def printer(sim: Simulator) -> Iterator[list[str]]:
    """The LAN options of the P1S (no CA file: first use pins); its certificate restored after."""
    serial = next(e.serial for e in sim.endpoints() if e.serial.startswith("01P"))
    host, port = sim.lan_address(serial)
    code = sim.printers[serial].access_code
    yield ["--lan", host, "--port", str(port), "--serial", serial, "--access-code", code]
    sim.use_wrong_certificate(serial, False)


def offered(sim: Simulator, serial: str) -> str:
    return fingerprint(fetch_certificate(*sim.lan_address(serial)))


def test_a_changed_certificate_is_named_and_forgetting_the_pin_accepts_it(
    sim: Simulator, bambu: Bambu, printer: list[str]
) -> None:
    serial = printer[printer.index("--serial") + 1]
    pin_file = bambu.home / ".config" / "bambulab" / "printer_certs.json"
    env = {"BAMBU_CA_FILE": ""}
    assert bambu("pin", "list", "--json", **env).json() == []

    first = bambu("status", "--json", *printer, **env)
    assert first.returncode == 0, first
    original = offered(sim, serial)
    (pin,) = bambu("pin", "list", "--json").json()
    assert pin["serial"] == serial and pin["sha256"] == original and pin["pinned_at"] > 0
    table = bambu("pin", "list")
    assert serial in table.stdout and original in table.stdout, table

    sim.renew_certificate(serial)
    renewed = offered(sim, serial)
    refused = bambu("status", *printer, **env)
    assert refused.returncode == 1
    line = one_error_line(refused)
    for part in (serial, original, renewed, str(pin_file), f"bambu pin forget {serial}"):
        assert part in line, (part, line)
    assert "bambu pin list" in line and "local issuer" not in line
    assert bambu("pin", "list", "--json").json()[0]["sha256"] == original

    forgotten = bambu("pin", "forget", serial)
    assert forgotten.returncode == 0, forgotten
    again = bambu("status", "--json", *printer, **env)
    assert again.returncode == 0, again
    assert again.json()["serial"] == serial
    (pin,) = bambu("pin", "list", "--json").json()
    assert pin["sha256"] == renewed


def test_forget_names_the_pinned_serials_when_the_serial_is_unknown(
    bambu: Bambu, printer: list[str]
) -> None:
    serial = printer[printer.index("--serial") + 1]
    assert bambu("status", "--json", *printer, BAMBU_CA_FILE="").returncode == 0
    missing = bambu("pin", "forget", "NOPE0000")
    assert missing.returncode == 1
    line = one_error_line(missing)
    assert "'NOPE0000'" in line and serial in line
    empty = bambu("pin", "forget", " ")
    assert empty.returncode == 2 and "serial" in one_error_line(empty)
    assert [p["serial"] for p in bambu("pin", "list", "--json").json()] == [serial]
