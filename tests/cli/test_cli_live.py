"""Live ``bambu`` commands over MQTT, end to end: subprocesses against a running ``Simulator``.

One simulator (cloud, cloud broker, one TLS broker per printer, live
printers at 20x speed) serves the module. Each printer of the demo account
has its role so that the tests do not step on each other:

* ``P1S 1`` (printing from the start): status, pause/resume, speed, watch;
* ``X1 Carbon 1`` (idle): light, heaters, fans, G-code;
* ``P1S 2``: a job that runs out of filament (HMS), then ``stop --yes``;
* ``A1 mini 1``: LAN mode (its own broker), wrong code, wrong certificate;
* ``A1 1``: offline.

Every run's output is checked for the token and the LAN access codes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bambulab.sim import Simulator
from tests.cli.conftest import Background, Bambu, Result, login, unlimited_config
from tests.cli.test_cli_commands import Terminal
from tests.cli.test_cli_startup import probe

# Fast, but slow enough that the seed printer's long job outlasts the module.
TIME_SCALE = 20.0
TICK = 0.5
BOUNDED = 14.0  # seconds: a failing live command gives up within ~10 s
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ")  # a watch log line


@dataclass
class LiveBambu(Bambu):
    """A runner whose environment also points the MQTT layer at the simulator."""

    mqtt_env: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        env = super().env()
        env.update(self.mqtt_env)
        env.update(extra)
        return env

    @classmethod
    def logged_in(cls, sim: Simulator, home: Path) -> LiveBambu:
        """A runner logged in to ``sim``'s demo account, its cloud broker in the environment."""
        assert sim.ca_file is not None
        runner = cls(
            home=home,
            api_url=sim.url,
            mqtt_env={
                "BAMBU_MQTT_HOST": sim.mqtt_host,
                "BAMBU_MQTT_PORT": str(sim.mqtt_port),
                "BAMBU_CA_FILE": sim.ca_file,
            },
        )
        login(runner, sim.cloud)
        return runner


@pytest.fixture(scope="module")
def live_sim() -> Iterator[Simulator]:
    with Simulator(unlimited_config(), time_scale=TIME_SCALE, tick_interval=TICK) as sim:
        yield sim


@pytest.fixture(scope="module")
def serials(live_sim: Simulator) -> dict[str, str]:
    """Printer name → serial, for the demo account."""
    return {device.name: device.dev_id for device in live_sim.world.devices_of(live_sim.user_id)}


