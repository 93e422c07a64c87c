"""Fixtures of the CLI tests: a simulator per module and a ``bambu`` runner.

Every command runs in a process of its own (``python -m bambulab.cli``, forked
from a process that has imported it already: :mod:`tests.cli.forkrun`) against a
simulator started in the test process, with ``HOME``, ``BAMBU_TOKEN_FILE`` and
``BAMBU_API_URL`` pointing into a temporary directory: the real home and the
real cloud are never touched. The runner checks every output for every token
it knows, so a leaked token fails the test that printed it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bambulab.sim import CloudSimulator, SimConfig
from tests.cli import forkrun
from tests.conftest import unlimited

RUN_TIMEOUT = 30.0


@dataclass
class Result:
    """One finished ``bambu`` run."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (
            f"bambu {' '.join(self.args)} -> {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


@dataclass
class Bambu:
    """Runs ``bambu`` in a subprocess with an isolated environment."""

    home: Path
    api_url: str
    secrets: set[str] = field(default_factory=set)
    history: list[Result] = field(default_factory=list)

    @property
    def token_file(self) -> Path:
        return self.home / "bambu_token.json"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BAMBU_")}
        env.update(
            HOME=str(self.home),
            BAMBU_API_URL=self.api_url,
            BAMBU_TOKEN_FILE=str(self.token_file),
            COLUMNS="200",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def __call__(self, *args: str, env: dict[str, str] | None = None, **extra: str) -> Result:
        proc = forkrun.run(args, env if env is not None else self.env(**extra), RUN_TIMEOUT)
        result = Result(tuple(args), proc.returncode, proc.stdout, proc.stderr)
        self.history.append(result)
        self.learn_token()
        self.check_no_secret(result)
        return result

    def learn_token(self) -> None:
        """Remember the saved token, so later checks look for it too."""
        try:
            saved = json.loads(self.token_file.read_text())
        except (OSError, ValueError):
            return
        if isinstance(saved, dict) and saved.get("token"):
            self.secrets.add(saved["token"])

    def check_no_secret(self, result: Result) -> None:
        for secret in self.secrets:
            assert secret not in result.stdout, f"a token leaked to stdout:\n{result}"
            assert secret not in result.stderr, f"a token leaked to stderr:\n{result}"


def unlimited_config() -> SimConfig:
    # The CLI tests log in many times in a minute; the real limit (5/min)
    # would turn the later logins into 429s.
    return unlimited()


@pytest.fixture(scope="module")
def cli_sim() -> Iterator[CloudSimulator]:
    """One simulator for the whole test module."""
    with CloudSimulator(unlimited_config()) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def bambu(cli_sim: CloudSimulator, tmp_path_factory: pytest.TempPathFactory) -> Bambu:
    """A runner whose token file lives in a fresh directory (not logged in yet)."""
    return Bambu(home=tmp_path_factory.mktemp("home"), api_url=cli_sim.url)


def outbox_code(sim: CloudSimulator, account: str, kind: str = "email") -> str:
    """The newest code the simulator sent to ``account``."""
    deadline = time.monotonic() + 5
    while True:
        answer = httpx.get(
            f"{sim.url}/sim/outbox", params={"account": account, "kind": kind}, timeout=5
        ).json()
        if answer["messages"]:
            return str(answer["messages"][-1]["code"])
        assert time.monotonic() < deadline, f"no {kind} code for {account} in the outbox"
        time.sleep(0.05)


def outbox_count(sim: CloudSimulator, account: str, kind: str = "email") -> int:
    answer = httpx.get(
        f"{sim.url}/sim/outbox", params={"account": account, "kind": kind}, timeout=5
    ).json()
    return len(answer["messages"])


def login(bambu: Bambu, sim: CloudSimulator) -> None:
    """The scripted two-step login: the first run sends the code, the second passes it."""
    account = sim.demo_account
    first = bambu("login", "--account", account.email, "--password", account.password)
    assert first.returncode == 1, first
    code = outbox_code(sim, account.email)
    second = bambu(
        "login", "--account", account.email, "--password", account.password, "--code", code
    )
    assert second.returncode == 0, second


class Background:
    """A long-running ``bambu`` command (a server): its lines as they come, Ctrl-C to stop it."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        import queue
        import threading

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bambulab.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.err = ""
        stdout = self.proc.stdout
        assert stdout is not None

        def pump() -> None:
            for text in stdout:
                self.lines.put(text)

        threading.Thread(target=pump, daemon=True).start()

    def wait_line(self, wanted: str, timeout: float = 20.0) -> str:
        """The first stdout line containing ``wanted`` (fails after ``timeout`` seconds)."""
        import queue

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.05, left))
            except queue.Empty:
                line = ""
            if line:
                self.seen.append(line)
                if wanted in line:
                    return line
            if left <= 0 or (not line and self.proc.poll() is not None):
                self.stop()
                pytest.fail(f"no {wanted!r} in {''.join(self.seen)!r}; stderr: {self.err!r}")

    def stop(self, sig: int | None = None) -> tuple[int, str]:
        """Send Ctrl-C (or ``sig``), wait; (exit status, the rest of stdout and all stderr)."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if sig is None else sig)
        try:
            self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        if not self.proc.stderr.closed:
            self.err += self.proc.stderr.read()
            self.proc.stderr.close()
        rest = "".join(self.seen) + "".join(self.lines.queue) + self.err
        return self.proc.returncode, rest


def sim_environment(sim: Any, **extra: str) -> dict[str, str]:
    """This process's environment without any ``BAMBU_*``, plus ``sim``'s export lines.

    What ``eval "$(bambu sim ...)"`` gives a shell.
    """
    import shlex

    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMBU_")}
    for line in sim.export_lines():
        name, value = line.removeprefix("export ").split("=", 1)
        env[name] = shlex.split(value)[0] if value else ""
    env.update(extra)
    return env
