"""``bambu demo`` and ``bambu sim``: the embedded simulator from the command line."""

from __future__ import annotations

import http.server
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from bambulab.cli.demo import FarmPrinter, plan_farm_jobs
from bambulab.farm.screenshot import ScreenshotError, ScreenshotUnavailable, screenshot
from tests.binaries import BINARIES, needs
from tests.cli import forkrun
from tests.cli.conftest import Bambu, Result

# Seconds, in the loaded test suite (three workers on two cores); the demo itself takes
# about 20 s alone (`make demo`), its farm step (`--only farm`) about 10 s.
DEMO_BUDGET = 60.0
FARM_BUDGET = 45.0
# The dashboard's colour of a printing tile (its state badge and progress bar).
PRINTING_BLUE = (0x1E, 0x88, 0xE5)


def run_demo(bambu: Bambu, *args: str, chromium: str | None, demo_dir: Path) -> Result:
    """``bambu demo ARGS`` with its own output folder and, or without (None), a browser.

    The demo outlasts the runner's usual timeout, hence a run of its own here.
    """
    missing = str(demo_dir / "no-such-chromium")
    env = bambu.env(
        BAMBU_DEMO_DIR=str(demo_dir),
        BAMBU_CHROMIUM=chromium or missing,
        BAMBU_CHROMEDRIVER=BINARIES["chromedriver"].path() or missing,
    )
    proc = forkrun.run(("demo", *args), env, DEMO_BUDGET + 30)
    result = Result(("demo", *args), proc.returncode, proc.stdout, proc.stderr)
    bambu.check_no_secret(result)
    return result


@dataclass
class FarmRun:
    """The farm step's lines, read back: the fleet, the files queued, what happened when."""

    fleet: dict[str, tuple[str, set[str]]] = field(default_factory=dict)  # model, types
    jobs: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # model, type, target
    events: list[tuple[float, int, str, str]] = field(default_factory=list)  # t, job, what, where


FLEET = re.compile(r"^ {5}(\S{15})  (.+?)\s+\d\.\d mm  (.+)$")
QUEUED = re.compile(r"queued jobs? ([\d, ]+): \S+ sliced for (.+?) \(\w+\) [\d.]+ mm, (\S+) #")
EVENT = re.compile(r"^ {3}\+([\d.]+) s  job (\d+) \S+ (dispatched to|finished on|failed on) (\S+)")


def farm_run(out: str) -> FarmRun:
    farm = out.split("Print farm: a queue that dispatches itself")[1]
    found = FarmRun()
    for line in farm.splitlines():
        if m := FLEET.match(line):
            types = {part.split(" #")[0] for part in m[3].split(", ")}
            found.fleet[m[1]] = (m[2].strip(), types)
        elif m := QUEUED.search(line):
            target = line.rsplit("target ", 1)[1]
            for job in m[1].split(", "):
                found.jobs[int(job)] = (m[2], m[3], target)
        elif m := EVENT.match(line):
            found.events.append((float(m[1]), int(m[2]), m[3].split()[0], m[4]))
    return found


