"""The user's MQTT examples (API_INDEX.md Workflow 2 and 3) run as written against the simulator.

The snippets are copied verbatim. What the documentation leaves to the
reader comes from ``bambu sim``'s export lines: ``user_id``,
``device_serial`` and ``access_code``, and the broker address and CA file.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bambulab.sim.live import Simulator
from tests.conftest import unlimited

WORKFLOW_2 = """
# 1. Connect to MQTT
mqtt = BambuMQTT(user_id, device_serial, access_code)
mqtt.connect()

# 2. Subscribe to status
def on_status(data):
    print(f"Progress: {data['mc_percent']}%")
    print(f"Nozzle: {data['nozzle_temper']}°C")
    print(f"Bed: {data['bed_temper']}°C")

mqtt.on_message = on_status
mqtt.subscribe_status()

# 3. Keep listening
mqtt.loop_forever()
"""

WORKFLOW_3 = """
# Via MQTT (real-time)
mqtt.connect()
status = mqtt.get_full_status()

for ams in status['ams']['ams']:
    for tray in ams['tray']:
        if 'tray_type' in tray:
            print(f"Tray {tray['id']}: {tray['tray_type']}")
            print(f"  Remaining: {tray['remain']}%")
            print(f"  Color: {tray['tray_color']}")
"""


@pytest.fixture(scope="module")
def exported() -> Iterator[tuple[Simulator, dict[str, str]]]:
    with Simulator(unlimited(), time_scale=60, tick_interval=0.2) as sim:
        env = {}
        for line in sim.export_lines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value
        yield sim, env


@pytest.fixture
def seed_scope(
    exported: tuple[Simulator, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    _, env = exported
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from bambulab import BambuMQTT

    return {
        "BambuMQTT": BambuMQTT,
        "user_id": os.environ["BAMBU_USER_ID"],
        "device_serial": os.environ["BAMBU_SERIAL"],
        "access_code": os.environ["BAMBU_ACCESS_CODE"],
    }


def test_workflow_2_monitor_print_progress(
    seed_scope: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            exec(compile(WORKFLOW_2, "workflow2", "exec"), seed_scope)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    # Let a few reports arrive (one every 0.2 s), then end loop_forever() the way a program would.
    time.sleep(2)
    seed_scope["mqtt"].disconnect()
    thread.join(10)
    assert not thread.is_alive(), "loop_forever() returned after disconnect()"
    assert not errors, errors
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("Progress: ")]
    assert len(lines) >= 2, out
    assert all(line.endswith("%") for line in lines)
    assert "Nozzle: " in out and "°C" in out and "Bed: " in out


def test_workflow_3_check_filament_levels(
    seed_scope: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    exec(
        compile("mqtt = BambuMQTT(user_id, device_serial, access_code)\n", "setup", "exec"),
        seed_scope,
    )
    try:
        exec(compile(WORKFLOW_3, "workflow3", "exec"), seed_scope)
    finally:
        seed_scope["mqtt"].disconnect()
    out = capsys.readouterr().out
    trays = [line for line in out.splitlines() if line.startswith("Tray ")]
    assert trays, out
    assert "  Remaining: " in out and "  Color: " in out
