"""LAN printing against the simulated printers: FTPS upload, then project_file over LAN MQTT.

Real sockets on loopback: the printers' own brokers and FTPS servers. What
the printer does is read back from the simulated printer itself (its job:
file, trays, timelapse), not from what the client believes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bambulab.errors import AmsMappingError, PrinterBusyError, ThreeMFError
from bambulab.local.lan_print import (
    LanPrinter,
    print_existing,
    print_file,
    print_file_async,
    print_many,
    print_many_async,
)
from bambulab.models import PrintOptions
from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from bambulab.sim.threemf_writer import write_3mf, write_gcode
from tests.conftest import unlimited, wait_for

pytestmark = pytest.mark.timeout(120)

FLEET = ["p1s:idle", "x1c:idle", "h2d:idle", "a1:idle", "p1s:printing"]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = unlimited().with_demo_fleet(parse_fleet(FLEET))
    with Simulator(config, time_scale=60, tick_interval=0.2) as simulator:
        yield simulator


def printer(sim: Simulator, index: int, **kw: Any) -> LanPrinter:
    endpoint = sim.endpoints()[index]
    assert endpoint.host is not None and endpoint.port is not None
    assert endpoint.ftp_port is not None
    fields: dict[str, Any] = {
        "host": endpoint.host,
        "serial": endpoint.serial,
        "access_code": sim.printers[endpoint.serial].access_code,
        "mqtt_port": endpoint.port,
        "ftp_port": endpoint.ftp_port,
        "ca_file": sim.ca_file,
        "timeout": 10.0,
    }
    fields.update(kw)
    return LanPrinter(**fields)


def job(sim: Simulator, serial: str) -> dict[str, Any] | None:
    def read(p: Any) -> dict[str, Any] | None:
        current = p.state.job
        if current is None or not p.state.active:
            return None
        return {
            "file": current.gcode_file,
            "name": current.subtask_name,
            "feeds": [tray for tray, _ in current.feeds] or [current.tray],
            "timelapse": current.timelapse,
        }

    return sim.with_printer(serial, read)  # type: ignore[no-any-return]


def received(sim: Simulator, serial: str) -> list[str]:
    names: list[str] = sim.with_printer(serial, lambda p: [n for n, _ in p.received])
    return names


def stop(sim: Simulator, serial: str) -> None:
    payload = json.dumps({"print": {"command": "stop", "sequence_id": "t", "param": ""}})
    sim.with_printer(serial, lambda p: p.handle_request(payload.encode()))
    wait_for(lambda: job(sim, serial) is None, what="the print to stop")


def card(sim: Simulator, serial: str) -> Path:
    return Path(sim.with_printer(serial, lambda p: str(p.card.root)))


def loaded(sim: Simulator, serial: str) -> list[tuple[str, str]]:
    """(type, colour) of the printer's loaded AMS trays."""

    def read(p: Any) -> list[tuple[str, str]]:
        units = p.truth().get("ams", {}).get("ams", [])
        return [
            (t["tray_type"], "#" + t.get("tray_color", "FFFFFFFF"))
            for u in units
            for t in u.get("tray", [])
            if t.get("tray_type")
        ]

    return sim.with_printer(serial, read)  # type: ignore[no-any-return]


def filament_for(sim: Simulator, *indexes: int) -> tuple[str, str]:
    """A filament every one of these printers has loaded (their trays are generated)."""
    serials = [sim.endpoints()[i].serial for i in indexes]
    first = loaded(sim, serials[0])
    for kind, colour in first:
        if all(any(k == kind for k, _ in loaded(sim, s)) for s in serials[1:]):
            return kind, colour
    raise AssertionError("no filament type loaded on all of these printers")


def write_for(sim: Simulator, path: Path, *indexes: int, **kw: Any) -> Path:
    write_3mf(path, filaments=(filament_for(sim, *indexes),), layers=20, seconds=300, **kw)
    return path


@pytest.fixture
def cube(sim: Simulator, tmp_path: Path) -> Path:
    """A file printable on printers 0 and 3 (P1S and A1), the ones most tests use."""
    return write_for(sim, tmp_path / "cube.3mf", 0, 3, name="Cube", printer_model="P1S")


def test_print_a_3mf_uploads_then_prints_it(sim: Simulator, cube: Path) -> None:
    target = printer(sim, 0)
    seen: list[int] = []
    options = PrintOptions(timelapse=True)
    outcome = print_file(
        cube,
        printer=target,
        options=options,
        progress=lambda done, total: seen.append(done),
    )
    try:
        assert outcome.ok and outcome.uploaded and outcome.error is None
        assert outcome.url == "file:///sdcard/cube.3mf"  # the P1 form
        assert (card(sim, target.serial) / "cube.3mf").read_bytes() == cube.read_bytes()
        assert seen and seen[-1] == cube.stat().st_size
        running = wait_for(lambda: job(sim, target.serial), what="the printer to print")
        assert running["file"].endswith("cube.3mf")
        assert running["timelapse"] is True
        assert outcome.ams_mapping and running["feeds"][0] == outcome.ams_mapping[0]
    finally:
        stop(sim, target.serial)

    # Printing the same file again does not upload it again.
    again = print_file(cube, printer=target, options=PrintOptions(ams_mapping="auto"))
    try:
        assert again.ok and not again.uploaded
    finally:
        stop(sim, target.serial)


