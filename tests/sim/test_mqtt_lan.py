"""A printer's own (LAN) broker: ``bblp`` + access code over TLS, CN = serial.

A careful LAN client trusts the CA and checks that the certificate's CN is
the printer's serial by connecting with ``server_hostname=<serial>``
(PROTOCOL.md §2.1); these tests do exactly that with a raw paho client.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from bambulab.sim import Simulator
from bambulab.sim.certs import CertificateAuthority, SimCertificates
from tests.sim.mqtt_support import Probe, command, is_full_report, pushall, reply_to, tls_context
from tests.sim.simtools import DEMO, SEED_DEVICE, UNLIMITED


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(UNLIMITED, tick_interval=0.2) as running:
        yield running


def lan_probe(
    sim: Simulator,
    probes: list[Probe],
    serial: str,
    *,
    username: str = "bblp",
    password: str | None = None,
    server_name: str | None = None,
) -> Probe:
    probe = Probe(
        sim.lan_address(serial),
        username,
        password if password is not None else sim.printers[serial].access_code,
        ca_file=sim.ca_file,
        server_name=server_name or serial,
    )
    probes.append(probe)
    return probe


def peer_certificate(sim: Simulator, serial: str, server_name: str) -> x509.Certificate:
    assert sim.ca_file is not None
    context = tls_context(sim.ca_file)
    with (
        socket.create_connection(sim.lan_address(serial), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_certificate_is_cn_serial_without_san(sim: Simulator) -> None:
    certificate = peer_certificate(sim, SEED_DEVICE, SEED_DEVICE)
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [n.value for n in names] == [SEED_DEVICE]
    with pytest.raises(x509.ExtensionNotFound):
        certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_hostname_check_falls_back_to_the_cn(sim: Simulator) -> None:
    assert sim.ca_file is not None
    other = next(serial for serial in sim.printers if serial != SEED_DEVICE)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        peer_certificate(sim, SEED_DEVICE, other)
    # An untrusting client (no CA) refuses it too.
    context = ssl.create_default_context()
    with (
        socket.create_connection(sim.lan_address(SEED_DEVICE), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(raw, server_hostname=SEED_DEVICE)


def test_bblp_with_access_code_gets_reports_and_replies(
    sim: Simulator, probes: list[Probe]
) -> None:
    probe = lan_probe(sim, probes, SEED_DEVICE).expect_connected()
    assert not probe.subscribe(f"device/{SEED_DEVICE}/report")[0].is_failure
    probe.publish(f"device/{SEED_DEVICE}/request", pushall("5"))
    assert probe.wait_for(is_full_report).json()["print"]["gcode_state"] == "RUNNING"
    probe.publish(
        f"device/{SEED_DEVICE}/request",
        command(
            "system",
            "ledctrl",
            "6",
            led_node="chamber_light",
            led_mode="off",
            led_on_time=500,
            led_off_time=500,
            loop_times=0,
            interval_time=0,
        ),
    )
    reply = probe.wait_for(reply_to("system", "ledctrl", "6")).json()["system"]
    assert reply["result"] == "success"


def test_a_command_on_the_lan_shows_up_in_the_cloud_too(
    sim: Simulator, probes: list[Probe]
) -> None:
    lan = lan_probe(sim, probes, SEED_DEVICE).expect_connected()
    lan.subscribe(f"device/{SEED_DEVICE}/report")
    cloud = Probe(
        (sim.mqtt_host, sim.mqtt_port),
        f"u_{sim.user_id}",
        sim.issue_token(DEMO),
        ca_file=sim.ca_file,
    ).expect_connected()
    probes.append(cloud)
    cloud.subscribe(f"device/{SEED_DEVICE}/report")
    lan.publish(f"device/{SEED_DEVICE}/request", command("info", "get_version", "88"))
    lan.wait_for(reply_to("info", "get_version", "88"))
    cloud.wait_for(reply_to("info", "get_version", "88"))


@pytest.mark.parametrize(
    ("username", "password"),
    [("bblp", "00000000"), ("root", "{code}"), ("bblp", ""), ("u_{uid}", "{token}")],
)
def test_wrong_lan_credentials_are_not_authorized(
    sim: Simulator, probes: list[Probe], username: str, password: str
) -> None:
    values = {
        "code": sim.printers[SEED_DEVICE].access_code,
        "uid": str(sim.user_id),
        "token": sim.issue_token(DEMO),
    }
    probe = lan_probe(
        sim,
        probes,
        SEED_DEVICE,
        username=username.format(**values),
        password=password.format(**values),
    )
    code = probe.connect()
    assert str(code) == "Not authorized"


def test_another_printers_code_does_not_open_this_one(sim: Simulator, probes: list[Probe]) -> None:
    other = next(serial for serial in sim.printers if serial != SEED_DEVICE)
    probe = lan_probe(sim, probes, SEED_DEVICE, password=sim.printers[other].access_code)
    assert probe.connect().is_failure


def test_only_this_printers_topics(sim: Simulator, probes: list[Probe]) -> None:
    other = next(serial for serial in sim.printers if serial != SEED_DEVICE)
    probe = lan_probe(sim, probes, SEED_DEVICE).expect_connected()
    assert probe.subscribe(f"device/{other}/report")[0].is_failure
    assert probe.subscribe(f"device/{SEED_DEVICE}/request")[0].is_failure
    assert not probe.subscribe("device/+/report")[0].is_failure


def test_wrong_cn_certificate_is_refused_by_a_verifying_client(
    sim: Simulator, probes: list[Probe]
) -> None:
    port = sim.lan_address(SEED_DEVICE)[1]
    sim.use_wrong_certificate(SEED_DEVICE)
    try:
        assert sim.lan_address(SEED_DEVICE)[1] == port
        certificate = peer_certificate(sim, SEED_DEVICE, "00M00A000000000")
        cn = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn != SEED_DEVICE
        probe = lan_probe(sim, probes, SEED_DEVICE)
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            probe.connect()
    finally:
        sim.use_wrong_certificate(SEED_DEVICE, wrong=False)
    lan_probe(sim, probes, SEED_DEVICE).expect_connected()


def test_cloud_certificate_names_localhost_and_loopback(sim: Simulator) -> None:
    assert sim.ca_file is not None
    for name in ("localhost", "127.0.0.1"):
        context = tls_context(sim.ca_file)
        with (
            socket.create_connection((sim.mqtt_host, sim.mqtt_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version() is not None


def test_state_dir_keeps_the_ca(tmp_path: Path) -> None:
    first = SimCertificates(tmp_path)
    second = SimCertificates(tmp_path)
    try:
        assert first.ca_file.read_bytes() == second.ca_file.read_bytes()
        assert (tmp_path / "ca.key").stat().st_mode & 0o077 == 0
        # A leaf from the second run verifies against the first run's CA file.
        leaf = x509.load_pem_x509_certificate(second.printer("X").cert_file.read_bytes())
        leaf.verify_directly_issued_by(first.authority.certificate)
    finally:
        first.cleanup()
        second.cleanup()
    fresh = CertificateAuthority.generate()
    assert fresh.certificate.subject != fresh.issue("Y")[1].subject
