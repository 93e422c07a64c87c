"""Print status, cloud print jobs, and the task history with its cursor."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bambulab.sim import CloudSimulator
from tests.sim.simtools import (
    DEMO,
    PASSWORD_USER,
    SEED_DEVICE,
    assert_error,
    assert_old,
    authed,
    upload_file,
)

PRINT = "/v1/iot-service/api/user/print"
TASKS = "/v1/user-service/my/tasks"
TASK = "/v1/iot-service/api/user/task/{}"
CREATE_TASK = "/v1/user-service/my/task"
BIND = "/v1/iot-service/api/user/bind"

TASK_FIELDS = {
    "id",
    "designId",
    "designTitle",
    "modelId",
    "title",
    "cover",
    "status",
    "startTime",
    "endTime",
    "weight",
    "length",
    "costTime",
    "profileId",
    "plateIndex",
    "deviceId",
    "deviceName",
    "deviceModel",
    "amsDetailMapping",
    "mode",
    "bedType",
    "useAms",
    "amsMapping",
}


def all_hits(http: httpx.Client, limit: int, **params: str) -> list[dict[str, object]]:
    """Walk the history with the ``after`` cursor."""
    hits: list[dict[str, object]] = []
    after: object = None
    while True:
        query = {"limit": str(limit), **params}
        if after is not None:
            query["after"] = str(after)
        response = http.get(TASKS, params=query)
        assert response.status_code == 200, response.text
        page = response.json()["hits"]
        if not page:
            return hits
        assert len(page) <= limit
        hits.extend(page)
        after = page[-1]["id"]


# --- print status -------------------------------------------------------------------


def test_print_status_lists_every_device(demo: httpx.Client) -> None:
    body = assert_old(demo.get(PRINT, params={"force": "true"}))
    entries = {e["dev_id"]: e for e in body["devices"]}
    owned = {d["dev_id"] for d in assert_old(demo.get(BIND))["devices"]}
    assert set(entries) == owned
    seed = entries[SEED_DEVICE]
    for key in (
        "dev_id",
        "dev_name",
        "dev_online",
        "task_id",
        "task_name",
        "task_status",
        "progress",
        "start_time",
        "prediction",
        "thumbnail",
        "model_id",
        "profile_id",
    ):
        assert key in seed
    assert seed["task_status"] == "RUNNING"
    assert seed["prediction"] > 0
    assert seed["thumbnail"].startswith("http://127.0.0.1:")
    assert isinstance(body["jobs"], list)


def test_print_status_filters(demo: httpx.Client) -> None:
    one = assert_old(demo.get(PRINT, params={"device_id": SEED_DEVICE}))
    assert [e["dev_id"] for e in one["devices"]] == [SEED_DEVICE]
    running = assert_old(demo.get(PRINT, params={"status": "running"}))
    assert [e["task_status"] for e in running["devices"]] == ["RUNNING"]
    assert_error(demo.get(PRINT, params={"device_id": "nope"}), 404, 1003)


def test_thumbnail_is_served(demo: httpx.Client) -> None:
    entry = assert_old(demo.get(PRINT, params={"device_id": SEED_DEVICE}))["devices"][0]
    image = httpx.get(entry["thumbnail"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")


# --- cloud print jobs -----------------------------------------------------------------------


def test_start_print_by_file_id_name_or_url(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim()
    with authed(sim, DEMO) as http:
        file_id = upload_file(http, "benchy.3mf", b"PK\x03\x04 fake 3mf")
        settings_in = {"layer_height": 0.2, "infill": 15, "speed": "standard"}
        by_id = assert_old(
            http.post(
                PRINT,
                json={
                    "device_id": SEED_DEVICE,
                    "file_id": file_id,
                    "file_name": "benchy.3mf",
                    "settings": settings_in,
                },
            )
        )
        assert by_id["status"] == "queued"
        assert by_id["job_id"]
        # The seed's example passes a placeholder file_id; the name still finds the upload.
        by_name = assert_old(
            http.post(
                PRINT,
                json={"device_id": SEED_DEVICE, "file_id": "model_id", "file_name": "benchy.3mf"},
            )
        )
        by_url = assert_old(
            http.post(PRINT, json={"device_id": SEED_DEVICE, "file_url": by_id["file_url"]})
        )
        jobs = assert_old(http.get(PRINT, params={"device_id": SEED_DEVICE}))["jobs"]
        assert {j["job_id"] for j in jobs} == {
            by_id["job_id"],
            by_name["job_id"],
            by_url["job_id"],
        }
        first = next(j for j in jobs if j["job_id"] == by_id["job_id"])
        assert first == {
            "job_id": by_id["job_id"],
            "device_id": SEED_DEVICE,
            "file_id": file_id,
            "file_name": "benchy.3mf",
            "status": "queued",
            "create_time": first["create_time"],
            "settings": settings_in,
            "task_id": by_id["task_id"],
        }
        queued = assert_old(http.get(PRINT, params={"status": "queued"}))["jobs"]
        assert len(queued) == 3
        # The job shows up at the top of the history.
        newest = http.get(TASKS, params={"limit": 1}).json()["hits"][0]
        assert newest["id"] == by_url["task_id"]
        assert newest["deviceId"] == SEED_DEVICE
        assert newest["title"] == "benchy"


def test_start_print_errors(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim()
    with authed(sim, DEMO) as http, authed(sim, PASSWORD_USER) as other:
        upload_file(http, "part.gcode", b"G28\n")
        online = SEED_DEVICE
        offline = next(d for d in assert_old(http.get(BIND))["devices"] if not d["online"])
        body = {"device_id": online, "file_name": "missing.3mf"}
        error = assert_error(http.post(PRINT, json=body), 404, 1006)
        assert error["message"] == "file not found"
        assert_error(
            http.post(PRINT, json={**body, "file_name": "part.gcode", "device_id": "x"}), 404, 1003
        )
        assert_error(
            http.post(PRINT, json={"device_id": offline["dev_id"], "file_name": "part.gcode"}),
            400,
            1004,
        )
        # Another account cannot print this account's upload.
        their_device = assert_old(other.get(BIND))["devices"][0]["dev_id"]
        assert_error(
            other.post(PRINT, json={"device_id": their_device, "file_name": "part.gcode"}),
            404,
            1006,
        )


# --- history ---------------------------------------------------------------------------------


def test_history_shape_and_order(demo: httpx.Client) -> None:
    body = demo.get(TASKS).json()
    assert set(body) == {"total", "hits"}  # bare object, no envelope
    assert body["total"] >= 25
    assert len(body["hits"]) == 20  # default limit
    hits = body["hits"]
    assert [h["id"] for h in hits] == sorted((h["id"] for h in hits), reverse=True)
    for hit in hits:
        assert set(hit) >= TASK_FIELDS
        assert hit["startTime"].endswith("Z")
        assert hit["mode"] == "cloud_file"
    finished = [h for h in hits if h["status"] in (2, 3)]
    assert {h["status"] for h in finished} <= {2, 3}
    assert any(h["status"] == 2 for h in finished)
    assert len({h["deviceId"] for h in hits}) > 1


def test_history_pagination_visits_every_task_once(demo: httpx.Client) -> None:
    total = demo.get(TASKS).json()["total"]
    hits = all_hits(demo, limit=7)
    ids = [h["id"] for h in hits]
    assert len(ids) == total
    assert len(set(ids)) == total
    assert ids == sorted(ids, reverse=True)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,  # keep .hypothesis/ out of the work tree
)
@given(limit=st.integers(min_value=1, max_value=100))
def test_history_cursor_for_any_limit(demo: httpx.Client, limit: int) -> None:
    reference = [h["id"] for h in all_hits(demo, limit=100)]
    assert [h["id"] for h in all_hits(demo, limit=limit)] == reference


def test_history_device_filter(demo: httpx.Client) -> None:
    hits = all_hits(demo, limit=100, deviceId=SEED_DEVICE)
    assert hits
    assert {h["deviceId"] for h in hits} == {SEED_DEVICE}
    assert demo.get(TASKS, params={"deviceId": SEED_DEVICE}).json()["total"] == len(hits)


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "abc"}, {"after": "xyz"}, {"after": "-3"}],
)
def test_history_bad_parameters(demo: httpx.Client, params: dict[str, str]) -> None:
    assert_error(demo.get(TASKS, params=params), 400, 400)


def test_task_detail(demo: httpx.Client, sim: CloudSimulator) -> None:
    hit = demo.get(TASKS, params={"limit": 1}).json()["hits"][0]
    body = assert_old(demo.get(TASK.format(hit["id"])))
    assert body["id"] == hit["id"]
    assert body["title"] == hit["title"]
    with authed(sim, PASSWORD_USER) as other:
        theirs = other.get(TASKS, params={"limit": 1}).json()["hits"][0]
        body = assert_error(demo.get(TASK.format(theirs["id"])), 403, 403)
        assert body["message"] == "permission denied"
    assert_error(demo.get(TASK.format(1)), 404, 404)
    assert_error(demo.get(TASK.format("abc")), 404, 404)


def test_create_task(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim()
    with authed(sim, DEMO) as http:
        body = {
            "modelId": "US1234abcd5678ef",
            "title": "Cable clip",
            "deviceId": SEED_DEVICE,
            "profileId": 123456,
            "plateIndex": 2,
            "bedType": "textured_plate",
        }
        response = http.post(CREATE_TASK, json=body)
        assert response.status_code == 200
        created = response.json()
        assert set(created) == {"id"}
        assert isinstance(created["id"], int)
        task = assert_old(http.get(TASK.format(created["id"])))
        assert task["title"] == "Cable clip"
        assert task["modelId"] == "US1234abcd5678ef"
        assert task["profileId"] == 123456
        assert task["plateIndex"] == 2
        assert task["bedType"] == "textured_plate"
        assert http.get(TASKS, params={"limit": 1}).json()["hits"][0]["id"] == created["id"]
        for missing in ("deviceId", "title"):
            partial = {k: v for k, v in body.items() if k != missing}
            assert_error(http.post(CREATE_TASK, json=partial), 400, 400)
        assert_error(http.post(CREATE_TASK, json={**body, "deviceId": "nope"}), 404, 1003)
