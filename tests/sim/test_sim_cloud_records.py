"""The simulated cloud's records follow what its printers actually do, over real sockets.

The seed's ``POST /user/print`` makes the printer print; pause, resume, stop
(sent over the cloud broker) and finish show in the cloud's print status,
the history task (2 finished / 3 failed with end time, weight, length, cost
time) and the job; a busy or offline printer is refused; a job started on
the LAN moves the device's state without a history entry; an expired or
altered download URL fails as a printer fails.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bambulab.errors import CommandError
from bambulab.protocol import mqtt as proto
from bambulab.sim import Simulator
from bambulab.sim.config import parse_fleet
from bambulab.sim.printer.state import ERROR_DOWNLOAD_FAILED
from bambulab.sim.records import TASK_CREATED, TASK_FAILED, TASK_FINISHED
from bambulab.sim.threemf_writer import write_3mf
from tests.conftest import cloud_mqtt, unlimited, wait_for
from tests.sim.simtools import DEMO, assert_error, assert_old, authed, upload_file

PRINT = "/v1/iot-service/api/user/print"
CONFIRM = "/v1/iot-service/api/user/upload/confirm"
SEED = "01234567890ABCD"
BUSY = ("PREPARE", "RUNNING", "PAUSE")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    # The seed's device is half-way through a print, as in the demo world.
    config = unlimited().with_demo_fleet(parse_fleet("seed:printing,x1c,p1s,a1:offline"))
    with Simulator(config, time_scale=60, tick_interval=0.1) as simulator:
        yield simulator


@pytest.fixture
def http(sim: Simulator) -> Iterator[httpx.Client]:
    with authed(sim.cloud, DEMO) as client:
        yield client
    for serial in sim.printers:
        sim.with_printer(serial, _stop)


def _stop(printer: Any) -> None:
    if printer.state.active:
        printer.state.stop()


def serial_of(sim: Simulator, model: str) -> str:
    return next(d.dev_id for d in sim.world.devices.values() if d.model.key == model)


def status(http: httpx.Client, serial: str) -> dict[str, Any]:
    entry: dict[str, Any] = assert_old(http.get(PRINT, params={"device_id": serial}))["devices"][0]
    return entry


def job_of(http: httpx.Client, serial: str, job_id: str) -> dict[str, Any]:
    jobs = assert_old(http.get(PRINT, params={"device_id": serial}))["jobs"]
    return next(j for j in jobs if j["job_id"] == job_id)


def task(http: httpx.Client, task_id: int | str) -> dict[str, Any]:
    hit: dict[str, Any] = assert_old(http.get(f"/v1/iot-service/api/user/task/{task_id}"))
    return hit


def model_for(sim: Simulator, serial: str, name: str) -> bytes:
    """A small sliced 3MF whose filament is the one ``serial`` feeds from."""

    def feeding(printer: Any) -> str:
        ams = printer.state.ams
        tray = ams.tray_now if ams.spool(ams.tray_now) is not None else ams.first_loaded()
        spool = ams.spool(tray)
        return str(spool.tray_type) if spool is not None and spool.tray_type else "PLA"

    out = io.BytesIO()
    filament = (sim.with_printer(serial, feeding), "#FFFFFFFF")
    write_3mf(out, name=name, filaments=(filament,), seconds=3600, layers=40)
    return out.getvalue()


def start(sim: Simulator, http: httpx.Client, serial: str, name: str) -> dict[str, Any]:
    upload_file(http, name, model_for(sim, serial, name))
    started: dict[str, Any] = assert_old(
        http.post(PRINT, json={"device_id": serial, "file_name": name})
    )
    return started


@pytest.fixture
def printing_sim() -> Iterator[Simulator]:
    """A world of its own: the module's ``http`` fixture stops every print after each test."""
    config = unlimited().with_demo_fleet(parse_fleet("seed:printing"))
    with Simulator(config, time_scale=60, tick_interval=0.1) as simulator:
        yield simulator


def test_stop_of_the_running_seed_print_reaches_the_cloud(printing_sim: Simulator) -> None:
    sim = printing_sim
    with authed(sim.cloud, DEMO) as http:
        stop_and_watch(sim, http)


def stop_and_watch(sim: Simulator, http: httpx.Client) -> None:
    before = status(http, SEED)
    assert before["task_status"] == "RUNNING"
    running_task = before["task_id"]
    mqtt = cloud_mqtt(sim, [SEED])
    mqtt.connect()
    try:
        mqtt.stop(SEED)
    finally:
        mqtt.disconnect()
    after = wait_for(lambda: (s := status(http, SEED))["task_status"] == "FAILED" and s, 5)
    assert after["progress"] == 0 and after["task_id"] == running_task
    ended = task(http, running_task)
    assert ended["status"] == TASK_FAILED and ended["endTime"] >= ended["startTime"]


