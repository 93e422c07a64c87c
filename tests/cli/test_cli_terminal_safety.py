"""Hostile text never drives the terminal: ``bambu`` under a real pseudo-terminal.

Every string the CLI shows that came from a server or another person gets a
payload that would clear the screen (``ESC [2J``), retitle the window
(``ESC ]0;...BEL``), do the same with an 8-bit CSI (``U+009B``), read
backwards (``U+202E``), overwrite the line (``CR``, backspace) and forge a
row (newline): printer names (renamed through the API), task titles (created
through the API), project and file names, messages, notifications, the
profile, live MQTT state (job name, G-code file, light nodes, AMS tray type
and colour), error messages from the cloud, and the simulator's own log.

Each command runs with stdout and stderr on the slave side of a pty (so rich
believes it draws on a terminal, colours and live redraws included); the
test reads the master side and checks the bytes: none of the hostile
sequences arrive, and their visible form (``\\x1b[2J``...) does. ``--json``
output parses back to exactly the hostile strings.
"""

from __future__ import annotations

import fcntl
import http.server
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bambulab.safetext import visible
from bambulab.sim import Simulator
from tests.cli.conftest import unlimited_config
from tests.cli.test_cli_live import LiveBambu

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")

PAYLOAD = "\x1b[2J\x1b]0;pwned\x07\x9b2J\u202e\r\x08\n"
# What must never reach the terminal. rich writes its own colour and cursor
# sequences, so the check is for these sequences exactly (a lone CR, which a
# pty's newline translation never makes, is checked apart).
FORBIDDEN = (b"\x1b[2J", b"\x1b]0;", b"\x07", b"\xc2\x9b", "\u202e".encode(), b"\x08")
WIDTH = "500"  # wide enough that no cell folds in the middle of a payload


def hostile(tag: str) -> str:
    """A payload that names its field; 28 characters at most (printer names allow 32)."""
    return f"{tag}<{PAYLOAD}>"


def shown(tag: str) -> bytes:
    """How the hostile string of ``tag`` must appear on the terminal."""
    return visible(hostile(tag)).encode()


def test_shown_is_what_a_person_reads() -> None:
    assert shown("x") == b"x<\\x1b[2J\\x1b]0;pwned\\x07\\x9b2J\\u202e\\r\\x08\\n>"


def test_say_and_note_show_stray_controls(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message that embedded server text without ``esc`` still runs nothing (a backstop)."""
    from bambulab.cli import output

    monkeypatch.setattr(output, "_consoles", {})
    output.say(f"[green]ok[/green] {hostile('say')}\nsecond line")
    output.note(hostile("note"))
    out, err = capsys.readouterr()
    # Messages may span lines: newlines stay, everything else shows.
    assert out == f"ok {visible(hostile('say'), multiline=True)}\nsecond line\n"
    assert err == visible(hostile("note"), multiline=True) + "\n"
    assert "\x1b[2J" not in out + err and "\u202e" not in out + err


# --- a pseudo-terminal ------------------------------------------------------------------------


@dataclass
class Screen:
    """What one run wrote to its terminal."""

    args: tuple[str, ...]
    status: int
    data: bytes

    def __str__(self) -> str:
        return f"bambu {' '.join(self.args)} -> {self.status}\n{self.data!r}"

    def assert_safe(self, *, live: bool = False) -> None:
        for sequence in FORBIDDEN:
            assert sequence not in self.data, f"{sequence!r} reached the terminal:\n{self}"
        if not live:  # rich.live moves the cursor with CR itself
            assert not re.search(rb"\r(?!\n)", self.data), f"a bare CR:\n{self}"

    def assert_shows(self, *tags: str) -> None:
        for tag in tags:
            assert shown(tag) in self.data, f"{tag}'s visible form is missing:\n{self}"


def on_terminal(
    env: dict[str, str], *args: str, answer: tuple[str, str] | None = None, timeout: float = 30.0
) -> Screen:
    """Run ``bambu args`` with a pty as its terminal; ``answer`` = (prompt text, reply)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, int(WIDTH), 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bambulab.cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=dict(env, TERM="xterm-256color", COLUMNS=WIDTH),
        start_new_session=True,  # the pty becomes its controlling terminal, as in a shell
    )
    os.close(slave)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, f"bambu {args} did not finish: {data!r}"
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every slave descriptor is closed, the run is over
                break
            if not chunk:
                break
            data += chunk
            if answer is not None and answer[0].encode() in data:
                time.sleep(0.1)  # let the prompt read the line, as a person would
                os.write(master, answer[1].encode() + b"\r")
                answer = None
        status = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return Screen(tuple(args), status, data)


