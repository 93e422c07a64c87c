"""Every login flow through both authenticators, against the simulator."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bambulab import AsyncBambuAuthenticator, BambuAuthenticator, BambuClient
from bambulab.errors import (
    CodeRequiredError,
    InvalidCredentialsError,
    RateLimitError,
    TokenExpiredError,
    TokenInvalidError,
    VerificationCodeError,
)
from bambulab.protocol.login import AskCode
from bambulab.sim import CloudSimulator, SimConfig
from bambulab.sim.config import RateLimit, RateLimits
from tests.conftest import LoopThread, outbox_code, unlimited

PASSWORD = "bambu-demo"


class Auth:
    """A sync or async authenticator behind one calling convention."""

    def __init__(self, face: str, sim: CloudSimulator, token_file: Path, **kw: Any) -> None:
        self.loop = LoopThread() if face == "async" else None
        cls = AsyncBambuAuthenticator if self.loop else BambuAuthenticator
        self.auth = cls(base_url=sim.url, token_file=token_file, **kw)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.auth, name)
        if self.loop is None or not callable(attr):
            return attr
        loop = self.loop

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            return loop.run(result) if hasattr(result, "__await__") else result

        return call

    def close(self) -> None:
        if self.loop:
            self.loop.close()


@pytest.fixture
def auth(sim: CloudSimulator, face: str, tmp_path: Path) -> Iterator[Auth]:
    a = Auth(face, sim, tmp_path / "token")
    yield a
    a.close()


def account(sim: CloudSimulator, mode: str) -> Any:
    return next(
        a
        for a in sim.world.accounts.values()
        if a.mode == mode and (mode != "verifyCode" or a.email)
    )


def test_password_login(auth: Auth, sim: CloudSimulator) -> None:
    token = auth.login(account(sim, "password").email, PASSWORD)
    assert auth.verify_token(token) is True
    with BambuClient(token=token, base_url=sim.url) as client:
        assert client.get_devices()


def test_email_code_login_reading_the_outbox(auth: Auth, sim: CloudSimulator) -> None:
    email = sim.demo_account.email
    asked: list[AskCode] = []

    def code(step: AskCode) -> str:
        asked.append(step)
        return outbox_code(sim, email)

    token = auth.login(email, PASSWORD, code_callback=code)
    assert [s.kind for s in asked] == ["email"] and asked[0].reason == "initial"
    assert auth.get_user_id(token) == str(sim.demo_account.uid)
    assert auth.get_mqtt_username(token) == f"u_{sim.demo_account.uid}"


def test_expired_code_brings_a_new_one(auth: Auth, sim: CloudSimulator) -> None:
    email = sim.demo_account.email
    reasons: list[str] = []

    def code(step: AskCode) -> str:
        reasons.append(step.reason)
        current = outbox_code(sim, email)
        if step.reason == "initial":
            sim.advance_clock(3600)  # the person took an hour to read their mail
        return current

    assert auth.login(email, PASSWORD, code_callback=code)
    assert reasons == ["initial", "expired"]


def test_wrong_code_is_asked_again_then_bounded(auth: Auth, sim: CloudSimulator) -> None:
    email = sim.demo_account.email
    answers = iter(["000000", "999999"])

    def code(step: AskCode) -> str:
        return next(answers, None) or outbox_code(sim, email)

    assert auth.login(email, PASSWORD, code_callback=code)
    with pytest.raises(VerificationCodeError, match="incorrect 3 times"):
        auth.login(email, PASSWORD, code_callback=lambda: "000000")


def test_five_wrong_codes_say_too_many_attempts_not_expired(
    sim: CloudSimulator, face: str, tmp_path: Path
) -> None:
    """The server stops taking guesses after five; the flow says so, then gets a new code."""
    email = sim.demo_account.email
    patient = Auth(face, sim, tmp_path / "token", max_code_attempts=8)
    prompts: list[tuple[str, str]] = []

    def code(step: AskCode) -> str:
        prompts.append((step.reason, step.prompt))
        return outbox_code(sim, email) if step.reason == "too_many" else "000000"

    try:
        assert patient.login(email, PASSWORD, code_callback=code)
    finally:
        patient.close()
    assert [reason for reason, _ in prompts] == ["initial"] + ["incorrect"] * 5 + ["too_many"]
    assert prompts[-1][1].startswith("Too many attempts with that code; a new one was sent.")
    assert "expired" not in prompts[-1][1]


def test_code_without_callback_is_a_clear_error(auth: Auth, sim: CloudSimulator) -> None:
    with pytest.raises(CodeRequiredError, match="code_callback"):
        auth.login(sim.demo_account.email, PASSWORD)


def test_sms_code_login_for_phone_accounts(auth: Auth, sim: CloudSimulator) -> None:
    phone = next(a for a in sim.world.accounts.values() if a.phone and not a.email)
    token = auth.login(
        phone.phone, PASSWORD, code_callback=lambda s: outbox_code(sim, phone.phone, "sms")
    )
    assert auth.verify_token(token)


def test_tfa_login_on_the_api_host(auth: Auth, sim: CloudSimulator) -> None:
    tfa = account(sim, "tfa")
    kinds: list[str] = []

    def code(step: AskCode) -> str:
        kinds.append(step.kind)
        return outbox_code(sim, tfa.email, "tfa")

    assert auth.verify_token(auth.login(tfa.email, PASSWORD, code_callback=code))
    assert kinds == ["tfa"]


def test_an_expired_tfa_key_brings_a_new_one(auth: Auth, sim: CloudSimulator) -> None:
    """The tfaKey lapses while the person finds their phone: a new one, then the login."""
    tfa = account(sim, "tfa")
    asked: list[AskCode] = []

    def code(step: AskCode) -> str:
        asked.append(step)
        if step.reason == "initial":
            sim.advance_clock(sim.world.config.tfa_key_ttl + 60)  # the key lapses
        return outbox_code(sim, tfa.email, "tfa")  # a code the authenticator shows now

    token = auth.login(tfa.email, PASSWORD, code_callback=code)
    assert auth.verify_token(token)
    assert [(s.kind, s.reason) for s in asked] == [("tfa", "initial"), ("tfa", "expired")]
    assert asked[1].prompt == "That code expired. Enter the code from your authenticator app"


def test_a_tfa_key_that_always_lapses_is_one_clear_error(auth: Auth, sim: CloudSimulator) -> None:
    tfa = account(sim, "tfa")
    asked: list[str] = []

    def code(step: AskCode) -> str:
        asked.append(step.reason)
        sim.advance_clock(sim.world.config.tfa_key_ttl + 60)
        return outbox_code(sim, tfa.email, "tfa")

    with pytest.raises(VerificationCodeError) as info:
        auth.login(tfa.email, PASSWORD, code_callback=code)
    error = info.value
    assert str(error) == "the authenticator code was expired 3 times; log in again"
    assert (error.kind, error.reason) == ("tfa", "expired")
    assert asked == ["initial", "expired", "expired"]


@pytest.mark.parametrize("endpoint", ["auto", "web"])
def test_tfa_login_with_the_token_in_a_cookie(face: str, tmp_path: Path, endpoint: str) -> None:
    config = dataclasses.replace(unlimited(), tfa_field_endpoint=False)  # only the web form answers
    with CloudSimulator(config) as sim:
        a = Auth(face, sim, tmp_path / "token", tfa_endpoint=endpoint)
        tfa = account(sim, "tfa")
        token = a.login(
            tfa.email, PASSWORD, code_callback=lambda: outbox_code(sim, tfa.email, "tfa")
        )
        assert a.verify_token(token)
        a.close()


def test_wrong_password(auth: Auth, sim: CloudSimulator) -> None:
    with pytest.raises(InvalidCredentialsError, match="login refused") as info:
        auth.login(sim.demo_account.email, "not-the-password")
    assert "not-the-password" not in str(info.value)


def test_get_or_create_token_saves_0600_and_reuses(
    auth: Auth, sim: CloudSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BAMBU_TOKEN", raising=False)
    email = account(sim, "password").email
    token = auth.get_or_create_token(email, PASSWORD)
    path = auth.token_file
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert auth.load_token() == token
    # The second call must not log in again: wrong password would fail if it did.
    assert auth.get_or_create_token(email, "wrong") == token
    monkeypatch.setenv("BAMBU_TOKEN", "from-env")
    assert auth.get_or_create_token() == "from-env"


def test_bad_and_expired_tokens(sim: CloudSimulator, tmp_path: Path) -> None:
    with (
        BambuClient(token="not-a-token", base_url=sim.url) as client,
        pytest.raises(TokenInvalidError),
    ):
        client.get_devices()
    with CloudSimulator(unlimited()) as private:
        token = private.issue_token(private.demo_account.email)
        private.advance_clock(91 * 24 * 3600)
        with (
            BambuClient(token=token, base_url=private.url) as client,
            pytest.raises(TokenExpiredError),
        ):
            client.get_devices()
        auth = BambuAuthenticator(base_url=private.url, token_file=tmp_path / "t")
        assert auth.verify_token(token) is False


def test_auth_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    config = SimConfig(rate_limits=RateLimits(auth=RateLimit(2, 60)))
    with CloudSimulator(config) as sim:
        auth = BambuAuthenticator(base_url=sim.url, token_file=tmp_path / "t")
        email = account(sim, "password").email
        auth.login(email, PASSWORD)
        auth.login(email, PASSWORD)
        with pytest.raises(RateLimitError) as info:
            auth.login(email, PASSWORD)
        assert info.value.retry_after is not None and 0 < info.value.retry_after <= 60


def test_no_secret_reaches_the_logs(
    sim: CloudSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    email = sim.demo_account.email
    codes: list[str] = []

    def code() -> str:
        codes.append(outbox_code(sim, email))
        return codes[-1]

    auth = BambuAuthenticator(base_url=sim.url, token_file=tmp_path / "t")
    token = auth.get_or_create_token(email, PASSWORD, code)
    with BambuClient(token=token, base_url=sim.url) as client:
        devices = client.get_devices()
        creds = client.get_camera_credentials(devices[0].dev_id)
        repr(devices)
        model = tmp_path / "m.3mf"
        model.write_bytes(b"PK" * 100)
        client.upload_file("m.3mf", model)
    client_logs = "\n".join(
        r.getMessage()
        for r in caplog.records
        if not r.name.startswith(("bambulab.sim", "uvicorn"))  # the server's own logs
    )
    assert "Signature=***" in client_logs, "the pre-signed upload was logged, masked"
    leak = re.search(r".{80}Signature=(?!\*\*\*).{20}", client_logs)
    assert leak is None, leak.group(0) if leak else None
    for secret in [token, PASSWORD, *codes, creds.authkey, *(d.access_code for d in devices)]:
        assert secret not in client_logs
