"""``bambu`` end to end: every command in a subprocess against the simulator."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bambulab import BambuClient
from bambulab.sim import CloudSimulator
from tests.cli.conftest import Bambu, Result, login, outbox_code, outbox_count

BINDABLE_SERIAL = "01P09C470100201"
BINDABLE_CODE = "4F7K2Q9M"


@pytest.fixture(scope="module")
def user(bambu: Bambu, cli_sim: CloudSimulator) -> Bambu:
    """The module's runner, logged in to the demo account."""
    login(bambu, cli_sim)
    return bambu


@pytest.fixture(scope="module")
def api(cli_sim: CloudSimulator) -> Iterator[BambuClient]:
    """The library's own view of the demo account, to check the CLI against."""
    with BambuClient(
        token=cli_sim.issue_token(cli_sim.demo_account.email), base_url=cli_sim.url
    ) as client:
        yield client


@pytest.fixture
def fresh(cli_sim: CloudSimulator, tmp_path: Path) -> Bambu:
    """A runner with its own empty home (not logged in)."""
    return Bambu(home=tmp_path, api_url=cli_sim.url)


def shows(word: str, text: str) -> bool:
    """Whether ``word`` appears on its own (an access code can prefix a serial)."""
    return re.search(rf"(?<![0-9A-Za-z]){re.escape(word)}(?![0-9A-Za-z])", text) is not None


def one_error_line(result: Result) -> str:
    """The single stderr line of a failed run (and nothing on stdout).

    Logins here go to the simulator through BAMBU_API_URL, which login notes
    in one line of its own (test_cli_first_run); that line is not the error.
    """
    assert result.returncode != 0, result
    lines = [x for x in result.stderr.strip().splitlines() if not x.startswith("note: logging in")]
    assert len(lines) == 1, result
    assert lines[0].startswith("error: "), result
    assert "Traceback" not in result.stderr
    assert result.stdout == "", result
    return lines[0]


# --- login ------------------------------------------------------------------------


def test_login_in_two_steps_with_the_emailed_code(fresh: Bambu, cli_sim: CloudSimulator) -> None:
    account = cli_sim.demo_account
    first = fresh("login", "--account", account.email, "--password", account.password)
    assert first.returncode == 1
    line = one_error_line(first)
    assert "sent to m***@example.com" in line and "--code" in line
    assert not fresh.token_file.exists()
    sent = outbox_count(cli_sim, account.email)
    code = outbox_code(cli_sim, account.email)

    # Second step from the environment, as a script would; no new code is sent.
    second = fresh(
        "login", BAMBU_ACCOUNT=account.email, BAMBU_PASSWORD=account.password, BAMBU_CODE=code
    )
    assert second.returncode == 0, second
    assert "Logged in" in second.stdout and str(fresh.token_file) in second.stdout
    assert outbox_count(cli_sim, account.email) == sent
    assert stat.S_IMODE(fresh.token_file.stat().st_mode) == 0o600
    assert fresh.secrets, "the token file should hold a token"


def test_login_with_a_code_alone_and_json(fresh: Bambu, cli_sim: CloudSimulator) -> None:
    email = cli_sim.demo_account.email
    assert fresh("login", "--account", email).returncode == 1
    done = fresh("--json", "login", "--account", email, "--code", outbox_code(cli_sim, email))
    assert done.returncode == 0, done
    answer = done.json()
    assert answer["logged_in"] is True
    assert answer["token_file"] == str(fresh.token_file)
    assert answer["uid"] == str(cli_sim.demo_account.uid)
    assert answer["account"] == "m***@example.com"


def test_login_with_an_authenticator_code(fresh: Bambu, cli_sim: CloudSimulator) -> None:
    first = fresh("login", "-a", "tfa@example.com", "--password", "bambu-demo")
    assert "authenticator app" in one_error_line(first)
    code = outbox_code(cli_sim, "tfa@example.com", kind="tfa")
    done = fresh("login", "-a", "tfa@example.com", "--password", "bambu-demo", "--code", code)
    assert done.returncode == 0, done
    assert "authenticator code" in done.stdout


def test_login_with_a_texted_code(fresh: Bambu, cli_sim: CloudSimulator) -> None:
    phone = "+15550100"
    first = fresh("login", "-a", phone, "--password", "bambu-demo")
    assert "sent to ***00" in one_error_line(first)
    code = outbox_code(cli_sim, phone, kind="sms")
    elsewhere = fresh.home / "elsewhere.json"
    done = fresh("login", "-a", phone, "--code", code, "--token-file", str(elsewhere))
    assert done.returncode == 0, done
    assert "sms code" in done.stdout and str(elsewhere) in done.stdout
    assert elsewhere.exists() and not fresh.token_file.exists()
    token = json.loads(elsewhere.read_text())["token"]
    fresh.secrets.add(token)
    fresh.check_no_secret(done)
    who = fresh("--token-file", str(elsewhere), "whoami", "--json")
    assert who.json()["account"] == phone


