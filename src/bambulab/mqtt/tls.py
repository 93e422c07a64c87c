"""TLS for MQTT: verified by default, for the cloud and for printers on the LAN.

Printers present a certificate signed by Bambu's private CA whose CN is the
printer's serial, while clients dial an IP address. Verification done right
(PROTOCOL.md §2.1) therefore means: trust the given CA file, or pin the
printer's own certificate on first use, AND check the certificate's CN
against the serial by handshaking with ``server_hostname=serial``. Python
3.13's ``VERIFY_X509_STRICT`` rejects these certificates, so it is cleared.
The insecure switch exists, and warns every time it is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    BambuError,
    CertificateError,
    CertificatePinMismatchError,
    ConfigurationError,
    TransportError,
)

log = logging.getLogger("bambulab.mqtt")

ENV_CA_FILE = "BAMBU_CA_FILE"
DEFAULT_PIN_FILE = "~/.config/bambulab/printer_certs.json"


@dataclass(frozen=True, slots=True)
class Pin:
    """One pinned printer certificate."""

    serial: str
    pem: str = ""
    pinned_at: float | None = None  # epoch seconds; None for pins written before it was kept

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate, hex with colons."""
        return fingerprint(self.pem)


class _NamedContext(ssl.SSLContext):
    """An SSLContext that checks the peer against a fixed name, whatever was dialled."""

    expected_name: str | None = None
    # The pin this context trusts (LAN, no CA file): explains a later verification failure.
    pin: Pin | None = None
    pin_file: Path | None = None

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        if self.expected_name:
            kwargs["server_hostname"] = self.expected_name
        return super().wrap_socket(sock, *args, **kwargs)


class ReadAheadSocket(ssl.SSLSocket):
    """A TLS socket that can read everything available at once into :attr:`inbox`.

    ``recv`` serves the inbox first, so paho, reading a packet a byte at a
    time, gets it from memory; :meth:`fill` is one pass over the TLS records
    waiting in the kernel. Until :meth:`fill` is called it behaves exactly
    like :class:`ssl.SSLSocket`. Used by one thread, the connection's.
    """

    inbox: bytearray = bytearray()  # replaced by the instance's own at the first fill
    _scratch: memoryview
    # When set, recv serves at most this many more bytes of the inbox (see Connection._read_ahead).
    window: int | None = None
    _eof = False
    _error: OSError | None = None

    def fill(self, limit: int) -> bool:
        """Read what is available now (up to about ``limit`` bytes); whether the stream ended.

        The end (EOF or an error) is remembered: once the inbox is empty,
        ``recv`` returns or raises it as the plain socket did.
        """
        if "inbox" not in self.__dict__:
            self.inbox = bytearray()
            # One buffer for every TLS record: recv() would allocate 64 KiB for each.
            self._scratch = memoryview(bytearray(65536))
        if self._eof or self._error is not None:
            return True
        inbox, scratch = self.inbox, self._scratch
        target = len(inbox) + limit
        while len(inbox) < target:
            try:
                size = super().recv_into(scratch)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return False
            except OSError as exc:
                self._error = exc
                return True
            if not size:
                self._eof = True
                return True
            inbox += scratch[:size]
        return False

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        inbox = self.inbox
        window = self.window
        if window is not None:
            # Only the packet lent out is readable; then "nothing more for now".
            if not window or not inbox:
                raise ssl.SSLWantReadError("the lent packet was read")
            buflen = min(buflen, window)
            self.window = window - min(buflen, len(inbox))
        if inbox:
            data = bytes(inbox[:buflen])
            del inbox[:buflen]
            return data
        if self._error is not None:
            raise self._error
        if self._eof:
            return b""
        return super().recv(buflen, flags)


def _base_context(name: str | None) -> _NamedContext:
    ctx = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.expected_name = name
    strict = getattr(ssl, "VERIFY_X509_STRICT", 0)
    if strict:
        ctx.verify_flags &= ~strict
    return ctx


