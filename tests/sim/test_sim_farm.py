"""The simulated print farm: a seeded mix of printers that print, fail now and then, go offline.

Everything is driven the way a farm server would drive it: sliced 3MFs
uploaded over FTPS and started with ``project_file`` on the printers' own
brokers, state read back from their reports with the library's MQTT client,
the simulator's farm controls over HTTP. Time runs 300 times faster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bambulab import BambuClient, BambuMQTT
from bambulab.cloud.printing import print_many_cloud
from bambulab.errors import CommandError
from bambulab.local.lan_print import LanPrinter, print_file
from bambulab.models.printer import HMSEntry
from bambulab.sim.command import build_parser, main
from bambulab.sim.live import Simulator
from bambulab.sim.threemf_writer import write_3mf
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(120)

SEED = 11
SCALE = 300.0
PRINT_SECONDS = 600.0  # the plate's prediction: 2 s of real time at SCALE
RUNOUT_ERROR = 0x07008011
RUNOUT_CODE = 0x00020001
CLOG_ERROR = 0x03008016
CLOG_HMS = HMSEntry(0x08001A00, 0x00020001)


@pytest.fixture(scope="module")
def farm() -> Iterator[Simulator]:
    with Simulator(
        printers=6, seed=SEED, time_scale=SCALE, tick_interval=0.1, camera=False
    ) as simulator:
        yield simulator


@pytest.fixture
def http(farm: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=farm.url, timeout=10) as client:
        yield client


def with_ams(sim: Simulator) -> list[str]:
    """Serials of the farm printers that have an AMS unit with a loaded tray."""
    found = []
    for endpoint in sim.endpoints():
        units = sim.with_printer(endpoint.serial, lambda p: p.truth()["ams"]["ams"])
        if any(t.get("tray_type") for u in units for t in u["tray"]):
            found.append(endpoint.serial)
    return found


def lan_printer(sim: Simulator, serial: str) -> LanPrinter:
    host, port = sim.lan_address(serial)
    return LanPrinter(
        host=host,
        serial=serial,
        access_code=sim.printers[serial].access_code,
        mqtt_port=port,
        ftp_port=sim.ftps_address(serial)[1],
        ca_file=sim.ca_file,
        timeout=10.0,
    )


def watch(sim: Simulator, serial: str) -> BambuMQTT:
    host, port = sim.lan_address(serial)
    client = BambuMQTT.lan(
        host, serial, sim.printers[serial].access_code, port=port, ca_file=sim.ca_file
    )
    client.connect(timeout=10)
    wait_for(lambda: client.state(serial).gcode_state, what="a first report")
    return client


def sliced_for(client: BambuMQTT, serial: str, path: Path) -> Path:
    """A 3MF of one filament the printer has loaded (its trays are generated)."""
    tray = next(t for t in client.state(serial).trays if not t.empty and t.remain != 0)
    colour = "#" + (tray.colour or "FFFFFFFF")
    write_3mf(path, filaments=((tray.type, colour),), layers=20, seconds=PRINT_SECONDS)
    return path


def start(sim: Simulator, serial: str, path: Path) -> None:
    print_file(path, printer=lan_printer(sim, serial))  # raises when the printer refuses


def state_of(client: BambuMQTT, serial: str, *states: str, timeout: float = 30) -> Any:
    return wait_for(
        lambda: client.state(serial) if client.state(serial).gcode_state in states else None,
        timeout=timeout,
        what=f"{serial} to reach {'/'.join(states)}",
    )


# --- the fleet ------------------------------------------------------------------------------


def devices(seed: int, count: int = 40) -> list[dict[str, Any]]:
    with Simulator(printers=count, seed=seed, mqtt=False) as sim:
        listed = httpx.get(f"{sim.url}/sim/devices", timeout=10).json()["devices"]
        owner = sim.demo_account.login
    return [d for d in listed if d["owner"] == owner]


def test_a_seed_gives_the_same_mix_of_models_and_ams_loads() -> None:
    first = devices(5)
    assert len(first) == 40
    models = {d["model"] for d in first}
    assert {"p1s", "x1c", "a1", "a1mini", "p1p"} <= models
    without_ams = [d for d in first if not d["ams"]]
    assert 0 < len(without_ams) < 20
    trays = [t for d in first for u in d["ams"] for t in u["trays"] if t["tray_type"]]
    assert len({t["tray_type"] for t in trays}) >= 4
    assert len({t["tray_color"] for t in trays}) >= 6
    loads = [
        tuple((t["tray_type"], t["tray_color"]) for u in d["ams"] for t in u["trays"])
        for d in first
    ]
    assert len(set(loads)) > 30  # printers differ in what they hold
    assert len({d["dev_id"] for d in first}) == len({d["name"] for d in first}) == 40

    def identity(listed: list[dict[str, Any]]) -> list[Any]:
        return [(d["dev_id"], d["name"], d["model"], d["ams"]) for d in listed]

    assert identity(devices(5)) == identity(first)
    assert identity(devices(6)) != identity(first)


def test_farm_controls_answer_what_the_farm_is(http: httpx.Client, farm: Simulator) -> None:
    info = http.get("/sim/farm").json()
    assert info == {"farm": True, "printers": 6, "fail_rate": 0.0, "flaky_rate": 0.0, "outages": 0}
    serial = farm.endpoints()[0].serial
    bad = http.post(f"/sim/farm/printers/{serial}/fail", json={"kind": "meteor"})
    assert bad.status_code == 400 and "kind must be one of" in bad.json()["message"]
    unknown = http.post("/sim/farm/printers/NOPE/refill", json={"ams_id": 0, "slot": 0})
    assert unknown.status_code == 400
    no_slot = http.post(f"/sim/farm/printers/{serial}/refill", json={"ams_id": 3, "slot": 9})
    assert no_slot.status_code == 400


# --- printing ---------------------------------------------------------------------------------


def test_a_lan_print_runs_to_finish_at_the_time_scale_and_stays_finished(
    farm: Simulator, tmp_path: Path
) -> None:
    serial = farm.endpoints()[1].serial
    client = watch(farm, serial)
    try:
        path = sliced_for(client, serial, tmp_path / "plate.3mf")
        start(farm, serial, path)
        running = state_of(client, serial, "RUNNING")
        began = time.monotonic()
        # The plate's prediction, as the printer counts it down (10 minutes).
        assert running.remaining_minutes in (PRINT_SECONDS / 60, PRINT_SECONDS / 60 - 1)
        done = state_of(client, serial, "FINISH")
        took = time.monotonic() - began
        assert took >= 0.8 * PRINT_SECONDS / SCALE
        assert (done.percent, done.remaining_minutes, done.print_error.value) == (100, 0, 0)
        # The plate is still on the bed: nothing moves it on but the next print.
        later = time.monotonic() + 1.0  # another 300 simulated seconds
        while time.monotonic() < later:
            assert client.state(serial).gcode_state == "FINISH"
            time.sleep(0.05)
        start(farm, serial, path)
        state_of(client, serial, "PREPARE", "RUNNING")
        state_of(client, serial, "FINISH")
    finally:
        client.close()


def test_a_cloud_print_runs_to_finish_too(
    farm: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for line in farm.export_lines():  # what `eval "$(bambu sim)"` sets: brokers, CA
        name, _, value = line.removeprefix("export ").partition("=")
        monkeypatch.setenv(name, value.strip("'"))
    serial = farm.endpoints()[3].serial
    client = watch(farm, serial)
    try:
        path = sliced_for(client, serial, tmp_path / "cloud.3mf")
        cloud = BambuClient(token=farm.issue_token(farm.demo_account.email), base_url=farm.url)
        with cloud:
            [outcome] = print_many_cloud(cloud, path, [serial])
        assert outcome.ok, outcome.error
        running = state_of(client, serial, "RUNNING")
        assert running.print_type == "cloud"
        state_of(client, serial, "FINISH")
    finally:
        client.close()


def test_a_runout_pauses_and_resumes_only_after_the_slot_is_refilled(
    farm: Simulator, http: httpx.Client, tmp_path: Path
) -> None:
    serial = with_ams(farm)[0]
    client = watch(farm, serial)
    try:
        armed = http.post(f"/sim/farm/printers/{serial}/fail", json={"kind": "runout", "at": 0.3})
        assert armed.status_code == 200
        start(farm, serial, sliced_for(client, serial, tmp_path / "runout.3mf"))
        running = state_of(client, serial, "RUNNING")
        tray = next(t for t in running.trays if t.global_id == running.tray_now)
        paused = state_of(client, serial, "PAUSE")
        unit, slot = tray.ams_id, tray.id
        assert paused.stage == 6  # paused due to filament runout
        assert paused.print_error.value == RUNOUT_ERROR
        assert HMSEntry(0x07002000 | unit << 16 | slot << 8, RUNOUT_CODE) in paused.hms
        assert 25 <= paused.percent <= 40
        with pytest.raises(CommandError, match="still empty"):
            client.resume(serial)
        assert client.state(serial).gcode_state == "PAUSE"

        refilled = http.post(
            f"/sim/farm/printers/{serial}/refill", json={"ams_id": unit, "slot": slot}
        )
        assert refilled.status_code == 200
        client.resume(serial)
        resumed = state_of(client, serial, "RUNNING")
        assert resumed.print_error.value == 0 and resumed.hms == ()
        finished = state_of(client, serial, "FINISH")
        assert finished.print_error.value == 0
    finally:
        client.close()


def test_a_clogged_nozzle_fails_the_print_with_its_error(farm: Simulator, tmp_path: Path) -> None:
    serial = farm.endpoints()[2].serial
    client = watch(farm, serial)
    try:
        path = sliced_for(client, serial, tmp_path / "clog.3mf")
        farm.fail_next(serial, "clog", at=0.5)
        start(farm, serial, path)
        failed = state_of(client, serial, "FAILED")
        assert failed.print_error.value == CLOG_ERROR
        assert failed.print_error.text == "The nozzle is clogged with filament."
        assert CLOG_HMS in failed.hms
        assert 45 <= failed.percent <= 60
        with pytest.raises(CommandError):
            client.resume(serial)  # a failed print is over
        # Someone cleaned the nozzle: the next print starts clean and finishes.
        start(farm, serial, path)
        running = state_of(client, serial, "PREPARE", "RUNNING")
        assert CLOG_HMS not in running.hms and running.print_error.value == 0
        state_of(client, serial, "FINISH")
    finally:
        client.close()


def failures(tmp_path: Path, seed: int) -> list[tuple[str, int, str, int]]:
    """(printer, round, kind, percent done) of two rounds of prints on a farm failing them all."""
    with Simulator(
        printers=3, seed=seed, fail_rate=1.0, time_scale=SCALE, tick_interval=0.1, camera=False
    ) as sim:
        serials = with_ams(sim)[:2]
        clients = {s: watch(sim, s) for s in serials}
        seen = []
        try:
            for round_ in range(2):
                for serial, client in clients.items():
                    start(sim, serial, sliced_for(client, serial, tmp_path / f"{round_}.3mf"))
                for index, (serial, client) in enumerate(clients.items()):
                    ended = state_of(client, serial, "PAUSE", "FAILED", "FINISH")
                    assert ended.gcode_state != "FINISH"
                    if ended.gcode_state == "PAUSE":
                        assert ended.print_error.value == RUNOUT_ERROR
                        seen.append((f"printer {index}", round_, "runout", ended.percent))
                        client.stop(serial)
                        state_of(client, serial, "FAILED")
                    else:
                        assert ended.print_error.value == CLOG_ERROR
                        seen.append((f"printer {index}", round_, "clog", ended.percent))
        finally:
            for client in clients.values():
                client.close()
    return seen


def test_with_fail_rate_one_every_print_fails_the_same_way_for_a_seed(tmp_path: Path) -> None:
    first = failures(tmp_path, 15)
    assert sorted(kind for _, _, kind, _ in first) == ["clog", "clog", "runout", "runout"]
    assert all(5 <= percent <= 95 for *_, percent in first)
    assert failures(tmp_path, 15) == first  # seeded: which prints fail, how, and where


def test_a_flaky_printer_goes_offline_and_comes_back() -> None:
    with Simulator(
        printers=3, seed=SEED, flaky_rate=6.0, time_scale=600, lan=False, camera=False
    ) as sim:
        serials = [e.serial for e in sim.endpoints()]

        def online() -> dict[str, bool]:
            listed = httpx.get(f"{sim.url}/sim/devices", timeout=10).json()["devices"]
            return {d["dev_id"]: d["online"] for d in listed if d["dev_id"] in serials}

        went = wait_for(
            lambda: [s for s, up in online().items() if not up], what="a printer to drop"
        )
        wait_for(lambda: online()[went[0]], what=f"{went[0]} to come back")
        assert httpx.get(f"{sim.url}/sim/farm", timeout=10).json()["outages"] >= 1


# --- the command line ---------------------------------------------------------------------------


def test_bambu_sim_farm_options(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        ["--printers", "50", "--fail-rate", "0.1", "--flaky-rate", "2"]
    )
    assert (args.printers, args.fail_rate, args.flaky_rate) == (50, 0.1, 2.0)
    help_text = build_parser().format_help()
    for flag in ("--printers N", "--fail-rate R", "--flaky-rate R"):
        assert flag in help_text
    assert main(["--port", "0", "--printers", "3", "--fleet", "x1c"]) == 2
    assert "--fleet and --printers" in capsys.readouterr().err
    assert main(["--port", "0", "--printers", "3", "--fail-rate", "1.5"]) == 2
    assert "fail_rate is a share of prints" in capsys.readouterr().err
    assert main(["--port", "0", "--printers", "0"]) == 2
    assert "printers must be" in capsys.readouterr().err
