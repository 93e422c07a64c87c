"""The login flows as one sans-IO generator (PROTOCOL.md §1.1).

:func:`login_flow` yields :class:`Send` (an HTTP request to make; send back the
:class:`HttpReply`) and :class:`AskCode` (a verification code to obtain; send
back the code text), and returns a :class:`LoginResult`. The sync and async
authenticators drive the very same generator.

Flows: password; password then emailed code (or SMS code for phone-number
accounts); password then authenticator code (TFA) on the API host, falling
back to the seed's web-host endpoint that returns the token in a cookie; and a
code-only login when no password is given. An expired code (or one used up by
too many wrong guesses) is replaced by a fresh one; an incorrect one is asked
for again; both are bounded.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any, Literal

from ..errors import (
    APIError,
    BadRequestError,
    CloudflareBlockedError,
    ConfigurationError,
    CSRFBlockedError,
    ForbiddenError,
    InvalidCredentialsError,
    LoginError,
    NotFoundError,
    ProtocolError,
    VerificationCodeError,
)
from ..models import TokenResponse
from ..secrets import mask
from .http import ApiRequest, HttpReply, interpret

CodeKind = Literal["email", "sms", "tfa"]
CodeReason = Literal["initial", "expired", "incorrect", "too_many"]
TfaEndpoint = Literal["auto", "api", "web"]

LOGIN = "/v1/user-service/user/login"
SEND_EMAIL_CODE = "/v1/user-service/user/sendemail/code"
SEND_SMS_CODE = "/v1/user-service/user/sendsmscode"
TFA_API = "/v1/user-service/user/tfa/login"
TFA_WEB = "/api/sign-in/tfa"
REFRESH = "/v1/user-service/user/refreshtoken"

# Application codes of a refused verification code.
CODE_EXPIRED = 1
CODE_INCORRECT = 2
# Code 1 also answers a code that took too many wrong guesses (request a new
# one either way); only the server's message tells the two apart.
TOO_MANY_WORDS = ("too many", "attempts", "tries")


def dead_code_reason(server_message: str | None) -> CodeReason:
    """Why a code was refused with code 1: ``too_many`` when the server says so, else expired."""
    text = (server_message or "").lower()
    return "too_many" if any(word in text for word in TOO_MANY_WORDS) else "expired"


def refusal_text(kind: str, reason: str, times: int) -> str:
    """One line on a code refused ``times`` times in a row, the last time for ``reason``."""
    if reason == "too_many":
        return f"too many attempts with the {kind} code"
    return f"the {kind} code was {reason} {times} times"


@dataclass(frozen=True, slots=True)
class Send:
    """Make this HTTP request and send the :class:`HttpReply` back."""

    request: ApiRequest


@dataclass(frozen=True, slots=True)
class AskCode:
    """Obtain a verification code from the user and send it back as text.

    ``kind`` is where it comes from (``email``, ``sms``, ``tfa`` authenticator
    app), ``reason`` why it is asked (``initial``, ``expired`` - a new one was
    sent, ``incorrect`` - the last one was wrong, ``too_many`` - the server
    stopped taking guesses at the last one and a new one was sent),
    ``destination`` a masked hint of the address it was sent to.
    """

    kind: CodeKind
    reason: CodeReason
    attempt: int
    destination: str

    @property
    def prompt(self) -> str:
        """A one-line prompt for a person."""
        where = {
            "email": f"the code emailed to {self.destination}",
            "sms": f"the code texted to {self.destination}",
            "tfa": "the code from your authenticator app",
        }[self.kind]
        sent = "" if self.kind == "tfa" else "; a new one was sent"
        why = {
            "initial": "",
            "expired": f"That code expired{sent}. ",
            "incorrect": "That code was incorrect. ",
            "too_many": f"Too many attempts with that code{sent}. ",
        }[self.reason]
        return f"{why}Enter {where}"


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A completed login."""

    access_token: str
    refresh_token: str
    expires_in: int | None
    method: str

    def __repr__(self) -> str:
        return f"LoginResult(method={self.method!r}, expires_in={self.expires_in!r}, token=***)"


Step = Send | AskCode
Flow = Generator[Step, Any, LoginResult]


def hint(account: str) -> str:
    """A masked form of an email or phone number, safe to show: ``m***@example.com``."""
    if "@" in account:
        user, _, domain = account.partition("@")
        return f"{user[:1]}***@{domain}"
    digits = account.strip()
    return f"***{digits[-2:]}" if len(digits) > 2 else "***"


def is_phone(account: str) -> bool:
    """Phone-number accounts have no ``@`` and get SMS codes."""
    return "@" not in account


def _post(path: str, body: dict[str, Any], host: Literal["api", "web"] = "api") -> Send:
    return Send(ApiRequest("POST", path, json=body, host=host, auth=False))


