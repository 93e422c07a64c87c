"""Logging in and keeping the token: :class:`BambuAuthenticator` and its async twin.

Both drive the one sans-IO flow of :mod:`bambulab.protocol.login`; they only
differ in how they wait for the network and for the person typing a code.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..errors import (
    CodeRequiredError,
    ConfigurationError,
    TokenExpiredError,
    TokenFileError,
    TokenInvalidError,
)
from ..protocol import cloud_api as api
from ..protocol.http import NO_RETRY, HttpReply, interpret
from ..protocol.jwt import TokenClaims, decode_claims
from ..protocol.login import AskCode, Flow, LoginResult, Send, TfaEndpoint, login_flow, refresh_flow
from ..regions import endpoints
from .tokens import ENV_TOKEN, TokenStore
from .transport import AsyncTransport, SyncTransport, resolve_timeout

log = logging.getLogger("bambulab.auth")

WARN_BEFORE_EXPIRY = 7 * 24 * 3600.0

CodeCallback = Callable[..., Any]
"""``callback(request: AskCode) -> str`` or ``callback() -> str``.

The async face also accepts a coroutine function."""


def _wants_request(callback: CodeCallback) -> bool:
    try:
        params = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params
    )


def _invoke(callback: CodeCallback | None, step: AskCode) -> Any:
    if callback is None:
        if sys.stdin is not None and sys.stdin.isatty():
            return input(step.prompt + ": ")
        raise CodeRequiredError(
            f"this account needs a {step.kind} code: pass code_callback= to login()",
            kind=step.kind,
        )
    return callback(step) if _wants_request(callback) else callback()


class _AuthBase:
    def __init__(
        self,
        region: str = "global",
        *,
        base_url: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        max_code_attempts: int = 3,
        tfa_endpoint: TfaEndpoint = "auto",
    ) -> None:
        self.endpoints = endpoints(region, base_url)
        self.region = self.endpoints.region
        self.store = TokenStore(token_file)
        self.max_code_attempts = max_code_attempts
        self.tfa_endpoint = tfa_endpoint
        self._timeout = resolve_timeout(timeout)
        self.last_login: LoginResult | None = None

    def _flow(self, username: str, password: str | None, code: str | None = None) -> Flow:
        return login_flow(
            username,
            password,
            max_code_attempts=self.max_code_attempts,
            tfa_endpoint=self.tfa_endpoint,
            code=code,
        )

    @property
    def token_file(self) -> Path:
        """Where the token is saved."""
        return self.store.path

    def save_token(
        self, token: str, region: str | None = None, refresh_token: str | None = None
    ) -> Path:
        """Save the token (mode 0600, atomic replace); returns the file's path."""
        return self.store.save(token, region or self.region, refresh_token)

    def load_token(self) -> str | None:
        """The saved token, or ``None``; warns when it expires soon."""
        saved = self.store.load()
        if saved is None:
            return None
        self.check_expiry(saved.token)
        return saved.token

    def logout(self) -> bool:
        """Forget the saved token; whether there was one."""
        return self.store.delete()

    @staticmethod
    def token_claims(token: str) -> TokenClaims:
        """What the token says about itself (user id, expiry)."""
        return decode_claims(token)

    def check_expiry(self, token: str) -> TokenClaims:
        """Warn if the token expires within a week; raise if it has expired."""
        claims = decode_claims(token)
        left = claims.seconds_left()
        if left is not None and left <= 0:
            raise TokenExpiredError(
                "the saved access token has expired: log in again (bambu login)"
            )
        if left is not None and left < WARN_BEFORE_EXPIRY:
            log.warning(
                "the access token expires in %.1f days: log in again soon (bambu login)",
                left / 86400,
            )
        return claims

    def _reusable(self, username: str | None) -> str | None:
        """``_env_or_saved``, for a caller that can log in again: a corrupt file is replaced."""
        try:
            return self._env_or_saved()
        except TokenFileError as exc:
            if not username:
                raise
            log.warning("%s; logging in again", str(exc).partition("; run")[0])
            return None

    def _env_or_saved(self) -> str | None:
        env = os.environ.get(ENV_TOKEN, "").strip()
        if env:
            return env
        saved = self.store.load()
        if saved is None:
            return None
        try:
            self.check_expiry(saved.token)
        except TokenExpiredError:
            log.info("the saved token has expired; logging in again")
            return None
        return saved.token

    def _last_refresh(self) -> str | None:
        return self.last_login.refresh_token if self.last_login else None

    def _transport_args(self, token: str | None = None) -> tuple[Any, ...]:
        return (self.endpoints, token, self._timeout, NO_RETRY, None)


