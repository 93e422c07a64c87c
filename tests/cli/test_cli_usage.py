"""Usage errors exit 2 with one short line; what was typed is quoted, never pasted back whole;
a used-up login code says so instead of claiming it expired."""

from __future__ import annotations

import pytest

from bambulab.sim import CloudSimulator
from tests.cli.conftest import Bambu, login, outbox_code

LONG = "x" * 100_000  # near the kernel's limit for one argument (128 KiB)


def one_line_error(text: str) -> str:
    # Logins here go to the simulator (BAMBU_API_URL): login notes that first.
    lines = [x for x in text.splitlines() if not x.startswith("note: logging in at http")]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: "), text
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--region", "mars", "devices"), "unknown region 'mars'"),
        (("devices", "--region=mars"), "unknown region 'mars'"),
        (("device", "info", ""), "'SERIAL': must not be empty"),
        (("device", "version", " "), "'SERIAL': must not be empty"),
        (("device", "rename", "X", ""), "'NAME': must not be empty"),
        (("device", "unbind", "", "--yes"), "'SERIAL': must not be empty"),
        (("tasks", "--device", ""), "'--device' / '-d': must not be empty"),
        (("status", "--serial", ""), "'--serial'"),
        (("status", ""), "'PRINTER': must not be empty"),
        (("projects", "show", ""), "'ID': must not be empty"),
        (("notifications", "read", ""), "'ID': must not be empty"),
        (("--api-url", "ftp://host", "devices"), "expected an http:// or https:// URL"),
    ],
)
def test_usage_errors_exit_2(bambu: Bambu, args: tuple[str, ...], expected: str) -> None:
    result = bambu(*args)
    assert result.returncode == 2, result
    assert expected in one_line_error(result.stderr), result
    assert result.stdout == ""


def test_a_bad_region_from_the_environment_is_a_usage_error(bambu: Bambu) -> None:
    result = bambu("devices", BAMBU_REGION="mars")
    assert result.returncode == 2, result
    assert "BAMBU_REGION" in one_line_error(result.stderr)


@pytest.mark.parametrize(
    "args",
    [
        ("--region", LONG, "devices"),
        (LONG,),
        ("device", LONG),
        ("--api-url", LONG, "devices"),
    ],
)
def test_errors_quote_a_short_prefix_of_what_was_typed(bambu: Bambu, args: tuple[str, ...]) -> None:
    result = bambu(*args)
    assert result.returncode == 2, result
    line = one_line_error(result.stderr)
    assert len(line) < 300, line
    assert "'" + "x" * 40 + "…'" in line, line


def test_a_long_serial_the_server_does_not_know_is_quoted_short(
    bambu: Bambu, cli_sim: CloudSimulator
) -> None:
    login(bambu, cli_sim)
    result = bambu("device", "info", "Q" * 5000)
    assert result.returncode == 1, result
    line = one_line_error(result.stderr)
    assert len(line) < 300 and "'" + "Q" * 40 + "…'" in line, line


def test_five_wrong_codes_then_too_many_attempts(
    tmp_path_factory: pytest.TempPathFactory, cli_sim: CloudSimulator
) -> None:
    fresh = Bambu(home=tmp_path_factory.mktemp("codes"), api_url=cli_sim.url)
    account = cli_sim.demo_account
    creds = ("login", "--account", account.email, "--password", account.password)
    assert fresh(*creds).returncode == 1  # sends the code
    right = outbox_code(cli_sim, account.email)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for _ in range(5):
        refused = fresh(*creds, "--code", wrong)
        assert refused.returncode == 1
        assert "incorrect" in one_line_error(refused.stderr)
    # The server took no more guesses at that code: even the right one is refused.
    dead = fresh(*creds, "--code", right)
    assert dead.returncode == 1
    line = one_line_error(dead.stderr)
    assert "too many attempts with that email code" in line, line
    assert "expired" not in line
    assert "a new one was sent" in line
    # ... and the new one works.
    assert fresh(*creds, "--code", outbox_code(cli_sim, account.email)).returncode == 0