def test_wrong_password_is_one_clear_line(fresh: Bambu, cli_sim: CloudSimulator) -> None:
    result = fresh("login", "--account", cli_sim.demo_account.email, "--password", "nope")
    assert result.returncode == 1
    assert "login refused" in one_error_line(result)


def test_wrong_code_is_one_clear_line(fresh: Bambu, cli_sim: CloudSimulator) -> None:
    account = cli_sim.demo_account
    fresh("login", "--account", account.email, "--password", account.password)
    real = outbox_code(cli_sim, account.email)
    wrong = "000000" if real != "000000" else "111111"
    result = fresh(
        "login", "--account", account.email, "--password", account.password, "--code", wrong
    )
    assert result.returncode == 1
    assert "incorrect" in one_error_line(result)
    assert not fresh.token_file.exists()


def test_login_without_an_account_in_a_script(fresh: Bambu) -> None:
    result = fresh("login")
    assert result.returncode == 2
    assert "--account" in one_error_line(result)


# --- account ----------------------------------------------------------------------


def test_whoami(user: Bambu, cli_sim: CloudSimulator) -> None:
    uid = str(cli_sim.demo_account.uid)
    table = user("whoami")
    assert table.returncode == 0, table
    for expected in (uid, f"u_{uid}", "Demo Maker", str(user.token_file), "days", "global"):
        assert expected in table.stdout
    answer = user("whoami", "--json").json()
    assert answer["uid"] == uid
    assert answer["mqtt_username"] == f"u_{uid}"
    assert answer["account"] == cli_sim.demo_account.email
    assert 89 <= answer["token_days_left"] <= 90
    assert answer["token_file"] == str(user.token_file)


@pytest.fixture
def profile_restored(user: Bambu) -> Iterator[Bambu]:
    """The shared account's name and bio put back afterwards (whoami shows the name)."""
    before = user("profile", "--json").json()
    yield user
    restored = user("profile", "set", "--name", before["name"], "--bio", before["bio"] or "")
    assert restored.returncode == 0, restored


def test_profile_show_and_set(profile_restored: Bambu) -> None:
    user = profile_restored
    result = user("profile", "set", "--name", "Renamed Maker", "--bio", "prints [bold]boats[/bold]")
    assert result.returncode == 0, result
    assert "Renamed Maker" in result.stdout
    assert "[bold]boats[/bold]" in result.stdout  # server text is never read as markup
    shown = user("profile", "--json").json()
    assert shown["name"] == "Renamed Maker"
    assert shown["bio"] == "prints [bold]boats[/bold]"
    nothing = user("profile", "set")
    assert nothing.returncode == 2
    assert "--name" in one_error_line(nothing)


# --- devices ----------------------------------------------------------------------


def test_devices_table_masks_access_codes(user: Bambu, api: BambuClient) -> None:
    devices = api.get_devices()
    result = user("devices")
    assert result.returncode == 0, result
    for device in devices:
        assert device.serial in result.stdout
        assert device.name in result.stdout
        assert not shows(device.access_code, result.stdout)
    assert "***" in result.stdout
    shown = user("devices", "--show-access-code")
    assert all(shows(d.access_code, shown.stdout) for d in devices)


def test_devices_json_before_or_after_the_command(user: Bambu, api: BambuClient) -> None:
    after = user("devices", "--json")
    before = user("--json", "devices")
    assert after.returncode == before.returncode == 0
    assert after.stdout == before.stdout
    rows = after.json()
    assert [r["dev_id"] for r in rows] == [d.serial for d in api.get_devices()]
    assert all(r["dev_access_code"] == "***" for r in rows)
    debug = user("--debug", "devices", "--json")  # the debug log goes to stderr only
    assert debug.returncode == 0 and debug.json() == rows
    assert "DEBUG" in debug.stderr
    shown = user("devices", "--json", "--show-access-code").json()
    assert [r["dev_access_code"] for r in shown] == [d.access_code for d in api.get_devices()]


def test_device_info_and_version(user: Bambu, api: BambuClient) -> None:
    serial = api.get_devices()[0].serial
    info = user("device", "info", serial)
    assert info.returncode == 0, info
    assert serial in info.stdout
    assert user("device", "info", serial, "--json").json()["device_id"] == serial
    version = user("device", "version", serial)
    assert version.returncode == 0, version
    assert "ota" in version.stdout
    data = user("--json", "device", "version", serial).json()
    assert data["modules"] and any(m["name"] == "ota" for m in data["modules"])