class BambuAuthenticator(_AuthBase):
    """Blocking login and token management (the seed's API)."""

    def _drive(self, flow: Flow, code_callback: CodeCallback | None) -> LoginResult:
        transport = SyncTransport(*self._transport_args())
        try:
            value: Any = None
            while True:
                try:
                    step = flow.send(value)
                except StopIteration as done:
                    result: LoginResult = done.value
                    return result
                if isinstance(step, Send):
                    value = transport.send(step.request)
                else:
                    value = _invoke(code_callback, step)
        finally:
            transport.close()

    def login(
        self,
        username: str,
        password: str | None = None,
        code_callback: CodeCallback | None = None,
        *,
        code: str | None = None,
    ) -> str:
        """Log in and return the access token (not saved: see :meth:`get_or_create_token`).

        ``code_callback`` is asked for emailed/SMS/authenticator codes; it gets
        an :class:`~bambulab.protocol.login.AskCode` (or nothing, if it takes no
        argument) and returns the code. ``code`` is an emailed/SMS code already
        received (say, by an earlier run of a script): it is tried first and no
        new code is requested before it.
        """
        result = self._drive(self._flow(username, password, code), code_callback)
        self.last_login = result
        return result.access_token

    def get_or_create_token(
        self,
        username: str | None = None,
        password: str | None = None,
        code_callback: CodeCallback | None = None,
    ) -> str:
        """``BAMBU_TOKEN``, else the saved token if still valid, else log in and save."""
        token = self._reusable(username)
        if token:
            return token
        if not username:
            raise ConfigurationError("no saved token: log in with an account (bambu login)")
        token = self.login(username, password, code_callback)
        self.save_token(token, refresh_token=self._last_refresh())
        return token

    def refresh(self, refresh_token: str) -> str:
        """A new access token from a refresh token (servers often refuse: then log in)."""
        return self._drive(refresh_flow(refresh_token), None).access_token

    def _call(self, token: str | None, call: Any) -> Any:
        token = token or self._env_or_saved()
        if not token:
            raise ConfigurationError("no token to check: log in first (bambu login)")
        transport = SyncTransport(*self._transport_args(token))
        try:
            reply: HttpReply = transport.send(call.request)
        finally:
            transport.close()
        return call.parse(interpret(reply, call.request.path))

    def verify_token(self, token: str | None = None) -> bool:
        """Whether the server accepts the token (asks it; ``False`` on 401)."""
        try:
            self._call(token, api.get_preference())
        except (TokenInvalidError, TokenExpiredError):
            return False
        return True

    def get_user_id(self, token: str | None = None) -> str:
        """The account's uid: from the token's claims, else from the preference endpoint."""
        claims = decode_claims(token or self._env_or_saved())
        if claims.uid:
            return claims.uid
        return str(self._call(token, api.get_preference()).uid)

    def get_mqtt_username(self, token: str | None = None) -> str:
        """The cloud MQTT user name, ``u_<uid>``."""
        return f"u_{self.get_user_id(token)}"


class AsyncBambuAuthenticator(_AuthBase):
    """Non-blocking twin of :class:`BambuAuthenticator`; the code callback may be async."""

    async def _drive(self, flow: Flow, code_callback: CodeCallback | None) -> LoginResult:
        transport = AsyncTransport(*self._transport_args())
        try:
            value: Any = None
            while True:
                try:
                    step = flow.send(value)
                except StopIteration as done:
                    result: LoginResult = done.value
                    return result
                if isinstance(step, Send):
                    value = await transport.send(step.request)
                else:
                    value = _invoke(code_callback, step)
                    if inspect.isawaitable(value):
                        value = await value
        finally:
            await transport.aclose()

    async def login(
        self,
        username: str,
        password: str | None = None,
        code_callback: CodeCallback | Callable[..., Awaitable[str]] | None = None,
        *,
        code: str | None = None,
    ) -> str:
        """Log in and return the access token (see :meth:`BambuAuthenticator.login`)."""
        result = await self._drive(self._flow(username, password, code), code_callback)
        self.last_login = result
        return result.access_token

    async def get_or_create_token(
        self,
        username: str | None = None,
        password: str | None = None,
        code_callback: CodeCallback | None = None,
    ) -> str:
        """``BAMBU_TOKEN``, else the saved token if still valid, else log in and save."""
        token = self._reusable(username)
        if token:
            return token
        if not username:
            raise ConfigurationError("no saved token: log in with an account (bambu login)")
        token = await self.login(username, password, code_callback)
        self.save_token(token, refresh_token=self._last_refresh())
        return token

    async def refresh(self, refresh_token: str) -> str:
        """A new access token from a refresh token."""
        return (await self._drive(refresh_flow(refresh_token), None)).access_token

    async def _call(self, token: str | None, call: Any) -> Any:
        token = token or self._env_or_saved()
        if not token:
            raise ConfigurationError("no token to check: log in first (bambu login)")
        transport = AsyncTransport(*self._transport_args(token))
        try:
            reply: HttpReply = await transport.send(call.request)
        finally:
            await transport.aclose()
        return call.parse(interpret(reply, call.request.path))

    async def verify_token(self, token: str | None = None) -> bool:
        """Whether the server accepts the token."""
        try:
            await self._call(token, api.get_preference())
        except (TokenInvalidError, TokenExpiredError):
            return False
        return True

    async def get_user_id(self, token: str | None = None) -> str:
        """The account's uid: from the token's claims, else from the preference endpoint."""
        claims = decode_claims(token or self._env_or_saved())
        if claims.uid:
            return claims.uid
        return str((await self._call(token, api.get_preference())).uid)

    async def get_mqtt_username(self, token: str | None = None) -> str:
        """The cloud MQTT user name, ``u_<uid>``."""
        return f"u_{await self.get_user_id(token)}"
