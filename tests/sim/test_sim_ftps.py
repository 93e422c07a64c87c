"""The simulated printers' SD cards over implicit FTPS, as their vsftpd serves them.

Clients here are the standard library's ``ftplib`` with a small implicit-TLS
subclass (TLS at connect, data sockets resuming the control session, as
PROTOCOL.md §3 says a client must) and ``curl``, a client nobody here wrote.
Every test talks to a running :class:`~bambulab.sim.Simulator` over loopback.
"""

from __future__ import annotations

import contextlib
import ftplib
import io
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bambulab.sim import Simulator
from bambulab.sim.ftps import MAX_SESSIONS_PER_IP
from tests.binaries import needs
from tests.conftest import free_port_block
from tests.sim.simtools import SEED_DEVICE, UNLIMITED

pytestmark = pytest.mark.timeout(60)

P1P = SEED_DEVICE  # bare NLST names
X1C = "00M02A401924168"  # full NLST paths
P1S_SPARE = "01P09C470100201"  # idle, used for faults that cut or refuse
A1 = "03002C340510980"


class ImplicitFTPS(ftplib.FTP_TLS):
    """ftplib over implicit TLS: wrap at connect, resume the control session on data sockets."""

    def __init__(self, context: ssl.SSLContext, *, reuse: bool = True) -> None:
        super().__init__(context=context, timeout=10)
        self.reuse = reuse
        self.server_name: str | None = None

    def connect(  # type: ignore[override]
        self, host: str, port: int, timeout: float = 10, server_name: str | None = None
    ) -> str:
        self.host, self.port, self.timeout = host, port, timeout
        self.server_name = server_name
        raw = socket.create_connection((host, port), timeout)
        self.sock = self.context.wrap_socket(raw, server_hostname=server_name)
        self.af = self.sock.family
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            session = self.sock.session if self.reuse else None  # type: ignore[attr-defined]
            conn = self.context.wrap_socket(conn, server_hostname=self.server_name, session=session)
        return conn, size


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(UNLIMITED, tick_interval=0.5) as running:
        yield running


def context_for(sim: Simulator, *, tls13: bool = False) -> ssl.SSLContext:
    assert sim.ca_file is not None
    context = ssl.create_default_context(cafile=sim.ca_file)
    if not tls13:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


@pytest.fixture(scope="module")
def modern() -> Iterator[Simulator]:
    """Printers whose FTPS servers also speak TLS 1.3 (``ftps_tls13``)."""
    with Simulator(UNLIMITED, tick_interval=0.5, ftps_tls13=True) as running:
        yield running


@pytest.fixture
def ftp(sim: Simulator, modern: Simulator) -> Iterator[Callable[..., ImplicitFTPS]]:
    """``ftp(serial, login=True, prot=True, reuse=True, tls13=False)``: a connected client.

    ``tls13=True`` talks to the ``modern`` simulator with a client that allows
    TLS 1.3; every client is closed after the test.
    """
    made: list[ImplicitFTPS] = []

    def open_client(
        serial: str,
        *,
        login: bool = True,
        prot: bool = True,
        reuse: bool = True,
        tls13: bool = False,
    ) -> ImplicitFTPS:
        target = modern if tls13 else sim
        client = ImplicitFTPS(context_for(target, tls13=tls13), reuse=reuse)
        made.append(client)
        client.connect(*target.ftps_address(serial), server_name=serial)
        if login:
            client.login("bblp", target.printers[serial].access_code)
        if prot:
            client.prot_p()
        return client

    yield open_client
    for client in made:
        client.close()


def card_files(sim: Simulator, serial: str) -> list[str]:
    """The printer's own file list, read on its thread."""
    return sim.with_printer(serial, lambda printer: list(printer.sdcard_files))


def upload(client: ImplicitFTPS, name: str, data: bytes) -> str:
    return client.storbinary(f"STOR {name}", io.BytesIO(data), blocksize=1 << 16)


def download(client: ImplicitFTPS, name: str) -> bytes:
    sink = io.BytesIO()
    client.retrbinary(f"RETR {name}", sink.write)
    return sink.getvalue()


def receive(client: ImplicitFTPS, command: str) -> bytes:
    """What a data connection carries, without reading the final answer."""
    chunks: list[bytes] = []
    with client.transfercmd(command) as conn:
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def send(client: ImplicitFTPS, command: str, data: bytes) -> None:
    """Send ``data`` on a data connection, without reading the final answer."""
    with client.transfercmd(command) as conn:
        conn.sendall(data)


