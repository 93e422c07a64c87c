"""The simulated P1/A1 cameras, read by a raw client: TLS socket, auth packet, frame decoder.

Nothing of the library's camera client here: what a client meets on the
wire is checked byte by byte (header fields, TLS record sizes, the JPEG
itself), and every fault is seen the way a client sees it (closed with no
byte, refused, silent, cut). Frames come every 50 ms so the tests stay fast.
"""

from __future__ import annotations

import contextlib
import io
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image, JpegImagePlugin

from bambulab.protocol.camera import AUTH_SIZE, HEADER_SIZE, FrameDecoder, auth_packet
from bambulab.sim import command
from bambulab.sim.camera import MAX_OPEN, RECORD_SIZE, JpegEndpoint
from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from tests.conftest import unlimited
from tests.sim.test_mqtt_runner import running_sim

pytestmark = pytest.mark.timeout(60)

INTERVAL = 0.05
FLEET = ["p1s", "a1", "p1s", "x1c"]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = unlimited().with_demo_fleet(parse_fleet(FLEET))
    with Simulator(config, time_scale=60, tick_interval=0.2, camera_interval=INTERVAL) as running:
        yield running


@pytest.fixture(autouse=True)
def no_leftover_faults(sim: Simulator) -> Iterator[None]:
    """Every test starts and ends with cameras listening, unstalled, and no viewer left."""
    yield
    sim.camera_clear_faults()
    for serial in jpeg_serials(sim):
        sim.camera_drop(serial)


def jpeg_serials(sim: Simulator) -> list[str]:
    return [e.serial for e in sim.endpoints() if e.camera_port is not None]


def serials(sim: Simulator, model: str) -> list[str]:
    return [e.serial for e in sim.endpoints() if e.model == model]


def p1s(sim: Simulator) -> str:
    return serials(sim, "C12")[0]


def spare(sim: Simulator) -> str:
    """The second P1S: the one whose state and certificate the tests change."""
    return serials(sim, "C12")[1]


def a1(sim: Simulator) -> str:
    return serials(sim, "N2S")[0]


def context(sim: Simulator) -> ssl.SSLContext:
    assert sim.ca_file is not None
    return ssl.create_default_context(cafile=sim.ca_file)


class Viewer:
    """A raw camera client: keeps every byte, the size of every read, and the frames."""

    def __init__(
        self,
        sim: Simulator,
        serial: str,
        *,
        packet: bytes | None = None,
        server_hostname: str | None = None,
        rcvbuf: int | None = None,
    ) -> None:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(5)
        raw.connect(sim.camera_address(serial))
        try:
            self.sock = context(sim).wrap_socket(raw, server_hostname=server_hostname or serial)
        except BaseException:
            raw.close()
            raise
        code = sim.printers[serial].access_code
        self.sock.sendall(auth_packet(code) if packet is None else packet)
        self.stream = bytearray()
        self.reads: list[int] = []
        self.decoder = FrameDecoder()
        self.frames: list[tuple[bytes, float]] = []  # (JPEG, time.monotonic() at arrival)

    def read(self, timeout: float = 5.0) -> bytes:
        self.sock.settimeout(timeout)
        data = self.sock.recv(1 << 16)
        self.reads.append(len(data))
        self.stream += data
        now = time.monotonic()
        self.frames += [(jpeg, now) for jpeg in self.decoder.feed(data)]
        return data

    def take(self, count: int, timeout: float = 5.0) -> list[bytes]:
        """The next ``count`` frames (waits up to ``timeout`` for all of them)."""
        wanted = len(self.frames) + count
        deadline = time.monotonic() + timeout
        while len(self.frames) < wanted:
            left = deadline - time.monotonic()
            assert left > 0, f"{len(self.frames)} frames of {wanted} in {timeout} s"
            assert self.read(left), "the camera closed the stream"
        return [jpeg for jpeg, _ in self.frames[wanted - count : wanted]]

    def closed_without_a_byte(self, timeout: float = 5.0) -> bool:
        """Whether the server closes (or resets) the connection having sent nothing."""
        with contextlib.suppress(ConnectionResetError, ssl.SSLError):
            self.read(timeout)  # b"" at the close; the first byte of a frame otherwise
        return not self.stream

    def ends(self, timeout: float = 5.0) -> bool:
        """Whether the stream ends (EOF or reset) within ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            while self.read(max(0.01, deadline - time.monotonic())):
                if time.monotonic() > deadline:
                    return False
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return True

    def goes_quiet(self, quiet: float, within: float = 3.0) -> bool:
        """Whether no byte comes for ``quiet`` seconds (a frame on its way may land first)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                if not self.read(quiet):
                    return False  # closed: not what a stall does
            except TimeoutError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def viewers(sim: Simulator) -> Iterator[Any]:
    """``viewers(serial, **options)`` opens a :class:`Viewer`; all closed after the test."""
    made: list[Viewer] = []

    def open_viewer(serial: str, **options: Any) -> Viewer:
        viewer = Viewer(sim, serial, **options)
        made.append(viewer)
        return viewer

    yield open_viewer
    for viewer in made:
        viewer.close()