def cloud_context(ca_file: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """The cloud broker's context: public CAs, or ``ca_file`` / ``BAMBU_CA_FILE`` (simulator)."""
    ctx = _base_context(None)
    chosen = ca_file or os.environ.get(ENV_CA_FILE) or None
    if chosen:
        _load_ca(ctx, chosen)
    else:
        ctx.load_default_certs()
    return ctx


def _load_ca(ctx: ssl.SSLContext, ca_file: str | os.PathLike[str]) -> None:
    try:
        ctx.load_verify_locations(cafile=os.fspath(ca_file))
    except FileNotFoundError:
        raise ConfigurationError(f"CA file not found: {os.fspath(ca_file)!r}") from None
    except ssl.SSLError as exc:
        raise ConfigurationError(
            f"CA file {os.fspath(ca_file)!r} holds no usable certificate"
        ) from exc


def insecure_context() -> ssl.SSLContext:
    """No verification at all: only on explicit request, with a warning."""
    log.warning(
        "TLS verification is OFF for this printer connection: anyone on the network "
        "could impersonate the printer (use a CA file or certificate pinning instead)"
    )
    ctx = _base_context(None)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class PinStore:
    """Printer certificates pinned on first use, in a 0600 JSON file.

    Each serial maps to ``{"pem": ..., "pinned_at": <epoch seconds>}``; the
    older form (serial → PEM string) is still read.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path or DEFAULT_PIN_FILE).expanduser()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def entries(self) -> list[Pin]:
        """Every pin, sorted by serial; malformed entries are skipped."""
        found: list[Pin] = []
        for serial, value in self._read().items():
            if isinstance(value, str):
                pem, when = value, None
            elif isinstance(value, dict) and isinstance(value.get("pem"), str):
                pem = value["pem"]
                raw = value.get("pinned_at")
                when = float(raw) if isinstance(raw, (int, float)) else None
            else:
                continue
            try:
                ssl.PEM_cert_to_DER_cert(pem)
            except ValueError:
                continue
            found.append(Pin(serial, pem, when))
        return sorted(found, key=lambda pin: pin.serial)

    def load(self) -> dict[str, str]:
        """Every pinned certificate: serial → PEM."""
        return {pin.serial: pin.pem for pin in self.entries()}

    def get(self, serial: str) -> str | None:
        """The pinned PEM of ``serial``, if any."""
        return self.load().get(serial)

    def pin(self, serial: str, pem: str) -> None:
        """Remember ``serial``'s certificate (atomic replace, mode 0600)."""
        data = self._read()
        data[serial] = {"pem": pem, "pinned_at": time.time()}
        self._write(data)

    def forget(self, serial: str) -> bool:
        """Drop a pin (after a legitimate certificate change); whether there was one."""
        data = self._read()
        if data.pop(serial, None) is None:
            return False
        self._write(data)
        return True

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pins.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def fetch_certificate(host: str, port: int, timeout: float = 10.0) -> str:
    """The PEM certificate a TLS server presents, without verifying it (first use only)."""
    ctx = _base_context(None)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise TransportError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from exc
    if not der:
        raise CertificateError(f"{host}:{port} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der)


def fingerprint(pem: str) -> str:
    """SHA-256 fingerprint of a PEM certificate, hex with colons."""
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def lan_context(
    serial: str,
    host: str,
    port: int,
    *,
    ca_file: str | os.PathLike[str] | None = None,
    pin_store: PinStore | None = None,
    insecure: bool = False,
) -> ssl.SSLContext:
    """The context for a printer's own broker (or camera): verified against ``serial``.

    With ``ca_file`` (or ``BAMBU_CA_FILE``) the chain is verified against that
    CA; otherwise the printer's certificate is pinned on first use and must
    match afterwards. Either way the certificate's CN must be ``serial``.
    """
    if not serial:
        raise ConfigurationError("the printer's serial is needed to verify its certificate")
    if insecure:
        return insecure_context()
    ctx = _base_context(serial)
    chosen = ca_file or os.environ.get(ENV_CA_FILE) or None
    if chosen:
        _load_ca(ctx, chosen)
        return ctx
    store = pin_store or PinStore()
    pem = store.get(serial)
    if pem is None:
        pem = fetch_certificate(host, port)
        _check_first_use(pem, serial, host, port)
        store.pin(serial, pem)
        log.warning(
            "pinned the certificate of printer %s on first use (SHA-256 %s) in %s",
            serial,
            fingerprint(pem),
            store.path,
        )
    # The printer's own leaf is the trust anchor: partial-chain verification.
    ctx.load_verify_locations(cadata=pem)
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.pin = Pin(serial, pem)
    ctx.pin_file = store.path
    return ctx


def pin_diagnosis(
    context: ssl.SSLContext, host: str, port: int, timeout: float = 5.0
) -> Callable[[], BambuError | None] | None:
    """For a pinned context: what explains a refused handshake, asked only after one.

    OpenSSL only says "unable to get local issuer certificate" when the
    printer's certificate is not the pinned one. This looks at what the
    printer offers now (one unverified handshake) and, when it is another
    certificate, names both fingerprints, the pin file and the way out.
    """
    pin = getattr(context, "pin", None)
    pin_file = getattr(context, "pin_file", None)
    if not isinstance(pin, Pin) or pin_file is None:
        return None

    def diagnose() -> BambuError | None:
        try:
            offered = fingerprint(fetch_certificate(host, port, timeout))
        except (BambuError, ValueError):
            return None
        pinned = pin.fingerprint
        if offered == pinned:
            return None
        return CertificatePinMismatchError(
            f"printer {pin.serial} at {host}:{port} offers another certificate than the one "
            f"pinned in {pin_file} (pinned SHA-256 {pinned}, offered SHA-256 {offered}): "
            f"if the printer's certificate changed on purpose (a reset, new firmware), accept "
            f"the new one with `bambu pin forget {pin.serial}` (see `bambu pin list`); "
            "otherwise something else answers at that address",
            serial=pin.serial,
            pinned=pinned,
            offered=offered,
            pin_file=str(pin_file),
        )

    return diagnose


def _check_first_use(pem: str, serial: str, host: str, port: int) -> None:
    """Before pinning, make sure the certificate names the serial (handshake against itself)."""
    ctx = _base_context(serial)
    ctx.load_verify_locations(cadata=pem)
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        with (
            socket.create_connection((host, port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname=serial),
        ):
            pass
    except ssl.SSLCertVerificationError as exc:
        raise CertificateError(
            f"the certificate at {host}:{port} is not printer {serial}'s: {exc.verify_message}"
        ) from exc
    except OSError as exc:
        raise TransportError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from exc
