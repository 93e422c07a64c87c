"""The runner: start-up time, clean stop, ``main()`` as a process, config files."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from bambulab.sim import CloudSimulator, ConfigError, SimConfig, load_config, main
from bambulab.sim.command import build_parser, config_from_args
from bambulab.sim.config import parse_fleet
from tests.sim.simtools import DEMO, DEMO_PASSWORD, SEED_DEVICE

EXPORTS = ("BAMBU_API_URL", "BAMBU_TOKEN", "BAMBU_SIM_EMAIL", "BAMBU_SIM_PASSWORD")


def test_start_is_fast_and_stop_is_clean() -> None:
    started = time.perf_counter()
    sim = CloudSimulator(SimConfig())
    sim.start()
    elapsed = time.perf_counter() - started
    try:
        assert elapsed < 2.0, f"start-up took {elapsed:.2f} s"
        assert sim.url == f"http://127.0.0.1:{sim.port}"
        assert httpx.get(f"{sim.url}/sim/health").json() == {"ok": True}
    finally:
        stopping = time.perf_counter()
        sim.stop()
    assert time.perf_counter() - stopping < 1.0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sim.url}/sim/health", timeout=1)
    sim.stop()  # idempotent


def test_two_simulators_get_distinct_ports() -> None:
    with CloudSimulator() as first, CloudSimulator() as second:
        assert first.port != second.port
        assert first.port > 0


def test_demo_account_and_issue_token() -> None:
    with CloudSimulator() as sim:
        demo = sim.demo_account
        assert demo.email == DEMO
        assert demo.password == DEMO_PASSWORD
        assert demo.uid == 1873420516
        assert demo.phone is None
        token = sim.issue_token(DEMO)
        response = httpx.get(
            f"{sim.url}/v1/iot-service/api/user/bind", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
        with pytest.raises(KeyError):
            sim.issue_token("nobody@example.com")


def test_same_seed_same_world() -> None:
    first = CloudSimulator(SimConfig(epoch=1_700_000_000)).world
    second = CloudSimulator(SimConfig(epoch=1_700_000_000)).world
    assert list(first.devices) == list(second.devices)
    assert [d.access_code for d in first.devices.values()] == [
        d.access_code for d in second.devices.values()
    ]
    assert [(t.id, t.title, t.start_time) for t in first.tasks.values()] == [
        (t.id, t.title, t.start_time) for t in second.tasks.values()
    ]
    other = CloudSimulator(SimConfig(epoch=1_700_000_000, seed=2)).world
    assert list(other.devices) != list(first.devices)


def test_non_loopback_host_is_refused_by_the_runner() -> None:
    with pytest.raises(ConfigError):
        CloudSimulator(SimConfig(host="0.0.0.0"))


# --- main() ---------------------------------------------------------------------------------


@contextmanager
def running_main(*args: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """``python -m bambulab.sim`` with ``args``; yields the process and its exports."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bambulab.sim", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        exports: dict[str, str] = {}
        for _ in EXPORTS:
            line = process.stdout.readline()
            assert line.startswith("export "), line
            name, _, value = line.removeprefix("export ").strip().partition("=")
            exports[name] = value
        yield process, exports
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_main_prints_exports_and_stops_on_signal(sig: signal.Signals, tmp_path: Path) -> None:
    env_file = tmp_path / "sim.env"
    with running_main("--env-file", str(env_file), "--fleet", "seed,x1c") as (process, exports):
        assert list(exports) == list(EXPORTS)
        assert exports["BAMBU_SIM_EMAIL"] == DEMO
        assert exports["BAMBU_SIM_PASSWORD"] == DEMO_PASSWORD
        url = exports["BAMBU_API_URL"]
        assert url.startswith("http://127.0.0.1:")
        headers = {"Authorization": f"Bearer {exports['BAMBU_TOKEN']}"}
        devices = httpx.get(f"{url}/v1/iot-service/api/user/bind", headers=headers).json()
        assert next(d["dev_id"] for d in devices["devices"]) == SEED_DEVICE
        assert len(devices["devices"]) == 2

        # The export lines, between a comment header and the function undoing them.
        written = [x for x in env_file.read_text().splitlines() if x.startswith("export ")]
        # The cloud's lines come first; MQTT and printer lines follow (test_mqtt_runner).
        assert written[: len(EXPORTS)] == [
            f"export {name}={value}" for name, value in exports.items()
        ]
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600

        process.send_signal(sig)
        _stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "Traceback" not in stderr
    assert DEMO_PASSWORD not in stderr


