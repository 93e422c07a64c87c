"""``bambu --help`` stays light: no HTTP client, no pydantic, no rich, no cloud layer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("httpx", "pydantic", "fastapi", "uvicorn", "cryptography", "rich", "anyio")
PROBE = f"""
import json, sys
sys.argv = ["bambu", *json.loads(sys.argv[1])]
from bambulab.cli import main
code = main()
loaded = sorted(
    m for m in sys.modules
    if m.split(".")[0] in {set(HEAVY)}
    or m.startswith(("bambulab.cloud", "bambulab.sim", "bambulab.models", "bambulab.protocol"))
)
print(json.dumps({{"code": code, "loaded": loaded}}), file=sys.stderr)
"""


def probe(*args: str) -> tuple[str, dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(args))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return proc.stdout, report


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        (),
        ("devices", "--help"),
        ("device", "info", "--help"),
        ("login", "--help"),
        ("tasks", "--limit", "3", "--help"),
        ("--json", "projects", "--help"),
        ("demo", "--help"),
        ("--region", "china", "profile", "set", "--help"),
        ("device",),
    ],
)
def test_help_imports_nothing_heavy(args: tuple[str, ...]) -> None:
    out, report = probe(*args)
    assert report["code"] == 0
    assert report["loaded"] == []
    commands = [a for a in args if not a.startswith("-") and a not in ("china", "3")]
    assert out.startswith(" ".join(["Usage: bambu", *commands]) + " ")


def test_help_lists_every_command() -> None:
    out, _ = probe("--help")
    for command in (
        "login", "logout", "whoami", "devices", "device", "tasks", "projects",
        "messages", "notifications", "profile", "sim", "demo",
    ):  # fmt: skip
        assert f"\n  {command} " in out
    for option in ("--api-url", "--region", "--json", "--debug", "--token-file"):
        assert option in out


def test_global_options_are_hoisted() -> None:
    from bambulab.cli import hoist_global_options as hoist

    assert hoist(["devices", "--json"]) == ["--json", "devices"]
    assert hoist(["device", "info", "X", "--api-url", "http://h", "--debug"]) == [
        "--api-url", "http://h", "--debug", "device", "info", "X",
    ]  # fmt: skip
    assert hoist(["tasks", "--region=china"]) == ["--region=china", "tasks"]
    # The simulator's arguments are its own; so is everything after "--".
    assert hoist(["--json", "sim", "--port", "0", "--debug"]) == [
        "--json", "sim", "--port", "0", "--debug",
    ]  # fmt: skip
    assert hoist(["profile", "set", "--", "--json"]) == ["profile", "set", "--", "--json"]
    assert hoist(["devices", "--token-file"]) == ["--token-file", "devices"]


def test_version() -> None:
    from bambulab import __version__

    proc = subprocess.run(
        [sys.executable, "-m", "bambulab.cli", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"bambu {__version__}"