# --- the session ---------------------------------------------------------------------------


def test_files_round_trip_and_show_up_on_the_printer(
    sim: Simulator, ftp: Callable[..., ImplicitFTPS]
) -> None:
    client = ftp(P1P)
    data = os.urandom(300_000)
    assert upload(client, "/cache/part.gcode.3mf", data).startswith("226")
    assert "cache/part.gcode.3mf" in card_files(sim, P1P)
    assert download(client, "/cache/part.gcode.3mf") == data
    assert client.size("/cache/part.gcode.3mf") == len(data)
    assert client.mkd("/cache/jobs") == "/cache/jobs"
    client.rename("/cache/part.gcode.3mf", "/cache/jobs/renamed.3mf")
    assert "cache/jobs/renamed.3mf" in card_files(sim, P1P)
    assert client.nlst("/cache/jobs") == ["renamed.3mf"]
    client.delete("/cache/jobs/renamed.3mf")
    client.rmd("/cache/jobs")
    assert not any(name.startswith("cache/jobs") for name in card_files(sim, P1P))
    assert {"cache", "timelapse", "image", "logger"} <= set(client.nlst())


def test_banner_comes_after_the_tls_handshake(sim: Simulator) -> None:
    # A plaintext client waiting for a 220 (explicit FTPS, plain FTP) hears nothing.
    with (
        socket.create_connection(sim.ftps_address(P1P), timeout=0.5) as raw,
        pytest.raises(TimeoutError),
    ):
        raw.recv(100)
    context = context_for(sim)
    with (
        socket.create_connection(sim.ftps_address(P1P), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=P1P) as tls,
    ):
        assert tls.recv(100).startswith(b"220 ")


def test_certificate_is_the_printers_own(sim: Simulator, ftp: Callable[..., ImplicitFTPS]) -> None:
    client = ftp(X1C, login=False, prot=False)
    peer = client.sock.getpeercert()  # type: ignore[attr-defined]
    assert dict(item[0] for item in peer["subject"])["commonName"] == X1C
    # The same CA and CN check refuses another printer's certificate.
    with pytest.raises(ssl.SSLCertVerificationError):
        ftp(X1C, login=False, prot=False).connect(*sim.ftps_address(P1P), server_name=X1C)


def test_wrong_certificate_fault_applies_to_ftps(
    sim: Simulator, ftp: Callable[..., ImplicitFTPS]
) -> None:
    sim.use_wrong_certificate(P1S_SPARE)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            ftp(P1S_SPARE, login=False, prot=False)
    finally:
        sim.use_wrong_certificate(P1S_SPARE, False)
    assert ftp(P1S_SPARE).pwd() == "/"


def test_wrong_access_code_gets_530(sim: Simulator, ftp: Callable[..., ImplicitFTPS]) -> None:
    client = ftp(A1, login=False, prot=False)
    with pytest.raises(ftplib.error_perm, match=r"^530 "):
        client.login("bblp", "00000000")
    with pytest.raises(ftplib.error_perm, match=r"^530 "):
        client.login("root", sim.printers[A1].access_code)


def test_a_changed_access_code_applies_to_the_next_login(
    sim: Simulator, ftp: Callable[..., ImplicitFTPS]
) -> None:
    old = sim.printers[A1].access_code

    def set_code(code: str) -> None:
        sim.with_printer(A1, lambda printer: setattr(printer, "access_code", code))

    set_code("87654321")
    try:
        with pytest.raises(ftplib.error_perm, match=r"^530 "):
            ftp(A1, login=False, prot=False).login("bblp", old)
        assert ftp(A1).pwd() == "/"
    finally:
        set_code(old)


def test_clear_data_channels_are_refused(ftp: Callable[..., ImplicitFTPS]) -> None:
    unprotected = ftp(P1P, prot=False)
    with pytest.raises(ftplib.error_perm, match=r"^522 Data connections must be encrypted"):
        unprotected.nlst()
    clear = ftp(P1P, prot=False)
    assert clear.prot_c().startswith("200")
    with pytest.raises(ftplib.error_perm, match=r"^522 "):
        download(clear, "/Benchy.3mf")


