"""Pinned printer certificates through both MQTT faces: a changed certificate is named as such.

A printer's certificate is pinned on first use (no CA file); when the
printer later offers another one, the error must say that the pin no longer
matches, with both fingerprints and the pin file, not OpenSSL's "unable to
get local issuer certificate".
"""

from __future__ import annotations

import json
import os
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bambulab import AsyncBambuMQTT, BambuMQTT
from bambulab.errors import CertificateError, CertificatePinMismatchError
from bambulab.mqtt.tls import PinStore, fetch_certificate, fingerprint, lan_context
from bambulab.sim.live import Simulator
from tests.conftest import LoopThread, unlimited


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(unlimited(), time_scale=60, tick_interval=0.2) as simulator:
        yield simulator


@pytest.fixture
def serial(sim: Simulator) -> Iterator[str]:
    """A LAN printer whose original certificate is back after the test."""
    chosen = next(e.serial for e in sim.endpoints() if e.serial.startswith("01P"))
    yield chosen
    sim.use_wrong_certificate(chosen, False)


def connect(sim: Simulator, serial: str, face: str, pins: Path) -> BambuMQTT | AsyncBambuMQTT:
    host, port = sim.lan_address(serial)
    code = sim.printers[serial].access_code
    if face == "sync":
        client = BambuMQTT.lan(host, serial, code, port=port, pin_file=pins, command_timeout=5)
        return client.connect()
    aclient = AsyncBambuMQTT.lan(host, serial, code, port=port, pin_file=pins, command_timeout=5)
    loop = LoopThread()
    try:
        loop.run(aclient.connect())
        loop.run(aclient.aclose())
    finally:
        loop.close()
    return aclient


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_swapped_certificate_is_a_pin_mismatch(
    sim: Simulator, serial: str, face: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BAMBU_CA_FILE", raising=False)
    pins = tmp_path / "pins.json"
    host, port = sim.lan_address(serial)
    first = connect(sim, serial, "sync", pins)
    assert isinstance(first, BambuMQTT)
    first.disconnect()
    pinned = fingerprint(PinStore(pins).get(serial) or "")
    stored = json.loads(pins.read_text())[serial]
    assert stored["pinned_at"] > 0 and "BEGIN CERTIFICATE" in stored["pem"]

    sim.use_wrong_certificate(serial)
    offered = fingerprint(fetch_certificate(host, port))
    assert offered != pinned
    with pytest.raises(CertificatePinMismatchError) as info:
        connect(sim, serial, face, pins)
    error = info.value
    assert isinstance(error, CertificateError)
    assert (error.serial, error.pinned, error.offered) == (serial, pinned, offered)
    assert error.pin_file == str(pins)
    text = str(error)
    assert "\n" not in text
    for part in (serial, pinned, offered, str(pins), "bambu pin forget", "bambu pin list"):
        assert part in text, part
    assert "local issuer" not in text
    assert PinStore(pins).get(serial) is not None, "a refused certificate never replaces a pin"


def test_forgetting_the_pin_accepts_a_renewed_certificate(
    sim: Simulator, serial: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BAMBU_CA_FILE", raising=False)
    pins = tmp_path / "pins.json"
    connect(sim, serial, "sync", pins).disconnect()  # type: ignore[union-attr]
    old = PinStore(pins).entries()[0].fingerprint
    sim.renew_certificate(serial)
    with pytest.raises(CertificatePinMismatchError):
        connect(sim, serial, "sync", pins)
    assert PinStore(pins).forget(serial)
    client = connect(sim, serial, "sync", pins)
    assert isinstance(client, BambuMQTT)
    try:
        assert client.get_full_status().gcode_state
    finally:
        client.disconnect()
    (entry,) = PinStore(pins).entries()
    assert entry.serial == serial and entry.fingerprint != old


def test_the_old_pin_file_format_is_still_read(tmp_path: Path) -> None:
    pem = PinStore(tmp_path / "none.json")
    assert pem.entries() == []
    legacy = tmp_path / "legacy.json"
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    legacy.write_text(json.dumps({"01P00A000000001": cert, "bad": 3, "junk": "not a pem"}))
    (entry,) = PinStore(legacy).entries()
    assert entry.serial == "01P00A000000001" and entry.pinned_at is None


# --- what a pin guards: the serial (CN) and the file's secrecy ------------------------------------


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_certificate_for_another_serial_is_never_pinned(
    sim: Simulator, serial: str, face: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First use checks the CN before it pins: a certificate of another printer is refused."""
    monkeypatch.delenv("BAMBU_CA_FILE", raising=False)
    pins = tmp_path / "pins.json"
    sim.use_wrong_certificate(serial)
    with pytest.raises(CertificateError, match=rf"not printer {serial}'s") as info:
        connect(sim, serial, face, pins)
    assert not isinstance(info.value, CertificatePinMismatchError)
    assert PinStore(pins).get(serial) is None, "a certificate naming another serial was pinned"


def test_a_pinned_certificate_must_still_name_the_serial(
    sim: Simulator, serial: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pin does not replace the CN check: a pinned leaf for another serial is refused."""
    monkeypatch.delenv("BAMBU_CA_FILE", raising=False)
    sim.use_wrong_certificate(serial)
    host, port = sim.lan_address(serial)
    pins = tmp_path / "pins.json"
    PinStore(pins).pin(serial, fetch_certificate(host, port))  # e.g. a pin file copied around
    with pytest.raises(CertificateError) as info:
        connect(sim, serial, "sync", pins)
    assert not isinstance(info.value, CertificatePinMismatchError)  # the same certificate
    assert serial in str(info.value)


def test_lan_context_checks_the_serial_even_when_pinned(tmp_path: Path) -> None:
    """At unit level: every LAN context verifies the CN against the serial, pinned or not."""
    cert = ssl.DER_cert_to_PEM_cert(_self_signed_der())
    store = PinStore(tmp_path / "pins.json")
    store.pin("01P00A000000001", cert)
    ctx = lan_context("01P00A000000001", "127.0.0.1", 1, pin_store=store)
    assert ctx.check_hostname is True
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert getattr(ctx, "expected_name", None) == "01P00A000000001"


def test_the_pin_file_is_private(
    sim: Simulator, serial: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BAMBU_CA_FILE", raising=False)
    old = os.umask(0o022)  # a usual umask: a plain open() would leave the file 0644
    try:
        pins = tmp_path / "pins.json"
        connect(sim, serial, "sync", pins).disconnect()  # type: ignore[union-attr]
        assert PinStore(pins).get(serial) is not None
        assert stat.S_IMODE(pins.stat().st_mode) == 0o600
        store = PinStore(pins)
        store.pin("01P00A000000001", store.get(serial) or "")
        assert stat.S_IMODE(pins.stat().st_mode) == 0o600, "rewritten, still private"
        assert store.forget("01P00A000000001")
        assert stat.S_IMODE(pins.stat().st_mode) == 0o600, "after forget, still private"
        assert [p.name for p in tmp_path.iterdir()] == ["pins.json"], "no temporary file left"
    finally:
        os.umask(old)


def _self_signed_der() -> bytes:
    """A throwaway certificate (any will do: the context is only inspected)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "01P00A000000001")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)
