"""The simulated RTSPS cameras (X1/P2/H2), read by FFmpeg, by hand and by RTSPStream.

FFmpeg's own tools (ffprobe, ffmpeg) decoding the stream is the test of the
server's fidelity: RTSP over TLS, Digest auth, SDP, interleaved RTP/JPEG.
A raw TLS socket checks the answers FFmpeg never provokes (461 for UDP, 404,
the two challenges). Then the library's client, both faces, against the
simulator: frames, snapshot, a refused code, liveview off, a cut connection,
a stall, the wrong certificate. The access code never appears in a message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bambulab.errors import (
    CameraAuthenticationError,
    CameraError,
    CameraStallError,
    CameraUnavailableError,
    CertificateError,
    ConfigurationError,
)
from bambulab.local.rtsp import AsyncRTSPStream, RTSPStream
from bambulab.protocol.camera import is_jpeg, with_credentials
from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from bambulab.sim.printer import report
from tests.binaries import needs
from tests.conftest import unlimited

pytestmark = pytest.mark.timeout(60)

FPS = 20.0
FLEET = ["x1c", "h2d", "p1s"]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = unlimited().with_demo_fleet(parse_fleet(FLEET))
    with Simulator(
        config, time_scale=60, tick_interval=0.2, camera_interval=0.5, rtsp_fps=FPS
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def no_leftover_faults(sim: Simulator) -> Iterator[None]:
    """Every test ends with cameras listening, unstalled, the right certificate, H2 liveview off."""
    yield
    sim.camera_clear_faults()
    assert sim.camera is not None and sim.certs is not None
    for serial in (x1c(sim), h2d(sim)):
        sim.camera.set_certificate(serial, sim.certs.printer(serial))
        sim.camera_drop(serial)
    sim.set_liveview(h2d(sim), False)


def serial_of(sim: Simulator, product: str) -> str:
    return next(s for s, p in sim.printers.items() if p.profile.product == product)


def x1c(sim: Simulator) -> str:
    return serial_of(sim, "X1 Carbon")


def h2d(sim: Simulator) -> str:
    return serial_of(sim, "H2D")


def code(sim: Simulator, serial: str) -> str:
    return str(sim.printers[serial].access_code)


def reported_url(sim: Simulator, serial: str) -> str:
    """``ipcam.rtsp_url`` of the printer's report, as its MQTT push_status carries it."""
    return str(sim.with_printer(serial, lambda p: report.full_body(p.state)["ipcam"]["rtsp_url"]))


def hide(text: str, secret: str) -> str:
    return text.replace(secret, "********")


def stream(sim: Simulator, serial: str, **options: Any) -> RTSPStream:
    options.setdefault("ca_file", sim.ca_file)
    options.setdefault("timeout", 5.0)
    options.setdefault("stall_timeout", 5.0)
    options.setdefault("backoff", 0.05)
    return RTSPStream(sim.rtsp_url(serial), code(sim, serial), serial, **options)


# --- FFmpeg's tools --------------------------------------------------------------------------


@needs("ffprobe")
def test_ffprobe_opens_the_simulated_stream(sim: Simulator) -> None:
    serial = x1c(sim)
    secret = code(sim, serial)
    assert reported_url(sim, serial) == sim.rtsp_url(serial)  # the report names the real port
    url = with_credentials(sim.rtsp_url(serial), secret)
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries",
         "stream=codec_name,codec_type,width,height", "-of", "json", url],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, hide(result.stderr, secret)
    streams = json.loads(result.stdout)["streams"]
    assert [(s["codec_type"], s["codec_name"], s["width"], s["height"]) for s in streams] == [
        ("video", "mjpeg", 1280, 720)
    ]


@needs("ffmpeg")
def test_ffmpeg_saves_a_frame(sim: Simulator, tmp_path: Path) -> None:
    from PIL import Image

    serial = x1c(sim)
    secret = code(sim, serial)
    out = tmp_path / "out.jpg"
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-rtsp_transport", "tcp", "-i",
         with_credentials(sim.rtsp_url(serial), secret), "-frames:v", "1", "-y", str(out)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, hide(result.stderr, secret)
    with Image.open(out) as picture:
        assert picture.size == (1280, 720)
        # the status card is mostly the printer's dark background, not a grey or black void
        assert len(set(picture.convert("L").resize((32, 18)).tobytes())) > 3


@needs("ffprobe")
def test_ffprobe_with_a_wrong_password_is_refused(sim: Simulator) -> None:
    serial = x1c(sim)
    wrong = "00000000" if code(sim, serial) != "00000000" else "11111111"
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", "tcp",
         with_credentials(sim.rtsp_url(serial), wrong)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert "401" in result.stderr


# --- by hand ---------------------------------------------------------------------------------