def test_main_logs_outbox_codes(tmp_path: Path) -> None:
    with running_main() as (process, exports):
        url = exports["BAMBU_API_URL"]
        httpx.post(
            f"{url}/v1/user-service/user/sendemail/code",
            json={"email": DEMO, "type": "codeLogin"},
        )
        code = httpx.get(f"{url}/sim/outbox", params={"account": DEMO}).json()["messages"][-1][
            "code"
        ]
        process.send_signal(signal.SIGINT)
        _stdout, stderr = process.communicate(timeout=10)
    assert f"outbox: email code {code} for {DEMO} (expires in 300 s)" in stderr
    assert exports["BAMBU_TOKEN"] not in stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_main_refuses_non_loopback_hosts(host: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", host, "--port", "0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "loopback" in lines[0]


def test_main_usage_errors_return_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--fleet", "x9z"]) == 2
    assert "unknown printer model" in capsys.readouterr().err
    assert main(["--port", "nope"]) == 2
    assert main(["--help"]) == 0


def test_main_reports_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    with CloudSimulator() as sim:
        assert main(["--port", str(sim.port)]) == 1
    assert "cannot listen" in capsys.readouterr().err


def test_command_line_overrides() -> None:
    args = build_parser().parse_args(
        [
            "--code-ttl",
            "30",
            "--token-ttl",
            "120",
            "--no-rate-limits",
            "--fleet",
            "x1c,p1s:offline:newline",
            "--seed",
            "7",
        ]
    )
    config = config_from_args(args)
    assert config.port == 8080
    assert config.code_ttl == 30
    assert config.token_ttl == 120
    assert config.seed == 7
    assert config.rate_limits.get("auth") is None
    devices = config.demo_account.devices
    assert [d.model for d in devices] == ["x1c", "p1s"]
    assert devices[1].online is False
    assert devices[1].access_code_newline is True


# --- TOML config -------------------------------------------------------------------------------

EXAMPLE = """
[server]
port = 9000

[auth]
code_ttl = 60
tfa_field_endpoint = false

[data]
seed = 42
epoch = "2025-01-01T00:00:00Z"

[rate_limits]
auth = { limit = 2, window = 60 }
device = { limit = 0, window = 60 }

[[accounts]]
email = "alice@example.com"
password = "alice-pass"
mode = "password"
uid = 42
demo = true
fleet = ["x1c", "h2d:printing"]

[[accounts.devices]]
model = "a1mini"
dev_id = "03000A000000001"
name = "Tiny"
access_code = "abcdefgh"
online = false

[[accounts]]
phone = "+15550999"
password = "bob-pass"
mode = "verifyCode"

[[bindable]]
model = "p1s"
dev_id = "01P00A000000009"
bind_code = "ABCD1234"
"""


def test_load_config(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(EXAMPLE)
    config = load_config(path)
    assert config.port == 9000
    assert config.code_ttl == 60
    assert config.tfa_field_endpoint is False
    assert config.seed == 42
    assert config.epoch == 1_735_689_600
    assert config.rate_limits.get("auth") is not None
    assert config.rate_limits.get("device") is None
    assert [a.login for a in config.accounts] == ["alice@example.com", "+15550999"]
    alice = config.demo_account
    assert [d.model for d in alice.devices] == ["x1c", "h2d", "a1mini"]
    assert alice.devices[1].printing is True
    with CloudSimulator(replace(config, port=0)) as sim:
        assert sim.demo_account.uid == 42
        tiny = sim.world.devices["03000A000000001"]
        assert tiny.name == "Tiny"
        assert tiny.online is False
        assert sim.world.devices["01P00A000000009"].owner is None
        h2d = next(d for d in sim.world.devices.values() if d.model.key == "h2d")
        assert h2d.state == "RUNNING"
        assert [u.kind for u in h2d.ams] == ["n3f", "n3s"]
        assert [u.id for u in h2d.ams] == [0, 128]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", "server.prot"),
        ("[auth]\ncode_ttl = 'soon'\n", "auth.code_ttl"),
        ("[[accounts]]\nemail = 'a@b.c'\n", "password"),
        ("[[accounts]]\npassword = 'x'\n", "email or a phone"),
        ("[[accounts]]\nemail = 'a@b.c'\npassword = 'x'\nmode = 'magic'\n", "mode"),
        ("[[accounts]]\nemail = 'a@b.c'\npassword = 'x'\nfleet = ['x1q']\n", "x1q"),
        ("[rate_limits]\nauth = 5\n", "rate_limits.auth"),
        ("not toml ===", "not valid TOML"),
    ],
)
def test_config_errors_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


def test_parse_fleet_flags() -> None:
    [seed, busy, x1c] = parse_fleet("seed, seed:printing, x1c:outdated:idle")
    assert seed.dev_id == busy.dev_id == SEED_DEVICE
    # Idle by default, so the seed's upload-and-print examples can start a print on it.
    assert (seed.printing, busy.printing) == (False, True)
    assert x1c.outdated is True
    assert x1c.idle is True
    with pytest.raises(ConfigError, match="unknown fleet flag"):
        parse_fleet("x1c:shiny")


def test_module_entry_point_exists() -> None:
    assert os.path.exists(Path(sys.modules["bambulab.sim"].__file__ or "").parent / "__main__.py")


def test_documented_config_example_loads(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "simulator.md"
    text = docs.read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.toml"
    path.write_text(example)
    config = load_config(path)
    assert config.demo_account.login == "alice@example.com"
    with CloudSimulator(replace(config, port=0)) as sim:
        assert sim.world.devices["03000A000000001"].name == "Tiny"
        assert sim.world.find_account("+15550999") is not None
