"""``bambu demo`` and ``bambu sim``: the embedded simulator from the command line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.conftest import Bambu

# Seconds, in the loaded test suite (three workers on two cores); the demo itself takes
# about 12 s alone (`make demo`).
DEMO_BUDGET = 30.0


def start(bambu: Bambu, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bambulab.cli", *args],
        env=bambu.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_demo_logs_in_and_lists_devices_and_tasks(bambu: Bambu) -> None:
    started = time.monotonic()
    result = bambu("demo")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result
    out = result.stdout
    assert "read from the simulator's outbox" in out
    assert "Printers" in out and "Serial" in out
    assert "5 most recent tasks" in out
    # Live over MQTT: the cloud broker, a table of printers, AMS trays as colour swatches.
    assert "Live printers over MQTT" in out
    assert "connected to the cloud broker" in out
    assert "printers, live" in out and "RUNNING" in out
    assert "AMS unit" in out and "\u2588\u2588 #" in out
    assert "Demo finished" in out
    # A 3MF printed through the cloud on one printer and over FTPS on another, both seen printing.
    assert "uploaded to the cloud as file" in out
    assert "print.project_file sent on the cloud broker" in out
    assert "sent over implicit FTPS to its SD card" in out
    watched = out.split("both printing, watched for")[1]
    rows = [line for line in watched.splitlines() if "Demo cube" in line]
    assert len(rows) == 2 and all("RUNNING" in row or "PREPARE" in row for row in rows), watched
    # The server: a printer-scoped read token through the strict proxy, then one scrape.
    served = out.split("Server: the strict API proxy")[1]
    assert "bind -> 200: 1 printer(s) of 5 visible, access codes shown as ***" in served
    assert "DELETE (unbind) through the strict proxy -> 403, refused" in served
    assert "GET /metrics -> 200" in served and 'state="' in served
    # It ends with what to type next (run as python -m: plain "bambu").
    assert out.rstrip().splitlines()[-3].startswith("Next")
    assert "  bambu --help " in out
    assert elapsed < DEMO_BUDGET
    # The user's own token file (here: the runner's) is never written.
    assert not bambu.token_file.exists()
    assert not (bambu.home / ".bambu_token").exists()
    assert "Traceback" not in result.stderr


def test_demo_serve_until_interrupted(bambu: Bambu) -> None:
    proc = start(bambu, "demo", "--serve")
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "export BAMBU_API_URL=http://127.0.0.1:" in text
        assert "export BAMBU_TOKEN_FILE=" in text
        token_file = Path(text.split("export BAMBU_TOKEN_FILE=")[1].split()[0])
        # A second shell can use the exported settings.
        other = bambu(
            "whoami",
            "--json",
            env=bambu.env(
                BAMBU_API_URL=text.split("export BAMBU_API_URL=")[1].split()[0],
                BAMBU_TOKEN_FILE=str(token_file),
            ),
        )
        assert other.returncode == 0, other
        assert other.json()["mqtt_username"].startswith("u_")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert not token_file.exists()  # the temporary token went with the demo
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sim_writes_its_env_file_and_stops_on_sigterm(bambu: Bambu, tmp_path: Path) -> None:
    env_file = tmp_path / "sim.env"
    proc = start(bambu, "sim", "--port", "0", "--env-file", str(env_file))
    try:
        wait_for(lambda: env_file.exists() and "BAMBU_API_URL" in env_file.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sim_help_is_the_simulators_own(bambu: Bambu) -> None:
    result = bambu("sim", "--help")
    assert result.returncode == 0, result
    assert "--env-file" in result.stdout
    assert result.stdout.startswith("usage: bambu sim")
