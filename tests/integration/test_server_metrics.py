"""``GET /metrics`` of a server following the simulator, over real sockets.

The scrape's values are checked against the simulated printers' own truth
(their full ``push_status`` body), not against what our client made of it;
the exposition passes ``promtool check metrics``; a real Prometheus scrapes
it with a token from ``credentials_file`` and answers queries with the
printers' values, while a job without the token is refused (401).
"""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bambulab import AsyncBambuMQTT
from bambulab.servers.app import ServerContext, build_app
from bambulab.servers.common import Gate, MemoryEventBus
from bambulab.servers.live import LiveHub, PrinterEntry
from bambulab.servers.runner import AppServer
from bambulab.servers.tokens import TokenStore
from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from tests.binaries import binary, needs, promtool_check
from tests.conftest import free_port_block, unlimited, wait_for

FLEET = ["p1s:printing", "x1c:idle", "a1"]
HOSTILE = 'Desk "A"\n\x1b[31mred\\'

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Served:
    def __init__(self, sim: Simulator, server: AppServer, hub: LiveHub, store: TokenStore):
        self.sim = sim
        self.server = server
        self.hub = hub
        self.store = store
        self.token, _ = store.create("read", label="prometheus")
        self.serials = [e.serial for e in sim.endpoints()]
        self.printing, self.idle, self.other = self.serials

    def scrape(self, token: str | None = None, **headers: str) -> httpx.Response:
        if token is None:
            token = self.token
        if token:
            headers["authorization"] = f"Bearer {token}"
        return httpx.get(f"{self.server.url}/metrics", headers=headers, timeout=10)

    def samples(self, token: str | None = None) -> Samples:
        response = self.scrape(token)
        assert response.status_code == 200, response.text
        return parse(response.text)

    def truth(self, serial: str) -> dict[str, Any]:
        return self.sim.with_printer(serial, lambda p: p.truth())  # type: ignore[no-any-return]


