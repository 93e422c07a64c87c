"""mosquitto as the simulator's broker, and external brokers given by URL.

:class:`MosquittoBroker` runs ``mosquitto`` (2.0) as a child process with a
generated configuration (``per_listener_settings true``, everything on
``127.0.0.1``, ports chosen once and kept across restarts):

* an **internal** plain listener for the printer host, with a password file
  holding only the host's random credential;
* the **cloud** listener (TLS, the simulator CA's ``localhost`` certificate).
  mosquitto 2.0 cannot check tokens without a compiled plugin, so this
  listener does *not* check passwords: any ``u_<uid>`` may connect, and
  the username decides what it may do. The ACL file lets ``u_<uid>`` read
  ``device/<serial>/report`` and write ``device/<serial>/request`` of the
  printers that uid owns, nothing else; anonymous clients get no topic at
  all. The ACL is written at start and by :meth:`MosquittoBroker.reload_acl`
  (binding changes);
* one **LAN** listener per printer (TLS with the printer's CN = serial
  certificate), with a password file holding ``bblp`` and that printer's
  access code (PBKDF2-SHA512, mosquitto's ``$7$`` format) and an ACL
  limiting ``bblp`` to that printer's two topics.

mosquitto's topic tree is shared by all listeners, so one publication by
the host reaches cloud and LAN subscribers alike (presence events included).
Its ``mount_point`` option would have separated them, but mosquitto 2.0.11
does not strip the mount point from outgoing topics (eclipse-mosquitto
issue 2244, fixed in 2.0.12), so the ACLs do the separating instead.

:class:`ExternalBroker` is a broker someone else runs (``mqtt://`` or
``mqtts://`` URL), used as is for the cloud role.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import logging
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from ..protocol.mqtt import report_topic, request_topic
from .brokers import LAN_USER, LOOPBACK, Credential, hold_ports, release_ports
from .certs import SimCertificates

log = logging.getLogger("bambulab.sim.mqtt")

DEFAULT_BINARY = "/usr/sbin/mosquitto"
_PBKDF2_ITERATIONS = 101  # what mosquitto_passwd writes


def find_mosquitto(binary: str | None = None) -> str:
    """The mosquitto executable: ``binary``, ``/usr/sbin/mosquitto`` or one on PATH."""
    for candidate in (binary, DEFAULT_BINARY, shutil.which("mosquitto")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("mosquitto is not installed (looked in /usr/sbin and on PATH)")


def password_line(username: str, password: str) -> str:
    """One password-file line in mosquitto's ``$7$`` (PBKDF2-HMAC-SHA512) format."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    encoded = f"{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    return f"{username}:$7${_PBKDF2_ITERATIONS}${encoded}\n"