def picture(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    return image


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# --- the stream --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["C12", "N2S"])
def test_frames_are_baseline_jpegs_in_small_tls_records(
    sim: Simulator, viewers: Any, model: str
) -> None:
    serial = serials(sim, model)[0]
    viewer = viewers(serial)
    frames = viewer.take(3)
    for jpeg in frames:
        image = picture(jpeg)
        assert (image.format, image.size, image.mode) == ("JPEG", (1280, 720), "RGB")
        assert not image.info.get("progressive") and not image.info.get("progression")
        assert JpegImagePlugin.get_sampling(image) == 2  # 4:2:0
    # The wire: each frame is a 16-byte header (size, itrack 0, flags 1, 0) and the JPEG.
    offset = 0
    for jpeg in frames:
        size, itrack, flags, zero = struct.unpack_from("<IIII", viewer.stream, offset)
        assert (size, itrack, flags, zero) == (len(jpeg), 0, 1, 0)
        assert bytes(viewer.stream[offset + HEADER_SIZE : offset + HEADER_SIZE + size]) == jpeg
        offset += HEADER_SIZE + size
    # One recv returns one TLS record at most: none carries more than 4 KiB.
    assert max(viewer.reads) <= RECORD_SIZE
    assert len(viewer.reads) >= sum(len(f) for f in frames) // RECORD_SIZE


def test_frames_come_at_the_configured_cadence(sim: Simulator, viewers: Any) -> None:
    viewer = viewers(p1s(sim))
    viewer.take(9)
    arrivals = [moment for _, moment in viewer.frames[-8:]]
    spent = arrivals[-1] - arrivals[0]
    assert 7 * INTERVAL * 0.7 <= spent <= 7 * INTERVAL * 8


def test_each_printer_shows_its_own_picture(sim: Simulator, viewers: Any) -> None:
    first, second = (picture(viewers(s).take(1)[0]) for s in (p1s(sim), a1(sim)))
    assert first.getpixel((8, 8)) != second.getpixel((8, 8))  # the background follows the serial
    # The same picture the host hands other servers (the RTSPS one) for that printer.
    again = picture(sim.camera_frame(p1s(sim)))
    assert again.size == (1280, 720)
    assert again.getpixel((8, 8)) == first.getpixel((8, 8))


def bar_is_lit(image: Image.Image, x: int) -> bool:
    """Whether the progress bar is green at ``x`` (the bar spans y 340-380)."""
    pixel = image.getpixel((x, 360))
    assert isinstance(pixel, tuple)
    red, green, _ = pixel[:3]
    return bool(green > 150 and red < 140)


def test_the_picture_follows_the_printer(sim: Simulator, viewers: Any) -> None:
    serial = spare(sim)
    viewer = viewers(serial)
    before = picture(viewer.take(1)[0])
    assert not bar_is_lit(before, 60)
    sim.with_printer(serial, lambda p: p.start_job(name="CameraCube", progress=0.5))
    try:
        deadline = time.monotonic() + 5
        while True:
            after = picture(viewer.take(1)[0])
            if bar_is_lit(after, 60):
                break
            assert time.monotonic() < deadline, "the picture never showed the job"
        assert bar_is_lit(after, 560)  # about half the bar: 48 + 1184 * 0.43
        assert not bar_is_lit(after, 1200)
    finally:
        sim.with_printer(serial, lambda p: p.state.stop())


def test_the_certificate_is_the_printers_own(sim: Simulator, viewers: Any) -> None:
    serial = p1s(sim)
    viewer = viewers(serial)
    assert viewer.sock.getpeercert()["subject"] == ((("commonName", serial),),)
    with pytest.raises(ssl.SSLCertVerificationError):
        viewers(serial, server_hostname=a1(sim))


# --- who gets in -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "packet",
    [
        auth_packet("00000000"),
        auth_packet("ignored", user="root"),
        b"\x00" * AUTH_SIZE,
        auth_packet("x")[:-1],  # one byte short: never a whole packet
    ],
    ids=["wrong-code", "wrong-user", "malformed", "short"],
)
def test_bad_auth_is_closed_without_a_byte(sim: Simulator, viewers: Any, packet: bytes) -> None:
    assert sim.camera is not None
    serial = a1(sim)
    before = sim.camera_total_connections(serial)
    deadline = sim.camera.auth_timeout
    sim.camera.auth_timeout = 0.3  # the short packet: the server gives up waiting for the rest
    try:
        viewer = viewers(serial, packet=packet)
        started = time.monotonic()
        assert viewer.closed_without_a_byte()
        assert time.monotonic() - started < 3
    finally:
        sim.camera.auth_timeout = deadline
    assert sim.camera_total_connections(serial) == before
    assert sim.camera_connections(serial) == 0


