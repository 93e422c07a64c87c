"""A screenshot of a web page in headless Chromium: Debian's ``chromium`` and ``chromedriver``.

``screenshot(url, path, width, height, cookie=(name, value))`` opens ``url``
at exactly ``width`` x ``height`` CSS pixels (scale 1), with the cookie set
for that address before the first request (a dashboard's session cookie:
the page loads logged in), waits until the page has loaded and, when asked,
until every CSS selector of ``ready`` matches (a live page that has reached
the state worth showing), and writes a PNG.

It drives the browser through Selenium when that is importable (the ``dev``
extra) and uses the system's browser only: ``/usr/bin/chromium`` and
``/usr/bin/chromedriver`` (``apt-get install chromium chromium-driver``), or
the executables named by ``BAMBU_CHROMIUM`` and ``BAMBU_CHROMEDRIVER``. With
both paths given, Selenium skips its Selenium Manager: nothing is ever
downloaded. What is missing raises :class:`ScreenshotUnavailable` with one
line saying what to install; a browser that fails raises
:class:`ScreenshotError`, one line too. Neither names the cookie's value.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import BambuError, ConfigurationError
from ..safetext import visible

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "ScreenshotError",
    "ScreenshotUnavailable",
    "browser_paths",
    "screenshot",
]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Longest a browser's one-line error quotes of what WebDriver said.
_REASON_LIMIT = 200
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ScreenshotUnavailable(ConfigurationError):
    """Selenium, Chromium or chromedriver is not installed here."""


class ScreenshotError(BambuError):
    """The browser started but could not load the page or take the picture."""


def _executable(variable: str, default: str) -> str | None:
    path = os.environ.get(variable) or default
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def browser_paths() -> tuple[str, str]:
    """Chromium and chromedriver, or :class:`ScreenshotUnavailable` naming what is missing."""
    missing = []
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium (pip install selenium)")
    browser = _executable("BAMBU_CHROMIUM", CHROMIUM)
    driver = _executable("BAMBU_CHROMEDRIVER", CHROMEDRIVER)
    if browser is None:
        where = os.environ.get("BAMBU_CHROMIUM") or CHROMIUM
        missing.append(f"chromium at {visible(where)} (apt-get install chromium)")
    if driver is None:
        where = os.environ.get("BAMBU_CHROMEDRIVER") or CHROMEDRIVER
        missing.append(f"chromedriver at {visible(where)} (apt-get install chromium-driver)")
    if missing or browser is None or driver is None:
        raise ScreenshotUnavailable(f"no headless browser: missing {'; '.join(missing)}")
    return browser, driver


def _reason(exc: BaseException, secret: str = "") -> str:
    """WebDriver's message as one short line (its first line; it may carry a stack),
    ``secret`` (the cookie's value) blotted out should the browser quote it."""
    text = str(getattr(exc, "msg", None) or exc)
    if secret:
        text = text.replace(secret, "***")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    shown = visible(lines[0]) if lines else type(exc).__name__
    return shown if len(shown) <= _REASON_LIMIT else shown[: _REASON_LIMIT - 1] + "…"


def screenshot(
    url: str,
    path: str | Path,
    width: int = 1440,
    height: int = 900,
    *,
    cookie: tuple[str, str] | None = None,
    ready: Sequence[str] = (),
    settle: float = 0.0,
    timeout: float = 20.0,
) -> Path:
    """Load ``url`` in headless Chromium at ``width`` x ``height`` and save a PNG at ``path``.

    ``cookie`` (name, value) is set for ``url`` before it loads (HttpOnly,
    SameSite=Strict, as a login form sets a session). ``ready``: CSS
    selectors that must all match before the picture; then ``settle`` more
    seconds let a live page move on (progress bars fill). Everything together
    gets ``timeout`` seconds (and ``settle``). Returns ``path``.
    """
    if width < 1 or height < 1 or timeout <= 0 or settle < 0:
        raise ValueError("width, height and timeout must be positive, settle not negative")
    browser, driver_path = browser_paths()
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace to sandbox with
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",  # no update checks, no component downloads
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    deadline = time.monotonic() + timeout
    target = Path(path)
    try:
        driver: Any = webdriver.Chrome(service=Service(driver_path), options=options)
    except WebDriverException as exc:
        raise ScreenshotError(f"chromium did not start: {_reason(exc)}") from None
    try:
        driver.set_page_load_timeout(max(1.0, deadline - time.monotonic()))
        # The viewport itself, not the window around it: the PNG is exactly this size.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        if cookie is not None:
            name, value = cookie
            driver.execute_cdp_cmd(
                "Network.setCookie",
                {
                    "name": name,
                    "value": value,
                    "url": url,
                    "httpOnly": True,
                    "sameSite": "Strict",
                },
            )
        driver.get(url)
        wanted = [ready] if isinstance(ready, str) else list(ready)
        while not driver.execute_script(
            "return document.readyState === 'complete' && "
            "arguments[0].every(s => document.querySelector(s) !== null)",
            wanted,
        ):
            if time.monotonic() > deadline:
                what = f"no {visible(' and '.join(wanted))}" if wanted else "not loaded"
                raise ScreenshotError(f"the page had {what} within {timeout:g} s")
            time.sleep(0.05)
        time.sleep(max(0.0, settle))
        png: bytes = driver.get_screenshot_as_png()
    except WebDriverException as exc:
        secret = cookie[1] if cookie is not None else ""
        raise ScreenshotError(f"the browser failed: {_reason(exc, secret)}") from None
    finally:
        with contextlib.suppress(Exception):  # a browser that died already: nothing to stop
            driver.quit()
    if not png.startswith(_PNG_MAGIC):
        raise ScreenshotError("the browser returned something that is not a PNG")
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(png)
    os.replace(partial, target)
    return target