@pytest.mark.parametrize("tls13", [False, True], ids=["tls1.2", "tls1.3"])
def test_a_data_channel_without_session_reuse_gets_522(
    sim: Simulator, ftp: Callable[..., ImplicitFTPS], tls13: bool
) -> None:
    client = ftp(X1C, reuse=False, tls13=tls13)
    # The server checks reuse after the data handshake and closes at once:
    # no listing byte may reach this client.
    try:
        received = receive(client, "LIST /")
    except (ssl.SSLError, OSError):
        received = b""
    assert received == b""
    with pytest.raises(
        ftplib.error_perm, match=r"^522 SSL connection failed: session reuse required"
    ):
        client.getresp()


def test_an_upload_without_session_reuse_leaves_nothing(
    sim: Simulator, ftp: Callable[..., ImplicitFTPS]
) -> None:
    client = ftp(X1C, reuse=False)
    with pytest.raises((ssl.SSLError, OSError)):
        send(client, "STOR /cache/no-reuse.3mf", b"x" * (4 << 20))
    with pytest.raises(ftplib.error_perm, match=r"^522 "):
        client.getresp()
    assert "cache/no-reuse.3mf" not in card_files(sim, X1C)


def test_tls12_by_default_tls13_as_an_option(sim: Simulator) -> None:
    # The default server caps at TLS 1.2 (PROTOCOL.md §3), whatever the client offers.
    context = context_for(sim, tls13=True)
    with (
        socket.create_connection(sim.ftps_address(P1P), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=P1P) as tls,
    ):
        assert tls.version() == "TLSv1.2"


def test_tls13_round_trip(ftp: Callable[..., ImplicitFTPS]) -> None:
    client = ftp(P1P, tls13=True)
    assert client.sock.version() == "TLSv1.3"  # type: ignore[attr-defined]
    data = os.urandom(200_000)
    upload(client, "/cache/t13.bin", data)
    assert download(client, "/cache/t13.bin") == data
    client.delete("/cache/t13.bin")


# --- listings ------------------------------------------------------------------------------


def test_nlst_full_paths_on_x1_bare_names_on_p1(ftp: Callable[..., ImplicitFTPS]) -> None:
    x1 = ftp(X1C)
    upload(x1, "/cache/x1.3mf", b"x")
    assert x1.nlst("/cache") == ["/cache/x1.3mf"]
    assert "/cache" in x1.nlst()
    p1 = ftp(P1P)
    upload(p1, "/cache/p1.3mf", b"p")
    assert "p1.3mf" in p1.nlst("/cache")
    assert all("/" not in name for name in p1.nlst("/cache"))
    x1.delete("/cache/x1.3mf")
    p1.delete("/cache/p1.3mf")


def test_list_is_vsftpds_ls_form(ftp: Callable[..., ImplicitFTPS]) -> None:
    client = ftp(P1P)
    upload(client, "/cache/listed.gcode", b"G28\n" * 10)
    lines: list[str] = []
    client.retrlines("LIST /cache", lines.append)
    client.delete("/cache/listed.gcode")
    form = re.compile(
        r"^-rw-r--r-- +1 root +root +40 [A-Z][a-z]{2} [0-3]\d (\d\d:\d\d| \d{4}) listed\.gcode$"
    )
    assert any(form.match(line) for line in lines), lines
    root: list[str] = []
    client.retrlines("LIST", root.append)
    assert any(line.startswith("d") and line.endswith(" cache") for line in root), root


def test_nothing_outside_the_card_is_reachable(
    sim: Simulator, ftp: Callable[..., ImplicitFTPS]
) -> None:
    client = ftp(P1P)
    client.cwd("..")
    assert client.pwd() == "/"
    assert set(client.nlst("/../..")) == set(client.nlst("/"))
    with pytest.raises(ftplib.error_perm, match=r"^550 "):
        download(client, "../../../../etc/hostname")
    card = sim.printers[P1P].card.root
    outside = card.parent / f"{card.name}-outside"
    outside.mkdir(exist_ok=True)
    try:
        (card / "escape").symlink_to(outside)
        with pytest.raises(ftplib.error_perm, match=r"^550 "):
            upload(client, "/escape/x.bin", b"x")
        assert not (outside / "x.bin").exists()
    finally:
        (card / "escape").unlink()
        outside.rmdir()


# --- faults --------------------------------------------------------------------------------


