"""The farm dashboard over real sockets: login, tiles, the live stream, controls, a browser.

One simulated fleet (a P1S printing, an X1C idle, an A1 the cloud knows but
that never reports), one hub on the cloud broker and the server's ``farm``
part (plus ``live``), as ``bambu serve farm`` runs them. The browser tests
drive Debian's Chromium through chromium-driver.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from PIL import Image

from bambulab.farm.web import FarmInfo, attention, render_tile
from bambulab.servers.common import SESSION_COOKIE
from tests.binaries import needs
from tests.conftest import wait_for
from tests.integration.live_server import Env, SseReader, live_env


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with live_env(tmp_path_factory.mktemp("farm"), ("farm", "live")) as found:
        yield found


@contextlib.contextmanager
def session(env: Env, scope: str = "read", *printers: str) -> Iterator[httpx.Client]:
    """A client logged in through the form (the token then lives in the cookie only)."""
    with httpx.Client(base_url=env.url, timeout=10) as client:
        token = env.token(scope, *printers)  # type: ignore[arg-type]
        answer = client.post("/farm/login", data={"token": token})
        assert answer.status_code == 303 and answer.headers["location"] == "/farm"
        cookie = answer.headers["set-cookie"]
        assert f"{SESSION_COOKIE}=" in cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        yield client


def test_the_page_needs_a_login_and_a_bad_token_is_told_so(env: Env) -> None:
    with httpx.Client(base_url=env.url, timeout=10) as anon:
        first = anon.get("/farm")
        assert first.status_code == 303 and first.headers["location"] == "/farm/login"
        form = anon.get("/farm/login")
        assert form.status_code == 200 and 'name="token"' in form.text
        refused = anon.post("/farm/login", data={"token": "bbt_nope_nope"})
        assert refused.status_code == 401 and 'class="error"' in refused.text
        assert "set-cookie" not in refused.headers
        assert anon.get("/farm/api/tiles").status_code == 401


def test_a_tile_per_printer_with_live_values(env: Env) -> None:
    with session(env) as client:
        page = client.get("/farm")
        assert page.status_code == 200
        for serial in (env.printing, env.idle, env.offline):
            assert f'id="t-{serial}"' in page.text
        assert page.text.count('<article class="tile') == 3
        assert '<template id="controls">' not in page.text  # a read token: no controls
        tiles = client.get("/farm/api/tiles").json()["tiles"]
        printing = tiles[env.printing]
        truth = env.truth(env.printing)
        assert "s-printing" in printing and f"{env.names[env.printing]}" in printing
        assert f'value="{truth["mc_percent"]}"' in printing or "layer" in printing
        assert 'class="ams"' in printing and 'class="sw" style="background:#' in printing
        assert "nozzle" in printing and "°C" in printing
        assert "s-offline" in tiles[env.offline] and "OFFLINE" in tiles[env.offline]
        assert "s-idle" in tiles[env.idle]


def test_a_token_for_one_printer_sees_one_tile(env: Env) -> None:
    with session(env, "read", env.idle) as client:
        page = client.get("/farm").text
        assert page.count('<article class="tile') == 1 and f'id="t-{env.idle}"' in page
        assert list(client.get("/farm/api/tiles").json()["tiles"]) == [env.idle]


def test_the_stream_sends_a_tile_when_the_printer_changes(env: Env) -> None:
    with (
        session(env) as client,
        client.stream("GET", "/farm/api/events", timeout=15) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = SseReader(response)
        deadline = time.monotonic() + 10
        while True:
            event = reader.next()
            if event.type == "tile":
                body = orjson.loads(event.data)
                if body["serial"] == env.printing:
                    break
            assert time.monotonic() < deadline, "no tile of the printing printer"
        assert body["html"].startswith('<article class="tile s-printing')
        assert event.id is not None


def test_an_unwatched_farm_draws_no_tile_until_asked(env: Env) -> None:
    """A thousand printers nobody watches cost no rendering; a page still gets them fresh."""
    tiles = env.ctx.extra["farm_tiles"]
    wait_for(lambda: env.server.call(lambda: not tiles.watched()), 10, "no stream open")
    env.server.call(lambda: tiles.touch(env.printing))  # as a report would
    before = tiles.rendered
    time.sleep(1.5)  # three rounds of the feed
    assert tiles.rendered == before, "tiles drawn for nobody"
    assert env.server.call(lambda: env.printing in tiles._stale)
    with session(env) as client:
        truth = env.truth(env.printing)
        fresh = client.get("/farm/api/tiles").json()["tiles"][env.printing]
        assert tiles.rendered > before  # drawn when asked
        assert f"layer {truth['layer_num']}" in fresh or "s-printing" in fresh
        assert env.server.call(lambda: env.printing not in tiles._stale)
        # a dashboard that opens its stream gets what changed meanwhile, at once
        with client.stream("GET", "/farm/api/events", timeout=15) as response:
            reader = SseReader(response)
            deadline = time.monotonic() + 5
            while True:
                event = reader.next()
                if event.type == "tile" and orjson.loads(event.data)["serial"] == env.printing:
                    break
                assert time.monotonic() < deadline, "the stream sent no tile"


def test_controls_need_control_and_the_pages_header(env: Env) -> None:
    with session(env, "control") as client:
        assert '<template id="controls">' in client.get("/farm").text
        path = f"/farm/api/printers/{env.idle}/commands/light"
        forged = client.post(path, json={"on": True})  # a form of another site: no header
        assert forged.status_code == 403
        done = client.post(path, json={"on": True}, headers={"x-bambu-request": "1"})
        assert done.status_code == 200, done.text
    with session(env, "read") as reader:
        refused = reader.post(path, json={"on": True}, headers={"x-bambu-request": "1"})
        assert refused.status_code == 403


def test_printer_settings_reach_the_tile(env: Env) -> None:
    with httpx.Client(base_url=env.url, headers=env.auth("control"), timeout=10) as api:
        path = f"/farm/api/printers/{env.idle}/settings"
        done = api.post(path, params={"tags": "workshop, shelf-2", "auto_clear": "true"})
        assert done.status_code == 200, done.text
        assert done.json()["tags"] == ["workshop", "shelf-2"] and done.json()["auto_clear"]
        wait_for(
            lambda: (
                'data-tags="workshop shelf-2"'
                in api.get("/farm/api/tiles").json()["tiles"][env.idle]
            ),
            10,
            "the tags on the tile",
        )
        too_many = ",".join(f"t{i}" for i in range(40))
        assert api.post(path, params={"tags": too_many}).status_code == 422
        assert api.post("/farm/api/printers/01P00A999999999/settings").status_code == 404
        api.post(path, params={"tags": "", "auto_clear": "false"})
    with httpx.Client(base_url=env.url, headers=env.auth("read"), timeout=10) as reader:
        assert reader.post(path, params={"tags": "x"}).status_code == 403


def test_tiles_escape_what_printers_and_users_name() -> None:
    hostile = '<script>alert(1)</script>\x1b[2J"'
    html = render_tile("01P00A000000001", hostile, "P1S<b>", None, True)
    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;" in html and "\\x1b" in html and "&quot;" in html


def test_attention_names_what_needs_someone() -> None:
    assert attention(None, False) == ""
    assert attention(None, True) == ""
    info = FarmInfo(bed_clear_needed=True)
    from bambulab.models.state import PrinterState

    finished = PrinterState("01P00A000000001", {"gcode_state": "FINISH"})
    assert attention(finished, True) == ""
    assert attention(finished, True, info) == "finished: clear the bed"
    failed = PrinterState("01P00A000000001", {"gcode_state": "FAILED", "print_error": 50348044})
    assert attention(failed, True).startswith("failed")
    paused = PrinterState("01P00A000000001", {"gcode_state": "PAUSE"})
    assert attention(paused, True) == "paused"


# --- in a browser ----------------------------------------------------------------------------


def browser(width: int, height: int) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from tests.binaries import BINARIES

    options = webdriver.ChromeOptions()
    options.binary_location = BINARIES["chromium"].path() or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(
        service=Service(BINARIES["chromedriver"].path() or "/usr/bin/chromedriver"),
        options=options,
    )


def log_in(driver: Any, env: Env, scope: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(env.url + "/farm")
    field = driver.find_element(By.NAME, "token")
    field.send_keys(env.token(scope))
    field.submit()
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "article.tile"), 10, "tiles")


@needs("chromium")
@needs("chromedriver")
def test_in_a_browser_tiles_update_live_and_controls_act(env: Env, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser(1400, 1000)
    try:
        log_in(driver, env, "control")
        tiles = driver.find_elements(By.CSS_SELECTOR, "article.tile")
        assert {t.get_attribute("data-serial") for t in tiles} == {
            env.printing,
            env.idle,
            env.offline,
        }
        wait_for(lambda: "on" in driver.find_element(By.ID, "live").get_attribute("class"), 10)

        # Tiles are replaced whole when they change: ask the page, not a held element.
        def tile_has(selector: str) -> bool:
            return bool(
                driver.execute_script(
                    "return !!document.querySelector(arguments[0])", f"#t-{env.printing} {selector}"
                )
            )

        def tile_state() -> str:
            return str(
                driver.execute_script(
                    "return document.getElementById(arguments[0]).dataset.state",
                    f"t-{env.printing}",
                )
            )

        def click(cmd: str) -> None:
            driver.execute_script(
                "document.querySelector(arguments[0]).click()",
                f"#t-{env.printing} button[data-cmd={cmd}]",
            )

        assert tile_has(".controls button[data-cmd=pause]")
        click("pause")
        wait_for(lambda: env.truth(env.printing)["gcode_state"] == "PAUSE", 10, "the pause")
        # the tile follows without a reload: its state and the attention band
        wait_for(lambda: tile_state() == "paused", 10, "a paused tile")
        wait_for(
            lambda: env.names[env.printing] in driver.find_element(By.ID, "attention").text,
            10,
            "the attention band",
        )
        click("resume")
        wait_for(lambda: tile_state() == "printing", 10, "resumed")
        wait_for(lambda: not driver.find_element(By.ID, "attention").is_displayed(), 10)
        # filters work in the page
        driver.find_element(By.CSS_SELECTOR, "#f-state option[value=offline]").click()
        shown = driver.execute_script(
            "return Array.from(document.querySelectorAll('article.tile'))"
            ".filter(t => t.offsetParent !== null).map(t => t.dataset.serial)"
        )
        assert shown == [env.offline]
        driver.find_element(By.CSS_SELECTOR, "#f-state option[value='']").click()
        shot = tmp_path / "desktop.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    with Image.open(shot) as image:
        assert image.width >= 1300 and image.height >= 800
        assert len(image.convert("RGB").getcolors(1 << 20) or []) > 50  # not a blank page


@needs("chromium")
@needs("chromedriver")
def test_in_a_browser_a_read_token_has_no_controls_and_a_phone_one_column(
    env: Env, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser(390, 844)
    try:
        log_in(driver, env, "read")
        assert not driver.find_elements(By.CSS_SELECTOR, ".controls, #controls")
        # read in one script: a live update may replace a tile between two WebDriver calls
        boxes = driver.execute_script(
            "return Array.from(document.querySelectorAll('article.tile'), t => {"
            " const r = t.getBoundingClientRect(); return [r.x, r.width]; })"
        )
        assert boxes, "tiles shown"
        assert len({round(x) for x, _ in boxes}) == 1, "a phone shows one column"
        width = driver.execute_script("return document.documentElement.clientWidth")
        assert all(w > width * 0.8 for _, w in boxes)
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        ), "nothing wider than the phone"
        shot = tmp_path / "phone.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    with Image.open(shot) as image:
        assert image.width <= 500
