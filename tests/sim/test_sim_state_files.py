"""The simulator's files: the env file outside the checkout by default, private
directories and files whatever the umask, and an env file that can undo itself."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bambulab.paths import private_dir
from bambulab.sim.command import UNSET_FUNCTION, env_file_text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def sim_under_umask_000(home: Path, *args: str) -> Iterator[dict[str, str]]:
    """``python -m bambulab.sim`` with HOME=home under umask 000, until its exports are out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAMBU_", "XDG_"))}
    env["HOME"] = str(home)
    process = subprocess.Popen(
        [sys.executable, "-m", "bambulab.sim", "--port", "0", "--quiet", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        umask=0,
    )
    try:
        assert process.stdout is not None
        exports: dict[str, str] = {}
        while "BAMBU_SIM_PASSWORD" not in exports:
            line = process.stdout.readline()
            assert line.startswith("export "), line or process.communicate(timeout=5)[1]
            name, _, value = line.removeprefix("export ").strip().partition("=")
            exports[name] = value
        yield exports
    finally:
        process.terminate()
        process.wait(10)


def test_bare_env_file_goes_to_the_private_state_dir(tmp_path: Path) -> None:
    with sim_under_umask_000(tmp_path, "--no-mqtt", "--env-file") as exports:
        state = tmp_path / ".local" / "state" / "bambulab" / "sim"
        env_file = state / "sim.env"
        text = env_file.read_text()
    assert f"export BAMBU_API_URL={exports['BAMBU_API_URL']}" in text.splitlines()
    assert mode(env_file) == 0o600
    # Every directory the simulator made is 0700, though umask 000 asked for 0777.
    for directory in (state, state.parent, state.parent.parent, tmp_path / ".local"):
        assert mode(directory) == 0o700, directory
    assert not list(Path.cwd().glob("sim.env"))  # nothing lands in the checkout


def test_state_dir_and_ca_files_are_private_under_umask_000(tmp_path: Path) -> None:
    state = tmp_path / "deep" / "state"
    with sim_under_umask_000(tmp_path, "--fleet", "seed", "--state-dir", str(state), "--env-file"):
        pass
    assert mode(tmp_path / "deep") == mode(state) == 0o700
    assert mode(state / "ca.key") == 0o600
    assert mode(state / "ca.crt") == 0o644  # public, but not writable by others
    assert mode(state / "sim.env") == 0o600  # --env-file follows --state-dir
    assert "BAMBU_CA_FILE" in (state / "sim.env").read_text()


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    made = private_dir(shared / "a" / "b")
    assert mode(shared) == 0o755 and mode(made) == mode(made.parent) == 0o700
    assert private_dir(made) == made  # idempotent
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        private_dir(tmp_path / "file")


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_env_file_undoes_exactly_what_it_set(shell: str, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"needs {shell}")
    lines = ["export BAMBU_API_URL=http://127.0.0.1:1", "export BAMBU_TOKEN='a b'"]
    env_file = tmp_path / "sim.env"
    env_file.write_text(env_file_text(lines, "http://127.0.0.1:1", env_file))
    script = (
        f". '{env_file}'\n"
        'echo "set:$BAMBU_API_URL:$BAMBU_TOKEN:$BAMBU_MINE"\n'
        f"{UNSET_FUNCTION}\n"
        'echo "after:${BAMBU_API_URL-unset}:${BAMBU_TOKEN-unset}:$BAMBU_MINE"\n'
        f"command -v {UNSET_FUNCTION} || echo gone\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "BAMBU_MINE": "kept"}
    proc = subprocess.run([shell, "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "set:http://127.0.0.1:1:a b:kept",
        "after:unset:unset:kept",
        "gone",
    ]


def test_a_newline_in_the_path_cannot_escape_the_header_comment(tmp_path: Path) -> None:
    text = env_file_text(["export A=1"], "http://h", tmp_path / "x\ntouch pwned")
    assert "touch pwned" not in text
    assert all(line.startswith(("#", "export ", UNSET_FUNCTION)) for line in text.splitlines())
