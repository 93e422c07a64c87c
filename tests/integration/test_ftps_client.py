"""The FTPS client against the simulated printers' servers, through both faces, on loopback.

The simulated servers demand what the printers' vsftpd demands (implicit TLS,
``PROT P``, TLS session reuse): every operation, the X1's and the P1's
listing forms read as the same entries, a full card, a connection cut
mid-upload (nothing left under the target's name), a wrong access code (one
clear line).
"""

from __future__ import annotations

import hashlib
import io
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bambulab.errors import (
    BambuError,
    FTPAuthenticationError,
    RemoteFileNotFoundError,
    RequestTimeoutError,
    StorageFullError,
    TransferInterruptedError,
)
from bambulab.local import AsyncLocalFTPClient, LocalFTPClient
from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from tests.conftest import LoopThread, unlimited

pytestmark = pytest.mark.timeout(120)

FLEET = ["p1s", "x1c"]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = unlimited().with_demo_fleet(parse_fleet(FLEET))
    with Simulator(config, time_scale=60, tick_interval=0.2) as simulator:
        yield simulator


def serial_of(sim: Simulator, prefix: str) -> str:
    return next(e.serial for e in sim.endpoints() if e.serial.startswith(prefix))


class Card:
    """One face of the client, called the same way (the async one on its own loop)."""

    def __init__(self, client: LocalFTPClient | AsyncLocalFTPClient, loop: LoopThread | None):
        self.client = client
        self.loop = loop

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)
        if self.loop is None:
            return method  # type: ignore[no-any-return]
        loop = self.loop
        return lambda *a, **kw: loop.run(method(*a, **kw))

    def close(self) -> None:
        if isinstance(self.client, AsyncLocalFTPClient):
            assert self.loop is not None
            self.loop.run(self.client.aclose())
            self.loop.close()
        else:
            self.client.close()


def open_card(sim: Simulator, face: str, serial: str, **kw: Any) -> Card:
    host, port = sim.ftps_address(serial)
    code = kw.pop("code", None) or sim.printers[serial].access_code
    kw.setdefault("ca_file", sim.ca_file)
    kw.setdefault("timeout", 10.0)
    if face == "sync":
        return Card(LocalFTPClient(host, code, serial, port=port, **kw), None)
    return Card(AsyncLocalFTPClient(host, code, serial, port=port, **kw), LoopThread())


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def p1s(sim: Simulator, face: str) -> Iterator[Card]:
    card = open_card(sim, face, serial_of(sim, "01P"))
    yield card
    card.close()


def card_dir(sim: Simulator, serial: str) -> Path:
    return Path(sim.with_printer(serial, lambda p: str(p.card.root)))


def test_every_operation(sim: Simulator, p1s: Card, tmp_path: Path) -> None:
    serial = serial_of(sim, "01P")
    root = card_dir(sim, serial)
    names = {e.name for e in p1s.list("/")}
    assert {"cache", "timelapse", "image", "logger"} <= names

    data = secrets.token_bytes(2 * (1 << 20) + 99)
    source = tmp_path / "cube.3mf"
    source.write_bytes(data)
    seen: list[int] = []
    assert p1s.upload(source, "/cache/cube.3mf", progress=lambda d, t: seen.append(d)) == len(data)
    assert (root / "cache" / "cube.3mf").read_bytes() == data
    assert sorted(p.name for p in (root / "cache").iterdir() if "cube" in p.name) == ["cube.3mf"]
    if p1s.loop is None:
        assert seen[-1] == len(data)
    assert p1s.size("/cache/cube.3mf") == len(data)
    assert p1s.exists("/cache/cube.3mf") and not p1s.exists("/cache/nothing.3mf")

    entry = next(e for e in p1s.list("/cache") if e.name == "cube.3mf")
    assert (entry.path, entry.size, entry.is_dir) == ("/cache/cube.3mf", len(data), False)

    out = tmp_path / "out.3mf"
    assert p1s.download("/cache/cube.3mf", out) == len(data)
    assert hashlib.md5(out.read_bytes()).hexdigest() == hashlib.md5(data).hexdigest()

    p1s.mkdir("/jobs")
    p1s.rename("/cache/cube.3mf", "/jobs/cube.3mf")
    assert (root / "jobs" / "cube.3mf").exists() and not (root / "cache" / "cube.3mf").exists()
    p1s.delete("/jobs/cube.3mf")
    p1s.rmdir("/jobs")
    with pytest.raises(RemoteFileNotFoundError):
        p1s.download("/jobs/cube.3mf", tmp_path / "gone.3mf")
    assert not list(tmp_path.glob("*gone*"))


