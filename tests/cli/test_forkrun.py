"""The forked runner of the CLI tests gives what a real ``python -m bambulab.cli`` gives."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import forkrun


def real(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bambulab.cli", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["no-such-command"],
        ["--json", "whoami"],  # no token: one error line, exit 1
        ["--debug", "devices", "--api-url", "ftp://x"],
        ["upload", "missing.3mf"],  # a path relative to the working directory
        ["--help"],
    ],
)
def test_same_status_and_output_as_a_real_interpreter(args: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMBU_")}
    env.update(
        HOME=str(tmp_path),
        BAMBU_TOKEN_FILE=str(tmp_path / "token.json"),
        BAMBU_API_URL="http://127.0.0.1:9",
        COLUMNS="100",
    )
    assert forkrun._get_server(env) is not None, "the fork server runs"
    forked = forkrun.run(args, env, 30, cwd=tmp_path)
    expected = real(args, env, tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        expected.returncode,
        expected.stdout,
        expected.stderr,
    )


def test_a_command_past_its_timeout_is_killed(tmp_path: Path) -> None:
    env = dict(os.environ, HOME=str(tmp_path))
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        forkrun.run(["sim", "--port", "0", "--no-mqtt"], env, 2.0)
    assert time.monotonic() - started < 10


def test_a_changed_interpreter_option_runs_a_real_interpreter(tmp_path: Path) -> None:
    env = dict(os.environ, HOME=str(tmp_path), PYTHONIOENCODING="latin-1")
    assert forkrun._get_server(env) is None
    assert forkrun.run(["--version"], env, 30).returncode == 0
