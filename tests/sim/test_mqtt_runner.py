"""``bambu sim`` with MQTT: the grown export lines, a client using them, a clean exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bambulab.sim import main
from tests.binaries import needs
from tests.sim.mqtt_support import Probe, is_full_report, pushall
from tests.sim.simtools import SEED_DEVICE

LAST_LINE = "BAMBU_PRINTER_PORT"


@contextmanager
def running_sim(
    *args: str, last: str = LAST_LINE
) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
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
        while True:
            line = process.stdout.readline()
            assert line.startswith("export "), line or process.stderr.read()  # type: ignore[union-attr]
            name, _, value = line.removeprefix("export ").strip().partition("=")
            exports[name] = value
            if name == last:
                break
        yield process, exports
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_exports_reach_a_printer_and_sigterm_exits_cleanly(tmp_path: Path) -> None:
    env_file = tmp_path / "sim.env"
    started = time.monotonic()
    with running_sim("--env-file", str(env_file), "--fleet", "seed,x1c,p1s") as (process, env):
        startup = time.monotonic() - started
        names = list(env)
        assert names[:4] == [
            "BAMBU_API_URL",
            "BAMBU_TOKEN",
            "BAMBU_SIM_EMAIL",
            "BAMBU_SIM_PASSWORD",
        ]
        assert names[4:8] == [
            "BAMBU_MQTT_HOST",
            "BAMBU_MQTT_PORT",
            "BAMBU_USER_ID",
            "BAMBU_CA_FILE",
        ]
        for number in (1, 2, 3):
            for suffix in ("SERIAL", "ACCESS_CODE", "HOST", "PORT", "MODEL"):
                assert f"BAMBU_PRINTER_{number}_{suffix}" in env
        assert "BAMBU_PRINTER_4_SERIAL" not in env
        assert env["BAMBU_MQTT_HOST"] == "127.0.0.1"
        assert env["BAMBU_PRINTER_1_SERIAL"] == env["BAMBU_SERIAL"] == SEED_DEVICE
        assert env["BAMBU_PRINTER_1_MODEL"] == "C11"
        assert env["BAMBU_PRINTER_2_MODEL"] == "BL-P001"
        assert env["BAMBU_ACCESS_CODE"] == env["BAMBU_PRINTER_1_ACCESS_CODE"] == "01234567"
        assert env["BAMBU_PRINTER_HOST"] == env["BAMBU_PRINTER_1_HOST"]
        assert env["BAMBU_PRINTER_PORT"] == env["BAMBU_PRINTER_1_PORT"]
        assert env["BAMBU_PRINTER_FTP_PORT"] == env["BAMBU_PRINTER_1_FTP_PORT"]
        assert len({env[f"BAMBU_PRINTER_{n}_FTP_PORT"] for n in (1, 2, 3)}) == 3
        assert Path(env["BAMBU_CA_FILE"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
        exported = [x for x in env_file.read_text().splitlines() if x.startswith("export ")]
        assert exported == [f"export {k}={v}" for k, v in env.items()]
        assert startup < 10  # interpreter start included; the simulator itself takes < 2 s

        # A single-printer script needs nothing but these lines.
        lan = Probe(
            (env["BAMBU_PRINTER_HOST"], int(env["BAMBU_PRINTER_PORT"])),
            "bblp",
            env["BAMBU_ACCESS_CODE"],
            ca_file=env["BAMBU_CA_FILE"],
            server_name=env["BAMBU_SERIAL"],
        ).expect_connected()
        cloud = Probe(
            (env["BAMBU_MQTT_HOST"], int(env["BAMBU_MQTT_PORT"])),
            f"u_{env['BAMBU_USER_ID']}",
            env["BAMBU_TOKEN"],
            ca_file=env["BAMBU_CA_FILE"],
        ).expect_connected()
        try:
            for probe in (lan, cloud):
                probe.subscribe(f"device/{SEED_DEVICE}/report")
                probe.publish(f"device/{SEED_DEVICE}/request", pushall())
                probe.wait_for(is_full_report)
        finally:
            lan.close()
            cloud.close()

        process.send_signal(signal.SIGTERM)
        _stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "Traceback" not in stderr
    for secret in (
        env["BAMBU_TOKEN"],
        env["BAMBU_ACCESS_CODE"],
        env["BAMBU_PRINTER_2_ACCESS_CODE"],
    ):
        # The seed printer's access code is a prefix of its serial, which logs may name.
        assert secret not in stderr.replace(SEED_DEVICE, "<serial>")
    assert not Path(env["BAMBU_CA_FILE"]).exists()  # temporary files are removed


def test_no_mqtt_keeps_the_cloud_lines_only() -> None:
    with running_sim("--no-mqtt", last="BAMBU_SIM_PASSWORD") as (process, env):
        assert list(env) == [
            "BAMBU_API_URL",
            "BAMBU_TOKEN",
            "BAMBU_SIM_EMAIL",
            "BAMBU_SIM_PASSWORD",
        ]
        process.send_signal(signal.SIGINT)
        stdout, _stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert stdout == ""


@needs("mosquitto")
def test_mosquitto_broker_option(tmp_path: Path) -> None:
    with running_sim("--broker", "mosquitto", "--fleet", "seed", "--state-dir", str(tmp_path)) as (
        process,
        env,
    ):
        assert env["BAMBU_CA_FILE"]
        assert (tmp_path / "ca.crt").read_bytes() == Path(env["BAMBU_CA_FILE"]).read_bytes()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    assert process.returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--broker", "http://example.com"], "mqtt://"),
        (["--time-scale", "0"], "time-scale"),
    ],
)
def test_bad_mqtt_options_return_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--port", "0", *args]) == 2
    assert message in capsys.readouterr().err
