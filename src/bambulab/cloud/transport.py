"""The only place the cloud layer touches httpx: sync and async byte movers.

Both faces share the policy (headers, timeouts, retries, error translation);
each only differs in how it waits. Foreign exceptions become
:class:`~bambulab.errors.TransportError` here, with the URL but no secret.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from .. import __version__
from ..errors import BambuError, ConfigurationError, RequestTimeoutError, TransportError
from ..protocol.http import ApiRequest, HttpReply, RetryPolicy
from ..regions import Endpoints

log = logging.getLogger("bambulab.cloud")

DEFAULT_TIMEOUT = 15.0

# Working clients present themselves like the slicer's network agent (PROTOCOL.md §1).
CLIENT_HEADERS = {
    "User-Agent": f"bambu_network_agent/01.09.05.01 bambulab-py/{__version__}",
    "X-BBL-Client-Name": "OrcaSlicer",
    "X-BBL-Client-Type": "slicer",
    "X-BBL-Client-Version": "01.09.05.51",
    "X-BBL-Language": "en-US",
    "X-BBL-OS-Type": platform.system().lower() or "linux",
    "X-BBL-OS-Version": platform.release() or "0",
    "X-BBL-Agent-Version": "01.09.05.01",
    "Accept": "application/json",
}


class _RedactSignedUrls(logging.Filter):
    """httpx logs every URL at INFO; a pre-signed URL's query is a credential."""

    _PATTERN = re.compile(r"(Signature|X-Amz-Signature|AWSAccessKeyId|X-Amz-Credential)=[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                self._PATTERN.sub(r"\1=***", str(a)) if "=" in str(a) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        return True


logging.getLogger("httpx").addFilter(_RedactSignedUrls())


def _timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds, 10.0))


@contextmanager
def translate(url: str) -> Iterator[None]:
    """Turn httpx's exceptions into ours, naming the host but nothing secret."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise RequestTimeoutError(
            f"no answer from {_origin(url)} in time", url=_origin(url)
        ) from exc
    except httpx.InvalidURL as exc:
        raise TransportError(f"invalid URL for {_origin(url)}", url=_origin(url)) from exc
    except (httpx.TransportError, OSError) as exc:
        reason = _reason(exc)
        raise TransportError(f"cannot reach {_origin(url)}: {reason}", url=_origin(url)) from exc


def _origin(url: str) -> str:
    try:
        parsed = httpx.URL(url)
        return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")
    except Exception:
        return "the server"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    low = text.lower()
    if "connection refused" in low or "errno 111" in low:
        return "connection refused"
    if "name or service not known" in low or "nodename nor servname" in low:
        return "unknown host"
    if "certificate" in low:
        return "TLS certificate verification failed"
    return text.splitlines()[0][:120]


def to_reply(response: httpx.Response) -> HttpReply:
    """Our sans-IO view of an httpx response."""
    return HttpReply(response.status_code, list(response.headers.multi_items()), response.content)


class _Policy:
    """What both faces share: where requests go, with which headers, how often retried."""

    def __init__(
        self,
        endpoints: Endpoints,
        token: str | None,
        timeout: float,
        retry: RetryPolicy,
        headers: dict[str, str] | None,
    ) -> None:
        self.endpoints = endpoints
        self.token = token
        self.timeout = timeout
        self.retry = retry
        self.headers = {**CLIENT_HEADERS, **(headers or {})}

    def url(self, request: ApiRequest) -> str:
        base = self.endpoints.web if request.host == "web" else self.endpoints.api
        return base + request.path

    def request_headers(self, request: ApiRequest) -> dict[str, str]:
        headers = dict(self.headers)
        if request.auth:
            if not self.token:
                raise ConfigurationError(
                    "no access token: run `bambu login`, set BAMBU_TOKEN, or pass token="
                )
            headers["Authorization"] = f"Bearer {self.token}"
        if request.json is not None:
            headers["Content-Type"] = "application/json"
        return headers

    def kwargs(self, request: ApiRequest) -> dict[str, Any]:
        return {
            "method": request.method,
            "url": self.url(request),
            "params": dict(request.params) if request.params else None,
            "json": request.json,
            "headers": self.request_headers(request),
        }

    def give_up_or_wait(
        self, attempt: int, error: BambuError, request: ApiRequest, started: float
    ) -> float:
        """Seconds to wait before retrying, or re-raise ``error``."""
        delay = self.retry.delay(attempt, error, request, time.monotonic() - started)
        if delay is None:
            raise error
        log.info(
            "%s %s: %s; retry %d in %.1f s",
            request.method,
            request.path,
            type(error).__name__,
            attempt + 1,
            delay,
        )
        return delay


class SyncTransport(_Policy):
    """Blocking requests over one pooled ``httpx.Client``."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._http = httpx.Client(timeout=_timeout(self.timeout), follow_redirects=False)

    def send(self, request: ApiRequest) -> HttpReply:
        """One try, no interpretation."""
        kw = self.kwargs(request)
        with translate(kw["url"]):
            return to_reply(self._http.request(**kw))

    def call(self, request: ApiRequest) -> Any:
        """Send with retries; the unwrapped payload or the error."""
        from ..protocol.http import interpret

        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return interpret(self.send(request), request.path)
            except BambuError as error:
                time.sleep(self.give_up_or_wait(attempt, error, request, started))

    def raw(self, method: str, url: str, content: bytes, headers: dict[str, str]) -> HttpReply:
        """A bare request to a pre-signed URL: none of the API headers, no token."""
        with translate(url):
            response = httpx.request(
                method, url, content=content, headers=headers, timeout=_timeout(self.timeout * 4)
            )
            return to_reply(response)

    def close(self) -> None:
        self._http.close()


class AsyncTransport(_Policy):
    """Non-blocking requests over one pooled ``httpx.AsyncClient``."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._http = httpx.AsyncClient(timeout=_timeout(self.timeout), follow_redirects=False)

    async def send(self, request: ApiRequest) -> HttpReply:
        """One try, no interpretation."""
        kw = self.kwargs(request)
        with translate(kw["url"]):
            return to_reply(await self._http.request(**kw))

    async def call(self, request: ApiRequest) -> Any:
        """Send with retries; the unwrapped payload or the error."""
        from ..protocol.http import interpret

        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return interpret(await self.send(request), request.path)
            except BambuError as error:
                await asyncio.sleep(self.give_up_or_wait(attempt, error, request, started))

    async def raw(
        self, method: str, url: str, content: bytes, headers: dict[str, str]
    ) -> HttpReply:
        """A bare request to a pre-signed URL: none of the API headers, no token."""
        with translate(url):
            async with httpx.AsyncClient(timeout=_timeout(self.timeout * 4)) as http:
                return to_reply(await http.request(method, url, content=content, headers=headers))

    async def aclose(self) -> None:
        await self._http.aclose()
