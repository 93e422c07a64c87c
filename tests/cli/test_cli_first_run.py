"""First-run safety: where login sends the password, passwords kept out of ``ps``,
and token files that are too open or corrupt."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bambulab.sim import CloudSimulator
from tests.cli.conftest import RUN_TIMEOUT, Bambu, Result, login, outbox_code


@pytest.fixture
def fresh(cli_sim: CloudSimulator, tmp_path: Path) -> Bambu:
    return Bambu(home=tmp_path, api_url=cli_sim.url)


def piped(bambu: Bambu, stdin: str, *args: str) -> Result:
    """``bambu args`` with ``stdin`` on standard input."""
    proc = subprocess.run(
        [sys.executable, "-m", "bambulab.cli", *args],
        env=bambu.env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    result = Result(tuple(args), proc.returncode, proc.stdout, proc.stderr)
    bambu.learn_token()
    bambu.check_no_secret(result)
    return result


def test_login_says_it_is_talking_to_the_api_url(fresh: Bambu, cli_sim: CloudSimulator) -> None:
    account = cli_sim.demo_account
    result = fresh("login", "--account", account.email, "--password", account.password)
    notes = [x for x in result.stderr.splitlines() if x.startswith("note:")]
    assert notes == [
        f"note: logging in at {cli_sim.url} (from BAMBU_API_URL), not the Bambu cloud; "
        "unset BAMBU_API_URL for the Bambu cloud"
    ]
    by_flag = fresh("--api-url", cli_sim.url, "login", "-a", account.email, "--password", "x")
    assert f"note: logging in at {cli_sim.url} (from --api-url)" in by_flag.stderr


def test_password_from_standard_input(fresh: Bambu, cli_sim: CloudSimulator) -> None:
    account = cli_sim.demo_account
    args = ("login", "--account", account.email, "--password-stdin")
    first = piped(fresh, account.password + "\n", *args)
    assert first.returncode == 1 and "--code" in first.stderr, first  # the code was sent
    done = piped(
        fresh, account.password + "\r\n", *args, "--code", outbox_code(cli_sim, account.email)
    )
    assert done.returncode == 0, done
    assert json.loads(fresh.token_file.read_text())["token"]
    # A wrong password on stdin is the server's refusal, so stdin is what was sent.
    wrong = piped(fresh, "not-" + account.password + "\n", *args)
    assert wrong.returncode == 1 and "login refused" in wrong.stderr, wrong


@pytest.mark.parametrize(
    ("stdin", "extra", "expected"),
    [
        ("", (), "standard input has no password"),
        ("\n", (), "standard input has no password"),
        ("p" * 5000 + "\n", (), "longer than 4096 characters"),
        ("pw\n", ("--password", "pw"), "--password and --password-stdin exclude each other"),
    ],
)
def test_password_stdin_usage_errors(
    fresh: Bambu, stdin: str, extra: tuple[str, ...], expected: str
) -> None:
    result = piped(fresh, stdin, "login", "-a", "maker@example.com", "--password-stdin", *extra)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result
    assert "p" * 100 not in result.stderr


def test_password_stdin_wins_over_the_environment(fresh: Bambu, cli_sim: CloudSimulator) -> None:
    account = cli_sim.demo_account
    proc = subprocess.run(
        [sys.executable, "-m", "bambulab.cli", "login", "-a", account.email, "--password-stdin"],
        env=fresh.env(BAMBU_PASSWORD="wrong-from-env"),
        input=account.password + "\n",
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert proc.returncode == 1 and "verification code was just sent" in proc.stderr, proc.stderr


def test_a_token_file_open_to_others_is_fixed_with_one_warning(
    fresh: Bambu, cli_sim: CloudSimulator
) -> None:
    login(fresh, cli_sim)
    fresh.token_file.chmod(0o644)
    result = fresh("whoami", "--json")
    assert result.returncode == 0, result
    assert result.stderr.splitlines() == [
        f"warning: the token file {fresh.token_file} was open to others (mode 644); "
        "changed it to 600"
    ]
    assert stat.S_IMODE(fresh.token_file.stat().st_mode) == 0o600
    again = fresh("whoami", "--json")
    assert again.returncode == 0 and again.stderr == "", again


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"region": "global", "tok', "not JSON"),
        ('["a token in a list"]', "expected a JSON object, found a list"),
        ('{"region": "global"}', 'no "token" string in it'),
        ("", "it is empty"),
    ],
)
def test_a_corrupt_token_file_is_reported_as_corrupt(fresh: Bambu, content: str, why: str) -> None:
    fresh.token_file.write_text(content)
    fresh.token_file.chmod(0o600)
    result = fresh("devices")
    assert result.returncode == 1, result
    line = result.stderr.strip()
    assert line.startswith(f"error: token file {fresh.token_file} is corrupt: {why}"), line
    assert line.endswith("; run `bambu login`")
    assert "not logged in" not in line and len(result.stderr.splitlines()) == 1


# Imports of the simulator's extra fail in this interpreter, as if it was never installed.
WITHOUT_SIM_EXTRA = """
import sys
from importlib.abc import MetaPathFinder

BLOCKED = {"fastapi", "starlette", "uvicorn", "amqtt", "cryptography"}

class NotInstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from bambulab.cli import main
sys.argv[0] = "bambu"
sys.exit(main())
"""


@pytest.mark.parametrize("args", [("sim", "--port", "0"), ("demo",), ("sim", "--help")])
def test_sim_and_demo_name_the_extra_when_it_is_missing(
    fresh: Bambu, args: tuple[str, ...]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_SIM_EXTRA, *args],
        env=fresh.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: `bambu {args[0]}` needs the simulator's extra ("), lines
    assert lines[0].endswith("is not installed): pip install 'bambulab[sim]'"), lines


def test_other_commands_work_without_the_sim_extra(fresh: Bambu) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_SIM_EXTRA, "--version"],
        env=fresh.env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("bambu "), proc.stderr


def test_after_make_demo_the_next_steps_name_the_venv(tmp_path: Path) -> None:
    from bambulab.cli.demo import how_to_run_bambu, next_steps

    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "bambu"
    script.write_text("")
    (bin_dir / "activate").write_text("")
    # make demo: .venv/bin/bambu, not on PATH.
    how = how_to_run_bambu(".venv/bin/bambu", None, tmp_path)
    assert how == (".venv/bin/bambu", ".venv/bin/activate")
    text = next_steps(how, under_make=True)
    assert "make serve" in text and ".venv/bin/bambu --help" in text
    assert ". .venv/bin/activate" in text
    # Once it is on PATH (activated, or installed), plain bambu.
    assert how_to_run_bambu(str(script), str(script), tmp_path) == ("bambu", None)
    assert "bambu demo --serve" in next_steps(("bambu", None))
    # From elsewhere: the absolute path.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert how_to_run_bambu(str(script), None, elsewhere)[0] == str(script.resolve())