def test_a_changed_access_code_applies_to_the_next_viewer(sim: Simulator, viewers: Any) -> None:
    serial = a1(sim)
    old = sim.printers[serial].access_code
    sim.with_printer(serial, lambda p: setattr(p, "access_code", "87654321"))
    try:
        assert viewers(serial, packet=auth_packet(old)).closed_without_a_byte()
        assert viewers(serial, packet=auth_packet("87654321")).take(1)
    finally:
        sim.with_printer(serial, lambda p: setattr(p, "access_code", old))


def test_two_viewers_at_most(sim: Simulator, viewers: Any) -> None:
    serial = p1s(sim)
    first, second = viewers(serial), viewers(serial)
    first.take(1), second.take(1)
    assert sim.camera_connections(serial) == 2
    assert viewers(serial).closed_without_a_byte()
    first.close()
    wait_for(lambda: sim.camera_connections(serial) == 1)
    assert viewers(serial).take(1)
    assert sim.camera_connections(serial) == 2


def test_connections_that_never_authenticate_are_capped(sim: Simulator) -> None:
    serial = a1(sim)
    address = sim.camera_address(serial)
    held: list[ssl.SSLSocket] = []
    try:
        for _ in range(MAX_OPEN):
            raw = socket.create_connection(address, timeout=5)
            held.append(context(sim).wrap_socket(raw, server_hostname=serial))
        one_more = context(sim).wrap_socket(
            socket.create_connection(address, timeout=5), server_hostname=serial
        )
        held.append(one_more)
        one_more.sendall(auth_packet(sim.printers[serial].access_code))
        assert one_more.recv(1 << 16) == b""
    finally:
        for sock in held:
            sock.close()
    camera, endpoint = sim.camera, sim.camera.endpoints[serial] if sim.camera else None
    assert camera is not None and isinstance(endpoint, JpegEndpoint)
    wait_for(lambda: camera.call(lambda: endpoint.open_connections) == 0)


def test_a_viewer_that_stops_reading_is_cut(sim: Simulator, viewers: Any) -> None:
    assert sim.camera is not None
    serial = p1s(sim)
    limit = sim.camera.max_backlog
    sim.camera.max_backlog = 200_000  # a few frames, so the test does not wait for megabytes
    try:
        stuck = viewers(serial, rcvbuf=4096)
        reading = viewers(serial)
        wait_for(lambda: sim.camera_connections(serial) == 2)
        reading.take(2)
        wait_for(lambda: sim.camera_connections(serial) == 1, timeout=10)
        assert stuck.ends()  # what it had not read yet, then the end
        assert reading.take(2)  # the one that reads is not affected
    finally:
        sim.camera.max_backlog = limit


# --- faults ----------------------------------------------------------------------------


