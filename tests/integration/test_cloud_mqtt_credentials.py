"""The cloud broker's password: the account token, never a printer's access code (issue 8, point 13).

The simulated cloud broker refuses an access code as the password of
``u_<uid>`` by default, as the real one does. The seed's Workflow 2 form,
``BambuMQTT(user_id, serial, access_code)``, still connects: in cloud mode the
client uses the saved token (``BAMBU_TOKEN``, else the token file) and warns
once that an access code opens only the LAN broker. With no saved token the
strict broker refuses it; ``--lenient-cloud-mqtt`` takes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bambulab import BambuMQTT
from bambulab.cloud.tokens import TokenStore
from bambulab.errors import MQTTAuthenticationError
from bambulab.mqtt import client as mqtt_client
from bambulab.sim.live import Simulator
from tests.conftest import unlimited

WARNING = "opens only its LAN broker"


@pytest.fixture(scope="module")
def strict() -> Iterator[Simulator]:
    with Simulator(unlimited(), lan=False, tick_interval=0.2) as sim:
        yield sim


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No token from the person running the tests; each test warns afresh."""
    monkeypatch.delenv("BAMBU_TOKEN", raising=False)
    token_file = tmp_path / "token"
    monkeypatch.setenv("BAMBU_TOKEN_FILE", str(token_file))
    monkeypatch.setattr(mqtt_client, "_warned", set())
    return token_file


def seed_form(sim: Simulator) -> BambuMQTT:
    serial = next(e.serial for e in sim.endpoints())
    code = sim.world.devices[serial].access_code.strip()
    return BambuMQTT(
        sim.user_id,
        serial,
        code,
        host=sim.mqtt_host,
        port=sim.mqtt_port,
        ca_file=sim.ca_file,
        connect_timeout=5,
    )


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


def test_seed_form_uses_bambu_token_and_warns_once(
    strict: Simulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token = strict.issue_token(strict.demo_account.email)
    monkeypatch.setenv("BAMBU_TOKEN", token)
    with caplog.at_level(logging.WARNING, logger="bambulab.mqtt"):
        for _ in range(2):
            client = seed_form(strict)
            client.connect()
            try:
                assert client.get_full_status().gcode_state
            finally:
                client.disconnect()
    (warning,) = warnings_in(caplog)
    assert "saved account token" in warning
    assert token not in caplog.text


def test_seed_form_uses_the_saved_token_file(strict: Simulator, isolated: Path) -> None:
    TokenStore(isolated).save(strict.issue_token(strict.demo_account.email))
    client = seed_form(strict)
    client.connect()
    try:
        assert client.connected
    finally:
        client.disconnect()


def test_without_a_token_the_strict_broker_refuses_and_the_lenient_one_takes_it(
    strict: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="bambulab.mqtt"),
        pytest.raises(MQTTAuthenticationError),
    ):
        seed_form(strict).connect()
    (warning,) = warnings_in(caplog)
    assert "will likely refuse" in warning
    with Simulator(replace(unlimited(), lenient_cloud_mqtt=True), lan=False) as lenient:
        client = seed_form(lenient)
        client.connect()
        try:
            assert client.connected
        finally:
            client.disconnect()


def test_an_explicit_token_is_used_as_given(strict: Simulator) -> None:
    serial = next(e.serial for e in strict.endpoints())
    client = BambuMQTT(
        strict.user_id,
        serial,
        token=strict.issue_token(strict.demo_account.email),
        host=strict.mqtt_host,
        port=strict.mqtt_port,
        ca_file=strict.ca_file,
    )
    client.connect()
    try:
        assert client.connected
    finally:
        client.disconnect()
