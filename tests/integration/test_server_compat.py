"""The legacy compatibility API against a simulated fleet, over real sockets.

Bodies are checked field by field against the simulated printer's own
report (live) or the cloud's ``/user/print`` answer (the fallback for a
printer that never reported), both read independently of the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bambulab import BambuClient
from bambulab.servers.compat import CloudFallback, LegacyDevices, LegacyStatus
from tests.conftest import wait_for
from tests.integration.live_server import Env, live_env

SEED_KEYS = {
    "command", "msg", "sequence_id", "mc_percent", "mc_remaining_time", "print_type",
    "print_status", "gcode_state", "gcode_file", "subtask_name", "nozzle_temper",
    "nozzle_target_temper", "bed_temper", "bed_target_temper", "chamber_temper", "spd_mag",
    "spd_lvl", "layer_num", "total_layer_num", "ams_status", "ams_rfid_status", "lights_report",
    "fan_gear", "wifi_signal", "dev_id", "name", "online",
}  # fmt: skip
# report keys copied as they are into the legacy body
WIRE_KEYS = [
    "mc_percent", "mc_remaining_time", "print_type", "gcode_state", "gcode_file",
    "subtask_name", "nozzle_temper", "nozzle_target_temper", "bed_temper", "bed_target_temper",
    "spd_mag", "spd_lvl", "layer_num", "total_layer_num", "ams_status", "ams_rfid_status",
    "lights_report", "fan_gear", "wifi_signal",
]  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with live_env(tmp_path_factory.mktemp("compat"), ("compat",)) as running:
        yield running


def get(env: Env, path: str, headers: dict[str, str], **params: str) -> httpx.Response:
    return httpx.get(f"{env.url}{path}", headers=headers, params=params, timeout=15)


def status(env: Env, serial: str, path: str = "/api/v1/status") -> dict[str, Any]:
    response = get(env, path, env.auth("read"), device_id=serial)
    assert response.status_code == 200, response.text
    return response.json()["print"]  # type: ignore[no-any-return]


def cloud_status(env: Env, serial: str) -> Any:
    with BambuClient(env.ctx.account_token, base_url=env.sim.url) as cloud:
        return next(s for s in cloud.get_print_status(force=True) if s.dev_id == serial)


def test_version_needs_no_token(env: Env) -> None:
    response = get(env, "/api/version", {})
    assert response.status_code == 200
    assert response.json() == {
        "api_version": "1.0.0",
        "compatibility_layer": True,
        "supported_clients": ["Home Assistant", "Octoprint", "Repetier", "Custom integrations"],
    }


def test_status_is_the_printers_report_field_by_field(env: Env) -> None:
    serial = env.idle  # an idle printer's report stands still: exact comparison

    def matches() -> bool:
        body = status(env, serial)
        truth = env.truth(serial)
        return all(body[key] == truth[key] for key in WIRE_KEYS)

    wait_for(matches, 10, "the legacy body to match the printer's report")
    body = status(env, serial)
    truth = env.truth(serial)
    assert set(body) == SEED_KEYS
    for key in WIRE_KEYS:
        assert body[key] == truth[key], key
    assert body["chamber_temper"] == truth["chamber_temper"]
    assert body["command"] == "push_status" and body["msg"] == 0
    assert body["sequence_id"].isdigit()
    assert body["dev_id"] == serial and body["name"] == env.names[serial]
    assert body["online"] is True
    assert body["print_status"] == "IDLE" == truth["gcode_state"]


def test_status_of_a_printing_printer_is_live(env: Env) -> None:
    body = status(env, env.printing)
    LegacyStatus.model_validate({"print": body})
    truth = env.truth(env.printing)
    assert body["gcode_state"] == "RUNNING" and body["print_status"] == "ACTIVE"
    assert body["subtask_name"] == truth["subtask_name"]
    assert body["total_layer_num"] == truth["total_layer_num"]
    assert body["gcode_file"] == truth["gcode_file"]
    assert 0 < body["mc_percent"] <= 100 and body["mc_remaining_time"] > 0
    assert body["online"] is True
    assert status(env, env.printing, "/api/v1/print")["subtask_name"] == truth["subtask_name"]


def test_a_printer_without_a_report_comes_from_the_cloud(env: Env) -> None:
    assert env.server.call(lambda: env.hub.state(env.offline)) is None
    body = status(env, env.offline)
    cloud = cloud_status(env, env.offline)
    assert body["dev_id"] == env.offline
    assert body["name"] == cloud.dev_name == env.names[env.offline]
    assert body["online"] is cloud.dev_online is False
    assert body["gcode_state"] == cloud.task_status
    assert body["print_status"] == "SUCCESS"
    assert body["mc_percent"] == cloud.progress
    assert body["subtask_name"] == cloud.task_name
    # what the cloud does not say keeps the seed's defaults
    assert body["nozzle_temper"] == 0 and body["spd_lvl"] == 2 and body["lights_report"] == []


def test_the_cloud_failing_is_502_for_a_printer_without_a_report(env: Env) -> None:
    cloud = env.ctx.extra["compat_cloud"]
    assert isinstance(cloud, CloudFallback)
    env.server.call(cloud.forget)
    fault = {"kind": "status", "status": 500, "path": "/v1/iot-service/api/user/print"}
    httpx.post(f"{env.sim.url}/sim/faults", json={**fault, "count": 20}, timeout=5)
    try:
        response = get(env, "/api/v1/status", env.auth("read"), device_id=env.offline)
        assert response.status_code == 502
        assert response.json()["detail"].startswith("the cloud API did not answer")
        assert env.ctx.account_token not in response.text
        # the live printers are still served when listing every printer
        every = get(env, "/api/v1/status", env.auth("read"))
        assert every.status_code == 200
        assert set(every.json()) == {env.printing, env.idle}
    finally:
        httpx.delete(f"{env.sim.url}/sim/faults", timeout=5)
        env.server.call(cloud.forget)


def test_every_printer_the_token_may_see(env: Env) -> None:
    every = get(env, "/api/v1/status", env.auth("read")).json()
    assert set(every) == {env.printing, env.idle, env.offline}
    for serial, body in every.items():
        assert LegacyStatus.model_validate(body).print.dev_id == serial
    only_a = get(env, "/api/v1/print", env.auth("read", env.printing)).json()
    assert set(only_a) == {env.printing}


def test_a_token_for_printer_a_never_reads_or_controls_b(env: Env) -> None:
    read_a = env.auth("read", env.printing)
    for other in (env.idle, env.offline, "NOSUCHPRINTER00"):
        refused = get(env, "/api/v1/status", read_a, device_id=other)
        assert refused.status_code == 403
    devices = get(env, "/api/v1/devices", read_a).json()["devices"]
    assert [d["dev_id"] for d in devices] == [env.printing]
    control_a = env.auth("control", env.printing)
    refused = httpx.post(
        f"{env.url}/api/v1/printers/{env.idle}/light", headers=control_a, json={"on": False}
    )
    assert refused.status_code == 403


def test_unknown_printer_and_missing_token(env: Env) -> None:
    unknown = get(env, "/api/v1/status", env.auth("read"), device_id="NOSUCHPRINTER00")
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Device not found"}
    for path in ("/api/v1/status", "/api/v1/print", "/api/v1/devices"):
        assert get(env, path, {}).status_code == 401


def test_devices_in_the_seed_shape_without_access_codes(env: Env) -> None:
    response = get(env, "/api/v1/devices", env.auth("read"))
    assert response.status_code == 200
    devices = {d.dev_id: d for d in LegacyDevices.model_validate(response.json()).devices}
    with BambuClient(env.ctx.account_token, base_url=env.sim.url) as cloud:
        bound = {d.dev_id: d for d in cloud.get_devices()}
    assert set(devices) == set(bound)
    for serial, device in devices.items():
        assert device.name == bound[serial].name
        assert device.dev_model_name == bound[serial].dev_model_name
        assert device.dev_product_name == bound[serial].dev_product_name
        assert device.dev_access_code == ""
        assert bound[serial].dev_access_code not in response.text
    assert devices[env.printing].online and devices[env.printing].print_status == "ACTIVE"
    assert not devices[env.offline].online


def test_pause_resume_and_light_through_the_legacy_api(env: Env) -> None:
    control = env.auth("control", env.printing)
    url = f"{env.url}/api/v1/printers/{env.printing}"
    refused = httpx.post(f"{url}/pause", headers=env.auth("read"), timeout=15)
    assert refused.status_code == 403
    paused = httpx.post(f"{url}/pause", headers=control, timeout=15)
    assert paused.status_code == 200, paused.text
    assert paused.json()["command"] == "pause"
    wait_for(lambda: status(env, env.printing)["gcode_state"] == "PAUSE", 10, "PAUSE")
    resumed = httpx.post(f"{url}/resume", headers=control, timeout=15)
    assert resumed.status_code == 200
    wait_for(lambda: status(env, env.printing)["gcode_state"] == "RUNNING", 10, "RUNNING")

    off = httpx.post(f"{url}/light", headers=control, json={"on": False}, timeout=15)
    assert off.status_code == 200
    wait_for(
        lambda: (
            {x["node"]: x["mode"] for x in status(env, env.printing)["lights_report"]}.get(
                "chamber_light"
            )
            == "off"
        ),
        10,
        "light off",
    )
    httpx.post(f"{url}/light", headers=control, json={"on": True}, timeout=15)
    stopped = httpx.post(
        f"{env.url}/api/v1/printers/{env.offline}/stop", headers=env.auth("control"), timeout=15
    )
    assert stopped.status_code == 409
