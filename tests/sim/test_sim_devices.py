"""Device endpoints: bind list, bind/unbind, info, rename, firmware, camera credentials."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

from bambulab.sim import CloudSimulator
from tests.sim.simtools import DEMO, PASSWORD_USER, SEED_DEVICE, assert_error, assert_old, authed

BIND = "/v1/iot-service/api/user/bind"
INFO = "/v1/iot-service/api/user/device/info"
VERSION = "/v1/iot-service/api/user/device/version"
TTCODE = "/v1/iot-service/api/user/ttcode"

DEVICE_FIELDS = {
    "dev_id",
    "name",
    "online",
    "print_status",
    "dev_model_name",
    "dev_product_name",
    "dev_access_code",
    "nozzle_diameter",
    "dev_structure",
    "print_job",
}


def devices(http: httpx.Client) -> list[dict[str, object]]:
    result: list[dict[str, object]] = assert_old(http.get(BIND))["devices"]
    return result


def bindable(http: httpx.Client) -> list[dict[str, object]]:
    return [d for d in http.get("/sim/devices").json()["devices"] if d["owner"] is None]


def by_model(items: list[dict[str, object]], model_name: str) -> dict[str, object]:
    return next(d for d in items if d["dev_model_name"] == model_name)


def test_bind_list_holds_the_default_fleet(demo: httpx.Client) -> None:
    items = devices(demo)
    assert len(items) >= 4
    for item in items:
        assert set(item) == DEVICE_FIELDS
        assert len(str(item["dev_id"])) == 15
        assert str(item["dev_access_code"]).rstrip("\n").isalnum()
        assert len(str(item["dev_access_code"]).rstrip("\n")) == 8
    x1c = by_model(items, "BL-P001")
    assert x1c["dev_product_name"] == "X1 Carbon"
    assert str(x1c["dev_id"]).startswith("00M")
    assert x1c["dev_structure"] == "CoreXY"
    p1s = by_model(items, "C12")
    assert str(p1s["dev_id"]).startswith("01P")
    a1mini = by_model(items, "N1")
    assert str(a1mini["dev_id"]).startswith("030")
    assert a1mini["dev_structure"] == "I3"
    assert any(str(d["dev_access_code"]).endswith("\n") for d in items)
    assert any(d["online"] is False for d in items)


def test_seed_example_device_is_exact(demo: httpx.Client) -> None:
    seed = next(d for d in devices(demo) if d["dev_id"] == SEED_DEVICE)
    assert {k: seed[k] for k in ("dev_id", "name", "online", "print_status")} == {
        "dev_id": "01234567890ABCD",
        "name": "P1S 1",
        "online": True,
        "print_status": "ACTIVE",
    }
    assert seed["dev_model_name"] == "C11"
    assert seed["dev_product_name"] == "P1P"
    assert seed["dev_access_code"] == "01234567"
    job = seed["print_job"]
    assert isinstance(job, dict)
    assert 0 < job["progress"] < 100
    assert job["start_time"].endswith("Z")
    others = [d for d in devices(demo) if d["dev_id"] != SEED_DEVICE]
    assert all(d["print_job"] is None for d in others)


def test_accounts_see_only_their_devices(sim: CloudSimulator) -> None:
    with authed(sim, PASSWORD_USER) as http:
        items = devices(http)
    assert len(items) == 1
    assert SEED_DEVICE not in {d["dev_id"] for d in items}


def test_device_info(demo: httpx.Client) -> None:
    body = assert_old(demo.get(INFO, params={"device_id": SEED_DEVICE}))
    assert body["device_id"] == SEED_DEVICE
    assert body["device_name"] == "P1S 1"
    assert body["model"] == "P1P"
    assert body["dev_model_name"] == "C11"
    assert body["status"] == "RUNNING"
    assert body["online"] is True
    assert re.fullmatch(r"\d\d\.\d\d\.\d\d\.\d\d", body["firmware_version"])
    assert body["nozzle_temp"] > 150
    assert body["bed_temp"] > 40
    assert body["nozzle_diameter"] == 0.4


def test_offline_device_reports_offline(demo: httpx.Client) -> None:
    offline = next(d for d in devices(demo) if d["online"] is False)
    body = assert_old(demo.get(INFO, params={"device_id": offline["dev_id"]}))
    assert body["status"] == "OFFLINE"


def test_unknown_or_foreign_device_is_1003(demo: httpx.Client, sim: CloudSimulator) -> None:
    assert_error(demo.get(INFO, params={"device_id": "00M000000000000"}), 404, 1003)
    with authed(sim, PASSWORD_USER) as other:
        assert_error(other.get(INFO, params={"device_id": SEED_DEVICE}), 404, 1003)
        assert_error(other.post(TTCODE, json={"dev_id": SEED_DEVICE}), 404, 1003)
        assert_error(other.delete(BIND, params={"dev_id": SEED_DEVICE}), 404, 1003)


def test_missing_query_parameter_is_400(demo: httpx.Client) -> None:
    assert_error(demo.get(INFO), 400, 400)


def test_rename(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim()
    with authed(sim, DEMO) as http:
        assert_old(http.patch(INFO, json={"dev_id": SEED_DEVICE, "name": "  Workshop P1P  "}))
        assert assert_old(http.get(INFO, params={"device_id": SEED_DEVICE}))["device_name"] == (
            "Workshop P1P"
        )
        for bad in ("", "   ", "x" * 33):
            assert_error(http.patch(INFO, json={"dev_id": SEED_DEVICE, "name": bad}), 400, 400)
        assert_old(http.patch(INFO, json={"dev_id": SEED_DEVICE, "name": "x" * 32}))
        assert_error(http.patch(INFO, json={"dev_id": "nope", "name": "x"}), 404, 1003)


def test_firmware_versions(demo: httpx.Client) -> None:
    items = devices(demo)
    p1s = by_model(items, "C12")
    body = assert_old(demo.get(VERSION, params={"dev_id": p1s["dev_id"]}))
    assert body["update_available"] is True
    assert body["current_version"] != body["latest_version"]
    assert body["release_notes"]
    [entry] = body["devices"]
    assert entry["dev_id"] == p1s["dev_id"]
    names = [m["name"] for m in entry["firmware"]]
    assert "ota" in names
    assert any(name.startswith("ams/") for name in names)
    for module in entry["firmware"]:
        assert set(module) == {"name", "sw_ver", "hw_ver", "sn"}
    ota = next(m for m in entry["firmware"] if m["name"] == "ota")
    assert ota["sw_ver"] == body["current_version"]

    x1c = by_model(items, "BL-P001")
    current = assert_old(demo.get(VERSION, params={"dev_id": x1c["dev_id"]}))
    assert current["update_available"] is False
    assert current["current_version"] == current["latest_version"]

    a1mini = by_model(items, "N1")
    lite = assert_old(demo.get(VERSION, params={"dev_id": a1mini["dev_id"]}))
    assert any(m["name"].startswith("ams_f1/") for m in lite["devices"][0]["firmware"])


def test_firmware_of_all_devices(demo: httpx.Client) -> None:
    body = assert_old(demo.get(VERSION))
    assert len(body["devices"]) == len(devices(demo))


def test_ttcode(demo: httpx.Client) -> None:
    body = assert_old(demo.post(TTCODE, json={"dev_id": SEED_DEVICE}))
    for key in (
        "ttcode",
        "authkey",
        "passwd",
        "region",
        "type",
        "streams",
        "peers",
        "stream_key",
        "stream_salt",
        "channel_name",
        "app_id",
        "rtm",
    ):
        assert key in body
    assert body["type"] == "tutk"
    assert body["region"] == "us"
    assert isinstance(body["streams"], list)
    assert isinstance(body["rtm"], dict)


def test_bind_and_unbind(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim()
    with (
        httpx.Client(base_url=sim.url) as plain,
        authed(sim, DEMO) as http,
        authed(sim, PASSWORD_USER) as other,
    ):
        pool = bindable(plain)
        assert len(pool) >= 2
        target = pool[0]
        dev_id = str(target["dev_id"])
        bind_code = str(target["bind_code"])
        wrong = "ZZZZZZZZ" if bind_code != "ZZZZZZZZ" else "YYYYYYYY"
        request = {"device_id": dev_id, "device_name": "New one", "bind_code": wrong}
        assert_error(http.post(BIND, json=request), 400, 1)
        assert_error(http.post(BIND, json={**request, "device_id": "nope"}), 404, 1003)

        assert_old(http.post(BIND, json={**request, "bind_code": bind_code.lower()}))
        bound = next(d for d in devices(http) if d["dev_id"] == dev_id)
        assert bound["name"] == "New one"
        assert dev_id not in {d["dev_id"] for d in bindable(plain)}

        # Bound to someone else now.
        assert_error(other.post(BIND, json={**request, "bind_code": bind_code}), 400, 400)

        assert_old(http.delete(BIND, params={"dev_id": dev_id}))
        assert dev_id not in {d["dev_id"] for d in devices(http)}
        assert dev_id in {d["dev_id"] for d in bindable(plain)}
        assert_error(http.get(INFO, params={"device_id": dev_id}), 404, 1003)

        # Back in the pool: another account can claim it.
        assert_old(other.post(BIND, json={**request, "bind_code": bind_code}))
        assert dev_id in {d["dev_id"] for d in devices(other)}


@pytest.mark.parametrize("missing", ["device_id", "bind_code"])
def test_bind_requires_fields(demo: httpx.Client, missing: str) -> None:
    body = {"device_id": "x", "device_name": "y", "bind_code": "z"}
    del body[missing]
    assert_error(demo.post(BIND, json=body), 400, 400)