def test_x1_and_p1_listing_forms_give_the_same_entries(sim: Simulator, face: str) -> None:
    x1, p1 = serial_of(sim, "00M"), serial_of(sim, "01P")
    found: dict[str, list[tuple[str, str]]] = {}
    for serial in (x1, p1):
        card = open_card(sim, face, serial)
        try:
            card.upload(io.BytesIO(b"G28\n"), "/cache/form.gcode")
            found[serial] = sorted((e.name, e.path) for e in card.names("/cache"))
            listed = sorted((e.name, e.path) for e in card.list("/cache"))
            assert found[serial] == listed
            card.delete("/cache/form.gcode")
        finally:
            card.close()
    assert ("form.gcode", "/cache/form.gcode") in found[x1]
    assert found[x1] == found[p1]


def test_full_card_is_a_clear_error_and_leaves_nothing(
    sim: Simulator, face: str, tmp_path: Path
) -> None:
    serial = serial_of(sim, "01P")
    root = card_dir(sim, serial)
    used = sim.with_printer(serial, lambda p: p.card.used_bytes())
    old = sim.with_printer(serial, lambda p: p.card.capacity)
    sim.with_printer(serial, lambda p: setattr(p.card, "capacity", used + 1_000_000))
    source = tmp_path / "big.3mf"
    source.write_bytes(b"\0" * 3_000_000)
    card = open_card(sim, face, serial)
    try:
        with pytest.raises(StorageFullError) as caught:
            card.upload(source, "/cache/big.3mf")
        assert caught.value.code in (452, 552)
        assert "full" in str(caught.value) and "\n" not in str(caught.value)
        assert not list((root / "cache").glob("*big*"))
        card.upload(io.BytesIO(b"small"), "/cache/small.gcode")  # still usable after
        card.delete("/cache/small.gcode")
    finally:
        card.close()
        sim.with_printer(serial, lambda p: setattr(p.card, "capacity", old))


def test_connection_cut_mid_upload_leaves_nothing_under_the_name(
    sim: Simulator, face: str, tmp_path: Path
) -> None:
    serial = serial_of(sim, "01P")
    root = card_dir(sim, serial)
    (root / "cache" / "keep.3mf").write_bytes(b"the old file")
    source = tmp_path / "keep.3mf"
    source.write_bytes(secrets.token_bytes(4 << 20))
    assert sim.ftps is not None
    sim.ftps.drop_after(serial, 1 << 20)
    card = open_card(sim, face, serial)
    try:
        with pytest.raises(BambuError) as caught:
            card.upload(source, "/cache/keep.3mf")
        assert isinstance(caught.value, TransferInterruptedError)
        assert "\n" not in str(caught.value)
    finally:
        card.close()
    # The old file is intact and no partial file sits beside it.
    assert (root / "cache" / "keep.3mf").read_bytes() == b"the old file"
    assert sorted(p.name for p in (root / "cache").iterdir() if "keep" in p.name) == ["keep.3mf"]
    (root / "cache" / "keep.3mf").unlink()


def test_connection_cut_mid_download_keeps_no_partial_file(
    sim: Simulator, face: str, tmp_path: Path
) -> None:
    serial = serial_of(sim, "01P")
    root = card_dir(sim, serial)
    (root / "cache" / "long.3mf").write_bytes(secrets.token_bytes(4 << 20))
    (tmp_path / "long.3mf").write_bytes(b"the old local copy")
    assert sim.ftps is not None
    sim.ftps.drop_after(serial, 1 << 20)
    card = open_card(sim, face, serial)
    try:
        with pytest.raises(TransferInterruptedError) as caught:
            card.download("/cache/long.3mf", tmp_path / "long.3mf")
        assert "long.3mf" in str(caught.value) and "\n" not in str(caught.value)
    finally:
        card.close()
        (root / "cache" / "long.3mf").unlink()
    # the local file is what it was; no partial file beside it
    assert (tmp_path / "long.3mf").read_bytes() == b"the old local copy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.3mf"]


def test_wrong_access_code_is_one_clear_line(sim: Simulator, face: str) -> None:
    serial = serial_of(sim, "01P")
    card = open_card(sim, face, serial, code="00000000")
    try:
        with pytest.raises(FTPAuthenticationError) as caught:
            card.list("/")
        text = str(caught.value)
        assert "\n" not in text and "access code" in text and "00000000" not in text
        assert sim.printers[serial].access_code not in text
    finally:
        card.close()


# --- hostile or silent servers: every read has a deadline, every line a cap -------------------

HOSTILE_SERIAL = "01P00A000000009"


