"""Shell completion: the script ``--show-completion`` prints, ``--install-completion``,
and the ``_BAMBU_COMPLETE`` protocol the script calls ``bambu`` back with."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import forkrun


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BAMBU_", "_BAMBU"))}
    return forkrun.run(args, {**base, **env}, 30)


def complete(words: str, cword: int) -> list[str]:
    proc = run(_BAMBU_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(cword))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_show_completion_prints_the_bash_script() -> None:
    proc = run("--show-completion", "bash", SHELL="/bin/bash")
    assert proc.returncode == 0, proc.stderr
    assert "complete -o default -F _bambu_completion bambu" in proc.stdout
    assert "_BAMBU_COMPLETE=complete_bash" in proc.stdout
    # The named shell wins over whatever runs bambu, and the = form works too.
    zsh = run("--show-completion=zsh", SHELL="/bin/bash")
    assert zsh.returncode == 0, zsh.stderr
    assert zsh.stdout.startswith("#compdef bambu")


def test_show_completion_refuses_a_shell_it_cannot_complete() -> None:
    proc = run("--show-completion", "tcsh" + "x" * 500)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: no completion for 'tcsh")
    assert len(proc.stderr) < 200 and "bash, zsh, fish" in proc.stderr


def test_completion_options_are_in_the_help() -> None:
    out = run("--help").stdout
    assert "--install-completion" in out and "--show-completion" in out


def test_commands_complete_through_the_env_protocol() -> None:
    assert complete("bambu dev", 1) == ["devices", "device"]
    assert complete("bambu device ", 2) == ["info", "version", "bind", "unbind", "rename"]
    assert "--region" in complete("bambu --reg", 1)
    # Global options do not get in the way of the command after them.
    assert complete("bambu --json not", 2) == ["notifications"]


def test_install_completion_writes_the_script_and_sources_it(tmp_path: Path) -> None:
    proc = run("--install-completion", "bash", HOME=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / ".bash_completions" / "bambu.sh"
    assert "_BAMBU_COMPLETE=complete_bash" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()
    assert str(script) in proc.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_with_the_printed_script(tmp_path: Path) -> None:
    """The script, sourced by a real bash, turns ``bambu dev<TAB>`` into the two commands."""
    launcher = tmp_path / "bambu"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m bambulab.cli "$@"\n')
    launcher.chmod(0o755)
    shell = (
        "source <(bambu --show-completion bash)\n"
        "COMP_WORDS=(bambu dev); COMP_CWORD=1\n"
        "_bambu_completion bambu\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    path = f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}"
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", shell],
        env={**os.environ, "PATH": path, "SHELL": "/bin/bash"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["devices", "device"]