class Raw:
    """One TLS connection to the simulated camera, speaking RTSP by hand."""

    def __init__(self, sim: Simulator, serial: str, rcvbuf: int | None = None) -> None:
        assert sim.ca_file is not None
        context = ssl.create_default_context(cafile=sim.ca_file)
        context.check_hostname = False
        port = int(sim.rtsp_url(serial).rsplit(":", 1)[1].split("/")[0])
        self.base = sim.rtsp_url(serial)
        self.basic = "Basic " + base64.b64encode(f"bblp:{code(sim, serial)}".encode()).decode()
        plain = socket.socket()
        if rcvbuf:
            plain.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        plain.settimeout(5)
        plain.connect(("127.0.0.1", port))
        self.sock = context.wrap_socket(plain)
        self.cseq = 0

    def play(self) -> None:
        """DESCRIBE, SETUP, PLAY: RTP follows."""
        assert self.request("DESCRIBE", self.base, Authorization=self.basic)[0] == 200
        _, answer = self.request(
            "SETUP", self.base + "/trackID=0", Authorization=self.basic,
            Transport="RTP/AVP/TCP;unicast;interleaved=0-1",
        )  # fmt: skip
        session = answer["session"][0].split(";")[0]
        assert self.request("PLAY", self.base, Authorization=self.basic, Session=session)[0] == 200

    def ends(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection (reading what is left) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except (ConnectionError, ssl.SSLError):
            return True
        except TimeoutError:
            return False
        return True

    def request(self, method: str, uri: str, **headers: str) -> tuple[int, dict[str, list[str]]]:
        self.cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self.cseq}"]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            assert chunk, "the server closed the connection"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status, *fields = head.decode().split("\r\n")
        answer: dict[str, list[str]] = {}
        for field in fields:
            name, _, value = field.partition(":")
            answer.setdefault(name.strip().lower(), []).append(value.strip())
        assert answer["cseq"] == [str(self.cseq)]
        length = int(answer.get("content-length", ["0"])[0])
        while len(rest) < length:
            rest += self.sock.recv(4096)
        answer["body"] = [rest[:length].decode()]
        return int(status.split()[1]), answer

    def close(self) -> None:
        self.sock.close()


def test_rtsp_answers_by_hand(sim: Simulator) -> None:
    serial = x1c(sim)
    raw = Raw(sim, serial)
    basic = "Basic " + base64.b64encode(f"bblp:{code(sim, serial)}".encode()).decode()
    try:
        status, answer = raw.request("OPTIONS", raw.base)  # no credentials needed
        assert status == 200 and "DESCRIBE" in answer["public"][0]
        status, answer = raw.request("DESCRIBE", raw.base)
        assert status == 401
        schemes = sorted(value.split()[0] for value in answer["www-authenticate"])
        assert schemes == ["Basic", "Digest"]
        wrong = "Basic " + base64.b64encode(b"bblp:00000000").decode()
        assert raw.request("DESCRIBE", raw.base, Authorization=wrong)[0] == 401
        status, answer = raw.request("DESCRIBE", raw.base, Authorization=basic)
        assert status == 200 and answer["content-type"] == ["application/sdp"]
        sdp = answer["body"][0]
        assert "m=video 0 RTP/AVP 26" in sdp and "a=control:trackID=0" in sdp
        other = raw.base.replace("/streaming/live/1", "/streaming/live/2")
        assert raw.request("DESCRIBE", other, Authorization=basic)[0] == 404
        track = raw.base + "/trackID=0"
        udp = "RTP/AVP;unicast;client_port=5000-5001"
        assert raw.request("SETUP", track, Authorization=basic, Transport=udp)[0] == 461
        tcp = "RTP/AVP/TCP;unicast;interleaved=0-1"
        status, answer = raw.request("SETUP", track, Authorization=basic, Transport=tcp)
        assert status == 200 and "interleaved=0-1" in answer["transport"][0]
        session = answer["session"][0].split(";")[0]
        assert raw.request("PLAY", raw.base, Authorization=basic, Session="nope")[0] == 454
        assert raw.request("PLAY", raw.base, Authorization=basic, Session=session)[0] == 200
        # then interleaved RTP: "$", channel 0, length, version 2, payload type 26
        head = b""
        while len(head) < 6:
            head += raw.sock.recv(6 - len(head))
        assert head[:2] == b"$\x00" and head[4] == 0x80 and head[5] & 0x7F == 26
    finally:
        raw.close()


