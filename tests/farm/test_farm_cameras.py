"""The dashboard's camera tiles: the farm server's own camera fan-out, behind its tokens.

``bambu serve farm`` as ``bambu sim --serve farm`` builds it (``open_sim_server``),
on simulated printers whose cameras speak the real protocols (P1/A1 JPEG over
TLS, X1/H2 RTSPS) on loopback.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from bambulab.servers.config import Server, open_sim_server
from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from tests.conftest import unlimited, wait_for

pytestmark = pytest.mark.timeout(120)


@dataclass
class Farm:
    sim: Simulator
    server: Server
    token: str
    p1s: str  # a printer with a JPEG camera


@pytest.fixture(scope="module")
def farm() -> Iterator[Farm]:
    config = unlimited().with_demo_fleet(parse_fleet(["p1s:idle", "a1:idle"]))
    with Simulator(config, camera_interval=0.1) as sim:
        server = open_sim_server(sim, ("farm", "live"))
        with server:
            assert server.issued_token is not None
            p1s = next(e.serial for e in sim.endpoints() if e.model == "C12")
            yield Farm(sim, server, server.issued_token, p1s)


def api(farm: Farm, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token or farm.token}"}
    return httpx.Client(base_url=farm.server.url, headers=headers, timeout=20)


def first_part(chunks: Iterator[bytes]) -> bytes:
    """The first JPEG of an MJPEG stream's ``iter_bytes()`` (kept by the caller: dropping
    that iterator closes the connection)."""
    data = b""
    for chunk in chunks:
        data += chunk
        found = re.search(rb"Content-Length: (\d+)\r\n\r\n", data)
        if found and len(data) >= found.end() + int(found.group(1)):
            return data[found.end() : found.end() + int(found.group(1))]
    raise AssertionError("the stream ended before a frame")


def test_a_tile_shows_the_camera_and_the_farm_serves_it(farm: Farm) -> None:
    with api(farm) as client:
        wait_for(
            lambda: "data-src" in client.get("/farm/api/tiles").json()["tiles"].get(farm.p1s, ""),
            20,
            "the tile with its camera",
        )
        tile = client.get("/farm/api/tiles").json()["tiles"][farm.p1s]
        assert f'data-src="/farm/camera/{farm.p1s}/stream.mjpg"' in tile
        snapshot = client.get(f"/farm/camera/{farm.p1s}/snapshot.jpg")
        assert snapshot.status_code == 200, snapshot.text
        assert snapshot.headers["content-type"] == "image/jpeg"
        assert snapshot.content.startswith(b"\xff\xd8")
        with client.stream("GET", f"/farm/camera/{farm.p1s}/stream.mjpg") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("multipart/x-mixed-replace")
            assert first_part(stream.iter_bytes()).startswith(b"\xff\xd8")
        assert client.get("/farm/camera/01P00000000000X/snapshot.jpg").status_code in (403, 404)


def test_many_viewers_share_one_camera_connection(farm: Farm) -> None:
    """Printers take one or two camera clients; the farm opens one, whatever the viewers."""
    cameras = farm.server.ctx.extra["farm"].cameras
    started = threading.Barrier(4)
    frames: list[bytes] = []
    done = threading.Event()

    def viewer() -> None:
        with (
            api(farm) as client,
            client.stream("GET", f"/farm/camera/{farm.p1s}/stream.mjpg") as stream,
        ):
            chunks = stream.iter_bytes()
            frames.append(first_part(chunks))
            started.wait(20)
            done.wait(20)

    threads = [threading.Thread(target=viewer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        started.wait(20)
        stats = farm.server.call(lambda: cameras.stats(farm.p1s))
        assert stats.viewers == 3 and stats.upstream_open
        connections = farm.sim.camera_connections(farm.p1s)
        assert connections == 1, connections
    finally:
        done.set()
        for thread in threads:
            thread.join(20)
    assert len(frames) == 3 and all(f.startswith(b"\xff\xd8") for f in frames)


def test_a_token_sees_only_its_printers_cameras(farm: Farm) -> None:
    store = farm.server.ctx.gate.store
    other = next(e.serial for e in farm.sim.endpoints() if e.serial != farm.p1s)
    scoped, _ = store.create("read", printers=[other])
    with api(farm, scoped) as client:
        assert client.get(f"/farm/camera/{farm.p1s}/snapshot.jpg").status_code == 403
        tiles = client.get("/farm/api/tiles").json()["tiles"]
        assert farm.p1s not in tiles
    with httpx.Client(base_url=farm.server.url, timeout=20) as stranger:
        assert stranger.get(f"/farm/camera/{farm.p1s}/snapshot.jpg").status_code == 401