def free_port() -> int:
    """A port that was free a moment ago (mosquitto binds it itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _current_user() -> str:
    # mosquitto started as root drops to the "mosquitto" user unless told
    # otherwise, and could then not read our 0600 key files.
    return pwd.getpwuid(os.getuid()).pw_name


class MosquittoBroker:
    """A mosquitto child process playing the cloud broker and every LAN broker."""

    def __init__(
        self,
        certs: SimCertificates,
        internal: Credential,
        printers: Mapping[str, str],
        owners: Callable[[], Mapping[int, Iterable[str]]],
        *,
        lan: bool = True,
        binary: str | None = None,
    ) -> None:
        """``printers``: serial to access code; ``owners``: uid to its serials, read on use."""
        self._binary = find_mosquitto(binary)
        self._certs = certs
        self._internal = internal
        self._printers = dict(printers)
        self._owners = owners
        self._lan = lan
        self._dir = Path(tempfile.mkdtemp(prefix="bambu-sim-mosquitto-"))
        self.internal_port = 0
        self.port = 0
        self.lan_ports: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file = self._dir / "mosquitto.log"
        # Printers switched off: their LAN listener takes no login (see set_online).
        self._off: set[str] = set()

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._process is not None and self._process.poll() is None

    def _assign_ports(self) -> None:
        if self.port:
            return
        self.internal_port = free_port()
        self.port = free_port()
        if self._lan:
            self.lan_ports = {serial: free_port() for serial in self._printers}

    def _acl(self) -> str:
        lines: list[str] = []
        for uid, serials in sorted(self._owners().items()):
            lines.append(f"user u_{uid}")
            for serial in serials:
                lines.append(f"topic read {report_topic(serial)}")
                lines.append(f"topic write {request_topic(serial)}")
            lines.append("")
        return "\n".join(lines) + "\n"

    def _write_config(self) -> Path:
        d = self._dir
        (d / "internal.pw").write_text(
            password_line(self._internal.username, self._internal.password)
        )
        (d / "cloud.acl").write_text(self._acl())
        cloud = self._certs.cloud()
        lines = [
            "per_listener_settings true",
            "persistence false",
            f"user {_current_user()}",
            f"log_dest file {self._log_file}",
            "log_type error",
            "log_type warning",
            "set_tcp_nodelay true",
            "",
            f"listener {self.internal_port} {LOOPBACK}",
            "allow_anonymous false",
            f"password_file {d / 'internal.pw'}",
            "",
            f"listener {self.port} {LOOPBACK}",
            f"certfile {cloud.cert_file}",
            f"keyfile {cloud.key_file}",
            "allow_anonymous true",
            f"acl_file {d / 'cloud.acl'}",
        ]
        for index, (serial, port) in enumerate(self.lan_ports.items()):
            files = self._certs.printer(serial)
            self._write_lan_password(index, serial)
            (d / f"lan{index}.acl").write_text(
                f"user {LAN_USER}\n"
                f"topic read {report_topic(serial)}\n"
                f"topic write {request_topic(serial)}\n"
            )
            lines += [
                "",
                f"listener {port} {LOOPBACK}",
                f"certfile {files.cert_file}",
                f"keyfile {files.key_file}",
                "allow_anonymous false",
                f"password_file {d / f'lan{index}.pw'}",
                f"acl_file {d / f'lan{index}.acl'}",
            ]
        path = d / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto; returns once every listener accepts connections."""
        if self.running:
            return
        self._assign_ports()
        config = self._write_config()
        self._process = subprocess.Popen(
            [self._binary, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # A program that exits without stop() must not leave a broker behind
        # (a SIGKILLed one still does: there is no portable way around that).
        atexit.register(self.stop)
        ports = [self.internal_port, self.port, *self.lan_ports.values()]
        deadline = time.monotonic() + timeout
        for port in ports:
            while not _accepts(port):
                if self._process.poll() is not None:
                    raise RuntimeError(f"mosquitto exited at start-up: {self.log_tail()}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("mosquitto did not open its ports in time")
                time.sleep(0.005)
        log.info("mosquitto (pid %d) listening on %d ports", self._process.pid, len(ports))

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate mosquitto (SIGTERM, then SIGKILL)."""
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def restart(self, downtime: float = 0.0) -> None:
        """Stop and start again on the same ports (every client sees a disconnect)."""
        self.stop()
        held, _ = hold_ports([self.internal_port, self.port, *self.lan_ports.values()])
        try:
            if downtime > 0:
                time.sleep(downtime)
            self.start()
        finally:
            release_ports(held)

    def _write_lan_password(self, index: int, serial: str) -> None:
        # An empty password file refuses every login on that listener.
        line = "" if serial in self._off else password_line(LAN_USER, self._printers[serial])
        (self._dir / f"lan{index}.pw").write_text(line)

    def set_online(self, serial: str, online: bool) -> None:
        """Switch a printer's LAN listener between taking its access code and refusing all.

        mosquitto cannot close one listener of a running process, so a printer
        that is off refuses every new login ("not authorized") instead of
        accepting it and staying silent (the embedded brokers stop listening
        altogether: connection refused).
        """
        if online:
            self._off.discard(serial)
        else:
            self._off.add(serial)
        for index, listed in enumerate(self.lan_ports):
            if listed == serial:
                self._write_lan_password(index, serial)
        self._hangup()

    def _hangup(self) -> None:
        # SIGHUP makes mosquitto reread its password and ACL files.
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGHUP)

    def reload_acl(self) -> None:
        """Rewrite the cloud ACL from the current owners and make mosquitto reread it."""
        (self._dir / "cloud.acl").write_text(self._acl())
        self._hangup()

    def log_tail(self, limit: int = 2000) -> str:
        """The end of mosquitto's log (errors and warnings only)."""
        try:
            return self._log_file.read_text(errors="replace")[-limit:].strip()
        except OSError:
            return ""

    def cleanup(self) -> None:
        """Stop and remove the generated files."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class ExternalBroker:
    """A broker given by URL: ``mqtt://[user:password@]host[:port]`` or ``mqtts://...``.

    ``mqtts`` verifies the broker with the system's CAs, or with the file
    named by ``?ca=/path``; ``?insecure=1`` skips verification (test brokers
    with self-made certificates).
    """

    host: str
    port: int
    tls: bool
    credential: Credential | None
    ca_file: str | None = None
    insecure: bool = False

    @classmethod
    def parse(cls, url: str) -> ExternalBroker:
        """Parse a broker URL; ValueError with a one-line reason when it is not one."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"broker URL must start with mqtt:// or mqtts://, not {url!r}")
        if not parts.hostname:
            raise ValueError("broker URL has no host")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ValueError("broker URL has an invalid port") from None
        credential = None
        if parts.username is not None:
            credential = Credential(unquote(parts.username), unquote(parts.password or ""))
        query = parse_qs(parts.query)
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            credential=credential,
            ca_file=query.get("ca", [None])[0],
            insecure=query.get("insecure", ["0"])[0] in ("1", "true", "yes"),
        )

    def tls_context(self) -> ssl.SSLContext | None:
        """The client context for ``mqtts``; None for plain ``mqtt``."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def __str__(self) -> str:
        # Never shows the password.
        user = f"{self.credential.username}@" if self.credential else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"