def test_unknown_device_is_one_clear_line(user: Bambu) -> None:
    result = user("device", "info", "NOPE00000000000")
    assert result.returncode == 1
    assert "NOPE00000000000" in one_error_line(result)


def test_device_rename(user: Bambu, api: BambuClient) -> None:
    serial = api.get_devices()[-1].serial
    result = user("device", "rename", serial, "Garage printer")
    assert result.returncode == 0, result
    names = {r["dev_id"]: r["name"] for r in user("devices", "--json").json()}
    assert names[serial] == "Garage printer"


def test_device_bind_and_unbind(user: Bambu) -> None:
    bound = user("device", "bind", BINDABLE_SERIAL, "--code", BINDABLE_CODE, "--name", "Spare")
    assert bound.returncode == 0, bound
    serials = [r["dev_id"] for r in user("devices", "--json").json()]
    assert BINDABLE_SERIAL in serials
    refused = user("device", "unbind", BINDABLE_SERIAL)
    assert refused.returncode == 2
    assert "--yes" in one_error_line(refused)
    unbound = user("device", "unbind", BINDABLE_SERIAL, "--yes")
    assert unbound.returncode == 0, unbound
    serials = [r["dev_id"] for r in user("devices", "--json").json()]
    assert BINDABLE_SERIAL not in serials


# --- history, projects, inbox -----------------------------------------------------


def test_tasks_limit_and_table(user: Bambu) -> None:
    rows = user("tasks", "--limit", "3", "--json").json()
    assert len(rows) == 3
    table = user("tasks", "-n", "3")
    assert table.returncode == 0, table
    assert "3 tasks" in table.stdout
    assert all(str(r["id"]) in table.stdout for r in rows)


def test_tasks_all_pages_through_everything(user: Bambu, api: BambuClient) -> None:
    total = api.get_tasks(limit=1).total
    assert isinstance(total, int) and total > 20  # more than one page
    rows = user("tasks", "--all", "--json").json()
    assert len(rows) == total
    assert len({r["id"] for r in rows}) == total


def test_tasks_of_one_device(user: Bambu, api: BambuClient) -> None:
    serial = api.get_devices()[0].serial
    rows = user("tasks", "--device", serial, "--all", "--json").json()
    assert rows and all(r["deviceId"] == serial for r in rows)


def test_projects_list_and_show(user: Bambu, api: BambuClient) -> None:
    rows = user("projects", "--json").json()
    known = [p.project_id for p in api.iter_projects()]
    assert known, "the demo account has projects"
    assert rows and [str(r["project_id"]) for r in rows] == known[: len(rows)]
    table = user("projects")
    assert table.returncode == 0 and rows[0]["name"] in table.stdout
    first = str(rows[0]["project_id"])
    shown = user("projects", "show", first)
    assert shown.returncode == 0, shown
    assert rows[0]["name"] in shown.stdout
    assert user("projects", "show", first, "--json").json()["project_id"] == first


def test_messages(user: Bambu) -> None:
    rows = user("messages", "--json").json()
    assert rows
    table = user("messages")
    assert table.returncode == 0 and str(rows[0]["id"]) in table.stdout


def test_notifications_read_one(user: Bambu) -> None:
    unread = user("notifications", "--unread", "--json").json()
    assert unread, "the demo account should have unread notifications"
    target = str(unread[0]["id"])
    assert user("notifications").returncode == 0
    done = user("notifications", "read", target)
    assert done.returncode == 0, done
    left = [str(n["id"]) for n in user("notifications", "--unread", "--json").json()]
    assert target not in left


# --- failures ---------------------------------------------------------------------


def test_unreachable_api_is_one_clear_line(cli_sim: CloudSimulator, fresh: Bambu) -> None:
    token = cli_sim.issue_token(cli_sim.demo_account.email)
    fresh.secrets.add(token)
    for args in (
        ("--api-url", "http://127.0.0.1:9", "devices"),
        ("devices", "--api-url", "http://127.0.0.1:9"),
        ("login", "-a", "maker@example.com", "--password", "x", "--api-url=http://127.0.0.1:9"),
    ):
        result = fresh(*args, BAMBU_TOKEN=token)
        assert result.returncode == 1
        assert "cannot reach http://127.0.0.1:9" in one_error_line(result)


def test_debug_shows_the_traceback(cli_sim: CloudSimulator, fresh: Bambu) -> None:
    token = cli_sim.issue_token(cli_sim.demo_account.email)
    fresh.secrets.add(token)
    result = fresh("devices", "--debug", "--api-url", "http://127.0.0.1:9", BAMBU_TOKEN=token)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot reach")