# --- the hostile world ------------------------------------------------------------------------

TIME_SCALE = 20.0


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(unlimited_config(), time_scale=TIME_SCALE, tick_interval=0.5) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def user(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> LiveBambu:
    return LiveBambu.logged_in(sim, tmp_path_factory.mktemp("term-home"))


@dataclass
class World:
    """Serials of the demo account's printers; ``idle`` got a hostile job over MQTT."""

    serials: list[str]
    idle: str
    task_id: str
    project_id: str


@pytest.fixture(scope="module")
def world(sim: Simulator, user: LiveBambu) -> World:
    """Hostile strings in every field the CLI shows, put there the way others would."""
    devices = sim.world.devices_of(sim.user_id)
    serials = [d.dev_id for d in devices]
    # Printer names: renamed through the cloud API by the CLI itself (a shared
    # printer's owner would use the app); the confirmation line is checked too.
    for number, serial in enumerate(serials):
        screen = on_terminal(user.env(), "device", "rename", serial, hostile(f"dev{number}"))
        assert screen.status == 0, screen
        screen.assert_safe()
        screen.assert_shows(f"dev{number}")
    token = sim.issue_token(sim.demo_account.email)
    created = httpx.post(
        f"{sim.url}/v1/user-service/my/task",
        json={"deviceId": serials[0], "title": hostile("task"), "modelId": "M1"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert created.status_code == 200, created.text
    # No endpoint writes these: they come from other people (MakerWorld, the
    # cloud's own senders), so they are planted in the simulated cloud.
    project = next(p for p in sim.world.projects.values() if p.owner == sim.user_id)
    project.name = hostile("proj")
    project.files[0].name = hostile("file") + ".3mf"
    for message in sim.world.messages.values():
        message.title = hostile("msg")
    for notice in sim.world.notifications.values():
        notice.type, notice.title, notice.content = hostile("ntype"), hostile("ntit"), "-"
    devices[0].firmware[0].name = hostile("fw")
    # Live state over MQTT: an idle printer starts a job named by a stranger's
    # upload, from a file of the same kind, with odd lights and AMS contents.
    online = {e.serial for e in sim.endpoints()}
    idle = next(s for s in serials if s in online and not sim.printers[s].state.active)

    def plant(printer: Any) -> None:
        printer.start_job(name=hostile("job"), file=f"/sdcard/{hostile('gfile')}.gcode.3mf")
        printer.state.lights[hostile("light")] = "on"
        tray = printer.state.ams.units[0].trays[1]
        tray.tray_type, tray.colour = hostile("tray"), hostile("rgb")
        printer.inject_hms(0x07002000, 0x00020001)

    sim.with_printer(idle, plant)
    return World(serials, idle, str(created.json()["id"]), project.project_id)


# --- the commands -----------------------------------------------------------------------------


def test_cloud_tables_show_hostile_text_without_running_it(user: LiveBambu, world: World) -> None:
    runs = {
        ("devices",): [f"dev{n}" for n in range(len(world.serials))],
        ("device", "info", world.serials[0]): ["dev0"],
        ("device", "version", world.serials[0]): ["fw"],
        ("tasks",): ["task", "dev0"],
        ("projects",): ["proj"],
        ("projects", "show", world.project_id): ["proj", "file"],
        ("messages",): ["msg"],
        ("notifications",): ["ntype", "ntit"],
        ("profile", "set", "--name", hostile("pname"), "--bio", hostile("bio")): ["pname", "bio"],
        ("profile",): ["pname", "bio"],
        ("whoami",): ["pname"],
    }
    for args, tags in runs.items():
        screen = on_terminal(user.env(), *args)
        assert screen.status == 0, screen
        screen.assert_safe()
        screen.assert_shows(*tags)


def test_live_views_show_hostile_state_without_running_it(user: LiveBambu, world: World) -> None:
    number = world.serials.index(world.idle)
    name = f"dev{number}"
    for args, tags in {
        ("status", world.idle): [name, "job", "light"],
        ("ams", world.idle): [name, "tray"],
        ("hms", world.idle): [name],
    }.items():
        screen = on_terminal(user.env(), *args)
        assert screen.status == 0, screen
        screen.assert_safe()
        screen.assert_shows(*tags)
        if args[0] == "ams":  # the colour is cut to its first six characters, then shown
            assert b"\xe2\x96\x88\xe2\x96\x88 #RGB<\\x1b[ " in screen.data, screen
    screen = on_terminal(user.env(), "watch", "--duration", "2")
    assert screen.status == 0, screen
    screen.assert_safe(live=True)
    screen.assert_shows(name, "job", *(f"dev{n}" for n in range(len(world.serials))))


def test_questions_and_errors_quote_hostile_text_safely(user: LiveBambu, world: World) -> None:
    # The stop question names the job and the printer; "n" sends nothing.
    screen = on_terminal(user.env(), "stop", world.idle, answer=("[y/n]", "n"))
    assert screen.status == 1, screen
    screen.assert_safe()
    screen.assert_shows("job", f"dev{world.serials.index(world.idle)}")
    assert b"error: nothing was sent" in screen.data
    # An unknown printer: the error lists the account's (hostile) names.
    screen = on_terminal(user.env(), "status", "no such printer")
    assert screen.status == 1, screen
    screen.assert_safe()
    screen.assert_shows("dev0")
    assert screen.data.startswith(b"error: ") and screen.data.count(b"\n") == 1


def test_json_stays_exact(user: LiveBambu, world: World) -> None:
    devices = user("devices", "--json")
    assert devices.returncode == 0, devices
    names = {d["dev_id"]: d["name"] for d in devices.json()}
    assert names == {s: hostile(f"dev{n}") for n, s in enumerate(world.serials)}
    tasks = user("tasks", "--json").json()
    assert hostile("task") in [t["title"] for t in tasks]
    state = user("status", world.idle, "--json").json()
    assert state["job"] == hostile("job")
    assert state["lights"][hostile("light")] == "on"
    assert state["ams"][0]["trays"][1]["type"] == hostile("tray")
    # No raw C1 control or bidi override in the text itself, only escapes.
    for result in (devices, user("tasks", "--json")):
        assert "\x9b" not in result.stdout and "\u202e" not in result.stdout
        assert "\\u009b" in result.stdout and "\\u202e" in result.stdout


# --- a hostile cloud --------------------------------------------------------------------------


class _HostileCloud(http.server.BaseHTTPRequestHandler):
    """Answers every request with hostile text: an error message, or (``errors`` off) data."""

    def do_GET(self) -> None:
        if not getattr(self.server, "errors", True):
            status, answer = 200, {"message": "success", "code": None, "error": None}
            if self.path.startswith("/v1/iot-service/api/user/device/info"):
                # An unknown field is kept and shown: its name is server text too.
                answer.update(device_name=hostile("name"), status=hostile("st"))
                answer[hostile("key")] = hostile("val")
            else:
                answer["devices"] = [HOSTILE_DEVICE]
        else:
            status, answer = 400, {"code": 400, "message": hostile("srv"), "error": hostile("srv")}
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# Fields no simulator would send: a status word, a model, a serial, an access code.
HOSTILE_DEVICE = {
    "dev_id": hostile("sn"),
    "name": hostile("name"),
    "online": True,
    "print_status": hostile("st"),
    "dev_model_name": hostile("mod"),
    "dev_product_name": hostile("prod"),
    "dev_access_code": hostile("acc"),
    "nozzle_diameter": 0.4,
}


@pytest.fixture
def hostile_cloud() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostileCloud)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def cloud_env(user: LiveBambu, server: http.server.ThreadingHTTPServer) -> dict[str, str]:
    return user.env(
        BAMBU_API_URL=f"http://127.0.0.1:{server.server_address[1]}", BAMBU_TOKEN="not-a-jwt"
    )


def test_cloud_error_messages_are_shown_not_run(
    user: LiveBambu, hostile_cloud: http.server.ThreadingHTTPServer
) -> None:
    env = cloud_env(user, hostile_cloud)
    screen = on_terminal(env, "devices")
    assert screen.status == 1, screen
    screen.assert_safe()
    screen.assert_shows("srv")
    assert screen.data.startswith(b"error: ") and screen.data.count(b"\n") == 1
    # --debug adds the traceback (which quotes the message too) and the debug log.
    screen = on_terminal(env, "--debug", "devices")
    assert screen.status == 1, screen
    screen.assert_safe()
    assert b"Traceback" in screen.data
    assert b"\nerror: bad request: " + shown("srv") in screen.data
    # A traceback has lines: it keeps newlines (the pty shows them as CR LF), nothing else.
    in_traceback = visible(hostile("srv"), multiline=True).replace("\n", "\r\n")
    assert b"BadRequestError: bad request: " + in_traceback.encode() in screen.data


def test_every_device_field_of_a_hostile_cloud_is_shown_not_run(
    user: LiveBambu, hostile_cloud: http.server.ThreadingHTTPServer
) -> None:
    hostile_cloud.errors = False  # type: ignore[attr-defined]
    env = cloud_env(user, hostile_cloud)
    screen = on_terminal(env, "devices", "--show-access-code")
    assert screen.status == 0, screen
    screen.assert_safe()
    screen.assert_shows("sn", "name", "st", "mod", "prod", "acc")
    screen = on_terminal(env, "device", "info", "01S00A000000001")
    assert screen.status == 0, screen
    screen.assert_safe()
    screen.assert_shows("name", "st", "key", "val")


def test_the_cli_log_formatter_neutralises(user: LiveBambu) -> None:
    probe = (
        "import logging; from bambulab.cli.app import _configure_logging; "
        "_configure_logging(False); "
        f"logging.getLogger('bambulab.cloud').warning('renamed to %s', {hostile('log')!r})"
    )
    master, slave = os.openpty()
    proc = subprocess.run(
        [sys.executable, "-c", probe], stderr=slave, stdout=slave, env=user.env(), timeout=30
    )
    os.close(slave)
    data = os.read(master, 65536)
    os.close(master)
    assert proc.returncode == 0
    screen = Screen(("<log>",), 0, data)
    screen.assert_safe()
    assert data == b"warning: renamed to " + shown("log") + b"\r\n"


# --- the simulator's log ----------------------------------------------------------------------


def test_the_simulator_log_shows_client_text_safely() -> None:
    """``bambu sim`` logs file names and logins that clients sent: on a terminal, made visible."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bambulab.cli", "sim", "--port", "0", "--no-mqtt"],
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    try:
        assert proc.stdout is not None
        exports: dict[str, str] = {}
        while "BAMBU_TOKEN" not in exports or "BAMBU_API_URL" not in exports:
            line = proc.stdout.readline()
            assert line.startswith("export "), line
            name, _, value = line.removeprefix("export ").strip().partition("=")
            exports[name] = value.strip("'")
        name = hostile("up") + ".3mf"
        answer = httpx.get(
            f"{exports['BAMBU_API_URL']}/v1/iot-service/api/user/upload",
            params={"filename": name, "size": "10"},
            headers={"Authorization": f"Bearer {exports['BAMBU_TOKEN']}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        data = b""
        deadline = time.monotonic() + 10
        while b"upload:" not in data or not data.endswith(b"\n"):
            assert time.monotonic() < deadline, data
            if select.select([master], [], [], 0.1)[0]:
                data += os.read(master, 65536)
    finally:
        proc.terminate()
        proc.wait(10)
        os.close(master)
    screen = Screen(("sim",), 0, data)
    screen.assert_safe()
    screen.assert_shows("up")
