"""Cloud printing end to end, both faces, against the whole simulator on loopback sockets.

The seed's own examples ("Python Client Library" and all four steps of
"Workflow 1") run as written and the printer really prints the uploaded file,
watched over the cloud broker. Then every check made before anything is sent,
a retry after a lost reply, signed commands, the MD5 check of the download,
and one file to many printers.
"""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bambulab import AsyncBambuClient, BambuClient, BambuMQTT
from bambulab.cloud.printing import async_print_many_cloud, print_many_cloud
from bambulab.errors import (
    AmsMappingError,
    CommandError,
    PrinterBusyError,
    PrinterOfflineError,
    PrintFileError,
)
from bambulab.models import Task
from bambulab.models.printing import PrintOptions
from bambulab.mqtt.core import Signer
from bambulab.protocol import mqtt as proto
from bambulab.sim import Simulator
from bambulab.sim.config import SEED_DEVICE, parse_fleet
from bambulab.sim.printer.state import ERROR_DOWNLOAD_FAILED
from bambulab.sim.threemf_writer import write_3mf
from tests.conftest import Face, LoopThread, unlimited, wait_for
from tests.integration.test_seed_examples import PYTHON_CLIENT_LIBRARY, WORKFLOW_1_CLOUD_STEPS

SEED = "01234567890ABCD"
BUSY = ("PREPARE", "RUNNING", "PAUSE")
WORKFLOW_1_MONITOR = """
# 4. Monitor via MQTT
mqtt_client.connect(device_id)
mqtt_client.subscribe_status()
"""


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    # The seed's device idle, so that the seed's examples have a printer to print on.
    fleet = (replace(SEED_DEVICE, printing=False, idle=True), *parse_fleet("x1c,p1s,a1:offline"))
    config = unlimited().with_demo_fleet(fleet)
    with Simulator(config, time_scale=60, tick_interval=0.1) as simulator:
        yield simulator