def test_missing_token(fresh: Bambu) -> None:
    result = fresh("devices")
    assert result.returncode == 1
    assert "bambu login" in one_error_line(result)


def test_garbage_answer_is_one_clear_line(user: Bambu, cli_sim: CloudSimulator) -> None:
    fault = {"kind": "garbage", "path": "/v1/iot-service/api/user/bind", "count": 1}
    httpx.post(f"{cli_sim.url}/sim/faults", json=fault, timeout=5).raise_for_status()
    try:
        result = user("devices")
    finally:
        httpx.delete(f"{cli_sim.url}/sim/faults", timeout=5)
    assert result.returncode == 1
    assert "not JSON" in one_error_line(result)


def test_bad_api_url_and_region(user: Bambu) -> None:
    assert "http://" in one_error_line(user("devices", "--api-url", "ftp://example.com"))
    assert "region" in one_error_line(user("devices", "--region", "mars"))


def test_usage_errors_are_one_line_and_exit_2(user: Bambu) -> None:
    bogus = user("devices", "--bogus")
    assert bogus.returncode == 2
    line = one_error_line(bogus)
    assert "--bogus" in line and "bambu devices --help" in line
    assert user("tasks", "--limit", "0").returncode == 2
    assert "nonsense" in one_error_line(user("nonsense"))
    assert user("device", "info").returncode == 2


def test_a_group_without_its_command_shows_its_help(user: Bambu) -> None:
    result = user("device")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: bambu device ")
    assert "rename" in result.stdout


# --- logging out ------------------------------------------------------------------


def test_logout_then_commands_need_a_login(fresh: Bambu, cli_sim: CloudSimulator) -> None:
    login(fresh, cli_sim)  # its own login: the module's shared one stays for the other tests
    assert fresh("whoami").returncode == 0
    result = fresh("logout")
    assert result.returncode == 0, result
    assert str(fresh.token_file) in result.stdout
    assert not fresh.token_file.exists()
    again = fresh("logout", "--json").json()
    assert again == {"logged_out": False, "token_file": str(fresh.token_file)}
    assert "bambu login" in one_error_line(fresh("whoami"))


def test_no_token_in_any_output(fresh: Bambu, cli_sim: CloudSimulator) -> None:
    """Every run is checked for the tokens the runner knows; these ones print the most."""
    login(fresh, cli_sim)
    assert fresh.secrets, "the login saved a token the runner now looks for"
    for args in (
        ("whoami", "--json"),
        ("--debug", "devices", "--json", "--show-access-code"),
        ("--debug", "device", "info", BINDABLE_SERIAL),
        ("--debug", "tasks", "-n", "2"),
    ):
        fresh(*args)  # the runner fails the test if a token shows on stdout or stderr
    assert len(fresh.history) == 6


# --- at a terminal ----------------------------------------------------------------


class Terminal:
    """``bambu`` on a pseudo-terminal, driven like a person typing."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become bambu
            os.execve(sys.executable, [sys.executable, "-m", "bambulab.cli", *args], env)
        self.seen = b""

    def expect(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            assert time.monotonic() < deadline, f"no {text!r} in {self.seen!r}"
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:  # the child closed the terminal
                    break

    def type(self, line: str) -> None:
        time.sleep(0.2)  # let the prompt switch echo off before typing, as a person would
        os.write(self.fd, line.encode() + b"\r")

    def wait(self, timeout: float = 60.0) -> int:
        """Read everything the child writes until it closes the terminal, then reap it.

        Reading goes on until EOF, not until a quiet spell: a child slow to start on a loaded
        machine writes after any quiet spell, and one that fills the terminal's buffer while
        nobody reads blocks for ever.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                os.close(self.fd)
                pytest.fail(
                    f"bambu still running after {timeout} s; it wrote {self.seen[-2000:]!r}"
                )
            if not select.select([self.fd], [], [], min(left, 1.0))[0]:
                continue
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            self.seen += chunk
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a pseudo-terminal")
def test_interactive_login_prompts_for_what_is_missing(
    fresh: Bambu, cli_sim: CloudSimulator
) -> None:
    account = cli_sim.demo_account
    term = Terminal(fresh.env(TERM="dumb"), "login")
    term.expect("Account")
    term.type(account.email)
    term.expect("Password")
    term.type(account.password)
    term.expect("Enter the code emailed to m***@example.com")
    code = outbox_code(cli_sim, account.email)
    term.type("000000" if code != "000000" else "111111")
    term.expect("That code was incorrect")
    term.type(code)
    term.expect("Token saved to")
    assert term.wait() == 0
    screen = term.seen.decode(errors="replace")
    assert account.password not in screen  # the password prompt does not echo
    fresh.learn_token()
    assert fresh.secrets and not any(secret in screen for secret in fresh.secrets)