def test_cloud_print_runs_pauses_resumes_and_stops(sim: Simulator, http: httpx.Client) -> None:
    serial = serial_of(sim, "x1c")
    started = start(sim, http, serial, "cycle.3mf")
    on_printer = sim.with_printer(serial, lambda p: p.truth())
    assert on_printer["gcode_state"] in BUSY and on_printer["task_id"] == str(started["task_id"])
    assert on_printer["gcode_file"] == "cycle.3mf"
    wait_for(lambda: status(http, serial)["task_status"] in ("PREPARE", "RUNNING"), 5)
    assert job_of(http, serial, started["job_id"])["status"] == "running"
    mqtt = cloud_mqtt(sim, [serial])
    mqtt.connect()
    try:
        mqtt.pause(serial)
        wait_for(lambda: status(http, serial)["task_status"] == "PAUSE", 5, "PAUSE in the cloud")
        assert job_of(http, serial, started["job_id"])["status"] == "paused"
        assert task(http, started["task_id"])["status"] == TASK_CREATED
        mqtt.resume(serial)
        wait_for(lambda: status(http, serial)["task_status"] != "PAUSE", 5, "resumed")
        mqtt.stop(serial)
    finally:
        mqtt.disconnect()
    wait_for(lambda: status(http, serial)["task_status"] == "FAILED", 5, "FAILED in the cloud")
    ended = task(http, started["task_id"])
    assert ended["status"] == TASK_FAILED
    assert job_of(http, serial, started["job_id"])["status"] == "failed"


def test_a_finished_cloud_print_is_recorded(sim: Simulator, http: httpx.Client) -> None:
    serial = serial_of(sim, "p1s")
    started = start(sim, http, serial, "short.3mf")
    wait_for(lambda: status(http, serial)["task_status"] in BUSY, 5)
    progress = wait_for(lambda: (p := status(http, serial)["progress"]) > 0 and p, 20)
    assert 0 < progress <= 100
    sim.advance_clock(6 * 3600)  # long enough for any sample job
    wait_for(lambda: status(http, serial)["task_status"] == "FINISH", 10, "FINISH")
    done = task(http, started["task_id"])
    assert done["status"] == TASK_FINISHED
    assert done["weight"] > 0 and done["length"] > 0 and done["costTime"] > 0
    assert done["endTime"] >= done["startTime"]
    assert job_of(http, serial, started["job_id"])["status"] == "finished"
    assert status(http, serial)["progress"] == 100


def test_busy_and_offline_printers_are_refused(sim: Simulator, http: httpx.Client) -> None:
    serial = serial_of(sim, "x1c")
    start(sim, http, serial, "first.3mf")
    wait_for(lambda: status(http, serial)["task_status"] in BUSY, 5)
    tasks_before = len(sim.world.tasks)
    upload_file(http, "second.3mf", b"PK\x03\x04 second")
    refused = http.post(PRINT, json={"device_id": serial, "file_name": "second.3mf"})
    assert "busy" in assert_error(refused, 400, 1005)["message"]
    offline = serial_of(sim, "a1")
    gone = http.post(PRINT, json={"device_id": offline, "file_name": "second.3mf"})
    assert_error(gone, 400, 1004)
    assert len(sim.world.tasks) == tasks_before
    assert sim.with_printer(serial, lambda p: p.state.job.gcode_file) == "first.3mf"


def test_lan_started_job_moves_the_device_but_makes_no_task(
    sim: Simulator, http: httpx.Client
) -> None:
    serial = serial_of(sim, "p1s")
    tasks_before = len(sim.world.tasks)
    sim.with_printer(serial, lambda p: p.start_job(name="From the LAN", minutes=300))
    entry = wait_for(lambda: (s := status(http, serial))["task_status"] in BUSY and s, 5)
    assert entry["task_name"] == "From the LAN"
    assert len(sim.world.tasks) == tasks_before


def test_expired_download_url_fails_like_a_printer(sim: Simulator, http: httpx.Client) -> None:
    serial = serial_of(sim, "x1c")
    file_id = upload_file(http, "late.3mf", model_for(sim, serial, "late"))
    confirmed = assert_old(http.post(CONFIRM, json={"file_id": file_id}))
    sim.advance_clock(sim.config.url_ttl + 60)
    mqtt = cloud_mqtt(sim, [serial])
    mqtt.connect()
    try:
        command = proto.project_file(confirmed["file_url"], 1, md5=confirmed["md5"])
        with pytest.raises(CommandError, match=r"AccessDenied"):
            mqtt.send(command, serial)
    finally:
        mqtt.disconnect()
    assert sim.with_printer(serial, lambda p: p.state.print_error) == ERROR_DOWNLOAD_FAILED
