"""Farm statistics: the aggregation by hand, then a small simulated farm end to end.

The unit tests build histories (farm jobs) and cloud task records by hand:
dedup of a print both recorded, success rate, hours, grams by colour,
failures by code, ``since``, the CSV's formula neutralising, the counters'
incremental reads. The end-to-end test runs four simulated printers (cloud
MQTT for the live state, LAN for the starts, printing at 300x) through the
farm's queue: three prints finish, one fails with a clogged nozzle; the
statistics JSON, CSV, page and ``/metrics`` then show exactly those.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bambulab import AsyncBambuMQTT, BambuClient
from bambulab.farm.dispatcher import Dispatcher
from bambulab.farm.models import Filament, Job, JobState, Requirements, Target
from bambulab.farm.service import Farm, attach
from bambulab.farm.stats import (
    FarmCounters,
    aggregate,
    code_info,
    csv_printers,
    csv_prints,
    failure_code,
    from_ended,
    from_job,
    from_task,
    merge,
    svg_prints,
)
from bambulab.farm.store import FarmStore
from bambulab.farm.web import CloudTasks
from bambulab.models.cloud import Task
from bambulab.protocol.http import RetryPolicy
from bambulab.servers.app import ServerContext, build_app
from bambulab.servers.common import Gate, MemoryEventBus
from bambulab.servers.live import LiveHub, PrinterEntry
from bambulab.servers.runner import AppServer
from bambulab.servers.tokens import TokenStore
from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from bambulab.sim.threemf_writer import write_3mf
from tests.binaries import needs, promtool_check
from tests.conftest import unlimited, wait_for

A, B = "01P00A000000001", "01P00A000000002"
T0 = 1_780_000_000.0  # a fixed clock for the hand-built histories


def job(
    id: int,
    printer: str,
    state: JobState,
    start: float | None,
    end: float,
    *,
    filaments: tuple[Filament, ...] = (Filament(1, "PLA", "#FF0000FF", 10.0),),
    seconds: float = 3600.0,
    reason: str = "",
    name: str = "Part",
) -> Job:
    grams = sum(f.grams for f in filaments)
    return Job(
        id=id,
        name=name,
        file="/x.3mf",
        file_md5="0" * 32,
        plate=1,
        target=Target(),
        requirements=Requirements("C12", 0.4, filaments, seconds, grams),
        state=state,
        printer=printer,
        reason=reason,
        started_at=start,
        finished_at=end,
        updated_at=end,
    )


def task(
    id: int,
    device: str,
    start: float,
    seconds: float,
    status: int = 2,
    detail: list[dict[str, Any]] | None = None,
    weight: float = 0.0,
) -> Task:
    def iso(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    return Task.from_wire(
        {
            "id": id,
            "deviceId": device,
            "deviceName": f"cloud name of {device[-1]}",
            "title": f"task {id}",
            "status": status,
            "startTime": iso(start),
            "endTime": iso(start + seconds),
            "costTime": seconds,
            "weight": weight,
            "amsDetailMapping": detail or [],
        }
    )


def row_of(j: Job) -> tuple[Any, ...]:
    """A job as FarmStore.ended reads it (the requirements as the store writes them)."""
    req = j.requirements
    stored = orjson.dumps(
        {
            "model_id": req.model_id,
            "filaments": [dataclasses.asdict(f) for f in req.filaments],
            "seconds": req.seconds,
            "grams": req.grams,
        }
    ).decode()
    return (j.id, j.name, j.printer, j.state.value, j.reason, stored, j.started_at, j.finished_at)


# --- one list of prints -----------------------------------------------------------------------


def test_a_print_both_recorded_counts_once_with_the_farms_record_and_the_clouds_grams() -> None:
    farm_job = job(1, A, JobState.FINISHED, T0, T0 + 3600, filaments=())
    detail = [
        {"filamentType": "PETG", "sourceColor": "00FF00FF", "weight": 20.5},
        {"filamentType": "PETG", "sourceColor": "00FF00FF", "weight": 4.5},
    ]
    same = task(90, A, T0 + 40, 3500, detail=detail)  # the cloud saw it start 40 s later
    other_printer = task(91, B, T0, 3600, weight=7)
    too_far = task(92, A, T0 + 4000, 600, status=3)
    running = task(93, A, T0 + 9000, 0, status=1)  # not ended: no print yet
    assert from_task(Task.from_wire({**too_far.raw, "status": "3"})) == from_task(too_far)
    record = from_job(farm_job, "Left")
    assert record is not None
    cloud = [r for t in (same, other_printer, too_far, running) if (r := from_task(t))]
    assert len(cloud) == 3
    prints = merge([record], cloud)
    assert [(p.printer, p.source, p.result) for p in prints] == [
        (A, "farm+cloud", "finished"),
        (B, "cloud", "finished"),
        (A, "cloud", "failed"),
    ]
    merged = prints[0]
    assert merged.task_id == "90" and merged.job_id == 1
    assert merged.seconds == 3600  # the farm's times win
    assert merged.grams == (("PETG", "#00FF00", 25.0),)  # the farm had none: the AMS detail's
    assert prints[1].grams == (("?", "", 7.0),)  # no AMS detail: the task's weight
    # with the farm's own grams, those are kept
    own = from_job(job(2, A, JobState.FINISHED, T0, T0 + 3600), "Left")
    assert own is not None
    assert merge([own], [r for r in [from_task(same)] if r])[0].grams == (("PLA", "#FF0000", 10.0),)
    # outside the tolerance, two prints
    assert len(merge([own], [r for r in [from_task(same)] if r], tolerance=10)) == 2


def test_jobs_that_never_printed_are_no_prints() -> None:
    queued_cancel = job(1, "", JobState.CANCELLED, None, T0)
    start_failed = job(2, A, JobState.FAILED, None, T0, reason="no LAN address (after 3 attempts)")
    assert from_job(queued_cancel) is None and from_job(start_failed) is None
    assert from_job(job(3, A, JobState.PRINTING, T0, T0)) is None


def test_totals_per_printer_and_for_the_farm() -> None:
    white = Filament(2, "PLA", "#FFFFFFFF", 5.0)
    red = Filament(1, "PLA", "#ff0000ff", 10.0)
    petg = Filament(3, "PETG", "#FF0000FF", 2.0)
    history = [
        job(1, A, JobState.FINISHED, T0, T0 + 3600, filaments=(red, white)),
        job(2, A, JobState.FINISHED, T0 + 4000, T0 + 5800, filaments=(red, petg)),
        # half its planned hour, then a clog: half its grams
        job(3, A, JobState.FAILED, T0 + 6000, T0 + 7800, reason="HMS 0300_8016: clogged"),
        job(4, B, JobState.FAILED, T0, T0 + 360, reason="HMS 0700_2000_0002_0001: runout"),
        job(5, B, JobState.FAILED, T0 + 400, T0 + 760, reason="the printer is gone"),
        job(6, B, JobState.CANCELLED, T0 + 800, T0 + 1160, filaments=(white,)),
    ]
    stats = aggregate([r for j in history if (r := from_job(j))], names={A: "Left"})
    left, right = stats.printers
    assert (left.printer, left.name, right.name) == (A, "Left", "")
    assert (left.prints, left.finished, left.failed, left.cancelled) == (3, 2, 1, 0)
    assert left.success_rate == pytest.approx(2 / 3)
    assert left.hours == pytest.approx((3600 + 1800 + 1800) / 3600)
    assert left.grams == (
        ("PETG", "#FF0000", 2.0),
        ("PLA", "#FF0000", 25.0),
        ("PLA", "#FFFFFF", 5.0),
    )
    assert left.failures == (("0300_8016", 1),)
    # a cancelled print is no failure: 0 finished of 2 that ended either way
    assert (right.prints, right.failed, right.cancelled, right.success_rate) == (3, 2, 1, 0.0)
    assert right.grams == (("PLA", "#FF0000", 2.0), ("PLA", "#FFFFFF", 0.5))
    farm = stats.total
    assert (farm.prints, farm.finished, farm.failed) == (6, 2, 3)
    assert farm.success_rate == pytest.approx(2 / 5)
    assert farm.failures == (("0300_8016", 1), ("0700_2000_0002_0001", 1), ("unknown", 1))
    assert farm.grams == (
        ("PETG", "#FF0000", 2.0),
        ("PLA", "#FF0000", 27.0),
        ("PLA", "#FFFFFF", 5.5),
    )
    # since: what ended at or after it
    later = aggregate([r for j in history if (r := from_job(j))], since=T0 + 5800)
    assert (later.total.prints, later.total.finished, later.total.failed) == (2, 1, 1)
    assert [s.printer for s in later.printers] == [A]
    nothing = aggregate([])
    assert nothing.total.prints == 0 and nothing.total.success_rate is None


def test_failure_codes_read_back_with_text_and_wiki() -> None:
    assert failure_code("HMS 0300_8016: The nozzle is clogged with filament.") == "0300_8016"
    assert failure_code("HMS 0700_2000_0002_0001: x") == "0700_2000_0002_0001"
    assert failure_code("the printer is no longer printing this job") == ""
    assert code_info("0300_8016") == ("The nozzle is clogged with filament.", "")
    text, wiki = code_info("0700_2000_0002_0001")
    assert text == "AMS A Slot 1 filament has run out."
    assert wiki == "https://wiki.bambulab.com/en/hms/0700_2000_0002_0001"
    assert code_info("unknown") == ("", "")


def test_csv_is_rfc4180_and_formulas_are_neutralised() -> None:
    hostile = [
        job(1, A, JobState.FINISHED, T0, T0 + 60, name='=HYPERLINK("http://evil","x")'),
        job(2, A, JobState.FINISHED, T0, T0 + 60, name="+1+1"),
        job(3, A, JobState.FINISHED, T0, T0 + 60, name="-2"),
        job(4, A, JobState.FINISHED, T0, T0 + 60, name="@SUM(A1)"),
        job(5, A, JobState.FINISHED, T0, T0 + 60, name="\tx"),
        job(6, A, JobState.FINISHED, T0, T0 + 60, name='a "quoted", two\r\nlines'),
    ]
    prints = [r for j in hostile if (r := from_job(j, "=cmd|' /C calc'!A0"))]
    text = csv_prints(prints)
    assert text.startswith("printer,name,title,start,end,result,seconds,grams,")
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 7
    titles = [r[2] for r in rows[1:]]
    assert titles == [
        '\'=HYPERLINK("http://evil","x")',
        "'+1+1",
        "'-2",
        "'@SUM(A1)",
        "'\tx",
        'a "quoted", two\r\nlines',
    ]
    assert all(r[1] == "'=cmd|' /C calc'!A0" for r in rows[1:])
    assert rows[1][3] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0))
    per_printer = list(csv.reader(io.StringIO(csv_printers(aggregate(prints)), newline="")))
    assert per_printer[0][:4] == ["printer", "name", "prints", "finished"]
    assert per_printer[1][:3] == [A, "'=cmd|' /C calc'!A0", "6"]
    assert per_printer[-1][:3] == ["", "farm", "6"]


def test_charts_escape_what_printers_say() -> None:
    name = '<script>alert("x")</script>\x1b[2J'
    stats = aggregate([r for r in [from_job(job(1, A, JobState.FINISHED, T0, T0 + 1), name)] if r])
    svg = svg_prints(stats)
    assert "<script>" not in svg and "\x1b" not in svg
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;\\x1b[2J" in svg


def test_counters_read_only_what_ended_since_the_last_read() -> None:
    history: list[Job] = [
        job(1, A, JobState.FINISHED, T0, T0 + 100),
        job(2, A, JobState.FAILED, T0, T0 + 200, reason="HMS 0300_8016: clog"),
    ]
    asked: list[float | None] = []
    now = [0.0]

    def read(since: float | None) -> list[tuple[Any, ...]]:
        """What FarmStore.ended gives (its rows)."""
        asked.append(since)
        return [row_of(j) for j in history if since is None or (j.finished_at or 0) >= since]

    counters = FarmCounters(read, ttl=5.0, margin=60.0, clock=lambda: now[0])
    first = counters.read()
    assert dict(first.prints) == {(A, "finished"): 1, (A, "failed"): 1}
    assert dict(first.failures) == {(A, "0300_8016"): 1}
    assert counters.read() is first and asked == [None]  # within the TTL: no read
    # a job that ended a little "before" the newest (another instance's clock) and a new one
    history.append(job(3, B, JobState.CANCELLED, T0 + 150, T0 + 170))
    history.append(job(4, B, JobState.FINISHED, T0 + 200, T0 + 300))
    now[0] = 10.0
    second = counters.read()
    assert asked == [None, T0 + 200 - 60]
    assert dict(second.prints) == {
        (A, "finished"): 1,
        (A, "failed"): 1,
        (B, "cancelled"): 1,
        (B, "finished"): 1,
    }
    assert dict(second.seconds) == {A: 300.0, B: 120.0}
    assert dict(second.grams)[(B, "PLA", "#FF0000")] == pytest.approx(10 + 10 * 20 / 3600, abs=1e-3)
    # nothing new: nothing counted twice
    now[0] = 20.0
    assert counters.read() == second
    assert second.only([B]).prints == ((((B, "cancelled"), 1), ((B, "finished"), 1)))


def test_the_store_reads_what_printed_and_the_stats_read_it_back(store_url: str) -> None:
    """FarmStore.ended on SQLite and PostgreSQL: prints only, oldest end first, since."""
    now = [T0]
    store = FarmStore(store_url, clock=lambda: now[0])
    try:
        red = Filament(1, "PLA", "#FF0000FF", 12.0)
        made = store.add_jobs(
            "/x.3mf",
            "0" * 32,
            1,
            "Part",
            Target(),
            Requirements("C12", 0.4, (red,), 600, 12.0),
            copies=4,
        )
        store.cancel(made[3].id)  # cancelled in the queue: never printed
        for printer, one in zip((A, B, "01P00A000000003"), made[:3], strict=True):
            claimed = store.claim(printer, lambda j, one=one: j.id == one.id, "t")
            assert claimed is not None
            store.started(claimed.id)
        now[0] = T0 + 600
        store.finished(made[0].id)
        now[0] = T0 + 900
        store.failed(made[1].id, "HMS 0300_8016: The nozzle is clogged with filament.")
        now[0] = T0 + 1200
        store.cancel(made[2].id)
        rows = store.ended()
        assert [r[0] for r in rows] == [j.id for j in made[:3]]
        records = [r for row in rows if (r := from_ended(row))]
        assert [(r.printer, r.result, r.seconds, r.code) for r in records] == [
            (A, "finished", 600.0, ""),
            (B, "failed", 900.0, "0300_8016"),
            ("01P00A000000003", "cancelled", 1200.0, ""),
        ]
        assert records[0].grams == (("PLA", "#FF0000", 12.0),)
        assert records[1].grams == (("PLA", "#FF0000", 12.0),)  # ran past its planned time
        assert [r[0] for r in store.ended(since=T0 + 900)] == [made[1].id, made[2].id]
    finally:
        store.close()


def test_an_unreachable_cloud_leaves_the_farms_history_and_says_why(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = "account-token-" + "x" * 40
    ctx = ServerContext(
        Gate(TokenStore(tmp_path / "t.sqlite3")),
        cloud_url=f"http://127.0.0.1:{port}",
        account_token=secret,
    )
    tasks = CloudTasks(ctx, RetryPolicy(max_attempts=1))

    async def read() -> list[Any]:
        try:
            return await tasks.read()
        finally:
            await tasks.aclose()

    assert asyncio.run(read()) == []
    assert tasks.note.startswith("the cloud's task records could not be read: ")
    assert secret not in tasks.note
    assert "\n" not in tasks.note
    none = CloudTasks(ServerContext(Gate(TokenStore(tmp_path / "u.sqlite3"))))
    assert asyncio.run(none.read()) == [] and none.note == "no cloud account"


def test_a_scrape_does_not_wait_for_a_read_in_progress() -> None:
    reading, release = threading.Event(), threading.Event()

    def slow(since: float | None) -> list[tuple[Any, ...]]:
        reading.set()
        release.wait(10)
        return [row_of(job(1, A, JobState.FINISHED, T0, T0 + 100))]

    counters = FarmCounters(slow)
    warming = threading.Thread(target=counters.warm)
    warming.start()
    try:
        assert reading.wait(10)
        began = time.monotonic()
        assert counters.read().prints == ()  # the last totals (none yet), at once
        assert time.monotonic() - began < 1
    finally:
        release.set()
        warming.join(10)
    assert counters.read().prints == (((A, "finished"), 1),)


def test_counters_scale_to_a_long_history(tmp_path: Path) -> None:
    """The first read of 10,000 ended jobs from SQLite, then a read with nothing new."""
    store = FarmStore(f"sqlite:///{tmp_path / 'farm.db'}")
    try:
        import sqlalchemy as sa

        from bambulab.farm.store import jobs_table

        row = {
            "name": "Part",
            "file": "/x.3mf",
            "file_md5": "0" * 32,
            "plate": 1,
            "target_kind": "any",
            "target_value": "",
            "requirements": '{"filaments":[{"slot":1,"type":"PLA","colour":"#FF0000FF",'
            '"grams":10.0}],"seconds":600,"grams":10.0}',
            "priority": 0,
            "position": 0.0,
            "grp": "",
            "owner": "",
            "attempts": 1,
            "reason": "",
            "stop_pending": False,
            "created_at": T0,
            "updated_at": T0,
            "claimed_at": T0,
        }
        rows = [
            {
                **row,
                "state": "finished" if i % 10 else "failed",
                "reason": "" if i % 10 else "HMS 0300_8016: clog",
                "printer": f"01P00A{i % 50:09d}",
                "started_at": T0 + i,
                "finished_at": T0 + i + 600,
            }
            for i in range(10_000)
        ]
        with store._engine.begin() as conn:
            conn.execute(sa.insert(jobs_table), rows)
        counters = FarmCounters(store.ended, ttl=0.0)
        began = time.perf_counter()
        totals = counters.read()
        first = time.perf_counter() - began
        assert sum(n for _, n in totals.prints) == 10_000
        assert sum(n for _, n in totals.failures) == 1_000
        began = time.perf_counter()
        again = counters.read()
        later = time.perf_counter() - began
        assert again == totals
        assert later < first / 10, (first, later)
    finally:
        store.close()


# --- end to end: a small simulated farm -----------------------------------------------------

HOSTILE = '<script>alert("owned")</script>\x1b[31m"\''
INJECTION = '=HYPERLINK("http://evil.example","click")'


@dataclass
class Farmed:
    server: AppServer
    read: str
    narrow: str  # a read token for the first printer only
    serials: list[str]
    jobs: dict[str, dict[str, Any]]  # serial -> its job, ended
    since: float
    cloud_ended: int

    def get(self, path: str, token: str | None = None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.read}"}
        return httpx.get(
            self.server.url + path,
            headers=headers,
            params=params,
            timeout=20,
            follow_redirects=False,
        )


def _tray(sim: Simulator, serial: str) -> tuple[str, str]:
    def read(p: Any) -> tuple[str, str]:
        for unit in p.truth().get("ams", {}).get("ams", []):
            for tray in unit.get("tray", []):
                if tray.get("tray_type"):
                    return str(tray["tray_type"]), "#" + str(tray["tray_color"])
        raise AssertionError("no tray loaded")

    return sim.with_printer(serial, read)  # type: ignore[no-any-return]


def _sliced(filament: tuple[str, str]) -> bytes:
    out = io.BytesIO()
    write_3mf(out, name="Cube", filaments=(filament,), seconds=600, printer_model="P1S")
    return out.getvalue()


@pytest.fixture(scope="module")
def farmed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farmed]:
    tmp = tmp_path_factory.mktemp("stats")
    config = unlimited().with_demo_fleet(parse_fleet(["p1s:idle"] * 4))
    with Simulator(config, time_scale=300, tick_interval=0.2, camera=False) as sim:
        account = sim.issue_token(sim.demo_account.email)
        with BambuClient(account, base_url=sim.url) as cloud:
            devices = cloud.get_devices()
            tasks = list(cloud.iter_tasks(page_size=100))
        serials = [d.dev_id for d in devices]
        mqtt = AsyncBambuMQTT(
            sim.user_id,
            serials,
            token=account,
            host=sim.mqtt_host,
            port=sim.mqtt_port,
            ca_file=sim.ca_file,
        )
        names = {s: f"Printer {i}" for i, s in enumerate(serials)}
        names[serials[3]] = HOSTILE
        entries = [PrinterEntry(s, names[s], "P1S") for s in serials]
        bus = MemoryEventBus()
        hub = LiveHub([mqtt], entries, bus=bus)
        tokens = TokenStore(tmp / "tokens.sqlite3")
        ctx = ServerContext(
            Gate(tokens), bus=bus, hub=hub, cloud_url=sim.url, account_token=account
        )
        store = FarmStore(f"sqlite:///{tmp / 'farm.db'}")
        dispatcher = Dispatcher(
            store,
            hub,
            sim.lan_printers(timeout=10.0).get,
            owner="t",
            interval=0.3,
            start_timeout=15,
        )
        attach(ctx, Farm(store, tmp / "files", dispatcher=dispatcher))
        app = build_app(ctx, ["farm", "live", "metrics"])
        server = AppServer(app, on_start=ctx.start, on_stop=ctx.aclose)
        control, _ = tokens.create("control")
        read, _ = tokens.create("read")
        narrow, _ = tokens.create("read", printers=[serials[0]])
        with server:
            for serial in serials:
                wait_for(lambda s=serial: server.call(lambda: hub.state(s)) is not None, 20)
            since = time.time()
            sim.fail_next(serials[2], "clog")
            titles = ["Bracket", INJECTION, "Gear", "Hook"]
            ids: dict[str, int] = {}
            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {control}"}, timeout=20
            ) as api:
                for serial, title in zip(serials, titles, strict=True):
                    answer = api.post(
                        "/farm/api/jobs",
                        params={"name": title, "target": f"printer:{serial}"},
                        content=_sliced(_tray(sim, serial)),
                    )
                    assert answer.status_code == 201, answer.text
                    ids[serial] = answer.json()["jobs"][0]["id"]

                def ended() -> dict[int, dict[str, Any]]:
                    found = api.get("/farm/api/jobs", params={"history": "true"}).json()["jobs"]
                    return {j["id"]: j for j in found if j["state"] in ("finished", "failed")}

                wait_for(lambda: len(ended()) == 4, 60, "the four prints ended")
                by_id = ended()

                def counted() -> float:
                    text = api.get("/metrics").text
                    return sum(
                        s.value
                        for f in text_string_to_metric_families(text)
                        if f.name == "bambu_farm_prints"
                        for s in f.samples
                    )

                # the counters are re-read at most every 5 s (their TTL)
                wait_for(lambda: counted() == 4, 15, "the counters caught up")
            yield Farmed(
                server,
                read,
                narrow,
                serials,
                {s: by_id[i] for s, i in ids.items()},
                since,
                sum(1 for t in tasks if t.status in (2, 3)),
            )
        store.close()


def test_the_farms_prints_are_counted_exactly(farmed: Farmed) -> None:
    jobs = farmed.jobs
    a, b, c, d = farmed.serials
    assert [jobs[s]["state"] for s in (a, b, c, d)] == [
        "finished",
        "finished",
        "failed",
        "finished",
    ]
    assert jobs[c]["reason"].startswith("HMS 0300_8016: ")
    body = farmed.get("/farm/api/stats", since=farmed.since, prints="true").json()
    farm = body["farm"]
    assert (farm["prints"], farm["finished"], farm["failed"], farm["cancelled"]) == (4, 3, 1, 0)
    assert farm["success_rate"] == 0.75
    assert farm["failures"] == [
        {
            "code": "0300_8016",
            "count": 1,
            "text": "The nozzle is clogged with filament.",
            "wiki": "",
        }
    ]
    rows = {p["printer"]: p for p in body["printers"]}
    assert set(rows) == set(farmed.serials)
    assert rows[d]["name"] == HOSTILE
    for serial, j in jobs.items():
        row = rows[serial]
        assert row["prints"] == 1
        assert row["seconds"] == pytest.approx(j["finished_at"] - j["started_at"], abs=1e-3)
        if j["state"] == "finished":
            want = {(f["type"], f["colour"][:7].upper()): f["grams"] for f in j["filaments"]}
            assert {
                (f["type"], f["colour"]): f["grams"] for f in row["filaments"]
            } == pytest.approx(want)
        else:  # failed early: a share of its grams, never more
            planned = sum(f["grams"] for f in j["filaments"])
            assert 0 <= row["grams"] < planned
    assert [p["source"] for p in body["prints"]] == ["farm"] * 4
    # the cloud's own history comes in too (the sim's earlier tasks on these printers)
    everything = farmed.get("/farm/api/stats", prints="true").json()
    assert "prints" not in farmed.get("/farm/api/stats").json()
    assert everything["cloud"] == "read"
    assert everything["farm"]["prints"] == 4 + farmed.cloud_ended
    assert sum(p["source"] == "cloud" for p in everything["prints"]) == farmed.cloud_ended


def test_csv_export(farmed: Farmed) -> None:
    answer = farmed.get("/farm/api/stats.csv", per="print", since=farmed.since)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv; charset=utf-8")
    rows = list(csv.reader(io.StringIO(answer.content.decode("utf-8"), newline="")))
    assert rows[0][:3] == ["printer", "name", "title"]
    by_printer = {r[0]: r for r in rows[1:]}
    assert len(rows) == 5 and set(by_printer) == set(farmed.serials)
    _, b, c, _ = farmed.serials
    assert by_printer[b][2] == "'" + INJECTION
    assert by_printer[c][5] == "failed" and by_printer[c][9] == "0300_8016"
    per_printer = farmed.get("/farm/api/stats.csv", per="printer", since=farmed.since)
    printers = list(csv.reader(io.StringIO(per_printer.text, newline="")))
    assert printers[-1][:6] == ["", "farm", "4", "3", "1", "0"]
    assert farmed.get("/farm/api/stats.csv", per="nonsense").status_code == 422


def test_the_page_charts_and_escapes(farmed: Farmed) -> None:
    page = farmed.get("/farm/stats", since=farmed.since)
    assert page.status_code == 200, page.text
    text = page.text
    assert "<script>alert" not in text and "\x1b" not in text
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;\\x1b[31m&quot;&#x27;" in text
    assert text.count('<svg class="chart"') == 3
    assert text.count('class="r-finished"') == 3 and text.count('class="r-failed"') == 1
    for j in farmed.jobs.values():
        if j["state"] == "finished":
            colour = j["filaments"][0]["colour"][:7].upper()
            assert 'class="filament" x=' in text and f'fill="{colour}"' in text
    assert "0300_8016" in text and "The nozzle is clogged with filament." in text
    # the dashboard links to it; no token: to the login form; the API wants a token
    assert 'href="/farm/stats"' in farmed.get("/farm").text
    anonymous = httpx.get(farmed.server.url + "/farm/stats", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/farm/login"
    assert httpx.get(farmed.server.url + "/farm/api/stats").status_code == 401
    assert httpx.get(farmed.server.url + "/farm/api/stats.csv").status_code == 401


def test_a_token_for_one_printer_sees_only_its_prints(farmed: Farmed) -> None:
    first = farmed.serials[0]
    body = farmed.get("/farm/api/stats", farmed.narrow, since=farmed.since).json()
    assert [p["printer"] for p in body["printers"]] == [first]
    assert body["farm"]["prints"] == 1
    families = _scrape(farmed, farmed.narrow)
    printers = {s.labels["printer"] for s in families["bambu_farm_prints"]}
    assert printers == {first}


def _scrape(farmed: Farmed, token: str | None = None) -> dict[str, list[Any]]:
    text = farmed.get("/metrics", token).text
    return {
        f.name: f.samples
        for f in text_string_to_metric_families(text)
        if f.name.startswith("bambu_farm")
    }


def test_metrics_count_the_farms_prints(farmed: Farmed) -> None:
    a, b, c, d = farmed.serials
    jobs = farmed.jobs
    families = _scrape(farmed)
    prints = {
        (s.labels["printer"], s.labels["result"]): s.value for s in families["bambu_farm_prints"]
    }
    assert prints == {(a, "finished"): 1, (b, "finished"): 1, (c, "failed"): 1, (d, "finished"): 1}
    failures = {
        (s.labels["printer"], s.labels["code"]): s.value for s in families["bambu_farm_failures"]
    }
    assert failures == {(c, "0300_8016"): 1}
    seconds = {s.labels["printer"]: s.value for s in families["bambu_farm_printing_seconds"]}
    for serial, j in jobs.items():
        assert seconds[serial] == pytest.approx(j["finished_at"] - j["started_at"], abs=1e-3)
    grams = {
        (s.labels["printer"], s.labels["type"], s.labels["color"]): s.value
        for s in families["bambu_farm_filament_grams"]
    }
    for serial in (a, b, d):
        f = jobs[serial]["filaments"][0]
        assert grams[(serial, f["type"], f["colour"][:7].upper())] == pytest.approx(f["grams"])


@needs("promtool")
def test_promtool_accepts_the_farms_counters(farmed: Farmed) -> None:
    text = farmed.get("/metrics").text
    assert "bambu_farm_prints_total{" in text
    promtool_check(text)
