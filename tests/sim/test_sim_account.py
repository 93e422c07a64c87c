"""Profile, preference, notifications, messages, projects and slicer presets."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import httpx
import pytest

from bambulab.sim import CloudSimulator
from tests.sim.simtools import DEMO, PASSWORD_USER, assert_error, assert_old, authed

PROFILE = "/v1/user-service/my/profile"
PREFERENCE = "/v1/design-user-service/my/preference"
NOTIFICATIONS = "/v1/iot-service/api/user/notification"
MESSAGES = "/v1/user-service/my/messages"
PROJECTS = "/v1/iot-service/api/user/project"
SETTINGS = "/v1/iot-service/api/slicer/setting"
RESOURCES = "/v1/iot-service/api/slicer/resource"


# --- profile and preference ------------------------------------------------------------


def test_profile_uses_the_new_envelope(demo: httpx.Client, sim: CloudSimulator) -> None:
    body = demo.get(PROFILE).json()
    assert body["code"] == 0
    assert body["message"] == "Success"
    data = body["data"]
    for key in ("uid", "account", "name", "avatar", "bio", "handle", "createTime"):
        assert key in data
    assert data["uid"] == sim.demo_account.uid
    assert data["account"] == DEMO


def test_profile_update(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim()
    with authed(sim, DEMO) as http:
        body = http.put(PROFILE, json={"name": "Ada", "bio": "Prints gears"}).json()
        assert body["code"] == 0
        assert body["data"]["name"] == "Ada"
        assert body["data"]["bio"] == "Prints gears"
        assert http.get(PROFILE).json()["data"]["name"] == "Ada"
        assert http.get(PREFERENCE).json()["name"] == "Ada"
        assert_error(http.put(PROFILE, json={"email": "x@y.z"}), 400, 400)
        assert_error(http.put(PROFILE, json={"name": ""}), 400, 400)
        assert_error(http.put(PROFILE, json={"name": 5}), 400, 400)
        assert_error(http.put(PROFILE, json={}), 400, 400)
        assert_error(http.put(PROFILE, content=b"[1"), 400, 400)


def test_preference_is_bare(demo: httpx.Client, sim: CloudSimulator) -> None:
    body = demo.get(PREFERENCE).json()
    assert set(body) == {"uid", "name", "handle", "avatar", "bio", "links", "backgroundUrl"}
    assert body["uid"] == sim.demo_account.uid
    assert isinstance(body["uid"], int)
    assert body["links"] == []


# --- notifications ---------------------------------------------------------------------------


def test_notifications(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim()
    with authed(sim, DEMO) as http:
        items = assert_old(http.get(NOTIFICATIONS))["notifications"]
        assert items
        for item in items:
            assert set(item) >= {"id", "type", "title", "content", "read", "create_time"}
        unread = assert_old(http.get(NOTIFICATIONS, params={"unread": "true"}))["notifications"]
        assert unread
        assert all(not n["read"] for n in unread)
        assert len(unread) < len(items)

        target = unread[0]
        assert_old(http.put(NOTIFICATIONS, json={"notification_id": target["id"], "read": True}))
        still = assert_old(http.get(NOTIFICATIONS, params={"unread": "true"}))["notifications"]
        assert target["id"] not in {n["id"] for n in still}

        one = items[-1]
        filtered = assert_old(
            http.get(NOTIFICATIONS, params={"action": one["action"], "ticket": one["ticket"]})
        )["notifications"]
        assert [n["id"] for n in filtered] == [one["id"]]

        missing = {"notification_id": 1, "read": True}
        assert_error(http.put(NOTIFICATIONS, json=missing), 404, 404)


def test_notifications_are_private(sim: CloudSimulator, demo: httpx.Client) -> None:
    mine = assert_old(demo.get(NOTIFICATIONS))["notifications"][0]
    with authed(sim, PASSWORD_USER) as other:
        body = {"notification_id": mine["id"], "read": True}
        assert_error(other.put(NOTIFICATIONS, json=body), 404, 404)


# --- messages ----------------------------------------------------------------------------------


def test_messages_cursor_and_type(demo: httpx.Client) -> None:
    first = demo.get(MESSAGES, params={"limit": 10}).json()
    assert set(first) == {"total", "hits"}
    assert first["total"] > 10
    for hit in first["hits"]:
        assert set(hit) == {"id", "type", "title", "content", "createTime", "read"}
    seen = [h["id"] for h in first["hits"]]
    after = seen[-1]
    while True:
        page = demo.get(MESSAGES, params={"limit": 10, "after": after}).json()["hits"]
        if not page:
            break
        seen.extend(h["id"] for h in page)
        after = page[-1]["id"]
    assert len(seen) == len(set(seen)) == first["total"]
    assert seen == sorted(seen, reverse=True)
    kind = first["hits"][0]["type"]
    typed = demo.get(MESSAGES, params={"type": str(kind), "limit": 100}).json()
    assert typed["hits"]
    assert {h["type"] for h in typed["hits"]} == {kind}
    assert_error(demo.get(MESSAGES, params={"limit": "500"}), 400, 400)


# --- projects ----------------------------------------------------------------------------------


def test_projects_list_and_detail(demo: httpx.Client) -> None:
    body = assert_old(demo.get(PROJECTS, params={"page": 1, "limit": 2}))
    assert body["total"] >= 3
    assert body["page"] == 1
    assert len(body["projects"]) == 2
    second = assert_old(demo.get(PROJECTS, params={"page": 2, "limit": 2}))
    ids = {p["project_id"] for p in body["projects"]} | {
        p["project_id"] for p in second["projects"]
    }
    assert len(ids) == min(4, body["total"])

    project_id = body["projects"][0]["project_id"]
    detail = assert_old(demo.get(f"{PROJECTS}/{project_id}"))
    for key in ("project_id", "name", "create_time", "update_time", "model_id", "status"):
        assert key in detail
    assert detail["files"]
    for item in detail["files"]:
        assert set(item) == {"file_id", "name", "size", "url", "md5"}
        data = httpx.get(item["url"]).content
        assert len(data) == item["size"]
        assert hashlib.md5(data).hexdigest() == item["md5"]
        assert data.startswith(b"PK")  # a 3MF is a ZIP


def test_project_errors(demo: httpx.Client, sim: CloudSimulator) -> None:
    assert_error(demo.get(f"{PROJECTS}/does-not-exist"), 404, 404)
    assert_error(demo.get(PROJECTS, params={"page": "0"}), 400, 400)
    with authed(sim, PASSWORD_USER) as other:
        theirs = assert_old(other.get(PROJECTS))["projects"][0]["project_id"]
    assert_error(demo.get(f"{PROJECTS}/{theirs}"), 404, 404)


# --- slicer ----------------------------------------------------------------------------------


def test_slicer_settings(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim()
    with authed(sim, DEMO) as http:
        body = assert_old(http.get(SETTINGS, params={"version": "01.09.00.00"}))
        for kind in ("print", "printer", "filament"):
            assert set(body[kind]) == {"public", "private"}
            assert body[kind]["public"]
        for item in body["filament"]["public"]:
            assert "filament_id" in item
        item = body["print"]["public"][0]
        assert set(item) >= {"setting_id", "name", "version", "update_time", "nickname", "base_id"}

        private = body["filament"]["private"][0]
        detail = assert_old(http.get(f"{SETTINGS}/{private['setting_id']}"))
        assert detail["setting_id"] == private["setting_id"]
        assert detail["type"] == "filament"
        assert isinstance(detail["setting"], dict)

        public_id = item["setting_id"]
        assert_error(http.delete(f"{SETTINGS}/{public_id}"), 403, 403)
        assert_old(http.delete(f"{SETTINGS}/{private['setting_id']}"))
        assert_error(http.get(f"{SETTINGS}/{private['setting_id']}"), 404, 404)
        assert_error(http.delete(f"{SETTINGS}/{private['setting_id']}"), 404, 404)


def test_private_settings_are_private(demo: httpx.Client, sim: CloudSimulator) -> None:
    mine = assert_old(demo.get(SETTINGS))["print"]["private"][0]["setting_id"]
    with authed(sim, PASSWORD_USER) as other:
        listed = assert_old(other.get(SETTINGS))
        assert mine not in {s["setting_id"] for s in listed["print"]["private"]}
        assert_error(other.get(f"{SETTINGS}/{mine}"), 404, 404)


@pytest.mark.parametrize("kind", [None, "slicer/plugins/cloud"])
def test_slicer_resources(demo: httpx.Client, kind: str | None) -> None:
    params = {"type": kind} if kind else {}
    body = assert_old(demo.get(RESOURCES, params=params))
    assert set(body["software"]) == {"version", "url", "description"}
    assert body["resources"]
    for item in body["resources"]:
        assert set(item) == {"type", "version", "url", "description"}
        if kind:
            assert item["type"] == kind
