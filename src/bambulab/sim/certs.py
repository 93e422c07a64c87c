"""Certificates for the simulated brokers: a private CA and the leaves it signs.

Real printers present a certificate signed by Bambu Lab's private CA whose
subject CN is the printer's serial and which carries no subjectAltName
(PROTOCOL.md §2.1); a careful client trusts that CA and checks the CN by
connecting with ``server_hostname=<serial>``. The simulator does the same
with its own CA, so the client's verification code runs unchanged:

* :meth:`SimCertificates.printer` – CN = serial, no SAN (Python's hostname
  check falls back to the CN when a certificate has no SAN);
* :meth:`SimCertificates.cloud` – SAN ``DNS:localhost`` and ``IP:127.0.0.1``,
  like any public broker certificate;
* :meth:`SimCertificates.wrong_cn` – a genuine leaf for the wrong name, for
  the client's "the CN must equal the serial" test;
* :meth:`SimCertificates.renewed` – a new leaf (new key) for the same serial,
  as a printer gets after a reset: a pinned client must notice the change.

Keys are ECDSA P-256: generating one takes well under a millisecond, against
~50 ms for RSA-2048, which matters with one certificate per printer and a
start-up budget of two seconds. Clients do not care about the key type.

The CA is made once per simulator start, or read back from a state
directory so that a client configured with ``BAMBU_CA_FILE`` keeps working
across restarts. Everything is written as PEM files (brokers and clients
want paths); :attr:`SimCertificates.ca_file` is the file to trust.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..paths import PRIVATE_FILE, PUBLIC_FILE, private_dir, write_file

CA_NAME = "BBL Simulator CA"
_CA_CERT = "ca.crt"
_CA_KEY = "ca.key"
_LEAF_DAYS = 3650
_CA_DAYS = 3650 * 2


@dataclass(frozen=True, slots=True)
class CertFiles:
    """A leaf certificate and its private key as PEM files."""

    cert_file: Path
    key_file: Path
    common_name: str


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> datetime.datetime:
    # Backdated an hour so a client whose clock is slightly behind still accepts it.
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)


def _write_private(path: Path, data: bytes) -> None:
    write_file(path, data, PRIVATE_FILE)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertificateAuthority:
    """The simulator's CA: signs broker certificates."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self.key = key
        self.certificate = certificate

    @classmethod
    def generate(cls) -> CertificateAuthority:
        """A fresh CA (self-signed, with the extensions strict verifiers ask for)."""
        key = _key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bambulab simulator"),
                x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME),
            ]
        )
        start = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @classmethod
    def load_or_create(cls, directory: Path) -> CertificateAuthority:
        """The CA stored in ``directory``; made and stored there when absent."""
        # 0700 whatever the umask: it holds the key that every simulated broker trusts.
        private_dir(directory)
        cert_path, key_path = directory / _CA_CERT, directory / _CA_KEY
        if cert_path.exists() and key_path.exists():
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return cls(key, certificate)
        authority = cls.generate()
        # Public, but nobody else may swap it: not world-writable under umask 000.
        write_file(cert_path, authority.certificate_pem(), PUBLIC_FILE)
        _write_private(key_path, _key_pem(authority.key))
        return authority

    def certificate_pem(self) -> bytes:
        """The CA certificate as PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        *,
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A server certificate for ``common_name``; no SAN unless names are given."""
        leaf_key = key or _key()
        start = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=_LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return leaf_key, builder.sign(self.key, hashes.SHA256())


class SimCertificates:
    """The CA plus the leaves one simulator needs, as PEM files in a directory.

    ``state_dir`` (optional) keeps the CA across restarts; the leaves always
    go to a private temporary directory removed by :meth:`cleanup`.
    """

    def __init__(self, state_dir: Path | None = None) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="bambu-sim-certs-"))
        if state_dir is not None:
            self.authority = CertificateAuthority.load_or_create(Path(state_dir))
        else:
            self.authority = CertificateAuthority.generate()
        self.ca_file = self._tmp / _CA_CERT
        write_file(self.ca_file, self.authority.certificate_pem(), PUBLIC_FILE)
        self._issued: dict[str, CertFiles] = {}
        self._lock = threading.Lock()
        self._renewals = 0

    @property
    def directory(self) -> Path:
        """Where the PEM files live."""
        return self._tmp

    def _issue(
        self,
        label: str,
        common_name: str,
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
    ) -> CertFiles:
        with self._lock:
            existing = self._issued.get(label)
            if existing is not None:
                return existing
            key, certificate = self.authority.issue(
                common_name, dns_names=dns_names, ip_addresses=ip_addresses
            )
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
            cert_file = self._tmp / f"{safe}.crt"
            key_file = self._tmp / f"{safe}.key"
            write_file(cert_file, certificate.public_bytes(serialization.Encoding.PEM), PUBLIC_FILE)
            _write_private(key_file, _key_pem(key))
            files = CertFiles(cert_file, key_file, common_name)
            self._issued[label] = files
            return files

    def cloud(self) -> CertFiles:
        """The cloud broker's certificate: SAN ``localhost`` and ``127.0.0.1``."""
        return self._issue("cloud", "localhost", ("localhost",), ("127.0.0.1", "::1"))

    def printer(self, serial: str) -> CertFiles:
        """A printer's LAN certificate: CN = serial and no SAN, like the real ones."""
        return self._issue(f"printer-{serial}", serial)

    def wrong_cn(self, serial: str, common_name: str = "00M00A000000000") -> CertFiles:
        """A certificate from the right CA for the wrong printer (CN != ``serial``)."""
        if common_name == serial:
            common_name = common_name[::-1]
        return self._issue(f"wrong-{serial}-{common_name}", common_name)

    def renewed(self, serial: str) -> CertFiles:
        """A fresh certificate for ``serial`` (new key, CN = serial), unlike any issued before."""
        with self._lock:
            self._renewals += 1
            generation = self._renewals
        return self._issue(f"printer-{serial}-renewed-{generation}", serial)

    def cleanup(self) -> None:
        """Remove the temporary directory (the state directory is kept)."""
        shutil.rmtree(self._tmp, ignore_errors=True)
