"""Dashboard page load: 200 tiles in headless Chromium, against the same page with one printer.

A farm server (``farm`` + ``live`` parts, the queue in SQLite) follows
``--printers`` printers through one MQTT connection to mosquitto (as in
``bench/fan_in.py``); each printer has sent one full report (printing, with
temperatures, layer, progress and a 4-tray AMS), so every tile shows what a
busy farm's does. Debian's ``chromium`` through ``chromedriver`` (never a
downloaded browser) loads ``/farm`` logged in by the session cookie:

* **full page**: a token that sees every printer (``--printers`` tiles);
* **baseline**: a token limited to one printer: the same page, server and
  state with one tile.

The time is measured inside the page: from the navigation's start
(``performance.now()`` is relative to it) to the first animation frame
after every tile is in the document and the dashboard's script has laid
them out (its printer count shows them all). A script installed before
each navigation (``Page.addScriptToEvaluateOnNewDocument``) watches each
frame for that. One warm-up load each, then the median of ``--loads``.

Usage: ``.venv/bin/python bench/farm_page_load.py [--printers 200] [--loads 5]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fan_in import UID, Mosquitto, serials

from bambulab import AsyncBambuMQTT
from bambulab.farm.service import Farm, attach
from bambulab.farm.store import FarmStore
from bambulab.protocol.mqtt_frames import remaining_length
from bambulab.servers.app import ServerContext, build_app
from bambulab.servers.common import SESSION_COOKIE, Gate, MemoryEventBus
from bambulab.servers.live import LiveHub, PrinterEntry
from bambulab.servers.runner import AppServer
from bambulab.servers.tokens import TokenStore

CHROMIUM = ("/usr/bin/chromium",)
CHROMEDRIVER = ("/usr/bin/chromedriver",)
COLOURS = ("FF0000FF", "00AE42FF", "0A2989FF", "F4EE2AFF")

# Installed before every navigation: on each animation frame, are all the tiles
# there and counted by the dashboard's script? Then stamp the next frame.
WATCH = """
(() => {
  const want = Number(location.hash.slice(1)) || 0;
  const check = () => {
    const tiles = document.querySelectorAll('article.tile').length;
    const counts = document.getElementById('counts');
    if (want && tiles === want && counts && counts.textContent.startsWith(want + ' printers')) {
      requestAnimationFrame(() => { window.__tilesAt = performance.now(); });
    } else {
      requestAnimationFrame(check);
    }
  };
  requestAnimationFrame(check);
})();
"""


def binary(names: tuple[str, ...], which: str) -> str | None:
    return shutil.which(which) or next((n for n in names if Path(n).exists()), None)


def report(i: int) -> bytes:
    """One printer's full report: printing, with a 4-tray AMS."""
    trays = [
        {"id": str(t), "tray_type": "PLA" if t % 2 else "PETG", "tray_color": COLOURS[t],
         "remain": 90 - 10 * t, "nozzle_temp_min": "190", "nozzle_temp_max": "230"}
        for t in range(4)
    ]  # fmt: skip
    body = {
        "print": {
            "command": "push_status", "sequence_id": str(i), "msg": 0,
            "gcode_state": "RUNNING", "mc_percent": i % 100, "mc_remaining_time": 30 + i % 90,
            "layer_num": 10 + i % 50, "total_layer_num": 120, "subtask_name": f"Part {i}",
            "nozzle_temper": 219.5, "nozzle_target_temper": 220.0, "bed_temper": 60.0,
            "bed_target_temper": 60.0, "chamber_temper": 31.0, "wifi_signal": "-48dBm",
            "ams": {"ams": [{"id": "0", "humidity": "4", "temp": "25.0", "tray": trays}],
                    "tray_now": str(i % 4), "ams_exist_bits": "1", "tray_exist_bits": "f"},
            "hms": [],
        }
    }  # fmt: skip
    return orjson.dumps(body)


def publish_once(port: int, names: list[str]) -> None:
    """Each printer's report, written as raw MQTT (QoS 0) on a plain connection."""

    def packet(first: int, body: bytes) -> bytes:
        return bytes([first]) + remaining_length(len(body)) + body

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        client_id = b"bench-page"
        connect = b"\x00\x04MQTT\x04\x02\x00\x00" + len(client_id).to_bytes(2, "big") + client_id
        sock.sendall(packet(0x10, connect))
        if sock.recv(4)[:2] != b"\x20\x02":
            raise RuntimeError("no CONNACK from mosquitto")
        frames = []
        for i, serial in enumerate(names):
            topic = f"device/{serial}/report".encode()
            frames.append(packet(0x30, len(topic).to_bytes(2, "big") + topic + report(i)))
        sock.sendall(b"".join(frames) + b"\xe0\x00")
        time.sleep(0.2)


