"""RTSPStream against a real RTSP server nobody here wrote: GStreamer's gst-rtsp-server over TLS.

``gst_rtsp.py`` runs under Debian's python3 (python3-gi) and serves
``videotestsrc`` as RTP/JPEG at 640x360, 5 fps, with TLS (a leaf of the
simulator's CA whose CN is a serial) and Basic authentication. The client
must check the certificate (CA file, CN = serial) before FFmpeg dials,
decode frames of the server's size, and tell a refused code from the rest.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bambulab.errors import CameraAuthenticationError, CertificateError
from bambulab.local.rtsp import AsyncRTSPStream, RTSPStream
from bambulab.protocol.camera import is_jpeg
from bambulab.sim.certs import SimCertificates
from tests.binaries import BINARIES

pytestmark = [pytest.mark.timeout(60), pytest.mark.needs("gst-rtsp-server")]

SERIAL = "01S00C000000001"
CODE = "12345678"
SCRIPT = Path(__file__).with_name("gst_rtsp.py")


class Gst:
    """The gst-rtsp-server subprocess and what the tests need of it."""

    def __init__(self, certs: SimCertificates, process: subprocess.Popen[str], port: int) -> None:
        self.certs = certs
        self.process = process
        self.port = port

    @property
    def url(self) -> str:
        return f"rtsps://127.0.0.1:{self.port}/streaming/live/1"


@pytest.fixture(scope="module")
def gst() -> Iterator[Gst]:
    python = BINARIES["gst-rtsp-server"].path() or "/usr/bin/python3"
    certs = SimCertificates()
    leaf = certs.printer(SERIAL)
    process = subprocess.Popen(
        [python, str(SCRIPT), "--code", CODE, "--cert", str(leaf.cert_file),
         "--key", str(leaf.key_file)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sys.stderr, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "PORT <n>" once it listens
        assert line.startswith("PORT "), f"gst_rtsp.py did not start: {line!r}"
        yield Gst(certs, process, int(line.split()[1]))
    finally:
        if process.stdin is not None:
            process.stdin.close()  # the script stops when its stdin closes
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        certs.cleanup()


def test_frames_from_gstreamer_over_tls(gst: Gst) -> None:
    with RTSPStream(
        gst.url, CODE, SERIAL, ca_file=gst.certs.ca_file, timeout=5.0, stall_timeout=5.0
    ) as camera:
        frames = list(camera.frames(3))
    assert [(f.width, f.height) for f in frames] == [(640, 360)] * 3
    assert all(is_jpeg(f.jpeg) for f in frames)
    assert [f.index for f in frames] == [1, 2, 3]


def test_async_frames_from_gstreamer(gst: Gst) -> None:
    async def look() -> int:
        async with AsyncRTSPStream(gst.url, CODE, SERIAL, ca_file=gst.certs.ca_file) as camera:
            return (await camera.snapshot()).width

    assert asyncio.run(look()) == 640


def test_gstreamer_refuses_a_wrong_code(gst: Gst) -> None:
    with (
        pytest.raises(CameraAuthenticationError) as caught,
        RTSPStream(gst.url, "87654321", SERIAL, ca_file=gst.certs.ca_file) as camera,
    ):
        camera.snapshot()
    assert "87654321" not in str(caught.value)


def test_a_certificate_for_another_serial_is_refused(gst: Gst) -> None:
    with (
        pytest.raises(CertificateError, match="01S00C000000002"),
        RTSPStream(gst.url, CODE, "01S00C000000002", ca_file=gst.certs.ca_file) as camera,
    ):
        camera.snapshot()