def test_a_full_card_refuses_or_aborts_and_keeps_no_partial_file(
    sim: Simulator, ftp: Callable[..., ImplicitFTPS]
) -> None:
    client = ftp(P1S_SPARE)
    sim.set_card_free(P1S_SPARE, 0)
    try:
        with pytest.raises(ftplib.error_perm, match=r"^552 "):
            upload(client, "/cache/full.3mf", b"x" * 10)
        sim.set_card_free(P1S_SPARE, 100_000)
        with pytest.raises((ftplib.error_temp, ssl.SSLError, OSError), match=r"452|EOF|reset|pipe"):
            upload(client, "/cache/too-big.3mf", os.urandom(2_000_000))
        # A client that lost the data connection mid-send reads the answer next.
        with contextlib.suppress(ftplib.Error, OSError, EOFError):
            client.getresp()
    finally:
        sim.set_card_free(P1S_SPARE, None)
    assert not any(name.startswith("cache/full") for name in card_files(sim, P1S_SPARE))
    assert "cache/too-big.3mf" not in card_files(sim, P1S_SPARE)
    assert upload(ftp(P1S_SPARE), "/cache/fits.3mf", b"ok").startswith("226")


def test_connections_cut_mid_upload_leave_no_partial_file(
    sim: Simulator, ftp: Callable[..., ImplicitFTPS]
) -> None:
    sim.ftps_drop_after(P1S_SPARE, 200_000)
    client = ftp(P1S_SPARE)
    with pytest.raises((ssl.SSLError, OSError, EOFError, ftplib.Error)):
        upload(client, "/cache/cut.3mf", os.urandom(4_000_000))
    assert "cache/cut.3mf" not in card_files(sim, P1S_SPARE)
    # One transfer only: the next one goes through.
    again = ftp(P1S_SPARE)
    data = os.urandom(400_000)
    upload(again, "/cache/whole.3mf", data)
    assert download(again, "/cache/whole.3mf") == data


def test_connections_cut_mid_download(sim: Simulator, ftp: Callable[..., ImplicitFTPS]) -> None:
    data = os.urandom(1_000_000)
    upload(ftp(P1S_SPARE), "/cache/big.bin", data)
    sim.ftps_drop_after(P1S_SPARE, 100_000)
    client = ftp(P1S_SPARE)
    received = io.BytesIO()
    with pytest.raises((ssl.SSLError, OSError, EOFError, ftplib.Error)):
        client.retrbinary("RETR /cache/big.bin", received.write)
    assert len(received.getvalue()) <= 100_000
    assert download(ftp(P1S_SPARE), "/cache/big.bin") == data


def test_an_offline_printer_refuses_and_comes_back_on_the_same_port(
    sim: Simulator, ftp: Callable[..., ImplicitFTPS]
) -> None:
    address = sim.ftps_address(P1S_SPARE)
    connected = ftp(P1S_SPARE)
    sim.take_offline(P1S_SPARE)
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=2).close()
        with pytest.raises((OSError, EOFError, ftplib.Error)):
            connected.pwd()  # the open session went with the power
    finally:
        sim.bring_online(P1S_SPARE)
    assert sim.ftps_address(P1S_SPARE) == address
    assert ftp(P1S_SPARE).pwd() == "/"


def test_refuse_and_listen_again(sim: Simulator, ftp: Callable[..., ImplicitFTPS]) -> None:
    sim.ftps_refuse(A1)
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(sim.ftps_address(A1), timeout=2).close()
    finally:
        sim.ftps_refuse(A1, False)
    assert ftp(A1).pwd() == "/"


def test_a_stalled_printer_answers_late(sim: Simulator, ftp: Callable[..., ImplicitFTPS]) -> None:
    client = ftp(A1)
    sim.ftps_stall(A1, 1.0)
    began = time.monotonic()
    assert client.pwd() == "/"
    assert time.monotonic() - began >= 0.8
    # A client with a shorter deadline than the stall times out.
    sim.ftps_stall(A1, 2.0)
    client.sock.settimeout(0.3)  # type: ignore[attr-defined]
    with pytest.raises(TimeoutError):
        client.pwd()


def test_connections_per_address_are_capped(sim: Simulator) -> None:
    context = context_for(sim)
    opened: list[ssl.SSLSocket] = []
    try:
        for _ in range(MAX_SESSIONS_PER_IP):
            raw = socket.create_connection(sim.ftps_address(A1), timeout=5)
            opened.append(context.wrap_socket(raw, server_hostname=A1))
            assert opened[-1].recv(100).startswith(b"220 ")
        raw = socket.create_connection(sim.ftps_address(A1), timeout=5)
        opened.append(context.wrap_socket(raw, server_hostname=A1))
        assert opened[-1].recv(100).startswith(b"421 ")
    finally:
        for conn in opened:
            conn.close()


