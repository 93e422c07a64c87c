"""The JPEG camera client against the simulated P1/A1 cameras, both faces, on loopback.

Frames come every 50 ms; stall and backoff times are a fraction of a second,
so a reconnect costs little. Every test leaves the cameras listening,
unstalled, with the right certificate and no viewer left.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bambulab import AsyncJPEGFrameStream, JPEGFrameStream, open_async_camera, open_camera
from bambulab.errors import (
    CameraAuthenticationError,
    CameraError,
    CameraStallError,
    CameraUnavailableError,
    CertificateError,
    CertificatePinMismatchError,
    ConfigurationError,
)
from bambulab.models.camera import Frame
from bambulab.protocol.camera import is_jpeg
from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from tests.conftest import LoopThread, unlimited, wait_for

pytestmark = pytest.mark.timeout(60)

INTERVAL = 0.05
FLEET = ["p1s", "a1", "p1s", "x1c"]
FAST = {"timeout": 3.0, "stall_timeout": 0.5, "backoff": 0.02, "max_backoff": 0.05}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = unlimited().with_demo_fleet(parse_fleet(FLEET))
    with Simulator(config, time_scale=60, tick_interval=0.2, camera_interval=INTERVAL) as running:
        yield running


@pytest.fixture(autouse=True)
def no_leftover_faults(sim: Simulator) -> Iterator[None]:
    yield
    sim.camera_clear_faults()
    for serial in serials(sim, "C12"):
        sim.use_wrong_certificate(serial, False)
    for serial in [*serials(sim, "C12"), *serials(sim, "N2S")]:
        sim.camera_drop(serial)


def serials(sim: Simulator, model: str) -> list[str]:
    return [e.serial for e in sim.endpoints() if e.model == model]


def p1s(sim: Simulator) -> str:
    return serials(sim, "C12")[0]


def spare(sim: Simulator) -> str:
    """The second P1S: the one whose certificate the tests change."""
    return serials(sim, "C12")[1]


class Face:
    """One face of the client, called the same way (the async one on its own loop)."""

    def __init__(self, stream: JPEGFrameStream | AsyncJPEGFrameStream) -> None:
        self.stream = stream
        self.loop = LoopThread() if isinstance(stream, AsyncJPEGFrameStream) else None
        self.closed = False

    def call(self, name: str, *args: Any, **kw: Any) -> Any:
        method = getattr(self.stream, name)
        if self.loop is None:
            return method(*args, **kw)
        return self.loop.run(method(*args, **kw))

    def take(self, count: int) -> list[Frame]:
        if self.loop is None:
            assert isinstance(self.stream, JPEGFrameStream)
            return list(self.stream.frames(count))
        assert isinstance(self.stream, AsyncJPEGFrameStream)
        stream = self.stream

        async def collect() -> list[Frame]:
            return [frame async for frame in stream.frames(count)]

        return self.loop.run(collect())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if isinstance(self.stream, JPEGFrameStream):
            self.stream.close()
            return
        assert self.loop is not None
        self.loop.run(self.stream.aclose())
        self.loop.close()


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest, sim: Simulator) -> Iterator[Callable[..., Face]]:
    made: list[Face] = []

    def make(serial: str | None = None, **kw: Any) -> Face:
        chosen = serial or p1s(sim)
        host, port = sim.camera_address(chosen)
        code = kw.pop("code", None) or sim.printers[chosen].access_code
        if "pin_file" not in kw:
            kw.setdefault("ca_file", sim.ca_file)
        options = {**FAST, **kw}
        cls = JPEGFrameStream if request.param == "sync" else AsyncJPEGFrameStream
        made.append(Face(cls(host, code, chosen, port=port, **options)))
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_frames_are_jpegs_counted_from_one(face: Callable[..., Face], sim: Simulator) -> None:
    camera = face()
    frames = camera.take(3)
    assert [f.index for f in frames] == [1, 2, 3]
    assert all(is_jpeg(f.jpeg) and f.size > 1000 for f in frames)
    assert all(f.serial == p1s(sim) for f in frames)
    assert frames[0].monotonic <= frames[1].monotonic <= frames[2].monotonic
    assert sim.camera_connections(p1s(sim)) == 1
    snap = camera.call("snapshot", timeout=5)
    assert snap.index == 4 and is_jpeg(snap.jpeg)
    camera.close()
    wait_for(lambda: sim.camera_connections(p1s(sim)) == 0, 5, "the viewer to go")


def test_pin_on_first_use_then_verified(
    face: Callable[..., Face], sim: Simulator, tmp_path: Path
) -> None:
    pins = tmp_path / "pins.json"
    first = face(pin_file=pins)
    assert is_jpeg(first.call("snapshot", timeout=5).jpeg)
    assert p1s(sim) in pins.read_text()
    first.close()
    again = face(pin_file=pins)
    assert again.call("snapshot", timeout=5).index == 1


def test_pinned_certificate_changed_is_named(
    face: Callable[..., Face], sim: Simulator, tmp_path: Path
) -> None:
    pins = tmp_path / "pins.json"
    first = face(spare(sim), pin_file=pins)
    first.call("snapshot", timeout=5)
    first.close()
    sim.use_wrong_certificate(spare(sim))
    with pytest.raises(CertificatePinMismatchError, match="bambu pin forget"):
        face(spare(sim), pin_file=pins).call("snapshot", timeout=5)


def test_wrong_certificate_is_refused(face: Callable[..., Face], sim: Simulator) -> None:
    sim.use_wrong_certificate(spare(sim))
    camera = face(spare(sim))
    with pytest.raises(CertificateError) as caught:
        camera.call("snapshot", timeout=5)
    assert "\n" not in str(caught.value) and spare(sim) in str(caught.value)


def test_wrong_code_fails_at_once_after_one_try(
    face: Callable[..., Face], sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    serial = serials(sim, "N2S")[0]
    caplog.set_level(logging.INFO, logger="bambulab.sim.camera")
    camera = face(serial, code="wrong123")
    with pytest.raises(CameraAuthenticationError) as caught:
        camera.call("snapshot", timeout=10)
    message = str(caught.value)
    assert "\n" not in message and "wrong123" not in message
    assert serial in message and "bambu camera serve" in message
    refusals = [r for r in caplog.records if "refused a wrong access code" in r.getMessage()]
    assert len(refusals) == 1
    assert "wrong123" not in repr(camera.stream)


def test_viewer_limit_on_first_connection_is_the_same_error(
    face: Callable[..., Face], sim: Simulator
) -> None:
    serial = serials(sim, "N2S")[0]
    one, two = face(serial), face(serial)
    one.call("snapshot", timeout=5)
    two.call("snapshot", timeout=5)
    with pytest.raises(CameraAuthenticationError, match="connection limit"):
        face(serial).call("snapshot", timeout=5)


def test_drop_reconnects_and_index_continues(face: Callable[..., Face], sim: Simulator) -> None:
    camera = face()
    assert [f.index for f in camera.take(2)] == [1, 2]
    assert sim.camera_drop(p1s(sim)) == 1
    frames = camera.take(3)
    assert [f.index for f in frames] == [3, 4, 5]
    assert camera.stream.connects == 2


def test_drop_without_reconnect_is_an_error(face: Callable[..., Face], sim: Simulator) -> None:
    camera = face(reconnect=False)
    camera.take(1)
    sim.camera_drop(p1s(sim))
    with pytest.raises(CameraError, match="closed the connection") as caught:
        camera.take(5)
    assert not isinstance(caught.value, CameraAuthenticationError)


def test_stall_reconnects(face: Callable[..., Face], sim: Simulator) -> None:
    camera = face(stall_timeout=0.3)
    camera.take(1)
    sim.camera_stall(p1s(sim), 0.5)
    frames = camera.take(2)
    assert [f.index for f in frames] == [2, 3]
    assert camera.stream.connects >= 2


def test_stall_without_reconnect_is_a_stall_error(
    face: Callable[..., Face], sim: Simulator
) -> None:
    camera = face(stall_timeout=0.3, reconnect=False)
    camera.take(1)
    sim.camera_stall(p1s(sim), 5)
    # frames already read ahead when the stall began come first (a loaded run got one)
    with pytest.raises(CameraStallError, match="no frame"):
        camera.take(20)


def test_stall_gives_up_after_bounded_reconnects(face: Callable[..., Face], sim: Simulator) -> None:
    camera = face(stall_timeout=0.2, max_reconnects=2)
    camera.take(1)
    sim.camera_stall(p1s(sim), 30)
    # Frames already in the socket's buffers when the stall began still come first (the
    # async face reads ahead; a loaded run got one): the error follows them.
    with pytest.raises(CameraStallError, match="gave up after 2 reconnects"):
        camera.take(20)
    assert camera.stream.connects == 3


def test_snapshot_timeout_is_a_stall_error(face: Callable[..., Face], sim: Simulator) -> None:
    sim.camera_stall(p1s(sim), 5)
    camera = face(stall_timeout=5)
    with pytest.raises(CameraStallError, match=r"within 0\.3 s"):
        camera.call("snapshot", timeout=0.3)


def test_refused_port_is_one_clear_error(face: Callable[..., Face], sim: Simulator) -> None:
    sim.camera_refuse(p1s(sim))
    with pytest.raises(CameraUnavailableError, match="refused the connection") as caught:
        face().call("snapshot", timeout=5)
    assert "\n" not in str(caught.value)


def test_refused_port_after_success_retries_then_gives_up(
    face: Callable[..., Face], sim: Simulator
) -> None:
    camera = face(max_reconnects=2)
    camera.take(1)
    sim.camera_refuse(p1s(sim))
    sim.camera_drop(p1s(sim))
    with pytest.raises(CameraUnavailableError, match="gave up after 2 reconnects"):
        camera.take(20)  # after any frame already buffered when the connection dropped


def test_closed_port_on_first_use_of_a_pin(
    face: Callable[..., Face], tmp_path: Path, sim: Simulator
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stream_cls = type(face().stream)
    stream = stream_cls("127.0.0.1", "12345678", p1s(sim), port=port, pin_file=tmp_path / "p")
    camera = Face(stream)
    try:
        with pytest.raises(CameraUnavailableError, match="refused the connection"):
            camera.call("snapshot", timeout=5)
    finally:
        camera.close()


def test_repr_and_errors_hide_the_code(face: Callable[..., Face], sim: Simulator) -> None:
    code = sim.printers[p1s(sim)].access_code
    camera = face()
    camera.take(1)
    text = repr(camera.stream)
    assert code not in text and p1s(sim) in text and "frames=1" in text


def test_seed_calls_still_work(sim: Simulator) -> None:
    serial = p1s(sim)
    host, port = sim.camera_address(serial)
    code = sim.printers[serial].access_code
    with JPEGFrameStream(host, code, serial, port=port, ca_file=sim.ca_file) as stream:
        jpeg = stream.get_frame()
        assert isinstance(jpeg, bytes) and is_jpeg(jpeg)
        more = next(iter(stream.stream_frames()))
        assert is_jpeg(more) and stream.printer_ip == host
    stream.disconnect()
    keyword = JPEGFrameStream(printer_ip=host, access_code=code, serial=serial, port=port)
    assert keyword.host == host


def test_bad_arguments_are_refused_before_connecting() -> None:
    with pytest.raises(ConfigurationError, match="serial"):
        JPEGFrameStream("127.0.0.1", "12345678")
    with pytest.raises(ConfigurationError, match="longer than 32"):
        JPEGFrameStream("127.0.0.1", "x" * 33, "01P00A000000001")
    with pytest.raises(ConfigurationError, match="access code"):
        AsyncJPEGFrameStream("127.0.0.1", "", "01P00A000000001")


def test_open_camera_picks_the_stream_by_model(sim: Simulator) -> None:
    serial = p1s(sim)
    host, port = sim.camera_address(serial)
    code = sim.printers[serial].access_code
    stream = open_camera(host, code, serial, port=port, ca_file=sim.ca_file)
    assert isinstance(stream, JPEGFrameStream)
    try:
        assert is_jpeg(stream.snapshot(timeout=5).jpeg)
    finally:
        stream.close()
    by_name = open_async_camera(host, code, "XXX", model="A1", port=port)
    assert isinstance(by_name, AsyncJPEGFrameStream)
    asyncio.run(by_name.aclose())
    with pytest.raises(CameraUnavailableError, match="LAN Only Liveview"):
        open_camera(host, code, serial, model="X1C", rtsp_url="disable")
    with pytest.raises(ConfigurationError, match="unknown printer model"):
        open_camera(host, code, serial, model="Z9")


def test_the_simulated_header_arrives_in_a_record_of_its_own(sim: Simulator) -> None:
    """What third-party clients rely on (they take a 16-byte read as the header), as printers do."""
    import ssl
    import struct

    from bambulab.protocol.camera import auth_packet

    serial = p1s(sim)
    host, port = sim.camera_address(serial)
    assert sim.ca_file is not None
    ctx = ssl.create_default_context(cafile=sim.ca_file)
    ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=serial) as tls,
    ):
        tls.sendall(auth_packet(sim.printers[serial].access_code))
        for _ in range(2):
            header = tls.recv(65536)  # one TLS record at most
            assert len(header) == 16
            size = struct.unpack_from("<I", header)[0]
            got = 0
            while got < size:
                chunk = tls.recv(min(65536, size - got))
                assert 0 < len(chunk) <= 4096
                got += len(chunk)
