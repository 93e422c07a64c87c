"""Starting a farm job on a simulated printer over real sockets (LAN MQTT over TLS, implicit FTPS).

What the printer does is read back the way the farm reads it: from the
printer's own reports over its LAN broker (``marked_job`` on the state), and
checked against the simulated printer itself (its card, the commands it got).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bambulab.farm.models import Job, Requirements, Target
from bambulab.farm.rules import check
from bambulab.farm.starter import StartError, job_marker, marked_job, start_job, task_name
from bambulab.local.lan_print import LanPrinter
from bambulab.models.state import PrinterState
from bambulab.protocol.threemf import read_3mf
from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from bambulab.sim.threemf_writer import write_3mf
from tests.conftest import unlimited, wait_for

pytestmark = pytest.mark.timeout(120)

FLEET = ["p1s:idle", "a1:idle", "p1s:printing", "p1s:idle"]
IDLE, A1, BUSY, SPARE = 0, 1, 2, 3


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = unlimited().with_demo_fleet(parse_fleet(FLEET))
    with Simulator(config, time_scale=10, tick_interval=0.2) as simulator:
        yield simulator


def lan(sim: Simulator, index: int, **kw: Any) -> LanPrinter:
    endpoint = sim.endpoints()[index]
    assert endpoint.host and endpoint.port and endpoint.ftp_port
    fields: dict[str, Any] = {
        "host": endpoint.host,
        "serial": endpoint.serial,
        "access_code": endpoint.access_code,
        "mqtt_port": endpoint.port,
        "ftp_port": endpoint.ftp_port,
        "ca_file": sim.ca_file,
        "timeout": 10.0,
    }
    fields.update(kw)
    return LanPrinter(**fields)


def first_tray(sim: Simulator, serial: str) -> tuple[str, str]:
    """(type, #colour) of the printer's first loaded AMS tray (the simulator generates them)."""

    def read(p: Any) -> tuple[str, str]:
        for unit in p.truth().get("ams", {}).get("ams", []):
            for tray in unit.get("tray", []):
                if tray.get("tray_type"):
                    return tray["tray_type"], "#" + tray["tray_color"]
        raise AssertionError("no tray loaded")

    return sim.with_printer(serial, read)  # type: ignore[no-any-return]


def make_job(sim: Simulator, folder: Path, index: int, job_id: int, name: str = "Cube") -> Job:
    """A job of a 3MF sliced for printer ``index``'s model and filament, as the farm queues it."""
    serial = sim.endpoints()[index].serial
    path = folder / f"{name.lower()}-{job_id}.3mf"
    model = {IDLE: "P1S", A1: "A1", BUSY: "P1S", SPARE: "P1S"}[index]
    write_3mf(
        path, name=name, filaments=(first_tray(sim, serial),), seconds=600, printer_model=model
    )
    with path.open("rb") as handle:
        project = read_3mf(handle)
    return Job(
        id=job_id,
        name=name,
        file=str(path),
        file_md5=project.md5,
        plate=1,
        target=Target(),
        requirements=Requirements.of_plate(project.plate(1)),
    )


def report(printer: LanPrinter) -> PrinterState:
    """The printer's state as its own LAN broker reports it (a fresh connection each time)."""
    client = printer.mqtt()
    try:
        client.connect()
        state: PrinterState = client.get_full_status(printer.serial, timeout=10)
        return state
    finally:
        client.disconnect()


def printing(sim: Simulator, serial: str) -> str | None:
    """The task name of the simulated printer's active job, straight from the printer."""

    def read(p: Any) -> str | None:
        job = p.state.job
        return str(job.subtask_name) if job is not None and p.state.active else None

    return sim.with_printer(serial, read)  # type: ignore[no-any-return]


def print_commands(sim: Simulator, serial: str) -> list[str]:
    names: list[str] = sim.with_printer(serial, lambda p: [n for n, _ in p.received])
    return [n for n in names if n.startswith("print.")]


def stop(sim: Simulator, printer: LanPrinter) -> None:
    client = printer.mqtt()
    try:
        client.connect()
        client.stop_print(printer.serial)
    finally:
        client.disconnect()
    wait_for(lambda: printing(sim, printer.serial) is None, what="the print to stop")


def card_files(sim: Simulator, serial: str) -> set[str]:
    root = Path(sim.with_printer(serial, lambda p: str(p.card.root)))
    return {p.name for p in root.rglob("*") if p.is_file()}


def test_a_job_starts_and_the_printer_reports_it_with_the_marker(
    sim: Simulator, tmp_path: Path
) -> None:
    printer = lan(sim, IDLE)
    job = make_job(sim, tmp_path, IDLE, 4242, name="Bracket")
    before = report(printer)
    assert marked_job(before) != job.id
    fit = check(job, before)  # the rules, on the printer's real report
    assert fit.ok, fit.reason
    asyncio.run(start_job(job, printer, mapping=fit.mapping, timeout=30))
    try:
        assert wait_for(lambda: printing(sim, printer.serial)) == "[farm#4242] Bracket"
        seen = wait_for(
            lambda: (s := report(printer)).gcode_state in ("PREPARE", "RUNNING") and s,
            what="the printer to report the print",
        )
        assert marked_job(seen) == job.id
        assert seen.get("subtask_name") == task_name(job)
        assert Path(job.file).name in card_files(sim, printer.serial)
    finally:
        stop(sim, printer)
    # The mark stays after the print ended: a restarted farm still knows whose print it was.
    assert marked_job(report(printer)) == job.id


def test_a_busy_printer_gives_a_clear_start_error(sim: Simulator, tmp_path: Path) -> None:
    printer = lan(sim, BUSY)
    job = make_job(sim, tmp_path, BUSY, 11)
    before = print_commands(sim, printer.serial)
    with pytest.raises(StartError) as caught:
        asyncio.run(start_job(job, printer, timeout=30))
    error = caught.value
    assert "busy" in str(error) and "\n" not in str(error)
    assert error.serial == printer.serial and error.job_id == 11 and not error.uncertain
    assert print_commands(sim, printer.serial) == before
    assert Path(job.file).name not in card_files(sim, printer.serial)


def test_a_wrong_access_code_gives_a_clear_start_error(sim: Simulator, tmp_path: Path) -> None:
    printer = lan(sim, IDLE, access_code="00000000")
    job = make_job(sim, tmp_path, IDLE, 12)
    with pytest.raises(StartError) as caught:
        asyncio.run(start_job(job, printer, timeout=30))
    text = str(caught.value)
    assert text == f"printer {printer.serial} refused the access code"
    assert printing(sim, printer.serial) is None


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_printer_gives_a_clear_start_error(sim: Simulator, tmp_path: Path) -> None:
    printer = lan(sim, IDLE, mqtt_port=closed_port(), ftp_port=closed_port())
    job = make_job(sim, tmp_path, IDLE, 13)
    with pytest.raises(StartError) as caught:
        asyncio.run(start_job(job, printer, timeout=30))
    text = str(caught.value)
    assert printer.serial in text and "\n" not in text
    assert "cannot reach" in text or "unreachable" in text


def test_a_silent_printer_ends_at_the_deadline(sim: Simulator, tmp_path: Path) -> None:
    job = make_job(sim, tmp_path, IDLE, 14)
    with socket.socket() as silent:  # accepts connections (backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        printer = lan(sim, IDLE, mqtt_port=port, ftp_port=port, timeout=30.0)

        async def timed() -> float:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(StartError) as caught:
                await start_job(job, printer, timeout=1.0)
            assert "did not take the job within 1 s" in str(caught.value)
            assert caught.value.uncertain  # the worker could still have reached the printer
            return loop.time() - started

        assert asyncio.run(timed()) < 5


def test_a_full_card_refuses_the_upload(sim: Simulator, tmp_path: Path) -> None:
    printer = lan(sim, SPARE)
    job = make_job(sim, tmp_path, SPARE, 15)
    sim.set_card_free(printer.serial, 0)
    try:
        with pytest.raises(StartError) as caught:
            asyncio.run(start_job(job, printer, timeout=30))
    finally:
        sim.set_card_free(printer.serial, None)
    text = str(caught.value)
    assert text.startswith("upload refused: ") and "is full" in text and "\n" not in text
    assert printing(sim, printer.serial) is None


def test_a_file_changed_since_queued_is_not_started(sim: Simulator, tmp_path: Path) -> None:
    printer = lan(sim, SPARE)
    job = make_job(sim, tmp_path, SPARE, 16)
    before = print_commands(sim, printer.serial)
    with pytest.raises(StartError, match="changed since it was queued"):
        asyncio.run(start_job(replace(job, file_md5="f" * 32), printer, timeout=30))
    missing = replace(job, file=str(tmp_path / "gone.3mf"))
    with pytest.raises(StartError, match="cannot read the job's file"):
        asyncio.run(start_job(missing, printer, timeout=30))
    assert print_commands(sim, printer.serial) == before


def test_a_mapping_the_trays_no_longer_allow_is_refused(sim: Simulator, tmp_path: Path) -> None:
    printer = lan(sim, SPARE)
    job = make_job(sim, tmp_path, SPARE, 17)
    with pytest.raises(StartError) as caught:
        asyncio.run(start_job(job, printer, mapping=[99], timeout=30))
    assert str(caught.value).startswith("cannot print: ") and "tray 99" in str(caught.value)
    assert printing(sim, printer.serial) is None


@pytest.mark.parametrize(
    ("fields", "found"),
    [
        ({"subtask_name": "[farm#42] Cube"}, 42),
        ({"subtask_name": "Cube", "gcode_file": "/cache/[farm#7] cube.3mf"}, 7),
        ({"subtask_name": "Cube [farm#x]"}, None),
        ({"subtask_name": "farm#42 Cube"}, None),  # not a mark this farm wrote
        ({"subtask_name": 42}, None),
        ({}, None),
    ],
)
def test_marked_job_reads_the_mark_back(fields: dict[str, Any], found: int | None) -> None:
    assert (
        marked_job(PrinterState("01P00A000000001", {"gcode_state": "RUNNING", **fields})) == found
    )


def test_the_task_name_keeps_the_mark_first_and_the_name_on_one_line() -> None:
    job = Job(1, "a\nlong\tname " * 20, "/f.3mf", "", 1, Target(), Requirements())
    name = task_name(job)
    assert name.startswith(job_marker(1) + " a long name")
    assert "\n" not in name and "\t" not in name and len(name) <= 100
    with pytest.raises(ValueError, match="not negative"):
        job_marker(-1)