@pytest.fixture(scope="module")
def user(live_sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> LiveBambu:
    """A logged-in runner for the demo account, cloud broker in its environment."""
    runner = LiveBambu.logged_in(live_sim, tmp_path_factory.mktemp("live-home"))
    all_serials = [e.serial for e in live_sim.endpoints()]
    for endpoint in live_sim.endpoints():
        # A code that is part of a serial (the seed printer's) would flag every table.
        if not any(endpoint.access_code in s for s in all_serials):
            runner.secrets.add(endpoint.access_code)
    return runner


def one_error_line(result: Result) -> str:
    """The single ``error:`` line of a failed run (nothing on stdout, no traceback)."""
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith("error: "), result
    assert "Traceback" not in result.stderr
    assert result.stdout == "", result
    return lines[0]


def status_json(user: LiveBambu, printer: str) -> dict[str, Any]:
    result = user("status", printer, "--json")
    assert result.returncode == 0, result
    data: dict[str, Any] = result.json()
    return data


def eventually(
    user: LiveBambu, printer: str, check: Callable[[dict[str, Any]], bool], timeout: float = 8.0
) -> dict[str, Any]:
    """``status --json`` until ``check`` holds (a command's effect shows in the next report)."""
    deadline = time.monotonic() + timeout
    while True:
        data = status_json(user, printer)
        if check(data):
            return data
        assert time.monotonic() < deadline, f"never true for {printer}: {data}"
        time.sleep(0.2)


def start_job(sim: Simulator, serial: str, name: str, progress: float) -> None:
    """A fresh job on ``serial``, whatever an earlier test left running or paused."""

    def run(printer: Any) -> None:
        if printer.state.active:  # stopped as a client would, so start_job accepts
            printer.handle_request(
                b'{"print": {"command": "stop", "sequence_id": "", "param": ""}}'
            )
        printer.start_job(name, progress=progress)

    sim.with_printer(serial, run)


# --- reading ---------------------------------------------------------------------------------


def test_status_table_and_json(
    user: LiveBambu, live_sim: Simulator, serials: dict[str, str]
) -> None:
    table = user("status", "P1S 1")
    assert table.returncode == 0, table
    out = table.stdout
    assert f"P1S 1 ({serials['P1S 1']})" in out
    for label in ("model", "state", "stage", "job", "progress", "layer", "remaining"):
        assert f"  {label} " in out, out
    for label in ("nozzle", "bed", "fans", "speed", "lights", "Wi-Fi", "print error", "HMS"):
        assert f"  {label} " in out, out
    assert "P1P (C11)" in out
    assert " °C" in out and "part " in out

    data = status_json(user, serials["P1S 1"])  # by serial this time
    assert data["serial"] == serials["P1S 1"]
    assert data["model"] == "P1P"
    assert data["gcode_state"] in ("PREPARE", "RUNNING")
    truth = live_sim.with_printer(serials["P1S 1"], lambda p: p.truth())
    assert data["job"] == truth["subtask_name"] != ""
    assert isinstance(data["percent"], int)
    assert isinstance(data["nozzle_temp"], float)
    assert set(data["fans"]) == {"part", "aux", "chamber"}
    assert data["ams"] and data["ams"][0]["trays"]


def test_status_defaults_to_the_first_online_printer(
    user: LiveBambu, serials: dict[str, str]
) -> None:
    result = user("status", "--json")
    assert result.returncode == 0, result
    assert result.json()["serial"] == serials["P1S 1"]


def test_ams_shows_trays_with_colour_swatches(user: LiveBambu, serials: dict[str, str]) -> None:
    result = user("ams", "X1 Carbon 1")
    assert result.returncode == 0, result
    out = result.stdout
    assert "AMS 1" in out
    assert "\u2588\u2588 #" in out  # the swatch and the hex colour
    assert "Humidity" in out and "Remaining" in out
    assert "External" in out
    data = user("ams", "X1 Carbon 1", "--json").json()
    assert data["serial"] == serials["X1 Carbon 1"]
    trays = [t for unit in data["units"] for t in unit["trays"]]
    assert trays and all({"type", "colour", "remain", "active"} <= set(t) for t in trays)
    assert data["units"][0]["kind"].startswith("AMS")


def test_hms_after_a_runout(user: LiveBambu, live_sim: Simulator, serials: dict[str, str]) -> None:
    serial = serials["P1S 2"]

    start_job(live_sim, serial, "Runout Test", 0.2)
    live_sim.with_printer(serial, lambda printer: printer.runout(0, 1))
    eventually(user, "P1S 2", lambda d: d["gcode_state"] == "PAUSE" and bool(d["hms"]))

    result = user("hms", "P1S 2")
    assert result.returncode == 0, result
    out = result.stdout
    assert "0700_2100_0002_0001" in out
    assert "serious" in out
    assert "https://wiki.bambulab.com/en/hms/0700_2100_0002_0001" in out
    assert "print error" in out and "0700_8011" in out

    data = user("hms", "P1S 2", "--json").json()
    assert data["hms"][0]["code"] == "0700_2100_0002_0001"
    assert data["hms"][0]["severity"] == "serious"
    assert data["hms"][0]["module"] == "AMS"
    assert data["print_error"]["code"] == "0700_8011"

    status = user("status", "P1S 2")
    assert "Health (HMS)" in status.stdout and "0700_2100_0002_0001" in status.stdout


def test_hms_when_healthy(user: LiveBambu) -> None:
    result = user("hms", "X1 Carbon 1")
    assert result.returncode == 0, result
    assert "no active HMS entries" in result.stdout


# --- control -----------------------------------------------------------------------------------


def test_pause_and_resume(user: LiveBambu) -> None:
    paused = user("pause", "P1S 1")
    assert paused.returncode == 0, paused
    assert paused.stdout.strip() == "P1S 1: paused"
    eventually(user, "P1S 1", lambda d: d["gcode_state"] == "PAUSE")

    again = user("pause", "P1S 1")  # the printer's refusal, in one line
    line = one_error_line(again)
    assert "refused pause" in line and "already paused" in line

    resumed = user("resume", "P1S 1", "--json")
    assert resumed.returncode == 0, resumed
    reply = resumed.json()
    assert reply["command"] == "resume" and reply["result"] == "success"
    eventually(user, "P1S 1", lambda d: d["gcode_state"] in ("PREPARE", "RUNNING"))


def test_speed(user: LiveBambu) -> None:
    result = user("speed", "sport", "P1S 1")
    assert result.returncode == 0, result
    assert result.stdout.strip() == "P1S 1: speed sport (3)"
    eventually(user, "P1S 1", lambda d: d["speed"] == "sport")
    assert user("speed", "2", "P1S 1").returncode == 0
    eventually(user, "P1S 1", lambda d: d["speed"] == "standard")


def test_light(user: LiveBambu) -> None:
    result = user("light", "off", "X1 Carbon 1")
    assert result.returncode == 0, result
    assert result.stdout.strip() == "X1 Carbon 1: chamber_light off"
    eventually(user, "X1 Carbon 1", lambda d: d["lights"].get("chamber_light") == "off")
    assert user("light", "flashing", "X1 Carbon 1", "--node", "chamber_light").returncode == 0
    eventually(user, "X1 Carbon 1", lambda d: d["lights"].get("chamber_light") == "flashing")
    assert user("light", "on", "X1 Carbon 1").returncode == 0
    eventually(user, "X1 Carbon 1", lambda d: d["lights"].get("chamber_light") == "on")


def test_temperatures(user: LiveBambu) -> None:
    bed = user("temp", "bed", "70", "X1 Carbon 1")
    assert bed.returncode == 0, bed
    assert bed.stdout.strip() == "X1 Carbon 1: bed target 70 °C"
    nozzle = user("temp", "nozzle", "215", "X1 Carbon 1")
    assert nozzle.returncode == 0, nozzle
    eventually(
        user,
        "X1 Carbon 1",
        lambda d: d["bed_target"] == 70.0 and d["nozzle_target"] == 215.0,
    )
    # Out of range: a usage error before anything is sent.
    too_hot = user("temp", "bed", "500", "X1 Carbon 1")
    assert too_hot.returncode == 2
    assert "0-120" in one_error_line(too_hot)


def test_fan(user: LiveBambu) -> None:
    result = user("fan", "aux", "40", "X1 Carbon 1")
    assert result.returncode == 0, result
    assert result.stdout.strip() == "X1 Carbon 1: aux fan 40%"
    # 40 % travels as M106 P2 S102 and comes back as a 0-15 step: 6/15 = 40 %.
    eventually(user, "X1 Carbon 1", lambda d: d["fans"]["aux"] == 40)
    over = user("fan", "aux", "101", "X1 Carbon 1")
    assert over.returncode == 2
    one_error_line(over)


def test_gcode(user: LiveBambu) -> None:
    result = user("gcode", "M140 S65", "M104 S0", "--printer", "X1 Carbon 1")
    assert result.returncode == 0, result
    assert result.stdout.strip() == "X1 Carbon 1: G-code sent (M140 S65; M104 S0)"
    eventually(user, "X1 Carbon 1", lambda d: d["bed_target"] == 65.0 and d["nozzle_target"] == 0.0)


def test_stop_needs_confirmation_then_stops(
    user: LiveBambu, live_sim: Simulator, serials: dict[str, str]
) -> None:
    # Its own job: a test never relies on one an earlier test started.
    start_job(live_sim, serials["P1S 2"], "Stop Test", 0.1)
    eventually(user, "P1S 2", lambda d: d["job"] == "Stop Test")
    unconfirmed = user("stop", "P1S 2")
    assert unconfirmed.returncode == 2
    assert "--yes" in one_error_line(unconfirmed)
    assert status_json(user, "P1S 2")["gcode_state"] in ("PREPARE", "RUNNING")  # nothing sent
    stopped = user("stop", "P1S 2", "--yes")
    assert stopped.returncode == 0, stopped
    assert stopped.stdout.strip() == "P1S 2: stopped"
    eventually(user, "P1S 2", lambda d: d["gcode_state"] in ("FAILED", "IDLE"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a pseudo-terminal")
def test_stop_at_a_terminal_asks_first(user: LiveBambu, live_sim: Simulator) -> None:
    serial = next(
        d.dev_id for d in live_sim.world.devices_of(live_sim.user_id) if d.name == "P1S 2"
    )
    start_job(live_sim, serial, "Terminal Test", 0.1)
    eventually(user, "P1S 2", lambda d: d["job"] == "Terminal Test")

    declined = Terminal(user.env(TERM="dumb"), "stop", "P1S 2")
    declined.expect("Stop the print 'Terminal Test'")
    declined.type("n")
    assert declined.wait() == 1
    assert b"nothing was sent" in declined.seen
    assert status_json(user, "P1S 2")["gcode_state"] in ("PREPARE", "RUNNING")

    accepted = Terminal(user.env(TERM="dumb"), "stop", "P1S 2")
    accepted.expect("Stop the print 'Terminal Test'")
    accepted.type("y")
    assert accepted.wait() == 0
    assert b"P1S 2: stopped" in accepted.seen
    eventually(user, "P1S 2", lambda d: d["gcode_state"] in ("FAILED", "IDLE"))


# --- watch ---------------------------------------------------------------------------------------


def test_watch_for_two_seconds_off_a_terminal(user: LiveBambu, serials: dict[str, str]) -> None:
    started = time.monotonic()
    result = user("watch", "--duration", "2")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result
    assert 2.0 <= elapsed < 10.0
    out = result.stdout
    lines = out.splitlines()
    # A pipe gets a log, not a table: one timestamped line per change.
    assert all(STAMP.match(line) for line in lines), out
    assert "│" not in out
    assert "connected to the Bambu cloud broker" in lines[0]
    said = {name: [line for line in lines if f" {name} ({serials[name]}): " in line]
            for name in ("P1S 1", "X1 Carbon 1", "P1S 2", "A1 mini 1", "A1 1")}  # fmt: skip
    assert all(said.values()), out
    assert said["A1 1"][0].endswith(": offline")
    assert "RUNNING" in said["P1S 1"][0] or "PREPARE" in said["P1S 1"][0]
    assert "°C" in said["P1S 1"][0] and "layer " in said["P1S 1"][0]
    assert out.endswith("\n")


def test_watch_json_lines(user: LiveBambu, serials: dict[str, str]) -> None:
    # long enough for a connect on a loaded machine, the full report and a tick after it
    result = user("watch", "P1S 1", "--duration", "4", "--json")
    assert result.returncode == 0, result
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    connected = lines.pop(0)  # the connection's own events are lines too
    assert connected["event"] == "Connected"
    assert connected["connection"]["state"] == "connected"
    assert connected["connection"]["connects"] == 1
    assert len(lines) >= 2  # the full report, then at least one tick
    for line in lines:
        assert line["event"] == "StateChanged"
        assert line["serial"] == serials["P1S 1"]
        assert line["changed"]
        assert line["state"]["serial"] == serials["P1S 1"]
    assert lines[0]["state"]["gcode_state"] in ("PREPARE", "RUNNING", "PAUSE")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a pseudo-terminal")
def test_watch_redraws_in_place_at_a_terminal(user: LiveBambu) -> None:
    term = Terminal(user.env(TERM="xterm-256color", COLUMNS="150"), "watch", "--duration", "2.5")
    assert term.wait() == 0
    screen = term.seen.decode(errors="replace")
    assert screen.count("printers, live") >= 3  # drawn, then redrawn...
    assert "\x1b[1A" in screen and "\x1b[2K" in screen  # ...over itself (cursor up, erase)


def test_watch_ends_with_status_0_on_ctrl_c(user: LiveBambu) -> None:
    watch = Background(["watch", "P1S 1"], user.env())
    # Ctrl-C once it watches (a fixed wait was too short for a loaded run: no line yet).
    watch.wait_line("P1S 1", timeout=30)
    status, rest = watch.stop()
    assert status == 0, rest
    assert "Traceback" not in rest


# --- LAN mode ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lan(live_sim: Simulator, serials: dict[str, str]) -> dict[str, str]:
    """The LAN options of ``A1 mini 1``: its own broker, access code and the CA file."""
    serial = serials["A1 mini 1"]
    host, port = live_sim.lan_address(serial)
    code = next(e.access_code for e in live_sim.endpoints() if e.serial == serial)
    assert live_sim.ca_file is not None
    return {"host": host, "port": str(port), "serial": serial, "code": code,
            "ca": live_sim.ca_file}  # fmt: skip


def lan_args(lan: dict[str, str], *, code: str | None = None) -> list[str]:
    return [
        "--lan", lan["host"], "--port", lan["port"], "--serial", lan["serial"],
        "--access-code", code or lan["code"], "--ca-file", lan["ca"],
    ]  # fmt: skip


def test_lan_status_over_tls_with_the_ca_file(user: LiveBambu, lan: dict[str, str]) -> None:
    # No token and no cloud broker in reach: only the printer's own broker.
    result = user("status", "--json", *lan_args(lan), BAMBU_MQTT_PORT="1", BAMBU_TOKEN="")
    assert result.returncode == 0, result
    data = result.json()
    assert data["serial"] == lan["serial"]
    assert data["model"] == "A1 mini"
    control = user("light", "off", *lan_args(lan))
    assert control.returncode == 0, control
    assert control.stdout.strip() == f"{lan['serial']}: chamber_light off"
    table = user("ams", *lan_args(lan))
    assert table.returncode == 0, table
    assert lan["code"] not in table.stdout + table.stderr


def test_lan_from_the_environment(user: LiveBambu, lan: dict[str, str]) -> None:
    """What ``bambu sim`` exports is enough: BAMBU_PRINTER_HOST switches to LAN mode."""
    env = {
        "BAMBU_PRINTER_HOST": lan["host"],
        "BAMBU_PRINTER_PORT": lan["port"],
        "BAMBU_SERIAL": lan["serial"],
        "BAMBU_ACCESS_CODE": lan["code"],
    }
    result = user("status", "--json", env=user.env(**env))
    assert result.returncode == 0, result
    assert result.json()["serial"] == lan["serial"]
    # --cloud goes back to the account's printers.
    cloud = user("status", "P1S 1", "--json", "--cloud", env=user.env(**env))
    assert cloud.returncode == 0, cloud
    assert cloud.json()["model"] == "P1P"


def test_lan_wrong_access_code(user: LiveBambu, lan: dict[str, str]) -> None:
    wrong = "".join("9" if c != "9" else "8" for c in lan["code"])
    started = time.monotonic()
    result = user("status", *lan_args(lan, code=wrong))
    assert time.monotonic() - started < BOUNDED
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"printer {lan['serial']}" in line and "refused the credentials" in line
    assert wrong not in line and lan["code"] not in line


def test_lan_certificate_for_another_serial(
    user: LiveBambu, live_sim: Simulator, lan: dict[str, str]
) -> None:
    live_sim.use_wrong_certificate(lan["serial"])
    try:
        result = user("status", *lan_args(lan))
        assert result.returncode == 1
        line = one_error_line(result)
        assert "certificate" in line and lan["serial"] in line
        # OpenSSL's own words for a CN that is not the serial dialled.
        assert f"Hostname mismatch, certificate is not valid for '{lan['serial']}'" in line
        # First use without a CA file: the pin is refused too, nothing is saved.
        pinned = user(
            "status", "--lan", lan["host"], "--port", lan["port"], "--serial", lan["serial"],
            "--access-code", lan["code"], BAMBU_CA_FILE="",
        )  # fmt: skip
        assert pinned.returncode == 1
        assert f"is not printer {lan['serial']}'s" in one_error_line(pinned)
    finally:
        live_sim.use_wrong_certificate(lan["serial"], False)
    assert user("status", *lan_args(lan)).returncode == 0


def test_lan_insecure_warns(user: LiveBambu, lan: dict[str, str]) -> None:
    args = [a for a in lan_args(lan) if a not in ("--ca-file", lan["ca"])]
    result = user("status", "--json", *args, "--insecure", BAMBU_CA_FILE="")
    assert result.returncode == 0, result
    assert result.json()["serial"] == lan["serial"]
    assert "warning: TLS verification is OFF" in result.stderr


def test_lan_unreachable_printer_gives_up(user: LiveBambu, lan: dict[str, str]) -> None:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        closed = probe_socket.getsockname()[1]  # free, and nobody listens once closed
    args = lan_args(lan)
    args[args.index("--port") + 1] = str(closed)
    started = time.monotonic()
    result = user("status", *args)
    assert time.monotonic() - started < BOUNDED
    line = one_error_line(result)
    assert "cannot reach" in line and "connection refused" in line


def test_lan_needs_serial_and_code(user: LiveBambu, lan: dict[str, str]) -> None:
    no_serial = user("status", "--lan", lan["host"])
    assert no_serial.returncode == 2
    assert "--serial" in one_error_line(no_serial)
    no_code = user("status", "--lan", lan["host"], "--serial", lan["serial"])
    assert no_code.returncode == 2
    assert "--access-code" in one_error_line(no_code)


# --- errors -----------------------------------------------------------------------------------------


def test_unknown_printer(user: LiveBambu) -> None:
    result = user("status", "Nonexistent")
    assert result.returncode == 1
    line = one_error_line(result)
    assert "no printer 'Nonexistent'" in line and "P1S 1" in line


def test_offline_printer(user: LiveBambu) -> None:
    started = time.monotonic()
    result = user("pause", "A1 1")
    assert time.monotonic() - started < BOUNDED
    line = one_error_line(result)
    assert "A1 1" in line and "offline" in line


def test_insecure_is_for_lan_only(user: LiveBambu) -> None:
    result = user("status", "--insecure")
    assert result.returncode == 2
    assert "--lan" in one_error_line(result)


def test_bad_values_are_usage_errors(user: LiveBambu) -> None:
    for args in (("light", "dim"), ("speed", "warp"), ("temp", "oven", "50"), ("fan", "x", "1")):
        result = user(*args)
        assert result.returncode == 2, result
        one_error_line(result)


def test_not_logged_in(live_sim: Simulator, tmp_path: Path) -> None:
    fresh = LiveBambu(home=tmp_path, api_url=live_sim.url)
    result = fresh("status")
    assert result.returncode == 1
    assert "not logged in" in one_error_line(result)


# --- help and the demo ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--help"),
        ("watch", "--help"),
        ("stop", "--help"),
        ("temp", "nozzle", "--help"),
        ("gcode", "--help"),
        ("ams", "--lan", "h", "--help"),
    ],
)
def test_live_help_imports_nothing_heavy(args: tuple[str, ...]) -> None:
    out, report = probe(*args)
    assert report["code"] == 0
    assert report["loaded"] == []
    assert out.startswith(f"Usage: bambu {args[0]} ")
    assert "--lan HOST" in out and "--access-code CODE" in out


IDLE_DEMO = """
import sys, tempfile
from pathlib import Path
from bambulab.cli import demo
from bambulab.mqtt.client import BambuMQTT
from bambulab.sim import SimConfig, Simulator

demo.WATCH_SECONDS = 1.0
with tempfile.TemporaryDirectory() as tmp, Simulator(
    SimConfig(), time_scale=demo.TIME_SCALE, tick_interval=demo.TICK_INTERVAL
) as sim:
    token = sim.issue_token(sim.demo_account.email)
    printing = [e.serial for e in sim.endpoints()
                if sim.with_printer(e.serial, lambda p: p.truth()["gcode_state"]) == "RUNNING"]
    with BambuMQTT(None, printing, token=token, host=sim.mqtt_host, port=sim.mqtt_port,
                   ca_file=sim.ca_file) as mqtt:
        for serial in printing:
            mqtt.get_full_status(serial)
            mqtt.stop(serial)
    run = demo.DemoRun(sim=sim, token_file=Path(tmp) / "token",
                       account=sim.demo_account.login, password=sim.demo_account.password)
    demo.step_login(run)
    demo.step_live(run)
    assert run.client is not None
    run.client.close()
"""


def test_demo_starts_a_print_when_none_runs(user: LiveBambu) -> None:
    result = subprocess.run(
        [sys.executable, "-c", IDLE_DEMO],
        env=user.env(COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "nothing was printing: started 'Benchy' on P1S 1" in out
    row = next(line for line in out.splitlines() if line.startswith("│ P1S 1 "))
    assert "Benchy" in row and ("PREPARE" in row or "RUNNING" in row)
    loaded = next(line for line in out.splitlines() if "loaded" in line)
    assert loaded.startswith("│ AMS 1")  # the job feeds from the AMS, not the empty spool
