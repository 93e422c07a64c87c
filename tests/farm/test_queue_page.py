"""The queue page and its routes: order, priority, hold, cancel, upload; who sees what."""

from __future__ import annotations

import html
import re
from pathlib import Path

import httpx

from bambulab.farm.models import JobState, Target
from bambulab.servers.tokens import TokenStore
from tests.binaries import needs
from tests.conftest import wait_for
from tests.farm.test_dashboard import browser
from tests.farm.test_farm_e2e import Rig, rig, sliced, trays


def order(api: httpx.Client) -> list[int]:
    """The waiting jobs' ids in dispatch order, as the queue route gives them."""
    jobs = api.get("/farm/api/jobs").json()["jobs"]
    return [j["id"] for j in jobs if j["state"] in ("queued", "held")]


def page_order(page: str) -> list[int]:
    waiting = page.split("Waiting, in dispatch order", 1)[1]
    return [int(i) for i in re.findall(r'<tr id="j-(\d+)"', waiting)]


def queue_of(r: Rig, names: list[str]) -> list[int]:
    data = sliced("P1S", trays(r.sim, r.p1s[0])[0])
    return [r.farm.add(data, name, target=Target("model", "C12"))[0].id for name in names]


def test_reorder_and_prioritise_change_the_dispatch_order(tmp_path: Path) -> None:
    with rig(tmp_path, dispatch=False) as r, r.api() as api:
        a, b, c = queue_of(r, ["A", "B", "C"])
        assert order(api) == [a, b, c]
        moved = api.post(f"/farm/api/jobs/{c}/move?before={a}")
        assert moved.status_code == 200, moved.text
        assert order(api) == [c, a, b]
        assert api.post(f"/farm/api/jobs/{c}/move").is_success  # last
        assert order(api) == [a, b, c]
        assert api.post(f"/farm/api/jobs/{b}/priority?value=5").json()["priority"] == 5
        assert order(api) == [b, a, c]
        page = api.get("/farm/queue")
        assert page.status_code == 200 and page_order(page.text) == [b, a, c]
        # the dispatcher's order is the page's: the first claim takes the first job
        claimed = r.farm.store.claim(r.p1s[0], lambda job: True, "test")
        assert claimed is not None and claimed.id == b
        # a job that is no longer waiting cannot be moved; an unknown one is not found
        assert api.post(f"/farm/api/jobs/{b}/move?before={a}").status_code == 409
        assert api.post(f"/farm/api/jobs/{b}/priority?value=1").status_code == 409
        assert api.post("/farm/api/jobs/999999/move").status_code == 404
        assert api.post(f"/farm/api/jobs/{a}/priority?value=5000").status_code == 422


def test_controls_only_for_a_control_token_and_hostile_names_escaped(tmp_path: Path) -> None:
    with rig(tmp_path, dispatch=False) as r, r.api() as api:
        (hostile,) = queue_of(r, ['<script>alert(1)</script>\x1b[31m"'])
        api.post(f"/farm/api/jobs/{hostile}/hold")
        page = api.get("/farm/queue").text
        assert "<script>alert" not in page and "\x1b" not in page
        assert html.escape("<script>alert(1)</script>") in page
        assert 'data-act="release"' in page and 'id="upload"' in page
        tokens = TokenStore(tmp_path / "tokens.sqlite3")
        reader, _ = tokens.create("read")
        seen = api.get("/farm/queue", headers={"Authorization": f"Bearer {reader}"})
        assert seen.status_code == 200
        assert f'id="j-{hostile}"' in seen.text
        assert "data-act" not in seen.text and 'id="upload"' not in seen.text
        refused = api.post(
            f"/farm/api/jobs/{hostile}/move", headers={"Authorization": f"Bearer {reader}"}
        )
        assert refused.status_code == 403
        # a printer's token may not reorder the farm's queue
        one, _ = tokens.create("control", printers=[r.p1s[0]])
        scoped = api.post(
            f"/farm/api/jobs/{hostile}/priority?value=3",
            headers={"Authorization": f"Bearer {one}"},
        )
        assert scoped.status_code == 403
        assert r.farm.store.job(hostile).state is JobState.HELD


def test_a_session_cookie_needs_the_request_header(tmp_path: Path) -> None:
    """A cross-site form could send the cookie; it cannot send the header."""
    with rig(tmp_path, dispatch=False) as r:
        (job,) = queue_of(r, ["A"])
        with httpx.Client(base_url=r.server.url, timeout=20) as browser:
            login = browser.post("/farm/login", data={"token": r.control})
            assert login.status_code == 303
            assert browser.get("/farm/queue").status_code == 200  # the cookie reads
            forged = browser.post(f"/farm/api/jobs/{job}/priority?value=9")
            assert forged.status_code == 403
            sent = browser.post(
                f"/farm/api/jobs/{job}/priority?value=9", headers={"x-bambu-request": "1"}
            )
            assert sent.status_code == 200 and sent.json()["priority"] == 9
        with httpx.Client(base_url=r.server.url, timeout=20) as stranger:
            assert stranger.get("/farm/queue").status_code == 303  # to the login page


@needs("chromium")
@needs("chromedriver")
def test_in_a_browser_the_buttons_reorder_and_hold(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    with rig(tmp_path, dispatch=False) as r, r.api() as api:
        a, b = queue_of(r, ["A", "B"])
        driver = browser(1200, 800)
        try:
            driver.get(r.server.url + "/farm/login")
            field = driver.find_element(By.NAME, "token")
            field.send_keys(r.control)
            field.submit()
            driver.get(r.server.url + "/farm/queue")
            driver.find_element(By.CSS_SELECTOR, f'#j-{b} button[data-act="up"]').click()
            wait_for(lambda: order(api) == [b, a], 10, "B moved first")
            wait_for(lambda: page_order(driver.page_source) == [b, a], 10, "the page reloaded")
            driver.find_element(By.CSS_SELECTOR, f'#j-{a} button[data-act="hold"]').click()
            wait_for(lambda: r.farm.store.job(a).state is JobState.HELD, 10, "A held")
        finally:
            driver.quit()