def check_farm(out: str) -> None:
    """Every job dispatched once, to a printer of its model with its filament, and finished
    there; printers took more than one job in turn (their beds clear themselves)."""
    farm = farm_run(out)
    assert len(farm.fleet) == 6, out
    assert len(farm.jobs) > len(farm.fleet), "more jobs than printers: the queue must drain"
    assert any(target.endswith(" printers") for _, _, target in farm.jobs.values())
    dispatched = [e for e in farm.events if e[2] == "dispatched"]
    finished = [e for e in farm.events if e[2] == "finished"]
    assert sorted(e[1] for e in dispatched) == sorted(farm.jobs), "each job dispatched once"
    assert sorted(e[1] for e in finished) == sorted(farm.jobs), "each job finished once"
    assert "the queue is empty" in out
    where = {job: printer for _, job, _, printer in dispatched}
    for _, job, _, printer in dispatched:
        model, kind, target = farm.jobs[job]
        printer_model, loaded = farm.fleet[printer]
        assert printer_model == model, f"job {job} for {model} went to a {printer_model}"
        assert kind in loaded, f"job {job} needs {kind}; {printer} has {loaded}"
        assert target in ("any printer", f"{model} printers")
    for _, job, _, printer in finished:
        assert where[job] == printer
    # a printer prints one job at a time: each dispatch comes after its previous job finished
    by_printer: dict[str, list[tuple[float, int, str, str]]] = {}
    for event in farm.events:
        by_printer.setdefault(event[3], []).append(event)
    assert max(len(v) for v in by_printer.values()) >= 4, "some printer printed twice"
    for events in by_printer.values():
        kinds = [e[2] for e in events]
        assert kinds == ["dispatched", "finished"] * (len(kinds) // 2), events
        times = [e[0] for e in events]
        assert times == sorted(times)


def start(bambu: Bambu, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bambulab.cli", *args],
        env=bambu.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_demo_logs_in_and_lists_devices_and_tasks(bambu: Bambu, tmp_path: Path) -> None:
    started = time.monotonic()
    # Without a browser (whether or not this machine has one): the farm step saves HTML.
    result = run_demo(bambu, chromium=None, demo_dir=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result
    out = result.stdout
    assert "read from the simulator's outbox" in out
    assert "Printers" in out and "Serial" in out
    assert "5 most recent tasks" in out
    # Live over MQTT: the cloud broker, a table of printers, AMS trays as colour swatches.
    assert "Live printers over MQTT" in out
    assert "connected to the cloud broker" in out
    assert "printers, live" in out and "RUNNING" in out
    assert "AMS unit" in out and "\u2588\u2588 #" in out
    assert "Demo finished" in out
    # A 3MF printed through the cloud on one printer and over FTPS on another, both seen printing.
    assert "uploaded to the cloud as file" in out
    assert "print.project_file sent on the cloud broker" in out
    assert "sent over implicit FTPS to its SD card" in out
    watched = out.split("both printing, watched for")[1]
    rows = [line for line in watched.splitlines() if "Demo cube" in line]
    assert len(rows) == 2 and all("RUNNING" in row or "PREPARE" in row for row in rows), watched
    # The server: a printer-scoped read token through the strict proxy, then one scrape.
    served = out.split("Server: the strict API proxy")[1]
    assert "bind -> 200: 1 printer(s) of 5 visible, access codes shown as ***" in served
    assert "DELETE (unbind) through the strict proxy -> 403, refused" in served
    assert "GET /metrics -> 200" in served and 'state="' in served
    # The farm: jobs dispatched to printers that can print them, and finished.
    check_farm(out)
    page = tmp_path / "farm-dashboard.html"
    shown = [line for line in out.splitlines() if line.startswith("   no screenshot")]
    missing = f"{tmp_path / 'no-such-chromium'}"
    expected = f"   no screenshot, no headless browser: missing chromium at {missing} "
    expected += "(apt-get install chromium); "
    if BINARIES["chromedriver"].path() is None:  # a machine without it: named too
        expected += f"chromedriver at {missing} (apt-get install chromium-driver); "
    assert shown == [expected + f"the dashboard's HTML saved to {page}"]
    html = page.read_text()
    assert html.count('<article class="tile') == 6 and "<style>" in html
    assert not (tmp_path / "farm-dashboard.png").exists()
    # It ends with what to type next (run as python -m: plain "bambu").
    assert out.rstrip().splitlines()[-3].startswith("Next")
    assert "  bambu --help " in out
    assert elapsed < DEMO_BUDGET
    # The user's own token file (here: the runner's) is never written.
    assert not bambu.token_file.exists()
    assert not (bambu.home / ".bambu_token").exists()
    assert "Traceback" not in result.stderr


def test_demo_serve_until_interrupted(bambu: Bambu) -> None:
    proc = start(bambu, "demo", "--serve", "--only", "login")  # the tour: the test above
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "export BAMBU_API_URL=http://127.0.0.1:" in text
        assert "export BAMBU_TOKEN_FILE=" in text
        token_file = Path(text.split("export BAMBU_TOKEN_FILE=")[1].split()[0])
        # A second shell can use the exported settings.
        other = bambu(
            "whoami",
            "--json",
            env=bambu.env(
                BAMBU_API_URL=text.split("export BAMBU_API_URL=")[1].split()[0],
                BAMBU_TOKEN_FILE=str(token_file),
            ),
        )
        assert other.returncode == 0, other
        assert other.json()["mqtt_username"].startswith("u_")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert not token_file.exists()  # the temporary token went with the demo
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sim_writes_its_env_file_and_stops_on_sigterm(bambu: Bambu, tmp_path: Path) -> None:
    env_file = tmp_path / "sim.env"
    proc = start(bambu, "sim", "--port", "0", "--env-file", str(env_file))
    try:
        wait_for(lambda: env_file.exists() and "BAMBU_API_URL" in env_file.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sim_help_is_the_simulators_own(bambu: Bambu) -> None:
    result = bambu("sim", "--help")
    assert result.returncode == 0, result
    assert "--env-file" in result.stdout
    assert result.stdout.startswith("usage: bambu sim")


@needs("chromium")
@needs("chromedriver")
def test_demo_farm_writes_a_screenshot_of_the_dashboard_printing(
    bambu: Bambu, tmp_path: Path
) -> None:
    started = time.monotonic()
    result = run_demo(
        bambu, "--only", "farm", chromium=BINARIES["chromium"].path(), demo_dir=tmp_path
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result
    check_farm(result.stdout)
    png = tmp_path / "farm-dashboard.png"
    said = f"   dashboard screenshot (1440x900, headless Chromium) saved to {png}"
    assert said in result.stdout.splitlines()
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1440, 900)
        colours = image.convert("RGB").getcolors(1 << 20) or []
    assert len(colours) > 200, "a page of tiles, not a blank one"
    # Logged in and live: tiles printing (the login page has none of this blue).
    assert sum(n for n, c in colours if c == PRINTING_BLUE) > 2000
    assert not (tmp_path / "farm-dashboard.html").exists()
    assert elapsed < FARM_BUDGET
    assert "Traceback" not in result.stderr and "warning" not in result.stderr


def test_demo_only_runs_the_steps_named(bambu: Bambu) -> None:
    refused = bambu("demo", "--only", "farm,nope")
    assert refused.returncode == 2
    assert "--only takes steps among login, devices, tasks, live, print_files, camera, " in (
        refused.stdout + refused.stderr
    )
    # a step that needs the login gets it, and nothing else runs
    result = bambu("demo", "--only", "devices")
    assert result.returncode == 0, result
    headings = [line for line in result.stdout.splitlines() if re.match(r"\d+\. ", line)]
    assert [h.split(" ", 2)[1] for h in headings] == ["Log", "Printers"], headings


def test_screenshot_names_what_is_missing_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAMBU_CHROMIUM", str(tmp_path / "chromium"))
    monkeypatch.setenv("BAMBU_CHROMEDRIVER", str(tmp_path / "chromedriver"))
    with pytest.raises(ScreenshotUnavailable) as caught:
        screenshot("http://127.0.0.1:1/farm", tmp_path / "x.png", cookie=("s", "bbt_secret"))
    message = str(caught.value)
    assert "\n" not in message and "bbt_secret" not in message
    assert f"chromium at {tmp_path / 'chromium'} (apt-get install chromium)" in message
    assert (
        f"chromedriver at {tmp_path / 'chromedriver'} (apt-get install chromium-driver)" in message
    )
    assert not (tmp_path / "x.png").exists()


def test_farm_plan_gives_every_loaded_printer_a_job_it_can_print() -> None:
    fleet = [
        FarmPrinter("A", "P1S", "C12", 0.4, (("PLA", "#FF0000FF"), ("PETG", "#000000FF"))),
        FarmPrinter("B", "P1S", "C12", 0.4, (("PETG", "#FFFFFFFF"),)),
        FarmPrinter("C", "P1S", "C12", 0.6, (("PLA", "#00FF00FF"),)),
        FarmPrinter("D", "A1", "N2S", 0.4, (("ABS", "#0000FFFF"), ("PLA", "#FFFFFFFF"))),
        FarmPrinter("E", "A1", "N2S", 0.4, ()),  # nothing loaded: nothing for it
    ]
    jobs = plan_farm_jobs(fleet)
    # P1S 0.4 share PETG (one file, two copies and one more, for the model class);
    # the 0.6 mm P1S and the A1 get files of their own
    assert [(j.code, j.nozzle, j.filament[0], j.target) for j in jobs] == [
        ("C12", 0.4, "PETG", "model:C12"),
        ("C12", 0.6, "PLA", "any"),
        ("N2S", 0.4, "PLA", "any"),
    ]
    assert [j.copies for j in jobs] == [3, 1, 2]
    assert jobs[0].filament == ("PETG", "#000000FF")  # the first holder's colour


@pytest.fixture
def page_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback page that shows ``#in`` only to a request carrying cookie ``s``;
    the Cookie headers it received."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            cookie = self.headers.get("Cookie", "")
            seen.append(cookie)
            inside = '<p id="in" style="margin:0">in</p>' if "s=bbt_value" in cookie else ""
            body = (
                '<!doctype html><body style="margin:0;background:#1e88e5">'
                f'<div style="background:#fff;width:160px;height:100px">{inside}</div></body>'
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/page", seen
    finally:
        server.shutdown()
        server.server_close()


@needs("chromium")
@needs("chromedriver")
def test_screenshot_is_exactly_the_size_asked_and_sends_the_cookie(
    page_server: tuple[str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAMBU_CHROMIUM", BINARIES["chromium"].path() or "")
    monkeypatch.setenv("BAMBU_CHROMEDRIVER", BINARIES["chromedriver"].path() or "")
    url, seen = page_server
    shot = tmp_path / "page.png"
    assert screenshot(url, shot, 320, 200, cookie=("s", "bbt_value"), ready=["#in"]) == shot
    assert seen[0] == "s=bbt_value"  # the very first request carried it
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (320, 200)
        rgb = image.convert("RGB")
        assert rgb.getpixel((10, 10)) == (255, 255, 255)  # the white half...
        assert rgb.getpixel((310, 190)) == PRINTING_BLUE  # ...on the page's blue
    # A page that never gets ready: one line, no picture, the cookie's value not in it.
    late = tmp_path / "late.png"
    with pytest.raises(ScreenshotError) as caught:
        screenshot(url, late, 320, 200, cookie=("s", "other"), ready=["#in"], timeout=1.5)
    assert str(caught.value) == "the page had no #in within 1.5 s"
    assert not late.exists() and seen[-1] == "s=other"


def test_a_browser_error_is_one_line_without_the_cookie() -> None:
    from selenium.common.exceptions import WebDriverException

    from bambulab.farm.screenshot import _reason

    quoted = WebDriverException("invalid cookie bbt_secret_value\nStacktrace:\n#0 0x55d")
    assert _reason(quoted, "bbt_secret_value") == "invalid cookie ***"
    assert _reason(WebDriverException("\x1b[2Jgone")) == "\\x1b[2Jgone"