def test_stall_keeps_connections_open_without_frames(sim: Simulator, viewers: Any) -> None:
    serial = a1(sim)
    viewer = viewers(serial)
    viewer.take(1)
    sim.camera_stall(serial, 30)
    assert viewer.goes_quiet(6 * INTERVAL)
    assert sim.camera_connections(serial) == 1
    sim.camera_stall(serial, 0)
    assert viewer.take(2)


def test_drop_cuts_every_viewer_and_they_may_come_back(sim: Simulator, viewers: Any) -> None:
    serial = a1(sim)
    first, second = viewers(serial), viewers(serial)
    first.take(1), second.take(1)
    total = sim.camera_total_connections(serial)
    assert sim.camera_drop(serial) == 2
    assert first.ends() and second.ends()
    assert sim.camera_connections(serial) == 0
    assert viewers(serial).take(1)
    assert sim.camera_total_connections(serial) == total + 1


def test_refuse_then_listen_on_the_same_port(sim: Simulator, viewers: Any) -> None:
    serial = a1(sim)
    address = sim.camera_address(serial)
    viewer = viewers(serial)
    viewer.take(1)
    sim.camera_refuse(serial)
    assert viewer.ends()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2).close()
    sim.camera_refuse(serial, False)
    assert sim.camera_address(serial) == address
    assert viewers(serial).take(1)


def test_an_offline_printer_has_no_camera(sim: Simulator, viewers: Any) -> None:
    serial = spare(sim)
    address = sim.camera_address(serial)
    viewer = viewers(serial)
    viewer.take(1)
    sim.take_offline(serial)
    try:
        assert viewer.ends()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=2).close()
        sim.camera_clear_faults()  # clearing faults does not power a printer on
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=2).close()
    finally:
        sim.bring_online(serial)
    assert sim.camera_address(serial) == address
    assert viewers(serial).take(1)


def test_wrong_and_renewed_certificates_reach_the_camera(sim: Simulator, viewers: Any) -> None:
    serial = spare(sim)
    first = viewers(serial)
    original = first.sock.getpeercert(binary_form=True)
    first.close()  # two viewers at most: leave room for the ones below
    sim.use_wrong_certificate(serial)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            viewers(serial)
        sim.renew_certificate(serial)
        renewed = viewers(serial)
        assert renewed.take(1)
        assert renewed.sock.getpeercert(binary_form=True) != original
        renewed.close()
    finally:
        sim.use_wrong_certificate(serial, False)
    again = viewers(serial)
    assert again.take(1)
    assert again.sock.getpeercert(binary_form=True) == original


def test_faults_over_http_and_cleared_by_delete(sim: Simulator, viewers: Any) -> None:
    serial = a1(sim)

    def fault(**body: Any) -> httpx.Response:
        return httpx.post(f"{sim.url}/sim/mqtt/faults", json=body, timeout=10)

    viewer = viewers(serial)
    viewer.take(1)
    assert fault(fault="camera_drop", serial=serial).status_code == 200
    assert viewer.ends()
    assert fault(fault="camera_refuse", serial=serial).status_code == 200
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(sim.camera_address(serial), timeout=2).close()
    assert fault(fault="camera_listen", serial=serial).status_code == 200
    assert fault(fault="camera_stall", serial=serial, seconds=60).status_code == 200
    stalled = viewers(serial)
    wait_for(lambda: sim.camera_connections(serial) == 1)
    assert stalled.goes_quiet(6 * INTERVAL)
    assert httpx.delete(f"{sim.url}/sim/mqtt/faults", timeout=10).status_code == 200
    assert stalled.take(1)
    assert fault(fault="camera_stall", serial=serial, seconds=-1).status_code == 400
    assert fault(fault="camera_drop", serial="nope").status_code == 400
    x1c = serials(sim, "BL-P001")[0]
    answer = fault(fault="camera_drop", serial=x1c)
    assert answer.status_code == 400 and "RTSPS" in answer.text


# --- what the simulator tells users ----------------------------------------------------


