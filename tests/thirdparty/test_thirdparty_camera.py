"""Third-party camera clients read the simulated P1/A1 cameras, unmodified (ports aside).

* bambulabs_api's ``PrinterCamera(hostname, access_code, port)`` as its
  README's ``Printer.camera_start()`` runs it: a thread that keeps the last
  frame, ``get_frame()`` gives it base64-encoded.
* pybambu's ``ChamberImageThread``, started by the Home Assistant library's
  own ``BambuClient`` once it knows the printer is a P1S (no Home Assistant
  needed): it dials port 6000, which is mapped onto the simulator's port.

Both take a 16-byte read as the frame header and give up on the
connection after any other first read: they pass only because the
simulator, like the printers, sends the header in a TLS record of its own
(their authors' notes say the printers do). Neither verifies the
certificate. Frames come every 0.25 s: pybambu sleeps a second whenever
nothing is waiting, and must not fall so far behind that the camera cuts it.
"""

from __future__ import annotations

import base64
import io
import socket
import types
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from bambulab.protocol.camera import is_jpeg
from bambulab.sim import Simulator
from bambulab.sim.config import parse_fleet
from tests.conftest import unlimited
from tests.thirdparty.conftest import Redirect, access_code, eventually, require, serial_of

pytestmark = pytest.mark.timeout(90)

P1S = "C12"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = unlimited().with_demo_fleet(parse_fleet(["p1s:idle", "a1:idle"]))
    with Simulator(config, tick_interval=0.5, camera_interval=0.25) as running:
        yield running


@pytest.fixture(autouse=True)
def no_viewer_left(sim: Simulator) -> Iterator[None]:
    yield
    for endpoint in sim.endpoints():
        if endpoint.camera_port is not None:
            sim.camera_drop(endpoint.serial)


def picture(jpeg: bytes) -> tuple[int, int]:
    assert is_jpeg(jpeg)
    with Image.open(io.BytesIO(jpeg)) as image:
        image.load()
        return image.size


def test_bambulabs_api_camera_gets_frames(sim: Simulator) -> None:
    camera_module = require("bambulabs_api.camera_client")
    serial = serial_of(sim, "N2S")
    host, port = sim.camera_address(serial)
    camera = camera_module.PrinterCamera(host, access_code(sim, serial), port)
    assert camera.start()
    try:
        got = eventually(lambda: camera.last_frame, lambda frame: frame is not None)
        assert got is not None, "bambulabs_api got no frame from the simulated camera"
        jpeg = base64.b64decode(camera.get_frame())
        assert picture(jpeg) == (1280, 720)
        assert sim.camera_connections(serial) == 1
        # It keeps reading: a later frame replaces the first.
        first = camera.last_frame
        later = eventually(lambda: camera.last_frame, lambda frame: frame is not first)
        assert later is not first and is_jpeg(bytes(later))
    finally:
        # stop() joins a thread that sleeps 5 s after every connection: let it go.
        camera.alive = False


class _Sockets(types.SimpleNamespace):
    """``socket`` for pybambu, whose ``create_connection`` dials through a map."""


def socket_module(redirect: Redirect) -> Any:
    module = _Sockets(**{k: getattr(socket, k) for k in dir(socket) if k[0] != "_"})

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        return socket.create_connection(redirect.address(*address), *args, **kwargs)

    module.create_connection = create_connection
    return module


def test_pybambu_chamber_image_thread_gets_frames(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("pybambu")
    client_module = require("pybambu.bambu_client")
    serial = serial_of(sim, P1S)
    redirect = Redirect()
    redirect.mqtt[(f"printer-{serial}", 8883)] = sim.lan_address(serial)
    redirect.mqtt[(f"printer-{serial}", 6000)] = sim.camera_address(serial)
    monkeypatch.setattr(client_module, "mqtt", redirect.paho_module())
    monkeypatch.setattr(client_module, "socket", socket_module(redirect))
    client = client_module.BambuClient(
        device_type="P1S",
        serial=serial,
        host=f"printer-{serial}",
        local_mqtt=True,
        region="",
        email="",
        username="",
        auth_token="",
        access_code=access_code(sim, serial),
    )
    events: list[str] = []
    client.connect(callback=events.append)
    try:
        device = client.get_device()
        jpeg = eventually(lambda: bytes(device.chamber_image.get_jpeg()), bool)
        assert jpeg, "pybambu's chamber image thread got no frame from the simulated camera"
        assert picture(jpeg) == (1280, 720)
        assert "event_printer_chamber_image_update" in events
    finally:
        client.disconnect()
        client._on_disconnect()  # stops its watchdog and camera threads, as paho's callback does
