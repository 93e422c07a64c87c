"""The farm end to end against the simulator: queue over HTTP, dispatch, print, bed clear, recover.

Simulated printers over their real protocols (cloud MQTT for the live state,
LAN MQTT and implicit FTPS for the starts), printing at 300x; the farm's
queue in SQLite; the server's ``farm`` part on a loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import io
import logging
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bambulab import AsyncBambuClient, AsyncBambuMQTT, BambuClient
from bambulab.farm.dispatcher import Dispatcher
from bambulab.farm.models import JobState, Target
from bambulab.farm.service import Farm, attach
from bambulab.farm.starter import marked_job, start_job, start_job_cloud
from bambulab.farm.store import FarmStore
from bambulab.protocol import mqtt as proto
from bambulab.protocol.threemf import thumbnail
from bambulab.servers.app import ServerContext, build_app
from bambulab.servers.common import Gate, MemoryEventBus
from bambulab.servers.live import LiveHub, PrinterEntry
from bambulab.servers.runner import AppServer
from bambulab.servers.tokens import TokenStore
from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from bambulab.sim.threemf_writer import write_3mf
from tests.binaries import needs
from tests.conftest import unlimited, wait_for

pytestmark = pytest.mark.timeout(180)

FLEET = ["p1s:idle", "p1s:idle", "a1:idle"]


@dataclass
class Rig:
    sim: Simulator
    server: AppServer
    farm: Farm
    hub: LiveHub
    p1s: list[str]
    a1: str
    control: str

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url,
            headers={"Authorization": f"Bearer {self.control}"},
            timeout=20,
        )

    def prints(self, serial: str) -> int:
        """How many print commands the simulated printer received."""
        names: list[str] = self.sim.with_printer(serial, lambda p: [n for n, _ in p.received])
        return sum(1 for n in names if n == "print.project_file")

    def gcode_state(self, serial: str) -> str:
        return str(self.sim.with_printer(serial, lambda p: p.truth()["gcode_state"]))


def trays(sim: Simulator, serial: str) -> list[tuple[str, str]]:
    """(type, #colour) of every loaded AMS tray of a simulated printer."""

    def read(p: Any) -> list[tuple[str, str]]:
        return [
            (tray["tray_type"], "#" + tray["tray_color"])
            for unit in p.truth().get("ams", {}).get("ams", [])
            for tray in unit.get("tray", [])
            if tray.get("tray_type")
        ]

    return sim.with_printer(serial, read)  # type: ignore[no-any-return]


def load_same_filament(r: Rig) -> tuple[str, str]:
    """Load the first P1S's first filament into the second P1S's first slot (as a person would
    in the app: ``ams_filament_setting``); that filament, which both then have."""
    kind, colour = trays(r.sim, r.p1s[0])[0]
    command = proto.ams_filament_setting(0, 0, kind, colour, 190, 230)
    asyncio.run_coroutine_threadsafe(r.hub.command(r.p1s[1], command), r.server.loop).result(10)
    wait_for(lambda: trays(r.sim, r.p1s[1])[0][0] == kind, 10, "the filament loaded")
    wait_for(
        lambda: (
            (s := r.server.call(lambda: r.hub.state(r.p1s[1]))) is not None
            and s.trays[0].type == kind
        ),
        10,
        "the hub sees the filament",
    )
    return kind, colour


def sliced(model: str, filament: tuple[str, str], seconds: float = 600) -> bytes:
    out = io.BytesIO()
    write_3mf(out, name="Cube", filaments=(filament,), seconds=seconds, printer_model=model)
    return out.getvalue()


@contextlib.contextmanager
def farm_instance(
    sim: Simulator, tmp: Path, store_url: str, *, dispatch: bool = True, owner: str = "test"
) -> Iterator[tuple[AppServer, Farm, LiveHub, str, list[Any]]]:
    """One farm server on ``sim``: its own MQTT connection, hub, dispatcher and token store.

    Yields the server, the farm, the hub, a control token and the account's devices.
    """
    account = sim.issue_token(sim.demo_account.email)
    with BambuClient(account, base_url=sim.url) as cloud:
        devices = cloud.get_devices()
    serials = [d.dev_id for d in devices]
    mqtt = AsyncBambuMQTT(
        sim.user_id,
        serials,
        token=account,
        host=sim.mqtt_host,
        port=sim.mqtt_port,
        ca_file=sim.ca_file,
    )
    entries = [PrinterEntry(d.dev_id, d.name, d.dev_model_name) for d in devices]
    bus = MemoryEventBus()
    hub = LiveHub([mqtt], entries, bus=bus)
    tmp.mkdir(parents=True, exist_ok=True)
    tokens = TokenStore(tmp / "tokens.sqlite3")
    ctx = ServerContext(Gate(tokens), bus=bus, hub=hub, cloud_url=sim.url)
    store = FarmStore(store_url)
    lan = sim.lan_printers(timeout=10.0)
    dispatcher = (
        Dispatcher(store, hub, lan.get, owner=owner, interval=0.3, start_timeout=15)
        if dispatch
        else None
    )
    farm = Farm(store, tmp / "files", dispatcher=dispatcher)
    attach(ctx, farm)
    server = AppServer(build_app(ctx, ["farm", "live"]), on_start=ctx.start, on_stop=ctx.aclose)
    control, _ = tokens.create("control")
    try:
        with server:
            for serial in serials:
                wait_for(lambda s=serial: server.call(lambda: hub.state(s)) is not None, 20)
            yield server, farm, hub, control, devices
    finally:
        store.close()


def simulated_farm() -> Simulator:
    config = unlimited().with_demo_fleet(parse_fleet(FLEET))
    return Simulator(config, time_scale=300, tick_interval=0.2, camera=False)


@contextlib.contextmanager
def rig(tmp: Path, *, dispatch: bool = True) -> Iterator[Rig]:
    with (
        simulated_farm() as sim,
        farm_instance(sim, tmp, f"sqlite:///{tmp / 'farm.db'}", dispatch=dispatch) as (
            server,
            farm,
            hub,
            control,
            devices,
        ),
    ):
        by_model: dict[str, list[str]] = {}
        for d in devices:
            by_model.setdefault(d.dev_product_name or d.dev_model_name, []).append(d.dev_id)
        yield Rig(sim, server, farm, hub, by_model["P1S"], by_model["A1"][0], control)


def test_queue_dispatches_to_compatible_printers_and_waits_for_bed_clears(tmp_path: Path) -> None:
    with rig(tmp_path) as r, r.api() as api:
        filament = load_same_filament(r)
        answer = api.post("/farm/api/jobs?name=Bracket&copies=3", content=sliced("P1S", filament))
        assert answer.status_code == 201, answer.text
        ids = [j["id"] for j in answer.json()["jobs"]]
        assert len(ids) == 3
        x1 = api.post("/farm/api/jobs?name=ForX1", content=sliced("X1C", filament))
        assert x1.status_code == 201
        x1_id = x1.json()["jobs"][0]["id"]

        def states() -> dict[int, Any]:
            return {j["id"]: j for j in api.get("/farm/api/jobs?history=true").json()["jobs"]}

        # two copies go to the two P1S, none to the A1 (another model)
        wait_for(
            lambda: sum(states()[i]["state"] in ("printing", "finished") for i in ids) >= 2,
            30,
            "two jobs printing",
        )
        started = {states()[i]["printer"] for i in ids if states()[i]["printer"]}
        assert started == set(r.p1s)
        assert r.prints(r.a1) == 0
        # they finish; the printers now wait for a bed clear, so the third copy waits
        wait_for(
            lambda: sum(states()[i]["state"] == "finished" for i in ids) == 2, 60, "two finished"
        )
        third = next(i for i in ids if states()[i]["state"] == "queued")
        time.sleep(1.5)  # several dispatcher turns: a printer with a full bed takes nothing
        assert states()[third]["state"] == "queued"
        assert all(r.prints(s) == 1 for s in r.p1s)
        # the tile says so
        tiles = api.get("/farm/api/tiles").json()["tiles"]
        assert "clear the bed" in tiles[r.p1s[0]]
        cleared = api.post(f"/farm/api/printers/{r.p1s[0]}/bed-cleared")
        assert cleared.status_code == 200 and cleared.json()["bed_clear_needed"] is False
        wait_for(lambda: states()[third]["printer"] == r.p1s[0], 30, "the third copy dispatched")
        wait_for(lambda: r.prints(r.p1s[0]) == 2, 30, "the third copy's print command")
        assert r.prints(r.p1s[1]) == 1
        # the job sliced for an X1 never left the queue: no X1 here
        assert states()[x1_id]["state"] == "queued"
        # every job ran at most once
        assert sum(r.prints(s) for s in (*r.p1s, r.a1)) == 3


def test_a_restarted_dispatcher_neither_loses_nor_repeats_a_start(tmp_path: Path) -> None:
    """Jobs a dead dispatcher left ``starting``: one had reached its printer, one had not."""
    with rig(tmp_path, dispatch=False) as r:
        store = r.farm.store
        filament = load_same_filament(r)
        data = sliced("P1S", filament)
        reached, lost = r.farm.add(data, "Reached", copies=2, target=Target())
        lan = r.sim.lan_printers(timeout=10.0)
        # the dead dispatcher claimed both and had sent only the first one's print
        one = store.claim(r.p1s[0], lambda j: j.id == reached.id, "dead")
        two = store.claim(r.p1s[1], lambda j: j.id == lost.id, "dead")
        assert one is not None and two is not None
        asyncio.run(start_job(one, lan[r.p1s[0]], timeout=15))
        wait_for(
            lambda: (
                (s := r.server.call(lambda: r.hub.state(r.p1s[0]))) is not None
                and marked_job(s) == one.id
            ),
            20,
            "the printer shows the job",
        )
        # a new dispatcher starts (start_timeout 2 s: the lost claim is old enough soon)
        dispatcher = Dispatcher(store, r.hub, lan.get, owner="new", interval=0.3, start_timeout=2)
        asyncio.run_coroutine_threadsafe(dispatcher.start(), r.server.loop).result(5)
        try:
            wait_for(lambda: store.job(reached.id).state != JobState.STARTING, 20, "recovered")
            assert store.job(reached.id).state in (JobState.PRINTING, JobState.FINISHED)
            assert r.prints(r.p1s[0]) == 1  # not started a second time
            # the one that never reached its printer goes back and is started once
            wait_for(lambda: r.prints(r.p1s[1]) == 1, 30, "the lost job started")
            assert store.job(lost.id).attempts == 2
        finally:
            asyncio.run_coroutine_threadsafe(dispatcher.aclose(), r.server.loop).result(10)


@needs("postgres")
def test_two_farm_instances_on_one_postgresql_start_each_job_once(
    tmp_path: Path, pg_database: str
) -> None:
    """Two servers, each with its own printer connection and dispatcher, share one queue."""
    with (
        simulated_farm() as sim,
        farm_instance(sim, tmp_path / "a", pg_database, owner="a") as (
            server,
            farm,
            hub,
            control,
            devices,
        ),
        farm_instance(sim, tmp_path / "b", pg_database, owner="b"),
    ):
        p1s = [d.dev_id for d in devices if (d.dev_product_name or d.dev_model_name) == "P1S"]
        a1 = next(d.dev_id for d in devices if d.dev_id not in p1s)
        r = Rig(sim, server, farm, hub, p1s, a1, control)
        filament = load_same_filament(r)
        for serial in p1s:
            farm.store.set_auto_clear(serial, True)  # the queue drains without a person
        with r.api() as api:
            answer = api.post(
                "/farm/api/jobs?name=Shared&copies=6", content=sliced("P1S", filament)
            )
            assert answer.status_code == 201, answer.text
            ids = {j["id"] for j in answer.json()["jobs"]}

            def ended() -> dict[int, Any]:
                jobs = api.get("/farm/api/jobs?history=true").json()["jobs"]
                return {j["id"]: j for j in jobs if j["state"] in ("finished", "failed")}

            wait_for(lambda: set(ended()) == ids, 120, "all six printed")
            done = ended()
        assert {j["state"] for j in done.values()} == {"finished"}
        assert all(j["attempts"] == 1 for j in done.values()), done
        assert sum(r.prints(s) for s in p1s) == 6  # six print commands for six jobs
        assert r.prints(a1) == 0
        engine = sa.create_engine(pg_database.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            with engine.connect() as conn:
                owners = dict(
                    conn.execute(sa.text("SELECT owner, count(*) FROM farm_jobs GROUP BY owner"))
                    .tuples()
                    .all()
                )
        finally:
            engine.dispose()
        assert set(owners) <= {"a", "b"} and sum(owners.values()) == 6, owners


def test_a_start_another_instance_recorded_first_is_left_to_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Instance B's recovery saw the printer take the job and marked it printing while
    instance A was still confirming its start: A's late record is not an error."""
    caplog.set_level(logging.INFO, "bambulab.farm")
    with rig(tmp_path, dispatch=False) as r:
        store = r.farm.store
        (job,) = r.farm.add(
            sliced("P1S", trays(r.sim, r.p1s[0])[0]),
            "Raced",
            target=Target("printer", r.p1s[0]),
        )
        lan = r.sim.lan_printers(timeout=10.0)

        def reach(serial: str) -> Any:
            active = store.active(serial)
            assert active is not None and active.state is JobState.STARTING
            store.started(active.id)  # what the other instance's recovery did meanwhile
            return lan.get(serial)

        dispatcher = Dispatcher(store, r.hub, reach, owner="a", interval=0.3, start_timeout=15)
        asyncio.run_coroutine_threadsafe(dispatcher.start(), r.server.loop).result(5)
        try:
            wait_for(lambda: "recorded meanwhile" in caplog.text, 30, "the late record")
            turns = dispatcher.turns
            wait_for(lambda: dispatcher.turns > turns + 2, 10, "the dispatcher goes on")
            assert store.job(job.id).state in (JobState.PRINTING, JobState.FINISHED)
            assert store.job(job.id).attempts == 1
            assert r.prints(r.p1s[0]) == 1
        finally:
            asyncio.run_coroutine_threadsafe(dispatcher.aclose(), r.server.loop).result(10)


def without_pictures(data: bytes) -> bytes:
    """The same 3MF without its PNG members."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as copy:
        for item in source.infolist():
            if not item.filename.endswith(".png"):
                copy.writestr(item, source.read(item))
    return out.getvalue()


def test_a_tile_shows_its_jobs_plate_picture(tmp_path: Path) -> None:
    with rig(tmp_path, dispatch=False) as r, r.api() as api:
        store = r.farm.store
        data = sliced("P1S", trays(r.sim, r.p1s[0])[0])
        (pictured,) = r.farm.add(data, "Pictured")
        (plain,) = r.farm.add(without_pictures(data), "Plain")
        assert store.claim(r.p1s[0], lambda j: j.id == pictured.id, "test") is not None
        assert store.claim(r.p1s[1], lambda j: j.id == plain.id, "test") is not None
        for serial in r.p1s:  # claimed behind the farm's back: a settings change redraws
            assert api.post(f"/farm/api/printers/{serial}/settings?auto_clear=false").is_success
        picture_tag = re.compile(r'<img class="thumb"[^>]* src="([^"]+)"')

        def tiles() -> dict[str, str]:
            return api.get("/farm/api/tiles").json()["tiles"]  # type: ignore[no-any-return]

        wait_for(lambda: picture_tag.search(tiles()[r.p1s[0]]), 10, "the tile redrawn")
        wait_for(lambda: "Plain" in tiles()[r.p1s[1]], 10, "the other tile redrawn")
        found = picture_tag.search(tiles()[r.p1s[0]])
        assert found
        url = html.unescape(found.group(1))
        assert url.startswith(f"/farm/api/jobs/{pictured.id}/thumbnail")
        picture = api.get(url)
        assert picture.status_code == 200
        assert picture.headers["content-type"] == "image/png"
        assert picture.content == thumbnail(io.BytesIO(data), 1)
        assert "thumb" not in tiles()[r.p1s[1]]  # no picture in the file: none on the tile
        assert api.get(f"/farm/api/jobs/{plain.id}/thumbnail").status_code == 404
        assert api.get("/farm/api/jobs/999999/thumbnail").status_code == 404
        # a token for another printer learns nothing of this job
        other, _ = TokenStore(tmp_path / "tokens.sqlite3").create("read", printers=[r.a1])
        seen = api.get(url, headers={"Authorization": f"Bearer {other}"})
        assert seen.status_code == 404
        assert api.get(url, headers={"Authorization": ""}).status_code == 401


def test_a_printer_off_the_lan_gets_its_job_through_the_cloud(tmp_path: Path) -> None:
    """No LAN address or access code: the file goes to cloud storage, the start over the
    cloud broker, with the job's marker in the task name; the job follows to its end."""
    with rig(tmp_path, dispatch=False) as r:
        store = r.farm.store
        serial = r.p1s[0]
        (job,) = r.farm.add(
            sliced("P1S", trays(r.sim, serial)[0], seconds=300),
            "Via cloud",
            target=Target("printer", serial),
        )
        account = r.sim.issue_token(r.sim.demo_account.email)

        async def open_cloud() -> AsyncBambuClient:
            return AsyncBambuClient(account, base_url=r.sim.url)

        cloud = asyncio.run_coroutine_threadsafe(open_cloud(), r.server.loop).result(10)

        async def cloud_start(job: Any, serial: str, mapping: Any, timeout: float) -> None:
            await start_job_cloud(
                job, serial, cloud, mqtt=r.hub.source_for(serial), mapping=mapping, timeout=timeout
            )

        dispatcher = Dispatcher(
            store, r.hub, lambda _: None, cloud=cloud_start, owner="c", interval=0.3
        )
        asyncio.run_coroutine_threadsafe(dispatcher.start(), r.server.loop).result(5)
        try:
            wait_for(lambda: store.job(job.id).state is JobState.FINISHED, 60, "printed")
            assert store.job(job.id).attempts == 1
            assert r.prints(serial) == 1
            state = r.server.call(lambda: r.hub.state(serial))
            assert state is not None and marked_job(state) == job.id
        finally:
            asyncio.run_coroutine_threadsafe(dispatcher.aclose(), r.server.loop).result(10)
            asyncio.run_coroutine_threadsafe(cloud.aclose(), r.server.loop).result(10)
