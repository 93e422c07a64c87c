"""The login generator driven by hand: every branch, no network."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bambulab.errors import (
    InvalidCredentialsError,
    LoginError,
    NotFoundError,
    ProtocolError,
    VerificationCodeError,
)
from bambulab.protocol.http import HttpReply
from bambulab.protocol.login import AskCode, LoginResult, Send, hint, login_flow

OK = {"accessToken": "tok-123", "refreshToken": "tok-123", "expiresIn": 7776000, "loginType": ""}


def j(status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> HttpReply:
    return HttpReply(status, headers or [], json.dumps(body).encode())


def drive(flow: Any, answers: list[Any]) -> tuple[LoginResult, list[Any]]:
    """Feed replies/codes in order; return the result and the steps seen."""
    steps: list[Any] = []
    value: Any = None
    queue = list(answers)
    while True:
        try:
            step = flow.send(value)
        except StopIteration as done:
            return done.value, steps
        steps.append(step)
        value = queue.pop(0)


def test_password_login_returns_the_token() -> None:
    result, steps = drive(login_flow("a@b.c", "pw"), [j(200, OK)])
    assert result.access_token == "tok-123"
    assert steps[0].request.json == {"account": "a@b.c", "password": "pw", "apiError": ""}
    assert "tok-123" not in repr(result)


def test_email_code_flow_resends_on_expiry_and_reasks_on_wrong_code() -> None:
    verify = {"loginType": "verifyCode", "accessToken": ""}
    flow = login_flow("maker@example.com", "pw")
    answers = [
        j(200, verify),
        j(200, {"code": 0}),  # code sent
        "111111",
        j(400, {"code": 1, "message": "Code expired"}),
        j(200, {"code": 0}),  # new code sent
        "222222",
        j(400, {"code": 2, "message": "Code incorrect"}),
        "333333",
        j(200, OK),
    ]
    result, steps = drive(flow, answers)
    assert result.access_token == "tok-123"
    asks = [s for s in steps if isinstance(s, AskCode)]
    assert [a.reason for a in asks] == ["initial", "expired", "incorrect"]
    assert all(a.kind == "email" for a in asks)
    sends = [s.request.path for s in steps if isinstance(s, Send)]
    assert sends.count("/v1/user-service/user/sendemail/code") == 2
    assert asks[0].destination == "m***@example.com"


def test_phone_accounts_get_sms_codes() -> None:
    flow = login_flow("+15550100", None)
    result, steps = drive(flow, [j(200, {"code": 0}), "123456", j(200, OK)])
    assert steps[0].request.path == "/v1/user-service/user/sendsmscode"
    assert steps[0].request.json == {"phone": "+15550100", "type": "codeLogin"}
    assert steps[1].kind == "sms"
    assert result.method == "sms code"


def test_code_attempts_are_bounded() -> None:
    flow = login_flow("a@b.c", None, max_code_attempts=2)
    with pytest.raises(VerificationCodeError, match="incorrect 2 times"):
        drive(flow, [j(200, {}), "1", j(400, {"code": 2}), "2", j(400, {"code": 2})])


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("Too many attempts, please request a new code", "too_many"),
        ("Code expired", "expired"),
        ("", "expired"),
    ],
)
def test_code_1_is_too_many_attempts_only_when_the_server_says_so(
    message: str, reason: str
) -> None:
    flow = login_flow("a@b.c", None, max_code_attempts=2)
    dead = j(400, {"code": 1, "message": message})
    with pytest.raises(VerificationCodeError) as info:
        drive(flow, [j(200, {}), "1", dead, j(200, {}), "2", dead])
    assert info.value.reason == reason
    words = "too many attempts with the email code" if reason == "too_many" else "expired 2"
    assert words in str(info.value)
    flow = login_flow("a@b.c", None, max_code_attempts=2)
    flow.send(None)  # the code is sent
    flow.send(j(200, {}))  # ... and asked for
    flow.send("1")  # ... and tried
    again = flow.send(dead)  # a new one is requested, whichever the reason
    assert isinstance(again, Send) and again.request.path.endswith("/sendemail/code")
    ask = flow.send(j(200, {}))
    assert isinstance(ask, AskCode) and ask.reason == reason


def test_wrong_password_is_invalid_credentials_without_the_password() -> None:
    flow = login_flow("a@b.c", "hunter2")
    with pytest.raises(InvalidCredentialsError) as info:
        drive(flow, [j(400, {"code": 3, "error": "Incorrect account or password"})])
    assert "hunter2" not in str(info.value)
    assert "a***@b.c" in str(info.value)


def test_tfa_on_the_api_host() -> None:
    flow = login_flow("a@b.c", "pw")
    result, steps = drive(
        flow, [j(200, {"loginType": "tfa", "tfaKey": "k1"}), "654321", j(200, OK)]
    )
    assert steps[1].kind == "tfa"
    assert steps[2].request.path == "/v1/user-service/user/tfa/login"
    assert steps[2].request.json == {"tfaKey": "k1", "tfaCode": "654321"}
    assert result.access_token == "tok-123"


def test_tfa_falls_back_to_the_web_endpoint_and_reads_the_cookie() -> None:
    flow = login_flow("a@b.c", "pw")
    cookie = [("set-cookie", "token=tok-cookie; Path=/; HttpOnly")]
    result, steps = drive(
        flow,
        [
            j(200, {"loginType": "tfa", "tfaKey": "k1"}),
            "654321",
            j(404, {"code": 404}),
            j(200, {"success": True}, cookie),
        ],
    )
    assert steps[3].request.host == "web"
    assert steps[3].request.path == "/api/sign-in/tfa"
    assert result.access_token == "tok-cookie"


def test_tfa_api_only_does_not_fall_back() -> None:
    flow = login_flow("a@b.c", "pw", tfa_endpoint="api")
    with pytest.raises(NotFoundError):
        drive(flow, [j(200, {"loginType": "tfa", "tfaKey": "k"}), "1", j(404, {})])


def test_empty_code_cancels_and_unknown_login_type_is_a_protocol_error() -> None:
    with pytest.raises(LoginError, match="cancelled"):
        drive(login_flow("a@b.c", None), [j(200, {}), ""])
    with pytest.raises(ProtocolError, match="loginType"):
        drive(login_flow("a@b.c", "pw"), [j(200, {"loginType": "weird"})])


def test_hint_masks_addresses() -> None:
    assert hint("maker@example.com") == "m***@example.com"
    assert hint("+15550100") == "***00"


def test_a_known_code_is_tried_without_requesting_a_new_one() -> None:
    flow = login_flow("a@b.c", "pw", code="424242")
    result, steps = drive(flow, [j(200, {"loginType": "verifyCode"}), j(200, OK)])
    assert result.access_token == "tok-123"
    paths = [s.request.path for s in steps]
    assert "/v1/user-service/user/sendemail/code" not in paths
    assert steps[1].request.json == {"account": "a@b.c", "code": "424242"}


def test_a_known_code_that_expired_brings_a_new_one_and_asks() -> None:
    flow = login_flow("a@b.c", None, code="111111")
    result, steps = drive(flow, [j(400, {"code": 1}), j(200, {"code": 0}), "222222", j(200, OK)])
    assert steps[1].request.path == "/v1/user-service/user/sendemail/code"
    assert isinstance(steps[2], AskCode) and steps[2].reason == "expired"
    assert result.access_token == "tok-123"
