"""``bambu camera serve`` as a user runs it: the printers ``bambu sim`` exports, one URL printed.

A real subprocess with the simulator's export lines as its environment
(``eval "$(bambu sim ...)"`` in a shell): the server lists every printer
(JPEG and RTSPS cameras), prints the URL with a generated token once, serves a snapshot, and
stops cleanly on Ctrl-C without printing a printer's access code.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from tests.cli.conftest import Background, sim_environment
from tests.conftest import unlimited


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = unlimited().with_demo_fleet(parse_fleet(["p1s", "a1", "x1c"]))
    with Simulator(config, tick_interval=0.5, camera_interval=0.2) as simulator:
        yield simulator


def test_serve_the_simulated_printers(sim: Simulator) -> None:
    server = Background(["camera", "serve", "--port", "0", "--linger", "1"], sim_environment(sim))
    try:
        line = server.wait_line("?token=")
        url = next(word for word in line.split() if "?token=" in word)
        base = url.split("/?token=")[0]
        cameras = sim.endpoints()  # the X1C's RTSPS camera too, at its exported URL
        with httpx.Client(timeout=10) as browser:
            page = browser.get(url, follow_redirects=True)
            assert page.status_code == 200
            assert page.text.count("stream.mjpg") == len(cameras)
            listing = browser.get(f"{base}/api/cameras").json()
            assert sorted(r["serial"] for r in listing) == sorted(e.serial for e in cameras)
            for camera in cameras:
                snap = browser.get(f"{base}/camera/{camera.serial}/snapshot.jpg")
                assert snap.status_code == 200, (camera.model, snap.text)
                assert Image.open(io.BytesIO(snap.content)).format == "JPEG"
        assert httpx.get(f"{base}/api/cameras").status_code == 401
    finally:
        status, rest = server.stop()
    assert status == 0, rest
    for endpoint in sim.endpoints():
        assert endpoint.access_code not in url + rest
    assert "Traceback" not in rest


def test_serve_without_printers_says_how() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMBU_")}
    done = subprocess.run(
        [sys.executable, "-m", "bambulab.cli", "camera", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "no printer to serve" in done.stderr and "Traceback" not in done.stderr
