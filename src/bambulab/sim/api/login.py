"""Login endpoints: password, emailed/SMS codes, authenticator (TFA) and refresh.

The three account modes of PROTOCOL.md §1.1 are played faithfully: a
password login either returns a token (mode ``password``), or asks for an
emailed/SMS code (``verifyCode``), or hands out a ``tfaKey`` to be completed
with an authenticator code (``tfa``), at ``/user/tfa/login`` (field form,
token in JSON and cookie) or ``/api/sign-in/tfa`` (seed form, token only in
the ``token`` cookie). Each account has at most one live code; it dies after
``code_max_tries`` wrong guesses or ``code_ttl`` seconds of simulated time.
All of it counts against the per-account authentication rate limit.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from .. import totp
from ..errors import (
    BAD_CREDENTIALS,
    CODE_EXPIRED,
    CODE_INCORRECT,
    SimError,
    bad_request,
    not_found,
    unauthorized,
)
from ..records import Account, PendingCode, TfaTicket
from ..wire import bare
from ..world import World, normalize_login
from .deps import WorldDep

log = logging.getLogger("bambulab.sim")
# The answer to a code (or tfaKey) that took too many wrong guesses, until it
# expires or a new one replaces it.
TOO_MANY_TRIES = "Too many attempts, please request a new code"
router = APIRouter(tags=["login"])


class LoginBody(BaseModel):
    """Password login ``{account,password}`` or code login ``{account,code}``."""

    model_config = ConfigDict(extra="allow")
    account: str
    password: str | None = None
    code: str | int | None = None
    api_error: str | None = Field(default=None, alias="apiError")


class EmailCodeBody(BaseModel):
    """``{"email","type":"codeLogin"}``."""

    model_config = ConfigDict(extra="allow")
    email: str
    type: str = "codeLogin"


class SmsCodeBody(BaseModel):
    """``{"phone","type":"codeLogin"}``."""

    model_config = ConfigDict(extra="allow")
    phone: str
    type: str = "codeLogin"


class TfaBody(BaseModel):
    """``{"tfaKey","tfaCode"}``."""

    model_config = ConfigDict(extra="allow")
    tfa_key: str = Field(alias="tfaKey")
    tfa_code: str | int = Field(alias="tfaCode")


class RefreshBody(BaseModel):
    """``{"refreshToken"}``."""

    model_config = ConfigDict(extra="allow")
    refresh_token: str = Field(alias="refreshToken")


# --- endpoints -----------------------------------------------------------------


@router.post("/v1/user-service/user/login")
async def login(body: LoginBody, world: WorldDep) -> JSONResponse:
    """Password login, or code login when ``code`` is present."""
    account = world.find_account(body.account)
    _limit(world, account, body.account)
    if body.code is not None and str(body.code).strip():
        return bare(_code_login(world, account, str(body.code).strip()))
    if body.password is None:
        raise bad_request("password or code is required")
    return bare(_password_login(world, account, body.password))


@router.post("/v1/user-service/user/sendemail/code")
async def send_email_code(body: EmailCodeBody, world: WorldDep) -> JSONResponse:
    """Email a fresh login code (the previous one stops working)."""
    account = world.find_account(body.email)
    _limit(world, account, body.email)
    if account is None or account.email is None or "@" not in body.email:
        raise bad_request("Email address is not registered")
    _issue_code(world, account, "email")
    return bare({"code": 0, "message": "Success"})


@router.post("/v1/user-service/user/sendsmscode")
async def send_sms_code(body: SmsCodeBody, world: WorldDep) -> JSONResponse:
    """Text a fresh login code to a phone account."""
    account = world.find_account(body.phone)
    _limit(world, account, body.phone)
    if account is None or account.phone is None or "@" in body.phone:
        raise bad_request("Phone number is not registered")
    _issue_code(world, account, "sms")
    return bare({"code": 0, "message": "Success"})


@router.post("/v1/user-service/user/tfa/login")
async def tfa_login_field(body: TfaBody, world: WorldDep) -> JSONResponse:
    """TFA on the API host (field form): token in JSON and in a cookie."""
    if not world.config.tfa_field_endpoint:
        raise not_found()
    account = _complete_tfa(world, body)
    token = world.issue_token(account)
    response = bare(_token_body(world, token))
    _set_token_cookie(response, token)
    return response


@router.post("/api/sign-in/tfa")
async def tfa_login_seed(body: TfaBody, world: WorldDep) -> JSONResponse:
    """TFA on the web host (seed form): the token comes only as a cookie."""
    account = _complete_tfa(world, body)
    response = bare({"success": True})
    _set_token_cookie(response, world.issue_token(account))
    return response


@router.post("/v1/user-service/user/refreshtoken")
async def refresh_token(body: RefreshBody, world: WorldDep) -> JSONResponse:
    """A new token for a valid one; or 401, as the real cloud is observed to answer."""
    if not world.config.refresh_enabled:
        raise unauthorized(1001, "Refresh token is not accepted, please log in again")
    account = world.authenticate(body.refresh_token.strip())
    world.check_rate(("auth",), f"uid:{account.uid}")
    log.info("login: token refreshed for %s", account.login)
    return bare(_token_body(world, world.issue_token(account)))


# --- flows -----------------------------------------------------------------------


def _limit(world: World, account: Account | None, login: str) -> None:
    # Per account when the account exists; per typed string otherwise, so
    # guessing unknown accounts is limited too.
    key = f"uid:{account.uid}" if account else f"login:{normalize_login(login)}"
    world.check_rate(("auth",), key)


def _password_login(world: World, account: Account | None, password: str) -> dict[str, Any]:
    if account is None or not hmac.compare_digest(
        account.password.encode("utf-8"), password.encode("utf-8")
    ):
        log.info("login: password refused")
        raise SimError(400, BAD_CREDENTIALS, "Incorrect account or password")
    if account.mode == "password":
        log.info("login: %s signed in with password", account.login)
        return _token_body(world, world.issue_token(account))
    if account.mode == "verifyCode":
        # The real cloud mails (or texts) a code right away. One still alive (even one
        # dead of wrong guesses) is not replaced: a client that logs in again to use the
        # code it holds (the CLI's two-step login) must get that code's own answer.
        # Asking sendemail/code for one, as most clients do next, does replace it.
        pending = world.codes.get(account.uid)
        if pending is None or world.clock.now() >= pending.expires_at:
            log.info("login: %s needs a verification code; sending one", account.login)
            _issue_code(world, account, "email" if account.email is not None else "sms")
        else:
            log.info("login: %s needs a verification code; one is still valid", account.login)
        return _pending_body("verifyCode", "")
    ticket = TfaTicket(
        key=secrets.token_urlsafe(24),
        uid=account.uid,
        expires_at=world.clock.now() + world.config.tfa_key_ttl,
        tries_left=world.config.code_max_tries,
    )
    world.tfa_tickets[ticket.key] = ticket
    log.info("login: %s needs an authenticator code", account.login)
    return _pending_body("tfa", ticket.key)


def _issue_code(world: World, account: Account, kind: Literal["email", "sms"]) -> None:
    code = f"{secrets.randbelow(10**6):06d}"
    ttl = world.config.code_ttl
    world.codes[account.uid] = PendingCode(
        uid=account.uid,
        code=code,
        expires_at=world.clock.now() + ttl,
        tries_left=world.config.code_max_tries,
    )
    world.send(kind, account.login, code, ttl)


def _code_login(world: World, account: Account | None, code: str) -> dict[str, Any]:
    pending = world.codes.get(account.uid) if account else None
    if account is None or pending is None or world.clock.now() >= pending.expires_at:
        if account is not None:
            world.codes.pop(account.uid, None)
        raise SimError(400, CODE_EXPIRED, "Code expired")
    if pending.tries_left <= 0:
        # Dead for the same reason a good client sends for a new one (code 1), but
        # the message tells the person why: a timed-out code is not their fault.
        raise SimError(400, CODE_EXPIRED, TOO_MANY_TRIES)
    if not hmac.compare_digest(pending.code, code):
        pending.tries_left -= 1
        log.info("login: wrong code for %s (%d tries left)", account.login, pending.tries_left)
        raise SimError(400, CODE_INCORRECT, "Code incorrect")
    del world.codes[account.uid]
    log.info("login: %s signed in with a code", account.login)
    return _token_body(world, world.issue_token(account))


def _complete_tfa(world: World, body: TfaBody) -> Account:
    ticket = world.tfa_tickets.get(body.tfa_key)
    if ticket is None or world.clock.now() >= ticket.expires_at:
        world.tfa_tickets.pop(body.tfa_key, None)
        _limit(world, None, f"tfa:{body.tfa_key}")
        raise SimError(400, CODE_EXPIRED, "Verification expired, please log in again")
    if ticket.tries_left <= 0:
        _limit(world, None, f"tfa:{body.tfa_key}")
        raise SimError(400, CODE_EXPIRED, TOO_MANY_TRIES)
    account = world.accounts[ticket.uid]
    _limit(world, account, account.login)
    secret = account.tfa_secret or ""
    if not secret or not totp.verify(secret, str(body.tfa_code), world.clock.now()):
        ticket.tries_left -= 1
        log.info("login: wrong authenticator code for %s", account.login)
        raise SimError(400, CODE_INCORRECT, "Code incorrect")
    del world.tfa_tickets[ticket.key]
    log.info("login: %s signed in with an authenticator code", account.login)
    return account


# The keys of every answer of /user/login, and only those, as the real API sends
# them (a captured verifyCode answer: these seven keys). No ``success`` key: the
# seed shows one, the API does not, and a client that trusts it takes an empty
# token for a login.
LOGIN_KEYS = (
    "accessToken",
    "refreshToken",
    "expiresIn",
    "refreshExpiresIn",
    "tfaKey",
    "accessMethod",
    "loginType",
)


def _token_body(world: World, token: str) -> dict[str, Any]:
    ttl = world.tokens.ttl
    return {
        "accessToken": token,
        "refreshToken": token,  # equal in practice (PROTOCOL.md §1.1)
        "expiresIn": ttl,
        "refreshExpiresIn": ttl,
        "tfaKey": "",
        "accessMethod": "",
        "loginType": "",
    }


def _pending_body(login_type: str, tfa_key: str) -> dict[str, Any]:
    return {
        "accessToken": "",
        "refreshToken": "",
        "expiresIn": 0,
        "refreshExpiresIn": 0,
        "tfaKey": tfa_key,
        "accessMethod": "",
        "loginType": login_type,
    }


def _set_token_cookie(response: JSONResponse, token: str) -> None:
    response.headers.append("set-cookie", f"token={token}; Path=/; HttpOnly")
