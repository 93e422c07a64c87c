"""The whole cloud surface through both faces, against the simulator on a loopback socket."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from bambulab.errors import BadRequestError, ConfigurationError, ForbiddenError, NotFoundError
from bambulab.sim import CloudSimulator
from tests.conftest import Face

SEED_DEVICE = "01234567890ABCD"


def test_devices_are_typed_and_indexable(client: Face) -> None:
    devices = client.get_devices()
    assert len(devices) >= 4
    by_model = {d.dev_model_name: d for d in devices}
    assert {"BL-P001", "C12", "N1", "C11"} <= set(by_model)
    x1 = by_model["BL-P001"]
    assert x1["dev_id"] == x1.serial and x1.serial.startswith("00M")
    assert by_model["C12"].serial.startswith("01P") and by_model["N1"].serial.startswith("030")
    for device in devices:
        assert len(device.access_code) == 8, "access codes arrive stripped of the stray newline"
        shown = repr(device).replace(device.dev_id, "")
        assert device.access_code not in shown and "dev_access_code" not in shown
        assert device.dev_structure in ("CoreXY", "I3")


def test_device_info_version_and_rename(client: Face) -> None:
    info = client.get_device_info(device_id=SEED_DEVICE)
    assert info["status"] and info.device_id == SEED_DEVICE
    version = client.get_firmware_version(SEED_DEVICE)
    assert version.current_version
    assert any(m.name == "ota" and m.sw_ver for m in version.modules(SEED_DEVICE))
    original = info.device_name
    assert client.rename_device(SEED_DEVICE, "Renamed by test") is True
    assert client.get_device_info(SEED_DEVICE).device_name == "Renamed by test"
    client.rename_device(SEED_DEVICE, original)
    with pytest.raises(NotFoundError, match="device not found"):
        client.get_device_info("00M000000000000")


def test_bind_and_unbind(client: Face, sim: CloudSimulator) -> None:
    pending = next(d for d in sim.world.devices.values() if d.owner is None)
    with pytest.raises(BadRequestError):
        client.bind_device(pending.dev_id, "WRONGCODE")
    assert client.bind_device(pending.dev_id, pending.bind_code, "New one") is True
    assert pending.dev_id in {d.dev_id for d in client.get_devices()}
    assert client.unbind_device(pending.dev_id) is True
    assert pending.dev_id not in {d.dev_id for d in client.get_devices()}
    with pytest.raises(NotFoundError):
        client.unbind_device(pending.dev_id)


def test_print_status_jobs_and_cloud_print(client: Face, tmp_path: Path) -> None:
    statuses = client.get_print_status()
    assert {s.dev_id for s in statuses} >= {SEED_DEVICE}
    model = tmp_path / "cube.3mf"
    model.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 40)
    uploaded = client.upload_file("cube.3mf", str(model))
    job = client.start_cloud_print(
        device_id=SEED_DEVICE, file_id=uploaded.file_id, file_name="cube.3mf"
    )
    assert job.job_id and job.status == "queued"
    assert job.job_id in {j.job_id for j in client.get_print_jobs(device_id=SEED_DEVICE)}
    with pytest.raises(NotFoundError):
        client.start_cloud_print(device_id=SEED_DEVICE, file_name="never-uploaded.3mf")
    with pytest.raises(ConfigurationError):
        client.start_cloud_print(device_id=SEED_DEVICE)


def test_projects_list_detail_and_iteration(client: Face) -> None:
    page = client.get_projects(page=1, limit=2)
    assert page.total and page.total >= 3 and len(page.items) == 2
    every = client.iter_projects(page_size=2)
    assert len(every) == page.total
    assert len({p.project_id for p in every}) == page.total
    detail = client.get_project(every[0].project_id)
    assert detail.files and detail.files[0].name
    with pytest.raises(NotFoundError):
        client.get_project("999999999")


def test_tasks_pages_by_cursor_and_one_task(client: Face, sim: CloudSimulator) -> None:
    first = client.get_tasks(limit=10)
    assert len(first.items) == 10 and first.total and first.total >= 25
    second = client.get_tasks(after=first.items[-1].id, limit=10)
    assert not {t.id for t in first.items} & {t.id for t in second.items}
    every = client.iter_tasks(page_size=7)
    assert len(every) == first.total and len({t.id for t in every}) == first.total
    starts = [t.start_time for t in every]
    assert starts == sorted(starts, reverse=True), "newest first"
    capped = client.iter_tasks(page_size=7, max_items=9)
    assert len(capped) == 9
    x1 = next(d for d in client.get_devices() if d.dev_model_name == "BL-P001")
    mine = client.iter_tasks(device_id=x1.dev_id)
    assert mine and all(t.device_id == x1.dev_id for t in mine)
    one = client.get_task(every[0].id)
    assert one.id == every[0].id and one.design_title == every[0].design_title
    with pytest.raises(NotFoundError):
        client.get_task(987654321)


def test_create_task(client: Face) -> None:
    before = client.get_tasks(limit=1).total
    new_id = client.create_task(
        model_id="M1", title="Test task", device_id=SEED_DEVICE, profile_id=1
    )
    assert new_id
    assert client.get_tasks(limit=1).total == before + 1
    with pytest.raises(NotFoundError):
        client.create_task(model_id="M1", title="x", device_id="00M000000000000")


def test_notifications_and_messages(client: Face) -> None:
    unread = client.get_notifications(unread=True)
    assert unread and all(not n.read for n in unread)
    assert client.mark_notification_read(unread[0].id) is True
    assert unread[0].id not in {n.id for n in client.get_notifications(unread=True)}
    client.mark_notification_read(unread[0].id, read=False)
    with pytest.raises(NotFoundError):
        client.mark_notification_read(99999999)
    page = client.get_messages(limit=2)
    assert len(page.items) <= 2 and page.items
    every = client.iter_messages(page_size=2)
    assert len({m.id for m in every}) == len(every) >= len(page.items)


def test_profile_preference_and_user_id(client: Face, sim: CloudSimulator) -> None:
    profile = client.get_profile()
    assert str(profile.uid) == str(sim.demo_account.uid)
    updated = client.update_profile(bio="printing all day")
    assert updated.bio == "printing all day" and client.get_profile().bio == "printing all day"
    with pytest.raises(BadRequestError):
        client.update_profile(uid=1)
    preference = client.get_preference()
    assert preference.mqtt_username == f"u_{sim.demo_account.uid}"
    assert client.get_user_id() == str(sim.demo_account.uid)


def test_slicer_settings_and_resources(client: Face) -> None:
    settings = client.get_slicer_settings(version="1.9.0")
    public = settings.presets("filament", "public")
    private = [
        s for kind in ("print", "printer", "filament") for s in settings.presets(kind, "private")
    ]
    assert public and private
    mine = private[-1]
    detail = client.get_slicer_setting(mine.setting_id)
    assert detail.setting_id == mine.setting_id and detail.setting
    assert client.delete_slicer_setting(mine.setting_id) is True
    after = client.get_slicer_settings(version="1.9.0")
    remaining = {s.setting_id for k in ("print", "printer", "filament") for s in after.presets(k)}
    assert mine.setting_id not in remaining
    with pytest.raises(ForbiddenError):
        client.delete_slicer_setting(public[0].setting_id)
    resources = client.get_slicer_resources()
    assert resources.software["description"] == "Bambu Studio"
    assert resources.software["url"].endswith(f"BambuStudio-{resources.software['version']}.zip")
    assert resources.resources, "the plug-ins are listed too"
    for item in resources.resources:
        assert item["url"].endswith(f"-{item['version']}.zip"), item
        assert item["type"] and item["description"], item


def test_upload_presigned_flow_stores_the_bytes(
    client: Face, sim: CloudSimulator, tmp_path: Path
) -> None:
    data = b"PK\x03\x04" + b"3mf-bytes" * 1000
    path = tmp_path / "part.3mf"
    path.write_bytes(data)
    result = client.upload_file("part.3mf", path)
    assert result["success"] is True and result.size == len(data)
    assert result.md5 == hashlib.md5(data).hexdigest()
    stored = sim.world.files[result.file_id]
    assert stored.owner == sim.demo_account.uid and stored.name == "part.3mf"
    assert sim.world.objects[stored.key].data == data


def test_upload_confirm_flow(client: Face, tmp_path: Path) -> None:
    data = b"G1 X0 Y0\n" * 100
    ticket = client.request_upload("part.gcode", len(data))
    put = httpx.put(ticket["upload_url"], content=data, timeout=10)
    assert put.status_code == 200
    confirmed = client.confirm_upload(ticket["file_id"])
    assert confirmed["status"] == "ready" and confirmed["file_url"]
    with pytest.raises(NotFoundError):
        client.confirm_upload("no-such-file")


def test_upload_rejects_bad_inputs_before_sending(client: Face, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        client.upload_file("model.3mf", str(tmp_path / "missing.3mf"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigurationError, match="3mf"):
        client.upload_file("notes.txt", str(tmp_path / "notes.txt"))
    (tmp_path / "empty.3mf").write_bytes(b"")
    with pytest.raises(ConfigurationError, match="empty"):
        client.upload_file("empty.3mf", str(tmp_path / "empty.3mf"))


def test_camera_credentials(client: Face) -> None:
    creds = client.get_camera_credentials(SEED_DEVICE)
    assert creds.ttcode and creds.authkey and creds.passwd
    assert creds.url.startswith("bambu:///tutk?uid=")
    assert creds.authkey not in repr(creds)
    with pytest.raises(NotFoundError):
        client.get_camera_credentials("00M000000000000")
