"""Login flows against the simulated cloud: password, email/SMS codes, TFA, refresh, tokens."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable

import httpx
import pytest

from bambulab.sim import CloudSimulator
from tests.sim.simtools import (
    DEMO,
    DEMO_PASSWORD,
    PASSWORD_USER,
    PHONE_USER,
    TFA_USER,
    assert_error,
    latest_code,
)

LOGIN = "/v1/user-service/user/login"
SEND_EMAIL = "/v1/user-service/user/sendemail/code"
SEND_SMS = "/v1/user-service/user/sendsmscode"
TFA_FIELD = "/v1/user-service/user/tfa/login"
TFA_SEED = "/api/sign-in/tfa"
REFRESH = "/v1/user-service/user/refreshtoken"
PROFILE = "/v1/user-service/my/profile"


def jwt_parts(token: str) -> tuple[dict[str, object], dict[str, object]]:
    """Header and payload of a JWT, decoded without verification (as clients do)."""
    header, payload, _signature = token.split(".")

    def decode(part: str) -> dict[str, object]:
        data: dict[str, object] = json.loads(
            base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        )
        return data

    return decode(header), decode(payload)


def password_login(
    http: httpx.Client, account: str, password: str = DEMO_PASSWORD
) -> httpx.Response:
    return http.post(LOGIN, json={"account": account, "password": password, "apiError": ""})


# Exactly the keys the real login answers carry (no ``success``: PROTOCOL.md §1.1).
LOGIN_KEYS = {
    "accessToken",
    "refreshToken",
    "expiresIn",
    "refreshExpiresIn",
    "tfaKey",
    "accessMethod",
    "loginType",
}


def assert_token_body(body: dict[str, object]) -> str:
    assert set(body) == LOGIN_KEYS
    assert body["loginType"] == ""
    assert body["tfaKey"] == ""
    assert body["expiresIn"] == 7_776_000
    assert body["refreshExpiresIn"] == 7_776_000
    token = body["accessToken"]
    assert isinstance(token, str)
    assert token.count(".") == 2
    assert body["refreshToken"] == token
    return token


def profile_status(http: httpx.Client, token: str) -> int:
    return http.get(PROFILE, headers={"Authorization": f"Bearer {token}"}).status_code


# --- password mode -------------------------------------------------------------------


def test_password_account_gets_token_straight_away(client: httpx.Client) -> None:
    response = password_login(client, PASSWORD_USER)
    assert response.status_code == 200
    token = assert_token_body(response.json())
    assert profile_status(client, token) == 200


def test_token_is_rs256_jwt_with_uid_and_username(
    client: httpx.Client, sim: CloudSimulator
) -> None:
    token = assert_token_body(password_login(client, PASSWORD_USER).json())
    header, payload = jwt_parts(token)
    assert header == {"alg": "RS256", "typ": "JWT"}
    uid = sim.world.find_account(PASSWORD_USER).uid  # type: ignore[union-attr]
    assert payload["uid"] == str(uid)
    assert payload["username"] == f"u_{uid}"
    assert payload["region"] == "global"
    assert isinstance(payload["iat"], int)
    assert isinstance(payload["exp"], int)
    assert payload["exp"] - payload["iat"] == 7_776_000


@pytest.mark.parametrize(
    ("account", "password"),
    [(PASSWORD_USER, "wrong"), ("nobody@example.com", DEMO_PASSWORD), (DEMO, "")],
)
def test_bad_credentials_are_code_3(client: httpx.Client, account: str, password: str) -> None:
    body = assert_error(password_login(client, account, password), 400, 3)
    assert body["message"] == "Incorrect account or password"
    assert body["error"] == "Incorrect account or password"


def test_login_without_password_or_code_is_400(client: httpx.Client) -> None:
    assert_error(client.post(LOGIN, json={"account": DEMO}), 400, 400)
    assert_error(client.post(LOGIN, content=b"not json"), 400, 400)


# --- emailed code --------------------------------------------------------------------


def test_verify_code_flow_by_email(client: httpx.Client) -> None:
    first = password_login(client, DEMO)
    assert first.status_code == 200
    assert first.json() == {
        "accessToken": "",
        "refreshToken": "",
        "expiresIn": 0,
        "refreshExpiresIn": 0,
        "tfaKey": "",
        "accessMethod": "",
        "loginType": "verifyCode",
    }
    # The password login mailed a code already: it works as it is.
    mailed = latest_code(client, DEMO)
    assert len(mailed) == 6 and mailed.isdigit()
    token = assert_token_body(client.post(LOGIN, json={"account": DEMO, "code": mailed}).json())
    assert profile_status(client, token) == 200
    # A client that asks for one more gets a fresh one, which replaces the first.
    assert password_login(client, DEMO).json()["loginType"] == "verifyCode"
    sent = client.post(SEND_EMAIL, json={"email": DEMO, "type": "codeLogin"})
    assert sent.status_code == 200
    assert sent.json() == {"code": 0, "message": "Success"}
    code = latest_code(client, DEMO)
    assert len(code) == 6
    assert code.isdigit()
    token = assert_token_body(client.post(LOGIN, json={"account": DEMO, "code": code}).json())
    assert profile_status(client, token) == 200
    # A code is single-use.
    assert_error(client.post(LOGIN, json={"account": DEMO, "code": code}), 400, 1)


def test_outbox_entry_shape(client: httpx.Client) -> None:
    client.post(SEND_EMAIL, json={"email": DEMO, "type": "codeLogin"})
    messages = client.get("/sim/outbox", params={"account": DEMO, "kind": "email"}).json()[
        "messages"
    ]
    last = messages[-1]
    assert set(last) == {"to", "kind", "code", "sent_at", "expires_at"}
    assert last["to"] == DEMO
    assert last["kind"] == "email"
    assert last["sent_at"].endswith("Z")
    assert last["expires_at"].endswith("Z")


def test_wrong_code_is_2_and_new_code_replaces_old(client: httpx.Client) -> None:
    client.post(SEND_EMAIL, json={"email": DEMO, "type": "codeLogin"})
    old = latest_code(client, DEMO)
    wrong = f"{(int(old) + 1) % 1_000_000:06d}"
    body = assert_error(client.post(LOGIN, json={"account": DEMO, "code": wrong}), 400, 2)
    assert body["message"] == "Code incorrect"
    client.post(SEND_EMAIL, json={"email": DEMO, "type": "codeLogin"})
    new = latest_code(client, DEMO)
    if new != old:
        assert_error(client.post(LOGIN, json={"account": DEMO, "code": old}), 400, 2)
    assert client.post(LOGIN, json={"account": DEMO, "code": new}).status_code == 200


def test_code_expires_on_the_simulated_clock(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim()
    with httpx.Client(base_url=sim.url) as http:
        http.post(SEND_EMAIL, json={"email": DEMO, "type": "codeLogin"})
        code = latest_code(http, DEMO)
        sim.advance_clock(301)
        body = assert_error(http.post(LOGIN, json={"account": DEMO, "code": code}), 400, 1)
        assert body["message"] == "Code expired"


def test_five_wrong_codes_kill_the_code(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim()
    with httpx.Client(base_url=sim.url) as http:
        http.post(SEND_EMAIL, json={"email": DEMO, "type": "codeLogin"})
        code = latest_code(http, DEMO)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        for _ in range(5):
            assert_error(http.post(LOGIN, json={"account": DEMO, "code": wrong}), 400, 2)
        # Even the right code is refused now: code 1 (send for a new one), and
        # the message says why, which is not that it expired.
        for guess in (code, wrong):
            body = assert_error(http.post(LOGIN, json={"account": DEMO, "code": guess}), 400, 1)
            assert body["message"] == "Too many attempts, please request a new code"
        # Once its time is up it is just expired; a new code works.
        sim.advance_clock(301)
        body = assert_error(http.post(LOGIN, json={"account": DEMO, "code": code}), 400, 1)
        assert body["message"] == "Code expired"
        http.post(SEND_EMAIL, json={"email": DEMO, "type": "codeLogin"})
        fresh = latest_code(http, DEMO)
        assert http.post(LOGIN, json={"account": DEMO, "code": fresh}).status_code == 200


def test_five_wrong_authenticator_codes_kill_the_tfa_key(
    make_sim: Callable[..., CloudSimulator],
) -> None:
    sim = make_sim()
    with httpx.Client(base_url=sim.url) as http:
        key = tfa_key(http)
        code = latest_code(http, TFA_USER, kind="tfa")
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        for _ in range(5):
            assert_error(http.post(TFA_FIELD, json={"tfaKey": key, "tfaCode": wrong}), 400, 2)
        body = assert_error(http.post(TFA_FIELD, json={"tfaKey": key, "tfaCode": code}), 400, 1)
        assert body["message"] == "Too many attempts, please request a new code"


def test_code_login_without_any_code_sent_is_expired(client: httpx.Client) -> None:
    assert_error(client.post(LOGIN, json={"account": "tfa@example.com", "code": "123456"}), 400, 1)
    assert_error(client.post(LOGIN, json={"account": "nobody@example.com", "code": "1"}), 400, 1)


def test_code_login_also_works_for_password_accounts(client: httpx.Client) -> None:
    client.post(SEND_EMAIL, json={"email": PASSWORD_USER, "type": "codeLogin"})
    code = latest_code(client, PASSWORD_USER)
    response = client.post(LOGIN, json={"account": PASSWORD_USER, "code": code})
    assert_token_body(response.json())


def test_send_code_to_unknown_address_is_400(client: httpx.Client) -> None:
    assert client.post(SEND_EMAIL, json={"email": "nobody@example.com"}).status_code == 400
    assert client.post(SEND_EMAIL, json={"email": PHONE_USER}).status_code == 400
    assert client.post(SEND_SMS, json={"phone": "+15550199"}).status_code == 400
    assert client.post(SEND_SMS, json={"phone": DEMO}).status_code == 400


# --- SMS -----------------------------------------------------------------------------------


def test_phone_account_logs_in_with_sms_code(client: httpx.Client) -> None:
    assert password_login(client, PHONE_USER).json()["loginType"] == "verifyCode"
    sent = client.post(SEND_SMS, json={"phone": PHONE_USER, "type": "codeLogin"})
    assert sent.json() == {"code": 0, "message": "Success"}
    code = latest_code(client, PHONE_USER, kind="sms")
    response = client.post(LOGIN, json={"account": PHONE_USER, "code": code})
    token = assert_token_body(response.json())
    profile = client.get(PROFILE, headers={"Authorization": f"Bearer {token}"}).json()["data"]
    assert profile["account"] == PHONE_USER


# --- TFA -------------------------------------------------------------------------------------


def tfa_key(http: httpx.Client) -> str:
    body = password_login(http, TFA_USER).json()
    assert body["loginType"] == "tfa"
    assert body["accessToken"] == ""
    key = body["tfaKey"]
    assert isinstance(key, str)
    assert key
    return key


def test_tfa_field_form_returns_token_in_json_and_cookie(client: httpx.Client) -> None:
    key = tfa_key(client)
    code = latest_code(client, TFA_USER, kind="tfa")
    response = client.post(TFA_FIELD, json={"tfaKey": key, "tfaCode": code})
    token = assert_token_body(response.json())
    assert response.cookies.get("token") == token
    assert profile_status(client, token) == 200
    # The key is single-use.
    assert_error(client.post(TFA_FIELD, json={"tfaKey": key, "tfaCode": code}), 400, 1)


def test_tfa_seed_form_returns_token_only_in_cookie(client: httpx.Client) -> None:
    key = tfa_key(client)
    code = latest_code(client, TFA_USER, kind="tfa")
    response = client.post(TFA_SEED, json={"tfaKey": key, "tfaCode": code})
    assert response.status_code == 200
    assert response.json() == {"success": True}
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("token=")
    assert "Path=/" in cookie
    assert "HttpOnly" in cookie
    token = response.cookies["token"]
    assert profile_status(client, token) == 200


def test_tfa_wrong_code_is_2_and_unknown_key_is_1(client: httpx.Client) -> None:
    key = tfa_key(client)
    code = latest_code(client, TFA_USER, kind="tfa")
    wrong = f"{(int(code) + 500_000) % 1_000_000:06d}"
    assert_error(client.post(TFA_FIELD, json={"tfaKey": key, "tfaCode": wrong}), 400, 2)
    assert_error(client.post(TFA_SEED, json={"tfaKey": "nope", "tfaCode": code}), 400, 1)


def test_tfa_key_expires(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim()
    with httpx.Client(base_url=sim.url) as http:
        key = tfa_key(http)
        sim.advance_clock(301)
        code = latest_code(http, TFA_USER, kind="tfa")
        assert_error(http.post(TFA_FIELD, json={"tfaKey": key, "tfaCode": code}), 400, 1)


def test_tfa_field_endpoint_can_be_disabled(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim(tfa_field_endpoint=False)
    with httpx.Client(base_url=sim.url) as http:
        key = tfa_key(http)
        code = latest_code(http, TFA_USER, kind="tfa")
        assert_error(http.post(TFA_FIELD, json={"tfaKey": key, "tfaCode": code}), 404, 404)
        # The seed form still works: the client's fallback.
        assert http.post(TFA_SEED, json={"tfaKey": key, "tfaCode": code}).status_code == 200


def test_outbox_tfa_code_is_the_rfc6238_code(client: httpx.Client, sim: CloudSimulator) -> None:
    from bambulab.sim import totp

    account = sim.world.find_account(TFA_USER)
    assert account is not None
    assert account.tfa_secret
    code = latest_code(client, TFA_USER, kind="tfa")
    assert code in {
        totp.totp(account.tfa_secret, sim.world.clock.now() + delta) for delta in (-30, 0)
    }
    # RFC 6238 appendix B vector (SHA-1, T=59): the implementation is the standard one.
    assert totp.totp("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", 59) == "287082"


# --- refresh and token checks --------------------------------------------------------


def test_refresh_returns_a_new_token(client: httpx.Client, sim: CloudSimulator) -> None:
    token = sim.issue_token(PASSWORD_USER)
    response = client.post(REFRESH, json={"refreshToken": token})
    assert profile_status(client, assert_token_body(response.json())) == 200


def test_refresh_can_answer_401_like_the_real_cloud(
    make_sim: Callable[..., CloudSimulator],
) -> None:
    sim = make_sim(refresh_enabled=False)
    with httpx.Client(base_url=sim.url) as http:
        token = sim.issue_token(DEMO)
        assert_error(http.post(REFRESH, json={"refreshToken": token}), 401, 1001)


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer garbage", "Basic abc", "Bearer a.b.c"],
)
def test_missing_or_garbage_token_is_1001(client: httpx.Client, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    assert_error(client.get(PROFILE, headers=headers), 401, 1001)


def test_token_from_another_simulator_is_1001(
    client: httpx.Client, make_sim: Callable[..., CloudSimulator]
) -> None:
    foreign = make_sim().issue_token(DEMO)  # same payload shape, different signing key
    assert_error(client.get(PROFILE, headers={"Authorization": f"Bearer {foreign}"}), 401, 1001)


def test_expired_token_is_1002(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim(token_ttl=60)
    token = sim.issue_token(DEMO)
    with httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {token}"}) as http:
        assert http.get(PROFILE).status_code == 200
        sim.advance_clock(61)
        body = assert_error(http.get(PROFILE), 401, 1002)
        assert "expired" in body["message"].lower()


def test_logs_show_codes_but_never_passwords_or_tokens(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bambulab.sim")
    token = assert_token_body(password_login(client, PASSWORD_USER).json())
    password_login(client, PASSWORD_USER, "a-wrong-secret")
    client.post(SEND_EMAIL, json={"email": DEMO, "type": "codeLogin"})
    code = latest_code(client, DEMO)
    client.post(LOGIN, json={"account": DEMO, "code": code})
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert f"outbox: email code {code} for {DEMO} (expires in 300 s)" in text
    for secret in (DEMO_PASSWORD, "a-wrong-secret", token, token.split(".")[2]):
        assert secret not in text