def browser(chromium: str, chromedriver: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH})
    return driver


def load(driver: Any, url: str, want: int, timeout: float = 30) -> dict[str, float]:
    """Navigate to the dashboard; ms from navigation start to every tile rendered.

    Each URL is new (a query the server ignores): the same one again, with its
    fragment, would be a same-document navigation and load nothing.
    """
    driver.get(f"{url}/farm?load={time.monotonic_ns()}#{want}")
    deadline = time.monotonic() + timeout
    while True:
        found = driver.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "return window.__tilesAt === undefined ? null : {tiles: window.__tilesAt,"
            " response: n.responseEnd, dom: n.domContentLoadedEventEnd,"
            " count: document.querySelectorAll('article.tile').length};"
        )
        if found is not None:
            return {k: float(v) for k, v in found.items()}
        if time.monotonic() > deadline:
            raise RuntimeError(f"the page did not show {want} tiles in {timeout:.0f} s")
        time.sleep(0.02)


def measure(driver: Any, url: str, token: str, want: int, loads: int) -> list[dict[str, float]]:
    driver.delete_all_cookies()
    driver.get(f"{url}/farm/login")
    driver.add_cookie({"name": SESSION_COOKIE, "value": token, "path": "/"})
    load(driver, url, want)  # warm-up: the style and script cached, as for a returning user
    runs = [load(driver, url, want) for _ in range(loads)]
    if any(r["count"] != want for r in runs):
        raise RuntimeError(f"a load showed another number of tiles than {want}")
    return runs


def median(runs: list[dict[str, float]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--printers", type=int, default=200)
    parser.add_argument("--loads", type=int, default=5, help="measured loads of each page")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    chromium = binary(CHROMIUM, "chromium")
    chromedriver = binary(CHROMEDRIVER, "chromedriver")
    if chromium is None or chromedriver is None:
        print("skipped: Debian's chromium and chromium-driver are not installed")
        return 0
    names = serials(args.printers)
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp))
        mqtt = AsyncBambuMQTT(
            UID,
            names,
            token="bench",
            host="127.0.0.1",
            port=broker.tls_port,
            ca_file=broker.certs.ca_file,
            stall_timeout=3600,
        )
        bus = MemoryEventBus()
        entries = [PrinterEntry(s, f"Printer {i}", "C12") for i, s in enumerate(names)]
        hub = LiveHub([mqtt], entries, bus=bus)
        tokens = TokenStore(Path(tmp) / "tokens.sqlite3")
        every, _ = tokens.create("read", label="bench")
        one, _ = tokens.create("read", printers=names[:1], label="bench one")
        ctx = ServerContext(Gate(tokens), bus=bus, hub=hub)
        store = FarmStore(f"sqlite:///{Path(tmp) / 'farm.db'}")
        attach(ctx, Farm(store, Path(tmp) / "files"))
        server = AppServer(build_app(ctx, ["farm", "live"]), on_start=ctx.start, on_stop=ctx.aclose)
        driver = None
        try:
            server.start()
            publish_once(broker.plain_port, names)
            deadline = time.monotonic() + 30
            while server.call(lambda: sum(1 for s in names if hub.state(s))) < len(names):
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not see every printer report")
                time.sleep(0.05)
            driver = browser(chromium, chromedriver)
            full = measure(driver, server.url, every, len(names), args.loads)
            base = measure(driver, server.url, one, 1, args.loads)
            page = len("".join(server.run(ctx.extra["farm_tiles"].tiles(names)).values()))
        finally:
            if driver is not None:
                driver.quit()
            server.stop()
            store.close()
            broker.stop()
    figures = {"printers": len(names), "full": full, "baseline": base}
    print(
        f"dashboard, headless Chromium, median of {args.loads} loads "
        f"(tiles' HTML {page / 1024:.0f} KiB for {len(names)} printers)"
    )
    for name, runs in ((f"{len(names)} tiles", full), ("1 tile", base)):
        print(
            f"{name:10} every tile rendered {median(runs, 'tiles'):7.1f} ms "
            f"(min {min(r['tiles'] for r in runs):.1f}, max {max(r['tiles'] for r in runs):.1f})"
            f"  response end {median(runs, 'response'):6.1f} ms"
            f"  DOMContentLoaded {median(runs, 'dom'):6.1f} ms"
        )
    ratio = median(full, "tiles") / median(base, "tiles")
    print(f"ratio {len(names)} tiles / 1 tile: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