class HostileServer:
    """A TLS listener on loopback that misbehaves in one chosen way, one connection at a time."""

    def __init__(self, directory: Path, behaviour: str) -> None:
        import socket
        import ssl
        import threading

        from cryptography.hazmat.primitives import serialization

        from bambulab.sim.certs import CertificateAuthority

        authority = CertificateAuthority.generate()
        key, cert = authority.issue(HOSTILE_SERIAL)
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(authority.certificate_pem())
        chain = directory / "server.pem"
        chain.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(chain)
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import contextlib
        import ssl

        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError, ssl.SSLError):
                self._one(raw)
            raw.close()

    def _one(self, raw: Any) -> None:
        if self.behaviour == "no-handshake":
            self.stop.wait(5)
            return
        raw.settimeout(5)
        tls = self.context.wrap_socket(raw, server_side=True)
        if self.behaviour == "silent":
            self.stop.wait(5)
        elif self.behaviour == "endless-line":
            chunk = b"2" * 65536
            while not self.stop.is_set():
                tls.sendall(chunk)
        elif self.behaviour == "garbage":
            tls.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            self.stop.wait(5)

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(5)


@pytest.mark.parametrize(
    ("behaviour", "error", "words"),
    [
        ("silent", "RequestTimeoutError", "did not answer"),
        ("no-handshake", "RequestTimeoutError", "handshake"),
        ("endless-line", "ProtocolError", "longer than the limit"),
        ("garbage", "ProtocolError", "not an FTP reply"),
    ],
)
def test_hostile_servers_give_one_clear_line_in_time(
    tmp_path: Path, behaviour: str, error: str, words: str
) -> None:
    import time

    server = HostileServer(tmp_path, behaviour)
    try:
        client = LocalFTPClient(
            "127.0.0.1",
            "12345678",
            HOSTILE_SERIAL,
            port=server.port,
            ca_file=server.ca_file,
            timeout=1.0,
        )
        started = time.monotonic()
        with pytest.raises(BambuError) as caught:
            client.connect()
        assert time.monotonic() - started < 4
        assert type(caught.value).__name__ == error, caught.value
        assert words in str(caught.value) and "\n" not in str(caught.value)
        assert "12345678" not in str(caught.value)
    finally:
        server.close()


def test_a_stalled_printer_times_out_mid_session(sim: Simulator, face: str) -> None:
    serial = serial_of(sim, "01P")
    card = open_card(sim, face, serial, timeout=1.0)
    try:
        card.list("/")
        assert sim.ftps is not None
        sim.ftps.stall(serial, 3.0)
        with pytest.raises(RequestTimeoutError):
            card.list("/cache")
    finally:
        card.close()
    import time

    time.sleep(2.5)  # let the stall pass for the next test


def test_cancelling_an_async_upload_stops_it_and_leaves_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    import asyncio

    serial = serial_of(sim, "01P")
    root = card_dir(sim, serial)
    source = tmp_path / "huge.bin"
    source.write_bytes(secrets.token_bytes(96 << 20))
    host, port = sim.ftps_address(serial)

    async def main() -> list[str]:
        async with AsyncLocalFTPClient(
            host, sim.printers[serial].access_code, serial, port=port, ca_file=sim.ca_file
        ) as client:
            started = asyncio.Event()
            task = asyncio.create_task(
                client.upload(source, "/cache/huge.bin", progress=lambda d, t: started.set())
            )
            await asyncio.wait_for(started.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # queued behind the cancelled call on the same worker: runs once it stopped
            return [e.name for e in await client.list("/cache")]

    names = asyncio.run(main())
    assert not any("huge" in n for n in names)
    assert not any("huge" in p.name for p in (root / "cache").iterdir())


def test_one_pin_serves_the_broker_and_the_card(sim: Simulator, tmp_path: Path) -> None:
    """The printer's certificate pinned by the LAN MQTT connection is the one FTPS checks."""
    from bambulab import BambuMQTT
    from bambulab.errors import CertificatePinMismatchError
    from bambulab.mqtt.tls import PinStore

    serial = serial_of(sim, "01P")
    endpoint = next(e for e in sim.endpoints() if e.serial == serial)
    assert endpoint.host is not None and endpoint.port is not None
    pins = tmp_path / "pins.json"
    mqtt = BambuMQTT.lan(
        endpoint.host, serial, endpoint.access_code, port=endpoint.port, pin_file=pins
    )
    mqtt.connect()
    mqtt.disconnect()
    pinned = PinStore(pins).get(serial)
    assert pinned
    card = open_card(sim, "sync", serial, ca_file=None, pin_file=pins)
    try:
        assert card.list("/")
    finally:
        card.close()
    assert PinStore(pins).get(serial) == pinned  # not pinned again
    # a pin that is not this printer's certificate refuses the card, naming both
    PinStore(pins).pin(serial, _foreign_pem())
    card = open_card(sim, "sync", serial, ca_file=None, pin_file=pins)
    try:
        with pytest.raises(CertificatePinMismatchError) as caught:
            card.list("/")
        assert "bambu pin forget" in str(caught.value)
    finally:
        card.close()


def _foreign_pem() -> str:
    from cryptography.hazmat.primitives import serialization

    from bambulab.sim.certs import CertificateAuthority

    _, cert = CertificateAuthority.generate().issue("01P00A000000077")
    return cert.public_bytes(serialization.Encoding.PEM).decode()