def exe(name: str) -> str:
    path = binary(name).path()
    assert path is not None
    return path


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` whose labels include ``labels`` (None: none)."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, f"{name} {labels}: {len(found)} samples"
    return found[0] if found else None


def serials_in(samples: Samples) -> set[str]:
    return {dict(ls)["serial"] for (_, ls) in samples if "serial" in dict(ls)}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = unlimited().with_demo_fleet(parse_fleet(FLEET))
    with Simulator(config, lan=False, ftps=False, camera=False, tick_interval=0.3) as sim:
        endpoints = sim.endpoints()
        account = sim.issue_token(sim.demo_account.email)
        mqtt = AsyncBambuMQTT(
            sim.user_id,
            [e.serial for e in endpoints],
            token=account,
            host=sim.mqtt_host,
            port=sim.mqtt_port,
            ca_file=sim.ca_file,
        )
        names = [HOSTILE, "Workshop", "Garage"]
        bus = MemoryEventBus()  # the hub publishes where the event stream reads
        entries = [
            PrinterEntry(e.serial, n, e.model) for e, n in zip(endpoints, names, strict=True)
        ]
        hub = LiveHub([mqtt], entries, bus=bus)
        store = TokenStore(tmp_path_factory.mktemp("metrics") / "tokens.sqlite3")
        ctx = ServerContext(Gate(store), bus=bus, hub=hub, cloud_url=sim.url, account_token=account)
        server = AppServer(
            build_app(ctx, ["live", "metrics"]), on_start=ctx.start, on_stop=ctx.aclose
        )
        with server:
            here = Served(sim, server, hub, store)
            wait_for(
                lambda: all(server.call(lambda s=s: hub.state(s)) for s in here.serials),
                15,
                "every printer's first report",
            )
            yield here


# --- access ------------------------------------------------------------------------------


def test_metrics_need_a_read_token(served: Served) -> None:
    refused = served.scrape("")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert "bambu_" not in refused.text
    assert served.scrape("bbt_000000000000_" + "x" * 43).status_code == 401
    revoked, row = served.store.create("read")
    served.store.revoke(row.id)
    assert served.scrape(revoked).status_code == 401
    ok = served.scrape()
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_a_token_for_one_printer_sees_only_that_printer(served: Served) -> None:
    token, _ = served.store.create("read", printers=[served.idle])
    samples = served.samples(token)
    assert serials_in(samples) == {served.idle}
    assert value(samples, "bambu_server_printers") == 1
    assert value(samples, "bambu_server_mqtt_connected") == 1  # the server's own: no printer
    assert serials_in(served.samples()) == set(served.serials)


def test_openmetrics_when_the_scraper_asks_for_it(served: Served) -> None:
    response = served.scrape(accept="application/openmetrics-text; version=1.0.0")
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


# --- values against the printers' truth ---------------------------------------------------


def test_values_match_what_the_printers_report(served: Served) -> None:
    serial = served.printing

    def matches() -> bool:
        truth = served.truth(serial)
        s = served.samples()
        ams = truth["ams"]["ams"][0]
        tray = next(t for t in ams["tray"] if t.get("remain", -1) >= 0)
        wanted = {
            ("bambu_printer_progress_ratio", ()): truth["mc_percent"] / 100,
            ("bambu_printer_remaining_seconds", ()): truth["mc_remaining_time"] * 60,
            ("bambu_printer_layer", ()): truth["layer_num"],
            ("bambu_printer_job_layers", ()): truth["total_layer_num"],
            ("bambu_printer_temperature_celsius", (("sensor", "nozzle"),)): truth["nozzle_temper"],
            ("bambu_printer_target_temperature_celsius", (("sensor", "nozzle"),)): truth[
                "nozzle_target_temper"
            ],
            ("bambu_printer_temperature_celsius", (("sensor", "bed"),)): truth["bed_temper"],
            ("bambu_ams_humidity_ratio", (("ams", str(ams["id"])),)): int(ams["humidity_raw"])
            / 100,
            ("bambu_ams_tray_remaining_ratio", (("ams", str(ams["id"])), ("tray", tray["id"]))): (
                tray["remain"] / 100
            ),
            ("bambu_printer_fan_speed_ratio", (("fan", "part"),)): round(
                int(truth["cooling_fan_speed"]) * 100 / 15
            )
            / 100,
        }
        got = {key: value(s, key[0], serial=serial, **dict(key[1])) for key in wanted}
        return all(got[k] == pytest.approx(float(v)) for k, v in wanted.items())

    wait_for(matches, 15, "the scrape to show the printer's reported values")
    samples = served.samples()
    assert truth_state(served, serial) == "RUNNING"
    assert value(samples, "bambu_printer_state", serial=serial, state="RUNNING") == 1
    one_hot = [v for (n, ls), v in samples.items() if n == "bambu_printer_state"]
    assert sum(one_hot) == len(served.serials)  # one state per printer, the others 0
    assert value(samples, "bambu_printer_online", serial=serial) == 1
    assert value(samples, "bambu_printer_last_report_age_seconds", serial=serial) < 5  # type: ignore[operator]


def truth_state(served: Served, serial: str) -> str:
    return str(served.truth(serial)["gcode_state"])


def test_info_carries_name_and_model_escaped(served: Served) -> None:
    text = served.scrape().text
    samples = parse(text)
    labels = next(
        dict(ls)
        for (n, ls) in samples
        if n == "bambu_printer_info" and dict(ls)["serial"] == served.printing
    )
    assert labels["model"] == "P1S"
    # The other series name the printer by serial only (join on it for the name).
    online = [dict(ls) for (n, ls) in samples if n == "bambu_printer_online"]
    assert all(set(ls) == {"serial"} for ls in online)
    # Quotes and backslashes escaped by the library, control characters neutralised:
    # the name survives the round trip and no line of the exposition is forged.
    assert labels["name"] == 'Desk "A"\\n\\x1b[31mred\\'
    assert "\x1b" not in text
    assert all(line.startswith(("#", "bambu_", "process_")) for line in text.splitlines() if line)


def test_hms_entries_are_counted_by_severity(served: Served) -> None:
    serial = served.idle
    # code >> 16 is the severity: 2 serious, 3 common.
    served.sim.with_printer(serial, lambda p: p.inject_hms(0x0300_1000, 0x0002_0001))
    served.sim.with_printer(serial, lambda p: p.inject_hms(0x0C00_0300, 0x0003_0002))
    served.sim.with_printer(serial, lambda p: p.inject_hms(0x0C00_0400, 0x0003_0003))
    try:
        wait_for(
            lambda: (
                (s := served.samples())
                and value(s, "bambu_printer_hms_errors", serial=serial, severity="serious") == 1
                and value(s, "bambu_printer_hms_errors", serial=serial, severity="common") == 2
            ),
            10,
            "HMS counts",
        )
        s = served.samples()
        assert value(s, "bambu_printer_hms_errors", serial=serial, severity="fatal") == 0
        assert value(s, "bambu_printer_hms_errors", serial=served.other, severity="common") == 0
    finally:
        served.sim.with_printer(serial, lambda p: p.clear_hms())
    wait_for(
        lambda: (
            value(served.samples(), "bambu_printer_hms_errors", serial=serial, severity="common")
            == 0
        ),
        10,
        "HMS cleared",
    )


def test_print_counts_and_offline_printer(served: Served) -> None:
    serial = served.idle
    before = value(served.samples(), "bambu_printer_prints_started_total", serial=serial)
    served.sim.with_printer(serial, lambda p: p.start_job(minutes=30))
    wait_for(
        lambda: (
            value(served.samples(), "bambu_printer_prints_started_total", serial=serial)
            == (before or 0) + 1
        ),
        10,
        "a print counted as started",
    )
    failed = value(served.samples(), "bambu_printer_prints_failed_total", serial=serial) or 0
    served.sim.with_printer(serial, lambda p: p.state.stop())
    wait_for(
        lambda: (
            value(served.samples(), "bambu_printer_prints_failed_total", serial=serial)
            == failed + 1
        ),
        10,
        "the stopped print counted as failed",
    )

    other = served.other
    served.sim.take_offline(other)
    try:
        wait_for(
            lambda: value(served.samples(), "bambu_printer_online", serial=other) == 0,
            10,
            "offline printer reported as 0",
        )
    finally:
        served.sim.bring_online(other)
    wait_for(
        lambda: value(served.samples(), "bambu_printer_online", serial=other) == 1,
        10,
        "printer back online",
    )


def test_server_figures(served: Served) -> None:
    first = served.samples()
    for _ in range(3):
        assert httpx.get(f"{served.server.url}/health", timeout=5).status_code == 200
    httpx.get(f"{served.server.url}/metrics", timeout=5)  # 401
    second = served.samples()

    def requests(s: Samples, code: str) -> float:
        return value(s, "bambu_server_http_requests_total", method="GET", code=code) or 0.0

    # The three /health requests and the first scrape (counted once it had answered).
    assert requests(second, "200") - requests(first, "200") == 4
    assert requests(second, "401") - requests(first, "401") == 1
    assert value(second, "bambu_server_mqtt_connected") == 1
    assert value(second, "bambu_server_mqtt_connections") == 1
    stats = served.server.call(served.hub.stats)
    messages = value(second, "bambu_server_mqtt_messages_total")
    assert messages is not None and 0 < messages <= stats.messages
    assert (value(second, "bambu_server_report_latency_seconds_count") or 0) > 0
    uptime = value(second, "bambu_server_uptime_seconds")
    assert uptime is not None and uptime > 0
    # Reports keep coming: the message counter grows between scrapes.
    wait_for(
        lambda: (value(served.samples(), "bambu_server_mqtt_messages_total") or 0) > messages,
        5,
        "more messages",
    )


def test_open_event_streams_are_counted(served: Served) -> None:
    def streams() -> float | None:
        return value(served.samples(), "bambu_server_event_streams")

    assert streams() == 0
    headers = {"authorization": f"Bearer {served.token}"}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", f"{served.server.url}/api/v2/events", headers=headers) as stream,
    ):
        assert stream.status_code == 200
        wait_for(lambda: streams() == 1, 10, "one open stream")
    wait_for(lambda: streams() == 0, 10, "the stream closed")
    opened = value(served.samples(), "bambu_server_event_streams_opened_total")
    assert opened is not None and opened >= 1


# --- Prometheus' own tools ---------------------------------------------------------------------


@needs("promtool")
def test_promtool_finds_no_problem(served: Served) -> None:
    text = served.scrape().text
    assert "bambu_printer_temperature_celsius" in text
    promtool_check(text)


@needs("prometheus")
def test_a_real_prometheus_scrapes_the_printers(served: Served, tmp_path: Path) -> None:
    port = free_port_block()
    credentials = tmp_path / "token"
    credentials.write_text(served.token + "\n")
    target = served.server.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        textwrap.dedent(
            f"""
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
            scrape_configs:
              - job_name: bambu
                authorization:
                  credentials_file: {credentials}
                static_configs:
                  - targets: ["{target}"]
              - job_name: anonymous
                static_configs:
                  - targets: ["{target}"]
            """
        )
    )
    proc = subprocess.Popen(
        [
            exe("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(expr: str) -> list[dict[str, Any]]:
        try:
            answer = httpx.get(f"{api}/query", params={"query": expr}, timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return []
        return answer.get("data", {}).get("result", []) if answer.get("status") == "success" else []

    try:
        running = wait_for(
            lambda: query(f'bambu_printer_state{{serial="{served.printing}",state="RUNNING"}}'),
            15,
            "Prometheus to have scraped the printers",
        )
        assert running[0]["value"][1] == "1"
        assert running[0]["metric"]["job"] == "bambu"
        nozzle = query(
            f'bambu_printer_temperature_celsius{{serial="{served.printing}",sensor="nozzle"}}'
        )
        assert float(nozzle[0]["value"][1]) == pytest.approx(
            float(served.truth(served.printing)["nozzle_temper"]), abs=1.0
        )
        assert {r["metric"]["serial"] for r in query("bambu_printer_online")} == set(served.serials)
        # The job without the token is refused: Prometheus marks it down with the 401.
        targets = wait_for(
            lambda: [
                t
                for t in httpx.get(f"{api}/targets", timeout=2).json()["data"]["activeTargets"]
                if t["labels"]["job"] == "anonymous" and t["health"] == "down"
            ],
            10,
            "the anonymous job to be refused",
        )
        assert "401" in targets[0]["lastError"]
        assert query('up{job="anonymous"}')[0]["value"][1] == "0"
        assert query('up{job="bambu"}')[0]["value"][1] == "1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.stderr is not None
    logged = proc.stderr.read().decode(errors="replace")
    assert served.token not in logged  # Prometheus never logs the credential it sends