def test_limits_on_what_a_client_sends(sim: Simulator) -> None:
    serial = x1c(sim)
    assert sim.camera is not None
    endpoint: Any = sim.camera.endpoints[serial]
    long_line = Raw(sim, serial)
    try:
        long_line.sock.sendall(b"OPTIONS " + b"a" * 10_000 + b" RTSP/1.0\r\n")
        assert long_line.ends()  # closed, no answer to a 10 kB request line
    finally:
        long_line.close()
    kept = endpoint.request_timeout
    endpoint.request_timeout = 0.3
    silent = Raw(sim, serial)
    try:
        silent.sock.sendall(b"OPTIONS rtsp://x RTSP/1.0\r\nCSeq: 1\r\n")  # never finished
        assert silent.ends(timeout=3.0)
    finally:
        endpoint.request_timeout = kept
        silent.close()


def test_viewers_over_the_limit_are_refused_453(sim: Simulator) -> None:
    serial = x1c(sim)
    assert sim.camera is not None
    players = [Raw(sim, serial) for _ in range(sim.camera.max_clients)]
    extra = Raw(sim, serial)
    try:
        for player in players:
            player.play()
        assert extra.request("DESCRIBE", extra.base, Authorization=extra.basic)[0] == 200
        _, answer = extra.request(
            "SETUP", extra.base + "/trackID=0", Authorization=extra.basic,
            Transport="RTP/AVP/TCP;unicast;interleaved=0-1",
        )  # fmt: skip
        session = answer["session"][0].split(";")[0]
        status, _ = extra.request("PLAY", extra.base, Authorization=extra.basic, Session=session)
        assert status == 453
        assert sim.camera_connections(serial) == sim.camera.max_clients
    finally:
        for raw in [*players, extra]:
            raw.close()


def test_a_viewer_that_stops_reading_is_cut(sim: Simulator) -> None:
    serial = x1c(sim)
    assert sim.camera is not None
    limit = sim.camera.max_backlog
    sim.camera.max_backlog = 100_000  # a few frames, so the test does not wait for megabytes
    stuck = Raw(sim, serial, rcvbuf=4096)
    try:
        with stream(sim, serial) as reading:
            stuck.play()
            reading.next_frame()
            deadline = time.monotonic() + 10
            while sim.camera_connections(serial) > 1:
                assert time.monotonic() < deadline, "the stuck viewer was not cut"
                reading.next_frame()  # the one that reads keeps getting frames
            assert reading.connects == 1
        assert stuck.ends()
    finally:
        sim.camera.max_backlog = limit
        stuck.close()


# --- RTSPStream ------------------------------------------------------------------------------


def test_stream_gives_frames_and_snapshots(sim: Simulator) -> None:
    with stream(sim, x1c(sim)) as camera:
        first = camera.snapshot()
        frames = list(camera.frames(3))
        assert camera.connects == 1
    for frame in [first, *frames]:
        assert is_jpeg(frame.jpeg) and (frame.width, frame.height) == (1280, 720)
        assert frame.serial == x1c(sim)
    indexes = [f.index for f in [first, *frames]]
    assert indexes == sorted(indexes) and len(set(indexes)) == 4
    assert code(sim, x1c(sim)) not in repr(camera)