@pytest.fixture
def env(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """What ``eval "$(bambu sim)"`` exports; every printer idle again afterwards."""
    values: dict[str, str] = {}
    for line in sim.export_lines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = value.strip("'")
        monkeypatch.setenv(name, values[name])
    monkeypatch.setenv("BAMBU_TOKEN_FILE", str(tmp_path / "token"))
    yield values
    for serial in sim.printers:
        sim.with_printer(serial, _idle)
    for serial in sim.printers:  # the cloud has seen it
        wait_for(lambda s=serial: sim.world.devices[s].state not in BUSY, what=f"{serial} idle")


def _idle(printer: Any) -> None:
    printer.requires_signature = False
    printer.signature_verifier = None
    if printer.state.active:
        printer.state.stop()


def feeding_type(sim: Simulator, serial: str) -> str:
    """The filament type of the tray a printer feeds from when no mapping is given."""

    def read(printer: Any) -> str:
        ams = printer.state.ams
        tray = ams.tray_now if ams.spool(ams.tray_now) is not None else ams.first_loaded()
        spool = ams.spool(tray)
        return str(spool.tray_type) if spool is not None and spool.tray_type else "PLA"

    return sim.with_printer(serial, read)


def sliced(
    path: Path, sim: Simulator, serial: str = SEED, plates: int = 1, *, sliced: bool = True
) -> Path:
    """A small sliced 3MF whose one filament is what ``serial`` feeds from."""
    write_3mf(
        path,
        name=path.stem,
        plates=plates,
        filaments=((feeding_type(sim, serial), "#FFFFFFFF"),),
        seconds=1800,
        sliced=sliced,
    )
    return path


def serial_of(sim: Simulator, model: str) -> str:
    return next(d.dev_id for d in sim.world.devices.values() if d.model.key == model)


def project_files(sim: Simulator, serial: str) -> list[tuple[str, str]]:
    return [
        key
        for key in sim.with_printer(serial, lambda p: list(p.received))
        if key[0] == "print.project_file"
    ]


def printing(sim: Simulator, serial: str) -> dict[str, Any]:
    return sim.with_printer(
        serial,
        lambda p: {
            "state": p.state.gcode_state,
            "task_id": p.state.job.task_id if p.state.job else "",
            "file": p.state.job.gcode_file if p.state.job else "",
        },
    )


def client_face(sim: Simulator, face: str) -> Iterator[Face]:
    token = sim.issue_token(sim.demo_account.email)
    if face == "sync":
        client = BambuClient(token=token, base_url=sim.url)
        yield Face(client, None)
        client.close()
        return
    loop = LoopThread()
    aclient = AsyncBambuClient(token=token, base_url=sim.url)
    yield Face(aclient, loop)
    loop.run(aclient.aclose())
    loop.close()


@pytest.fixture(params=["sync", "async"])
def client(request: pytest.FixtureRequest, sim: Simulator, env: dict[str, str]) -> Iterator[Face]:
    yield from client_face(sim, str(request.param))


# --- the seed's examples, as written ------------------------------------------------------


def _seed_code(code: str, token: str, model: Path) -> str:
    return code.replace("your_token_here", token).replace("/path/to/model.3mf", str(model))


def test_seed_python_client_library_prints(
    sim: Simulator, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = sliced(tmp_path / "model.3mf", sim)
    scope: dict[str, Any] = {}
    code = _seed_code(PYTHON_CLIENT_LIBRARY, env["BAMBU_TOKEN"], model)
    exec(compile(code, "seed", "exec"), scope)
    scope["client"].close()
    assert "Uploaded: True" in capsys.readouterr().out
    now = wait_for(lambda: (p := printing(sim, SEED))["state"] in BUSY and p, what="printing")
    assert now["file"] == "model.3mf"
    task = next(t for t in sim.world.tasks.values() if str(t.id) == now["task_id"])
    assert task.device_id == SEED and task.title == "model" and task.mode == "cloud_file"
    assert len(project_files(sim, SEED)) == 1


def test_seed_workflow_1_all_four_steps(
    sim: Simulator, env: dict[str, str], tmp_path: Path
) -> None:
    model = sliced(tmp_path / "model.3mf", sim)
    client = BambuClient(token=env["BAMBU_TOKEN"], region="global")
    mqtt_client = BambuMQTT(env["BAMBU_USER_ID"], token=env["BAMBU_TOKEN"])
    scope: dict[str, Any] = {"client": client, "mqtt_client": mqtt_client}
    try:
        code = _seed_code(WORKFLOW_1_CLOUD_STEPS + WORKFLOW_1_MONITOR, env["BAMBU_TOKEN"], model)
        exec(compile(textwrap.dedent(code), "workflow1", "exec"), scope)
        device_id = scope["device_id"]
        assert device_id == SEED
        # Step 4 watches the print the upload started, over the cloud broker.
        state = wait_for(
            lambda: (s := mqtt_client.state(device_id)).gcode_state in BUSY and s,
            what="the print seen over MQTT",
        )
        assert state.job_name == "model"
        wait_for(lambda: (mqtt_client.state(device_id).percent or 0) > 0, what="progress")
    finally:
        mqtt_client.disconnect()
        client.close()


# --- the flow, both faces -----------------------------------------------------------------------


def test_cloud_print_sends_project_file_with_url_md5_and_ids(
    sim: Simulator, client: Face, tmp_path: Path
) -> None:
    serial = serial_of(sim, "x1c")
    model = sliced(tmp_path / "gear.3mf", sim, serial, plates=2)
    uploaded = client.upload_file("gear.3mf", str(model))
    task = client.start_cloud_print(serial, file_id=uploaded.file_id, plate=2, path=model)
    assert isinstance(task, Task) and task.device_id == serial and task.plate_index == 2
    body = sim.with_printer(serial, lambda p: p.truth())
    assert body["task_id"] == str(task.id) and body["subtask_name"] == "gear"
    assert body["gcode_state"] in BUSY and body["print_type"] == "cloud"
    # The project carries the sliced file the printer downloaded.
    project = client.get_project(str(task.get("projectId")))
    assert [(f.name, f.md5) for f in project.files] == [("gear.3mf", uploaded.md5)]


def test_checks_before_anything_is_sent(sim: Simulator, client: Face, tmp_path: Path) -> None:
    x1c, p1s, a1 = (serial_of(sim, m) for m in ("x1c", "p1s", "a1"))
    model = sliced(tmp_path / "part.3mf", sim, x1c)
    client.upload_file("part.3mf", str(model))
    tasks_before = len(sim.world.tasks)
    sent_before = {s: len(project_files(sim, s)) for s in (x1c, p1s, a1)}
    with pytest.raises(PrinterOfflineError, match="offline; nothing was sent"):
        client.start_cloud_print(a1, file_name="part.3mf")
    with pytest.raises(PrintFileError, match=r"no uploaded file 'missing\.3mf'"):
        client.start_cloud_print(x1c, file_name="missing.3mf")
    with pytest.raises(PrintFileError, match="has no plate 3"):
        client.start_cloud_print(x1c, file_name="part.3mf", plate=3, path=model)
    with pytest.raises(AmsMappingError, match="no filament in tray 15"):
        client.start_cloud_print(x1c, file_name="part.3mf", options=PrintOptions(ams_mapping=[15]))
    assert len(sim.world.tasks) == tasks_before
    assert len(project_files(sim, x1c)) == sent_before[x1c]
    assert len(project_files(sim, a1)) == sent_before[a1]
    # Busy: the printer prints something else already.
    sim.with_printer(p1s, lambda p: p.start_job(name="Other", minutes=500))
    wait_for(lambda: sim.world.devices[p1s].state in BUSY, what="the cloud sees it busy")
    with pytest.raises(PrinterBusyError, match=r"busy \((PREPARE|RUNNING)\)") as caught:
        client.start_cloud_print(p1s, file_name="part.3mf")
    assert caught.value.serial == p1s
    assert len(project_files(sim, p1s)) == sent_before[p1s]


def test_unsliced_3mf_is_refused(sim: Simulator, client: Face, tmp_path: Path) -> None:
    x1c = serial_of(sim, "x1c")
    plain = sliced(tmp_path / "plain.3mf", sim, x1c, sliced=False)
    client.upload_file("plain.3mf", str(plain))
    with pytest.raises(PrintFileError, match="not sliced"):
        client.start_cloud_print(x1c, file_name="plain.3mf", path=plain)


def test_auto_mapping_follows_the_file_and_the_trays(
    sim: Simulator, client: Face, tmp_path: Path
) -> None:
    x1c = serial_of(sim, "x1c")
    model = sliced(tmp_path / "mapped.3mf", sim, x1c)
    client.upload_file("mapped.3mf", str(model))
    task = client.start_cloud_print(x1c, file_name="mapped.3mf", path=model)
    mapping = sim.with_printer(x1c, lambda p: p.state.job.feeds)
    assert mapping and task.get("amsMapping") == [mapping[0][0]]
    sim.with_printer(x1c, _idle)
    wait_for(lambda: sim.world.devices[x1c].state not in BUSY, what="stopped")
    odd = tmp_path / "odd.3mf"
    write_3mf(odd, name="odd", filaments=(("TPU", "#000000FF"),))
    client.upload_file("odd.3mf", str(odd))
    types = sim.with_printer(
        x1c, lambda p: {s.tray_type for u in p.state.ams.units for s in u.trays}
    )
    if "TPU" in types:
        pytest.skip("this printer has TPU loaded")
    with pytest.raises(AmsMappingError, match="no tray of that type"):
        client.start_cloud_print(x1c, file_name="odd.3mf", path=odd)


def test_lost_reply_and_retry_never_print_twice(
    sim: Simulator, client: Face, tmp_path: Path
) -> None:
    serial = serial_of(sim, "x1c")
    model = sliced(tmp_path / "retry.3mf", sim, serial)
    client.upload_file("retry.3mf", str(model))
    sent_before = len(project_files(sim, serial))
    tasks_before = set(sim.world.tasks)
    # The printer acts on the command but its reply is lost: the call learns
    # from the cloud's print status that its task runs, instead of failing.
    sim.stall(serial, 3.0)
    try:
        first = client.start_cloud_print(serial, file_name="retry.3mf", command_timeout=1.0)
    finally:
        sim.stall(serial, 0.0)  # the next test must not lose its replies
    assert printing(sim, serial)["task_id"] == str(first.id)
    # The caller retries anyway (it timed out on its side): same task, nothing sent.
    again = client.start_cloud_print(serial, file_name="retry.3mf")
    assert again.id == first.id
    assert len(project_files(sim, serial)) == sent_before + 1, "the printer was told once"
    mine = [t for t in sim.world.tasks.values() if t.id not in tasks_before]
    assert [t.id for t in mine] == [first.id], "one task"


def test_after_a_stop_the_same_file_prints_again(
    sim: Simulator, client: Face, tmp_path: Path
) -> None:
    serial = serial_of(sim, "x1c")
    model = sliced(tmp_path / "twice.3mf", sim, serial)
    client.upload_file("twice.3mf", str(model))
    sent_before = len(project_files(sim, serial))
    uploaded_name = "twice.3mf"
    first = client.start_cloud_print(serial, file_name=uploaded_name)
    sim.with_printer(serial, _idle)
    wait_for(lambda: sim.world.tasks[int(first.id)].status == 3, what="the task failed")
    # A stopped print is over: asking again is a new print, with a new task.
    second = client.start_cloud_print(serial, file_name=uploaded_name)
    assert second.id != first.id
    assert len(project_files(sim, serial)) == sent_before + 2


def test_signed_project_file(sim: Simulator, client: Face, tmp_path: Path) -> None:
    serial = serial_of(sim, "x1c")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def sign(data: bytes) -> bytes:
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def verify(signed: bytes, signature: bytes, cert_id: str) -> bool:
        try:
            key.public_key().verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            return False
        return True

    def require(printer: Any) -> None:
        printer.requires_signature = True
        printer.signature_verifier = verify

    sim.with_printer(serial, require)
    model = sliced(tmp_path / "signed.3mf", sim, serial)
    client.upload_file("signed.3mf", str(model))
    with pytest.raises(CommandError, match="verify failed"):
        client.start_cloud_print(serial, file_name="signed.3mf")
    assert printing(sim, serial)["state"] not in BUSY
    signer = Signer(sign, "0a1b2c")
    task = client.start_cloud_print(serial, file_name="signed.3mf", signer=signer)
    assert printing(sim, serial)["task_id"] == str(task.id)


def test_download_with_wrong_md5_fails_like_a_printer(
    sim: Simulator, env: dict[str, str], tmp_path: Path
) -> None:
    serial = serial_of(sim, "x1c")
    client = BambuClient(token=env["BAMBU_TOKEN"])
    try:
        data = b"PK\x03\x04" + b"bytes" * 100
        path = tmp_path / "wrongmd5.3mf"
        path.write_bytes(data)
        uploaded = client.upload_file("wrongmd5.3mf", str(path))
        confirmed = client.confirm_upload(uploaded.file_id)
    finally:
        client.close()
    mqtt = BambuMQTT(env["BAMBU_USER_ID"], serial, token=env["BAMBU_TOKEN"])
    mqtt.connect()
    try:
        command = proto.project_file(confirmed["file_url"], 1, md5="0" * 32, task_id="1")
        with pytest.raises(CommandError, match="MD5 mismatch"):
            mqtt.send(command, serial)
        bad_url = confirmed["file_url"].replace("Signature=", "Signature=x")
        with pytest.raises(CommandError, match="SignatureDoesNotMatch"):
            mqtt.send(proto.project_file(bad_url, 1, md5=confirmed["md5"]), serial)
    finally:
        mqtt.disconnect()
    assert sim.with_printer(serial, lambda p: p.state.print_error) == ERROR_DOWNLOAD_FAILED
    assert printing(sim, serial)["state"] not in BUSY


# --- one file, many printers ----------------------------------------------------------------


@pytest.mark.parametrize("face", ["sync", "async"])
def test_one_file_to_many_printers(
    sim: Simulator, env: dict[str, str], tmp_path: Path, face: str
) -> None:
    model = sliced(tmp_path / f"many-{face}.3mf", sim, serial_of(sim, "x1c"))
    targets = [serial_of(sim, m) for m in ("x1c", "p1s", "a1")]
    faces = client_face(sim, face)
    client = next(faces)
    try:
        if client.is_async:
            assert client.loop is not None
            outcomes = client.loop.run(async_print_many_cloud(client.obj, model, targets))
        else:
            outcomes = print_many_cloud(client.obj, model, targets)
    finally:
        next(faces, None)
    by_serial = {o.serial: o for o in outcomes}
    assert list(by_serial) == targets
    assert by_serial[targets[0]].ok and by_serial[targets[1]].ok
    offline = by_serial[targets[2]]
    assert not offline.ok and offline.error and "offline" in offline.error
    for serial in targets[:2]:
        assert printing(sim, serial)["task_id"] == by_serial[serial].task_id
    uploads = [f for f in sim.world.files.values() if f.name == model.name]
    assert len(uploads) == 1, "uploaded once"


def test_signature_header_is_base64(sim: Simulator) -> None:
    # The envelope the Signer produces is what a printer checks (PROTOCOL.md §2.8).
    signer = Signer(lambda data: b"sig", "ab")
    envelope = signer.envelope(proto.stop().with_sequence("1"), "SERIAL")
    assert base64.b64decode(envelope["header"]["sign_string"]) == b"sig"
    assert envelope["header"]["cert_id"] == "abCN=SERIAL.bambulab.com"