def test_addresses_exports_and_info(sim: Simulator) -> None:
    x1c = serials(sim, "BL-P001")[0]
    with pytest.raises(ValueError, match="RTSPS"):
        sim.camera_address(x1c)
    with pytest.raises(KeyError):
        sim.camera_address("01P00A000000000")
    lines = sim.export_lines()
    endpoints = sim.endpoints()
    for number, endpoint in enumerate(endpoints, start=1):
        line = f"export BAMBU_PRINTER_{number}_CAMERA_PORT={endpoint.camera_port}"
        if endpoint.serial == x1c:
            assert endpoint.camera_port is None
            assert not any(f"BAMBU_PRINTER_{number}_CAMERA_PORT" in x for x in lines)
        else:
            assert endpoint.camera_port == sim.camera_address(endpoint.serial)[1]
            assert line in lines
    assert f"export BAMBU_PRINTER_CAMERA_PORT={endpoints[0].camera_port}" in lines
    assert lines[-1].startswith("export BAMBU_PRINTER_PORT=")
    info = httpx.get(f"{sim.url}/sim/mqtt", timeout=10).json()
    ports = {entry["serial"]: entry.get("camera_port") for entry in info["printers"]}
    assert {e.serial: ports[e.serial] for e in endpoints} == {
        e.serial: e.camera_port for e in endpoints
    }


def test_fixed_ports_and_cameras_off() -> None:
    config = unlimited().with_demo_fleet(parse_fleet(["p1s", "x1c", "a1"]))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        first = probe.getsockname()[1]
    with Simulator(config, ftps=False, camera_port=first) as fixed:
        p1s_serial, _, a1_serial = (e.serial for e in fixed.endpoints())
        # Consecutive ports over the JPEG cameras only (the X1C has none).
        assert fixed.camera_address(p1s_serial) == ("127.0.0.1", first)
        assert fixed.camera_address(a1_serial) == ("127.0.0.1", first + 1)
    with Simulator(config, ftps=False, camera=False) as without:
        with pytest.raises(RuntimeError, match="camera"):
            without.camera_address(p1s_serial)
        assert all(e.camera_port is None for e in without.endpoints())
        assert not any("CAMERA_PORT" in line for line in without.export_lines())


# --- bambu sim ---------------------------------------------------------------------------


def test_bambu_sim_exports_camera_ports_that_stream() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        first = probe.getsockname()[1]
    fleet = "p1s,x1c,a1"
    options = ("--fleet", fleet, "--no-ftps", "--camera-port", str(first), "--camera-fps", "20")
    with running_sim(*options) as (_, env):
        assert env["BAMBU_PRINTER_1_CAMERA_PORT"] == env["BAMBU_PRINTER_CAMERA_PORT"] == str(first)
        assert "BAMBU_PRINTER_2_CAMERA_PORT" not in env  # the X1C: RTSPS
        assert env["BAMBU_PRINTER_3_CAMERA_PORT"] == str(first + 1)
        assert list(env)[-1] == "BAMBU_PRINTER_PORT"
        # A client needs nothing but these lines.
        serial = env["BAMBU_PRINTER_3_SERIAL"]
        raw = socket.create_connection(("127.0.0.1", first + 1), timeout=5)
        tls = ssl.create_default_context(cafile=env["BAMBU_CA_FILE"])
        with tls.wrap_socket(raw, server_hostname=serial) as sock:
            sock.sendall(auth_packet(env["BAMBU_PRINTER_3_ACCESS_CODE"]))
            decoder, frames = FrameDecoder(), []
            started = time.monotonic()
            while len(frames) < 4:
                frames += decoder.feed(sock.recv(1 << 16))
            assert time.monotonic() - started < 1.5  # 20 frames a second, not 1


def test_bambu_sim_camera_options_reach_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, Any]] = []

    class Recorder:
        cloud = type("Cloud", (), {"port": 1})()

        def __init__(self, config: Any, **options: Any) -> None:
            made.append(options)

        def start(self) -> None:
            raise RuntimeError("not really")

        def stop(self) -> None:
            pass

    monkeypatch.setattr(command, "Simulator", Recorder)
    monkeypatch.setattr(command, "_configure_logging", lambda quiet: None)  # leave logging be
    assert command.main(["--port", "0", "--no-camera", "--quiet"]) == 1
    assert command.main(["--port", "0", "--camera-port", "7000", "--camera-fps", "4"]) == 1
    assert made[0]["camera"] is False
    assert (made[1]["camera"], made[1]["camera_port"], made[1]["camera_interval"]) == (
        True,
        7000,
        0.25,
    )
    assert command.main(["--port", "0", "--camera-fps", "0"]) == 2
    assert len(made) == 2