def test_async_stream_gives_frames_and_snapshots(sim: Simulator) -> None:
    serial = x1c(sim)

    async def watch() -> tuple[list[Any], int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        # the loop stays free while the stream opens and frames are awaited
        ticker = asyncio.create_task(tick())
        async with AsyncRTSPStream(
            sim.rtsp_url(serial), code(sim, serial), serial, ca_file=sim.ca_file, timeout=5.0
        ) as camera:
            got = [await camera.snapshot()]
            async for frame in camera.frames(2):
                got.append(frame)
            got.append(await camera.next_frame())
        ticker.cancel()
        return got, ticks

    frames, ticks = asyncio.run(watch())
    assert ticks > 10
    assert [f.width for f in frames] == [1280] * 4
    assert all(is_jpeg(f.jpeg) for f in frames)


def snapshot_of(face: str, url: str, access_code: str, serial: str, ca_file: Any) -> Any:
    """One snapshot through the blocking or the async face."""
    if face == "sync":
        with RTSPStream(url, access_code, serial, ca_file=ca_file, timeout=5.0) as camera:
            return camera.snapshot()

    async def look() -> Any:
        async with AsyncRTSPStream(url, access_code, serial, ca_file=ca_file) as camera:
            return await camera.snapshot()

    return asyncio.run(look())


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_wrong_code_is_an_authentication_error(sim: Simulator, face: str) -> None:
    serial = x1c(sim)
    wrong = "00000000" if code(sim, serial) != "00000000" else "11111111"
    with pytest.raises(CameraAuthenticationError) as caught:
        snapshot_of(face, sim.rtsp_url(serial), wrong, serial, sim.ca_file)
    assert wrong not in str(caught.value) and caught.value.serial == serial


def test_liveview_off_is_unavailable_until_switched_on(sim: Simulator) -> None:
    serial = h2d(sim)
    assert reported_url(sim, serial) == "disable"  # the H2 family out of the box
    with pytest.raises(CameraUnavailableError, match="LAN Only Liveview"):
        RTSPStream(reported_url(sim, serial), code(sim, serial), serial)
    sim.set_liveview(serial, True)
    url = reported_url(sim, serial)
    assert url == sim.rtsp_url(serial)
    with RTSPStream(url, code(sim, serial), serial, ca_file=sim.ca_file) as camera:
        assert camera.snapshot().height == 720


def test_a_cut_connection_is_reopened(sim: Simulator) -> None:
    serial = x1c(sim)
    with stream(sim, serial) as camera:
        before = camera.next_frame()
        assert sim.camera_drop(serial) == 1
        after = [camera.next_frame() for _ in range(3)]
        assert camera.connects == 2
    assert [f.index for f in after] == sorted(f.index for f in after)
    assert after[0].index > before.index


def read_many(camera: RTSPStream, count: int) -> None:
    for _ in range(count):
        camera.next_frame()


def test_without_reconnect_a_cut_connection_ends_the_stream(sim: Simulator) -> None:
    serial = x1c(sim)
    with stream(sim, serial, reconnect=False) as camera:
        camera.next_frame()
        sim.camera_drop(serial)
        with pytest.raises(CameraError) as caught:
            read_many(camera, 3 * int(FPS))
    assert not isinstance(caught.value, CameraStallError)  # the end, seen at once


def test_a_stall_reconnects_then_raises_camera_stall_error(sim: Simulator) -> None:
    serial = x1c(sim)
    with stream(sim, serial, stall_timeout=0.6, timeout=1.0, max_reconnects=1) as camera:
        camera.next_frame()
        sim.camera_stall(serial, 30)
        began = time.monotonic()
        # the last attempt may end in FFmpeg's read error rather than its timeout
        with pytest.raises(CameraError, match=r"gave up after 1 reconnect"):
            read_many(camera, int(FPS))
        # like the JPEG stream: the stall was retried before it ended the wait
        assert time.monotonic() - began >= 1.1


def test_an_unreachable_camera_is_one_clear_error(sim: Simulator) -> None:
    serial = x1c(sim)
    sim.camera_refuse(serial)
    with pytest.raises(CameraError, match=r"cannot reach camera rtsps://127\.0\.0\.1") as caught:
        stream(sim, serial).snapshot()
    assert str(caught.value).count("\n") == 0 and caught.value.serial == serial


def test_reconnects_give_up_after_max_reconnects(sim: Simulator) -> None:
    serial = x1c(sim)
    with stream(sim, serial, max_reconnects=2) as camera:
        camera.next_frame()
        sim.camera_refuse(serial)  # cuts the stream and refuses the next connections
        with pytest.raises(CameraError, match="gave up after 2 reconnects"):
            read_many(camera, 3 * int(FPS))


def test_without_pyav_the_error_names_the_extra(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # import av fails
    with pytest.raises(ConfigurationError, match=r"pip install 'bambulab\[camera\]'"):
        stream(sim, x1c(sim)).snapshot()


def test_the_wrong_certificate_is_refused(sim: Simulator) -> None:
    serial = x1c(sim)
    assert sim.camera is not None and sim.certs is not None
    sim.camera.set_certificate(serial, sim.certs.wrong_cn(serial))
    with pytest.raises(CertificateError, match=serial), stream(sim, serial) as camera:
        camera.snapshot()


def test_open_camera_picks_rtsps_for_an_x1c(sim: Simulator) -> None:
    from bambulab import RTSPStream as Exported
    from bambulab.local.camera import open_async_camera, open_camera

    serial = x1c(sim)
    options: dict[str, Any] = {"ca_file": sim.ca_file, "timeout": 5.0}
    url = reported_url(sim, serial)
    with open_camera("127.0.0.1", code(sim, serial), serial, rtsp_url=url, **options) as camera:
        assert isinstance(camera, Exported)
        assert camera.snapshot().width == 1280

    async def look() -> int:
        camera = open_async_camera("127.0.0.1", code(sim, serial), serial, rtsp_url=url, **options)
        try:
            return (await camera.snapshot()).height
        finally:
            await camera.aclose()

    assert asyncio.run(look()) == 720


def test_exports_and_urls(sim: Simulator) -> None:
    lines = "\n".join(sim.export_lines())
    for index, endpoint in enumerate(sim.endpoints(), 1):
        if endpoint.serial in (x1c(sim), h2d(sim)):
            assert f"BAMBU_PRINTER_{index}_RTSP_URL={sim.rtsp_url(endpoint.serial)}" in lines
    assert code(sim, x1c(sim)) not in sim.rtsp_url(x1c(sim))
    with pytest.raises(ValueError, match="RTSPS"):
        sim.rtsp_url(next(s for s, p in sim.printers.items() if not p.profile.rtsp))
