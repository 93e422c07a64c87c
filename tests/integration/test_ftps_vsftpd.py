"""The FTPS client against a real vsftpd configured like the printers' (PROTOCOL.md §3).

A private vsftpd listens on a loopback port with implicit TLS,
``require_ssl_reuse=YES`` and a certificate whose CN is the printer's serial.

Logging in as ``bblp`` with a password without touching the machine's
accounts: vsftpd authenticates through PAM, so the fixture writes a
throwaway PAM service (``/etc/pam.d/bambulab-test-<random>``, removed at
teardown) whose auth module is ``pam_userdb`` reading a one-user database
(``bblp`` -> the test's access code) in the fixture's temporary directory;
vsftpd maps that virtual user (``guest_enable``) onto an existing
unprivileged system account (``daemon``), chrooted in a temporary folder.
No user is created, no password file changed. (``pam_exec`` would avoid the
database but deadlocks vsftpd: its SIGCHLD handler waits for any child after
pam_exec already reaped its own.) It needs root (vsftpd drops privileges and
reads /etc/pam.d); without root these tests skip.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bambulab.errors import (
    BambuError,
    CertificateError,
    FTPAuthenticationError,
    RemoteFileNotFoundError,
    SessionReuseError,
)
from bambulab.local import AsyncLocalFTPClient, LocalFTPClient
from bambulab.sim.certs import CertificateAuthority
from tests.binaries import binary, needs

pytestmark = [needs("vsftpd"), needs("db_load"), pytest.mark.timeout(120)]

SERIAL = "01P00A000000001"
CODE = "12345678"


@dataclass
class Vsftpd:
    host: str
    port: int
    root: Path
    ca_file: Path
    log: Path

    def client(self, **kw: object) -> LocalFTPClient:
        args: dict[str, object] = {"port": self.port, "ca_file": self.ca_file, "timeout": 10.0}
        args.update(kw)
        code = str(args.pop("code", CODE))
        return LocalFTPClient(self.host, code, SERIAL, **args)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _guest_account() -> pwd.struct_passwd:
    """An existing unprivileged account whose home exists (vsftpd enters it before local_root)."""
    for name in ("daemon", "bin", "sys", "nobody"):
        with contextlib.suppress(KeyError):
            account = pwd.getpwnam(name)
            if account.pw_uid != 0 and os.path.isdir(account.pw_dir):
                return account
    pytest.skip("no unprivileged system account with a home directory to map bblp onto")


def _write_userdb(path: Path, accounts: dict[str, str]) -> None:
    """The Berkeley DB hash file ``pam_userdb`` reads (``<path>.db``: user -> password).

    Python has no Berkeley DB binding; Debian's ``db_load`` (db-util) writes the
    format pam_userdb links against from "key line, value line" text.
    """
    lines = "".join(f"{user}\n{password}\n" for user, password in accounts.items())
    loader = binary("db_load").path()
    assert loader is not None  # the module's needs("db_load") mark saw to it
    done = subprocess.run(
        [loader, "-T", "-t", "hash", f"{path}.db"], input=lines, text=True, capture_output=True
    )
    assert done.returncode == 0, f"db_load could not write pam_userdb's file: {done.stderr[:200]}"


def _write_certs(directory: Path) -> tuple[Path, Path, Path]:
    from cryptography.hazmat.primitives import serialization

    authority = CertificateAuthority.generate()
    key, cert = authority.issue(SERIAL)
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(authority.certificate_pem())
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


def start_vsftpd() -> Iterator[Vsftpd]:
    """A private vsftpd (see the module docstring); yields it, then stops it and cleans up.

    Its files live in a fresh directory of the system's temporary folder,
    traversable (0711) so that the unprivileged account can enter the card
    folder; the key, the configuration and the password check stay 0600/0700.
    """
    if os.geteuid() != 0:
        pytest.skip("vsftpd needs root to authenticate through PAM and drop privileges")
    workdir = Path(tempfile.mkdtemp(prefix="bambu-vsftpd-"))
    workdir.chmod(0o711)
    try:
        yield from _run_vsftpd(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_vsftpd(workdir: Path) -> Iterator[Vsftpd]:
    exe = binary("vsftpd").path()
    assert exe is not None
    nobody = _guest_account()
    root = workdir / "card"
    root.mkdir()
    for folder in ("cache", "timelapse", "image", "logger"):
        (root / folder).mkdir()
    for path in (root, *root.iterdir()):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    ca_file, cert_file, key_file = _write_certs(workdir)
    users = workdir / "users"
    _write_userdb(users, {"bblp": CODE})
    service = f"bambulab-test-{secrets.token_hex(4)}"
    pam_file = Path("/etc/pam.d") / service
    pam_file.write_text(
        f"auth required pam_userdb.so db={users}\n"
        "account required pam_permit.so\n"
        "session required pam_permit.so\n"
    )
    empty = workdir / "empty"
    empty.mkdir()
    empty.chmod(0o755)
    port = _free_port()
    log = workdir / "vsftpd.log"
    conf = workdir / "vsftpd.conf"
    settings = {
        "listen": "YES",
        "listen_ipv6": "NO",
        "listen_address": "127.0.0.1",
        "listen_port": str(port),
        "background": "NO",
        "ssl_enable": "YES",
        "implicit_ssl": "YES",
        "require_ssl_reuse": "YES",
        "force_local_logins_ssl": "YES",
        "force_local_data_ssl": "YES",
        "ssl_tlsv1": "YES",
        "ssl_sslv2": "NO",
        "ssl_sslv3": "NO",
        "ssl_ciphers": "HIGH",
        "rsa_cert_file": str(cert_file),
        "rsa_private_key_file": str(key_file),
        "anonymous_enable": "NO",
        "local_enable": "YES",
        "write_enable": "YES",
        "guest_enable": "YES",
        "guest_username": nobody.pw_name,
        "virtual_use_local_privs": "YES",
        "local_root": str(root),
        "chroot_local_user": "YES",
        "allow_writeable_chroot": "YES",
        "pam_service_name": service,
        "secure_chroot_dir": str(empty),
        "seccomp_sandbox": "NO",
        "isolate": "NO",
        "isolate_network": "NO",
        "pasv_enable": "YES",
        "pasv_address": "127.0.0.1",
        "local_umask": "022",
        "xferlog_enable": "YES",
        "vsftpd_log_file": str(log),
        "dual_log_enable": "NO",
        "check_shell": "NO",
    }
    conf.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    conf.chmod(0o600)
    proc = subprocess.Popen(
        [exe, str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                pytest.fail(f"vsftpd exited at start ({proc.returncode}): {err.strip()[:300]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                pytest.fail("vsftpd did not listen within 10 s")
            time.sleep(0.05)
        yield Vsftpd("127.0.0.1", port, root, ca_file, log)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()
        pam_file.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def vsftpd() -> Iterator[Vsftpd]:
    yield from start_vsftpd()


@pytest.fixture
def ftps(vsftpd: Vsftpd) -> Iterator[LocalFTPClient]:
    with vsftpd.client() as client:
        yield client


def _payload(size: int) -> bytes:
    return secrets.token_bytes(size)


def test_list_upload_download_rename_delete(
    ftps: LocalFTPClient, vsftpd: Vsftpd, tmp_path: Path
) -> None:
    names = {e.name for e in ftps.list("/")}
    assert {"cache", "timelapse", "image", "logger"} <= names
    assert all(e.is_dir for e in ftps.list("/") if e.name == "cache")

    data = _payload(3 * (1 << 20) + 12345)  # several blocks and a partial one
    source = tmp_path / "part.3mf"
    source.write_bytes(data)
    seen: list[tuple[int, int | None]] = []
    moved = ftps.upload(source, "/cache/part.3mf", progress=lambda d, t: seen.append((d, t)))
    assert moved == len(data)
    assert seen[-1] == (len(data), len(data))
    on_disk = vsftpd.root / "cache" / "part.3mf"
    assert on_disk.read_bytes() == data
    # Nothing else (no temporary file) stays in the folder.
    assert [p.name for p in (vsftpd.root / "cache").iterdir()] == ["part.3mf"]

    entry = next(e for e in ftps.list("/cache") if e.name == "part.3mf")
    assert (entry.path, entry.size, entry.is_dir) == ("/cache/part.3mf", len(data), False)
    assert entry.mtime is not None
    assert ftps.size("/cache/part.3mf") == len(data)
    assert ftps.exists("/cache/part.3mf")

    target = tmp_path / "back.3mf"
    assert ftps.download("/cache/part.3mf", target) == len(data)
    assert hashlib.md5(target.read_bytes()).digest() == hashlib.md5(data).digest()
    sink = io.BytesIO()
    ftps.download("/cache/part.3mf", sink)
    assert sink.getvalue() == data

    ftps.mkdir("/jobs")
    ftps.mkdir("/jobs")  # already there: fine
    ftps.rename("/cache/part.3mf", "/jobs/renamed.3mf")
    assert not ftps.exists("/cache/part.3mf")
    assert (vsftpd.root / "jobs" / "renamed.3mf").read_bytes() == data
    ftps.delete("/jobs/renamed.3mf")
    assert not ftps.exists("/jobs/renamed.3mf")
    ftps.rmdir("/jobs")
    with pytest.raises(RemoteFileNotFoundError) as caught:
        ftps.delete("/jobs/renamed.3mf")
    assert caught.value.code == 550
    with pytest.raises(RemoteFileNotFoundError):
        ftps.download("/nope.3mf", tmp_path / "nope.3mf")
    assert not (tmp_path / "nope.3mf").exists()
    assert list(tmp_path.glob(".nope*")) == []


def test_upload_replaces_an_existing_file(ftps: LocalFTPClient, vsftpd: Vsftpd) -> None:
    ftps.upload(io.BytesIO(b"old contents"), "/cache/replace.gcode")
    ftps.upload(io.BytesIO(b"new"), "/cache/replace.gcode")
    assert (vsftpd.root / "cache" / "replace.gcode").read_bytes() == b"new"
    ftps.delete("/cache/replace.gcode")


def test_wrong_access_code_is_one_clear_line(vsftpd: Vsftpd) -> None:
    client = vsftpd.client(code="87654321")
    with pytest.raises(FTPAuthenticationError) as caught:
        client.connect()
    message = str(caught.value)
    assert "\n" not in message
    assert "access code" in message
    assert "87654321" not in message and "87654321" not in repr(client)
    assert caught.value.code == 530


def test_data_channel_without_session_reuse_is_refused(vsftpd: Vsftpd) -> None:
    """The reuse is what makes transfers work: switched off, vsftpd answers 522."""
    with vsftpd.client() as client:
        client._reuse_session = False
        with pytest.raises(SessionReuseError) as caught:
            client.list("/")
        assert caught.value.code == 522
        assert "reuse" in str(caught.value)
    # and the same server, with reuse, lists fine
    with vsftpd.client() as client:
        assert client.list("/")


def test_dropped_upload_leaves_nothing_under_the_target_name(
    vsftpd: Vsftpd, tmp_path: Path
) -> None:
    """A transfer cut mid-way (the source fails): the partial file is removed."""

    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.sent = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            if self.sent >= 3 << 20:
                raise OSError("disk read error")
            self.sent += 1 << 20
            return b"x" * (1 << 20)

    with vsftpd.client() as client:
        with pytest.raises(OSError, match="disk read error"):
            client.upload(Broken(), "/cache/broken.3mf")  # type: ignore[arg-type]
        assert not client.exists("/cache/broken.3mf")
    assert list((vsftpd.root / "cache").glob("*broken*")) == []


def test_pin_on_first_use_then_certificate_checked(vsftpd: Vsftpd, tmp_path: Path) -> None:
    pins = tmp_path / "pins.json"
    with vsftpd.client(ca_file=None, pin_file=pins) as client:
        assert client.list("/")
    assert SERIAL in pins.read_text()
    # A certificate for another serial is refused (CN = serial).
    wrong = LocalFTPClient(
        vsftpd.host, CODE, "00M00A000000002", port=vsftpd.port, ca_file=vsftpd.ca_file
    )
    with pytest.raises(CertificateError):
        wrong.connect()


def test_tls12_cap(vsftpd: Vsftpd) -> None:
    with vsftpd.client(tls12=True) as client:
        client.upload(io.BytesIO(b"capped"), "/cache/tls12.gcode")
        sock = client._sock
        assert sock is not None and sock.version() == "TLSv1.2"
        client.delete("/cache/tls12.gcode")


def test_async_face(vsftpd: Vsftpd, tmp_path: Path) -> None:
    import asyncio

    data = _payload((1 << 20) + 7)

    async def main() -> list[str]:
        seen: list[int] = []
        async with AsyncLocalFTPClient(
            vsftpd.host, CODE, SERIAL, port=vsftpd.port, ca_file=vsftpd.ca_file
        ) as client:
            await client.upload(
                io.BytesIO(data), "/cache/async.bin", progress=lambda d, t: seen.append(d)
            )
            out = tmp_path / "async.bin"
            await client.download("/cache/async.bin", out)
            assert out.read_bytes() == data
            names = [e.name for e in await client.list("/cache")]
            await client.delete("/cache/async.bin")
            with pytest.raises(RemoteFileNotFoundError):
                await client.size("/cache/async.bin")
        await asyncio.sleep(0)  # the relayed progress callbacks run on this loop
        assert seen and seen[-1] == len(data)
        return names

    assert "async.bin" in asyncio.run(main())


def test_unreachable_host_is_one_line() -> None:
    port = _free_port()
    client = LocalFTPClient("127.0.0.1", CODE, SERIAL, port=port, insecure=True, timeout=2)
    with pytest.raises(BambuError) as caught:
        client.connect()
    assert "\n" not in str(caught.value) and str(port) in str(caught.value)


def test_names_with_spaces_and_unicode(ftps: LocalFTPClient, vsftpd: Vsftpd) -> None:
    name = "Würfel Plate 1 – ✓.3mf"
    ftps.upload(io.BytesIO(b"cube"), f"/cache/{name}")
    assert (vsftpd.root / "cache" / name).read_bytes() == b"cube"
    entry = next(e for e in ftps.list("/cache") if e.name == name)
    assert entry.path == f"/cache/{name}" and entry.size == 4
    assert ftps.exists(f"/cache/{name}")
    ftps.delete(f"/cache/{name}")