def test_same_size_other_bytes_is_uploaded(sim: Simulator, cube: Path, tmp_path: Path) -> None:
    target = printer(sim, 3)  # A1
    data = cube.read_bytes()
    (card(sim, target.serial) / "cube.3mf").write_bytes(b"\0" * len(data))
    outcome = print_file(cube, printer=target)
    try:
        assert outcome.ok and outcome.uploaded
        assert (card(sim, target.serial) / "cube.3mf").read_bytes() == data
    finally:
        stop(sim, target.serial)


def test_h2_gets_the_ftp_url_form(sim: Simulator, tmp_path: Path) -> None:
    target = printer(sim, 2)
    path = tmp_path / "h2.3mf"
    write_for(sim, path, 2, name="H2", printer_model="H2D")
    outcome = print_file(path, printer=target, remote_dir="/cache")
    try:
        assert outcome.ok and outcome.url == "ftp:///cache/h2.3mf"
        assert wait_for(lambda: job(sim, target.serial))["file"].endswith("h2.3mf")
    finally:
        stop(sim, target.serial)


def test_busy_printer_refuses_before_anything_is_sent(sim: Simulator, cube: Path) -> None:
    target = printer(sim, 4)  # printing
    before = [n for n in received(sim, target.serial) if n.startswith("print.")]
    with pytest.raises(PrinterBusyError) as caught:
        print_file(cube, printer=target)
    assert "busy" in str(caught.value) and "\n" not in str(caught.value)
    after = [n for n in received(sim, target.serial) if n.startswith("print.")]
    assert after == before
    assert not (card(sim, target.serial) / "cube.3mf").exists()


def test_impossible_ams_mapping_refuses_before_anything_is_sent(
    sim: Simulator, tmp_path: Path
) -> None:
    target = printer(sim, 1)
    path = tmp_path / "tpu.3mf"
    write_3mf(path, name="Flex", filaments=(("TPU", "#00FF00FF"),))
    before = [n for n in received(sim, target.serial) if n.startswith("print.")]
    with pytest.raises(AmsMappingError):
        print_file(path, printer=target)
    assert [n for n in received(sim, target.serial) if n.startswith("print.")] == before
    assert not (card(sim, target.serial) / "tpu.3mf").exists()


def test_unsliced_file_is_refused_locally(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "raw.3mf"
    write_3mf(path, sliced=False)
    with pytest.raises(ThreeMFError):
        print_file(path, printer=printer(sim, 1))


def test_print_existing_gcode_and_3mf(sim: Simulator, tmp_path: Path) -> None:
    target = printer(sim, 1)  # X1C
    write_gcode(card(sim, target.serial) / "cache" / "line.gcode", layers=5, seconds=60)
    outcome = print_existing("/cache/line.gcode", printer=target)
    try:
        assert outcome.ok and not outcome.uploaded and outcome.url == "/cache/line.gcode"
        assert "print.gcode_file" in received(sim, target.serial)
        assert wait_for(lambda: job(sim, target.serial))["file"].endswith("line.gcode")
    finally:
        stop(sim, target.serial)
    write_for(sim, card(sim, target.serial) / "cache" / "there.3mf", 1, printer_model="X1C")
    outcome = print_existing("/cache/there.3mf", printer=target)
    try:
        assert outcome.ok and outcome.url == "file:///sdcard/cache/there.3mf"
        assert outcome.ams_mapping
    finally:
        stop(sim, target.serial)


def test_print_many_one_failure_does_not_stop_the_others(sim: Simulator, cube: Path) -> None:
    good = [printer(sim, 0), printer(sim, 3)]
    wrong = printer(sim, 1, access_code="00000000")
    busy = printer(sim, 4)
    outcomes = print_many(cube, [good[0], wrong, busy, good[1]])
    try:
        assert [o.serial for o in outcomes] == [
            good[0].serial,
            wrong.serial,
            busy.serial,
            good[1].serial,
        ]
        by = {o.serial: o for o in outcomes}
        assert by[good[0].serial].ok and by[good[1].serial].ok
        assert not by[wrong.serial].ok and "access code" in (by[wrong.serial].error or "")
        assert "00000000" not in (by[wrong.serial].error or "")
        assert not by[busy.serial].ok and "busy" in (by[busy.serial].error or "")
        for p in good:
            assert wait_for(lambda p=p: job(sim, p.serial))
    finally:
        for p in good:
            stop(sim, p.serial)


def test_async_face(sim: Simulator, cube: Path) -> None:
    targets = [printer(sim, 0), printer(sim, 3)]

    async def main() -> tuple[Any, list[Any], list[int]]:
        seen: list[int] = []
        one = await print_file_async(cube, printer=targets[0], progress=lambda d, t: seen.append(d))
        stop(sim, targets[0].serial)
        many = await print_many_async(cube, targets, PrintOptions(bed_levelling=False))
        await asyncio.sleep(0)
        return one, many, seen

    try:
        one, many, _ = asyncio.run(main())
        assert one.ok
        assert [o.ok for o in many] == [True, True]
    finally:
        for p in targets:
            if job(sim, p.serial):
                stop(sim, p.serial)