def test_faults_over_http(sim: Simulator, ftp: Callable[..., ImplicitFTPS]) -> None:
    def fault(**body: Any) -> httpx.Response:
        return httpx.post(f"{sim.url}/sim/mqtt/faults", json=body, timeout=10)

    assert fault(fault="card_full", serial=P1S_SPARE, free_bytes=0).status_code == 200
    try:
        with pytest.raises(ftplib.error_perm, match=r"^552 "):
            upload(ftp(P1S_SPARE), "/cache/http.3mf", b"x")
    finally:
        assert fault(fault="card_full", serial=P1S_SPARE, free_bytes=None).status_code == 200
    assert fault(fault="ftps_refuse", serial=A1).status_code == 200
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(sim.ftps_address(A1), timeout=2).close()
    finally:
        assert fault(fault="ftps_listen", serial=A1).status_code == 200
    assert fault(fault="ftps_drop", serial=A1, after_bytes=-1).status_code == 400
    assert fault(fault="ftps_stall", serial="nope").status_code == 400


# --- what the simulator tells users --------------------------------------------------------


def test_ports_are_exported_and_listed(sim: Simulator) -> None:
    lines = sim.export_lines()
    for number, endpoint in enumerate(sim.endpoints(), start=1):
        port = sim.ftps_address(endpoint.serial)[1]
        assert endpoint.ftp_port == port
        assert f"export BAMBU_PRINTER_{number}_FTP_PORT={port}" in lines
    assert f"export BAMBU_PRINTER_FTP_PORT={sim.endpoints()[0].ftp_port}" in lines
    info = httpx.get(f"{sim.url}/sim/mqtt", timeout=10).json()
    ports = {entry["serial"]: entry["ftp_port"] for entry in info["printers"]}
    assert ports[X1C] == sim.ftps_address(X1C)[1]


def test_fixed_ports_and_ftps_off() -> None:
    wanted = free_port_block(1)
    with Simulator(UNLIMITED, ftps_ports={P1P: wanted}) as fixed:
        assert fixed.ftps_address(P1P) == ("127.0.0.1", wanted)
    with Simulator(UNLIMITED, ftps=False) as without:
        with pytest.raises(RuntimeError, match="FTPS"):
            without.ftps_address(P1P)
        assert all(e.ftp_port is None for e in without.endpoints())
        assert not any("FTP_PORT" in line for line in without.export_lines())


# --- curl: a client nobody here wrote ------------------------------------------------------


def curl(sim: Simulator, serial: str, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    host, port = sim.ftps_address(serial)
    assert sim.ca_file is not None
    command = [
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "30",
        "--ssl-reqd",
        "--resolve",
        f"{serial}:{port}:{host}",
        "--cacert",
        sim.ca_file,
        "--user",
        f"bblp:{sim.printers[serial].access_code}",
        *args,
        f"ftps://{serial}:{port}{path}",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@needs("curl")
@pytest.mark.parametrize("serial", [X1C, P1P], ids=["x1c", "p1p"])
def test_curl_lists_uploads_and_downloads_byte_exact(
    sim: Simulator, serial: str, tmp_path: Path
) -> None:
    source = tmp_path / "curl.3mf"
    source.write_bytes(os.urandom(3_000_000))
    done = curl(sim, serial, "/cache/curl.3mf", "--upload-file", str(source))
    assert done.returncode == 0, done.stderr
    assert "cache/curl.3mf" in card_files(sim, serial)
    back = tmp_path / "back.3mf"
    done = curl(sim, serial, "/cache/curl.3mf", "--output", str(back))
    assert done.returncode == 0, done.stderr
    assert back.read_bytes() == source.read_bytes()
    listed = curl(sim, serial, "/cache/", "--list-only")
    assert listed.returncode == 0, listed.stderr
    expected = "/cache/curl.3mf" if serial == X1C else "curl.3mf"
    assert expected in listed.stdout.split()
    long_form = curl(sim, serial, "/cache/")
    assert re.search(r"^-rw-r--r-- .* 3000000 .* curl\.3mf$", long_form.stdout, re.M)
    assert curl(sim, serial, "/", "--quote", "DELE /cache/curl.3mf", "--list-only").returncode == 0
    assert "cache/curl.3mf" not in card_files(sim, serial)


@needs("curl")
def test_curl_with_a_wrong_code_is_refused(sim: Simulator) -> None:
    done = curl(sim, A1, "/", "--list-only", "--user", "bblp:wrong")
    assert done.returncode == 67, done.stderr  # CURLE_LOGIN_DENIED
