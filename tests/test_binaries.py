"""The fresh-machine path: a missing server binary skips exactly its tests, or fails under CI.

Runs pytest on one module in a subprocess with ``BAMBU_TEST_HIDE`` making
mosquitto count as missing, so the path is checked on every machine, with or
without mosquitto installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import binaries

ROOT = Path(__file__).resolve().parent.parent
MODULE = "tests/sim/test_mqtt_mosquitto.py"
# Its tests that need mosquitto (all but one, which runs without it).
NEEDING = (ROOT / MODULE).read_text().count('@needs("mosquitto")')


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"CI", "BAMBU_TEST_HIDE"}}
    return subprocess.run(
        args, cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def pytest_run(*extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, MODULE, **env
    )


# make test runs the suite in pytest-xdist workers: the line must survive that too.
@pytest.mark.parametrize("extra", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_missing_binary_skips_only_its_tests_with_one_summary_line(extra: tuple[str, ...]) -> None:
    done = pytest_run(*extra, BAMBU_TEST_HIDE="mosquitto")
    assert done.returncode == 0, done.stdout + done.stderr
    assert NEEDING >= 2
    assert f"1 passed, {NEEDING} skipped" in done.stdout
    summary = [line for line in done.stdout.splitlines() if "not installed:" in line]
    assert summary == [
        f"skipped, not installed: mosquitto ({NEEDING} tests; apt-get install mosquitto)"
    ], done.stdout


def test_missing_binary_fails_under_ci() -> None:
    done = pytest_run(BAMBU_TEST_HIDE="mosquitto", CI="true")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "mosquitto is not installed and CI=true requires it" in done.stdout
    assert f"{NEEDING} error" in done.stdout and "1 passed" in done.stdout
    assert "skipped, not installed" not in done.stdout


def test_provision_says_what_stays_missing_and_never_breaks_make() -> None:
    script = "tests/binaries.py"
    every = ",".join(binaries.BINARIES)  # all hidden: the same line on any machine
    done = run(sys.executable, script, "provision", BAMBU_TEST_HIDE=every)
    assert done.returncode == 0
    assert done.stdout.strip() == (
        f"provision: {', '.join(binaries.BINARIES)} not installed (BAMBU_TEST_HIDE is set); "
        "their tests will be skipped"
    )
    under_ci = run(sys.executable, script, "provision", BAMBU_TEST_HIDE=every, CI="true")
    assert "CI=true: their tests will fail" in under_ci.stdout