def cookie_token(reply: HttpReply) -> str | None:
    """The ``token`` cookie of a reply (the seed's TFA endpoint answers that way)."""
    for header in reply.header_values("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except Exception:  # noqa: S112 - a malformed cookie is just not ours
            continue
        if "token" in jar and jar["token"].value:
            return jar["token"].value
    return None


def _token(payload: Any, method: str, reply: HttpReply | None = None) -> LoginResult | None:
    data = TokenResponse.from_wire(payload if isinstance(payload, dict) else {})
    token = data.access_token or (cookie_token(reply) if reply else None)
    if not token:
        return None
    return LoginResult(token, data.refresh_token or token, data.expires_in, method)


def login_flow(
    account: str,
    password: str | None,
    *,
    max_code_attempts: int = 3,
    tfa_endpoint: TfaEndpoint = "auto",
    code: str | None = None,
) -> Flow:
    """Log in; see the module docstring for the protocol of this generator.

    ``code`` is an emailed/SMS code the user already holds (from an earlier
    attempt): it is tried first, and no new code is requested before it.
    """
    account = (account or "").strip()
    if not account:
        raise ConfigurationError("an account (email or phone number) is required")
    if not password:
        return (yield from _code_login(account, max_code_attempts, code))
    payload, _ = yield from _password_step(account, password)
    data = TokenResponse.from_wire(payload if isinstance(payload, dict) else {})
    if data.login_type in ("", None) and data.access_token:
        result = _token(payload, "password")
        assert result is not None
        return result
    if data.login_type == "verifyCode":
        return (yield from _code_login(account, max_code_attempts, code))
    if data.login_type == "tfa":
        if not data.tfa_key:
            raise ProtocolError("the server asked for an authenticator code but sent no tfaKey")
        return (
            yield from _tfa_login(account, password, data.tfa_key, max_code_attempts, tfa_endpoint)
        )
    raise ProtocolError(
        f"the login answer had no token and an unknown loginType {data.login_type!r}"
    )


def _password_step(account: str, password: str) -> Generator[Step, Any, tuple[Any, HttpReply]]:
    reply: HttpReply = yield _post(
        LOGIN, {"account": account, "password": password, "apiError": ""}
    )
    try:
        return interpret(reply, LOGIN), reply
    except (CloudflareBlockedError, CSRFBlockedError):
        raise
    except (BadRequestError, ForbiddenError, NotFoundError, APIError) as exc:
        if exc.http_status in (400, 401, 403, 404):
            raise InvalidCredentialsError(
                f"login refused for {hint(account)}: "
                f"{exc.server_message or 'incorrect account or password'}",
                http_status=exc.http_status,
                code=exc.code,
                server_message=exc.server_message,
                path=LOGIN,
            ) from None
        raise


def _send_code(account: str) -> Generator[Step, Any, None]:
    if is_phone(account):
        reply = yield _post(SEND_SMS_CODE, {"phone": account, "type": "codeLogin"})
        interpret(reply, SEND_SMS_CODE)
    else:
        reply = yield _post(SEND_EMAIL_CODE, {"email": account, "type": "codeLogin"})
        interpret(reply, SEND_EMAIL_CODE)


def _code_login(account: str, max_attempts: int, known: str | None = None) -> Flow:
    kind: CodeKind = "sms" if is_phone(account) else "email"
    if not known:
        yield from _send_code(account)
    reason: CodeReason = "initial"
    for attempt in range(1, max_attempts + 1):
        if known and attempt == 1:
            code = _clean_code(known, kind)
        else:
            code = _clean_code((yield AskCode(kind, reason, attempt, hint(account))), kind)
        reply: HttpReply = yield _post(LOGIN, {"account": account, "code": code})
        try:
            payload = interpret(reply, LOGIN)
        except BadRequestError as exc:
            if exc.code == CODE_EXPIRED:
                reason = dead_code_reason(exc.server_message)
                if attempt < max_attempts:
                    yield from _send_code(account)
                continue
            if exc.code == CODE_INCORRECT:
                reason = "incorrect"
                continue
            raise
        result = _token(payload, f"{kind} code", reply)
        if result is None:
            raise ProtocolError("the code login succeeded but the answer carried no token")
        return result
    raise VerificationCodeError(
        f"{refusal_text(kind, reason, max_attempts)}; log in again",
        kind=kind,
        reason=reason,
    )


def _tfa_login(
    account: str, password: str, tfa_key: str, max_attempts: int, endpoint: TfaEndpoint
) -> Flow:
    reason: CodeReason = "initial"
    use_web = endpoint == "web"
    for attempt in range(1, max_attempts + 1):
        code = _clean_code((yield AskCode("tfa", reason, attempt, "authenticator")), "tfa")
        body = {"tfaKey": tfa_key, "tfaCode": code}
        try:
            if not use_web:
                reply: HttpReply = yield _post(TFA_API, body)
                if reply.status == 404 and endpoint == "auto":
                    use_web = True  # older servers only know the seed's web endpoint
            if use_web:
                reply = yield _post(TFA_WEB, body, host="web")
            payload = interpret(reply, TFA_WEB if use_web else TFA_API)
        except BadRequestError as exc:
            if exc.code == CODE_INCORRECT:
                reason = "incorrect"
                continue
            if exc.code == CODE_EXPIRED:
                # The tfaKey lapsed (or took too many guesses): a fresh
                # password step gives a new one.
                reason = dead_code_reason(exc.server_message)
                fresh, _ = yield from _password_step(account, password)
                tfa_key = TokenResponse.from_wire(fresh if isinstance(fresh, dict) else {}).tfa_key
                if not tfa_key:
                    raise ProtocolError("the server gave no new tfaKey") from None
                continue
            raise
        result = _token(payload, "authenticator code", reply)
        if result is None:
            raise ProtocolError("the authenticator login succeeded but no token came back")
        return result
    raise VerificationCodeError(
        f"{refusal_text('authenticator', reason, max_attempts)}; log in again",
        kind="tfa",
        reason=reason,
    )


def _clean_code(code: Any, kind: str) -> str:
    text = "".join(str(code or "").split())
    if not text:
        raise LoginError(f"no {kind} code was given; login cancelled")
    return text


def refresh_flow(refresh_token: str) -> Generator[Step, Any, LoginResult]:
    """Exchange a refresh token for a new access token (often refused in practice)."""
    reply: HttpReply = yield _post(REFRESH, {"refreshToken": refresh_token})
    result = _token(interpret(reply, REFRESH), "refresh", reply)
    if result is None:
        raise ProtocolError("the refresh answer carried no token")
    return result


__all__ = ["AskCode", "LoginResult", "Send", "hint", "login_flow", "mask", "refresh_flow"]
