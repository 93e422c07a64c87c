"""The only place the cloud layer touches httpx: sync and async byte movers.

Both faces share the policy (headers, timeouts, retries, error translation);
each only differs in how it waits. Foreign exceptions become
:class:`~bambulab.errors.TransportError` here, with the URL but no secret.

Every request has one overall deadline (``timeout`` seconds of wall clock for
connect, headers and body together): per-read timeouts alone let a server
that drips a byte a second hold a caller forever. The async face wraps the
exchange in ``asyncio.timeout``. The sync face has nothing that can interrupt
a blocking read, so its sockets come from :class:`_DeadlineBackend`, an
httpcore network backend that gives every connect, read and write at most the
time left before the deadline of the request in progress. httpx 0.28 cannot
be handed a network backend, so :class:`_DeadlineTransport` drives httpcore's
public ``ConnectionPool`` (and ``HTTPProxy``, for proxies named by the
environment as httpx would use them) itself: a few lines of mapping.

Bodies are read as a stream into :class:`~bambulab.protocol.http.AnswerBody`,
which refuses an answer over the cap (declared or actual) and names a
truncated one; downloads use :meth:`SyncTransport.stream` without the cap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import re
import threading
import time
import urllib.request
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from .. import __version__
from ..errors import (
    BambuError,
    ConfigurationError,
    ProtocolError,
    RequestTimeoutError,
    TransportError,
)
from ..protocol.http import MAX_ANSWER_BYTES, AnswerBody, ApiRequest, HttpReply, RetryPolicy
from ..regions import Endpoints

log = logging.getLogger("bambulab.cloud")

DEFAULT_TIMEOUT = 15.0
ENV_TIMEOUT = "BAMBU_TIMEOUT"
# Uploads to pre-signed URLs carry whole files: they get this many deadlines.
RAW_TIMEOUT_FACTOR = 4

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


def resolve_timeout(timeout: float | None) -> float:
    """``timeout``, else ``BAMBU_TIMEOUT``, else :data:`DEFAULT_TIMEOUT` (seconds, > 0)."""
    if timeout is None:
        text = os.environ.get(ENV_TIMEOUT, "").strip()
        try:
            timeout = float(text) if text else DEFAULT_TIMEOUT
        except ValueError:
            raise ConfigurationError(f"{ENV_TIMEOUT} must be a number of seconds") from None
    if not timeout > 0:
        raise ConfigurationError(f"the request timeout must be positive, not {timeout!r}")
    return timeout


def _seconds(value: float) -> str:
    return f"{round(value, 1):g}"


# --- the sync face's deadline --------------------------------------------------------------

# The deadline (time.monotonic()) of the request this thread is making; the
# pooled sockets outlive requests, so they look it up at every operation.
_DEADLINE: ContextVar[float | None] = ContextVar("bambulab_http_deadline", default=None)


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    """``timeout`` shortened to the time left, or ``expired`` if none is."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the request's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket whose every read and write ends by the current request's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's blocking sockets, each connect/read/write bounded by the deadline."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _CoreBody(httpx.SyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        stream = self._response.stream
        assert isinstance(stream, Iterable)
        yield from stream

    def close(self) -> None:
        self._response.close()


def _env_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment names for ``url`` (``*_PROXY``, ``NO_PROXY``), if any."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or _bypassed(url.host, proxies.get("no", "")):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _bypassed(host: str, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` (``*``, hosts, ``.domain`` suffixes, ``host:port``) covers ``host``."""
    host = host.lower().rstrip(".")
    for entry in no_proxy.replace(" ", "").lower().split(","):
        if entry == "*":
            return True
        if entry.count(":") == 1:
            entry = entry.split(":")[0]  # host:port (an IPv6 address has more colons)
        entry = entry.strip("[]").lstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


class _DeadlineTransport(httpx.BaseTransport):
    """httpx's default transport over :class:`_DeadlineBackend`.

    Like httpx, it honours HTTP(S) proxies named by the environment; each
    proxy (and the direct route) gets its own pool on the same backend.
    """

    def __init__(self) -> None:
        self._ssl = httpx.create_ssl_context()
        self._backend = _DeadlineBackend()
        self._pools: dict[str | None, httpcore.ConnectionPool] = {}
        self._lock = threading.Lock()

    def _pool_for(self, url: httpx.URL) -> httpcore.ConnectionPool:
        proxy = _env_proxy(url)
        with self._lock:
            pool = self._pools.get(proxy)
            if pool is None:
                pool = self._pools[proxy] = self._new_pool(proxy)
            return pool

    def _new_pool(self, proxy: str | None) -> httpcore.ConnectionPool:
        limits: dict[str, Any] = {
            "ssl_context": self._ssl,
            "max_connections": 100,
            "max_keepalive_connections": 20,
            "keepalive_expiry": 5.0,
            "network_backend": self._backend,
        }
        if proxy is None:
            return httpcore.ConnectionPool(**limits)
        parsed = httpx.URL(proxy)
        if parsed.scheme not in ("http", "https"):
            raise ConfigurationError(
                f"unsupported proxy scheme {parsed.scheme!r} in the environment: "
                "only http:// and https:// proxies are supported"
            )
        auth = (parsed.username, parsed.password) if parsed.username else None
        return httpcore.HTTPProxy(
            proxy_url=httpcore.URL(
                scheme=parsed.raw_scheme,
                host=parsed.raw_host,
                port=parsed.port,
                target=parsed.raw_path,
            ),
            proxy_auth=auth,
            **limits,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        answer = self._pool_for(request.url).handle_request(core)
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_CoreBody(answer),
            extensions=answer.extensions,
        )

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


# --- error translation -----------------------------------------------------------------------

# Timeouts surface from httpx (async face), httpcore (sync face, whose
# transport is ours) and asyncio.timeout (TimeoutError, an OSError).
_TIMEOUTS = (httpx.TimeoutException, httpcore.TimeoutException, TimeoutError)
_FAILURES = (httpx.TransportError, httpcore.NetworkError, httpcore.ProtocolError, OSError)
# The connection ended while the body was still coming.
_CUT_SHORT = (
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpcore.RemoteProtocolError,
    httpcore.ReadError,
)


def _timed_out(url: str, seconds: float) -> RequestTimeoutError:
    return RequestTimeoutError(
        f"no complete answer from {_origin(url)} within {_seconds(seconds)} s", url=_origin(url)
    )


@contextmanager
def translate(url: str, seconds: float | None = None) -> Iterator[None]:
    """Turn httpx's exceptions into ours, naming the host but nothing secret.

    ``seconds`` is the deadline the request had, for the timeout message.
    """
    try:
        yield
    except _TIMEOUTS as exc:
        if seconds is None:
            raise RequestTimeoutError(
                f"no complete answer from {_origin(url)} in time", url=_origin(url)
            ) from exc
        raise _timed_out(url, seconds) from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpcore.UnsupportedProtocol) as exc:
        raise TransportError(f"invalid URL for {_origin(url)}", url=_origin(url)) from exc
    except httpx.DecodingError as exc:
        raise ProtocolError(
            f"malformed answer from {_origin(url)}: its Content-Encoding does not decode",
            url=_origin(url),
        ) from exc
    except (httpx.RemoteProtocolError, httpcore.RemoteProtocolError) as exc:
        if "without sending" in str(exc):
            # Closed before a byte of answer (a stale pooled connection, a
            # restart): nothing malformed arrived, and a retry may well work.
            raise TransportError(
                f"cannot reach {_origin(url)}: the connection closed without an answer",
                url=_origin(url),
            ) from exc
        # h11 says what broke, then quotes the offending bytes: keep the first part.
        what = _reason(exc).split(":")[0]
        origin = _origin(url)
        raise ProtocolError(f"malformed answer from {origin}: {what}", url=origin) from exc
    except _FAILURES as exc:
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


def to_reply(response: httpx.Response, body: bytes) -> HttpReply:
    """Our sans-IO view of an httpx response whose body has been read."""
    return HttpReply(response.status_code, list(response.headers.multi_items()), body)


@dataclass
class Download:
    """An answer whose body is read chunk by chunk (see :meth:`SyncTransport.stream`).

    ``status`` and ``headers`` are known on entry; ``size`` is the declared
    length (``None`` when the server gave none); ``received`` counts the
    body bytes handed out so far.
    """

    status: int
    headers: list[tuple[str, str]]
    size: int | None
    _body: AnswerBody = field(repr=False)

    @property
    def received(self) -> int:
        return self._body.received


class _Policy:
    """What both faces share: where requests go, with which headers, how often retried."""

    def __init__(
        self,
        endpoints: Endpoints,
        token: str | None,
        timeout: float,
        retry: RetryPolicy,
        headers: dict[str, str] | None,
        *,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.endpoints = endpoints
        self.token = token
        self.timeout = resolve_timeout(timeout)
        self.retry = retry
        self.headers = {**CLIENT_HEADERS, **(headers or {})}
        if max_answer_bytes <= 0:
            raise ConfigurationError("max_answer_bytes must be positive")
        self.max_answer_bytes = max_answer_bytes

    def budget(self, started: float) -> float:
        """Seconds the next try of a call begun at ``started`` may take.

        One try gets ``timeout``; retries fit in the policy's ``max_elapsed``
        (or one ``timeout``, if that is longer), never one deadline each on top.
        """
        limit = max(self.retry.max_elapsed, self.timeout)
        return min(self.timeout, limit - (time.monotonic() - started))

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
        elapsed = time.monotonic() - started
        delay = self.retry.delay(attempt, error, request, elapsed)
        if delay is None:
            raise error
        if self.budget(started) - delay < self.timeout * 0.1:
            raise error  # a try squeezed into what is left could not finish
        log.info(
            "%s %s: %s; retry %d in %.1f s",
            request.method,
            request.path,
            type(error).__name__,
            attempt + 1,
            delay,
        )
        return delay


def _origin_of(request: httpx.Request) -> str:
    return _origin(str(request.url))


class SyncTransport(_Policy):
    """Blocking requests over one pooled ``httpx.Client`` with deadline sockets."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._http = httpx.Client(
            transport=_DeadlineTransport(),
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
        )

    def send(self, request: ApiRequest, seconds: float | None = None) -> HttpReply:
        """One try, no interpretation, within ``seconds`` (default: the timeout)."""
        built = self._http.build_request(**self.kwargs(request))
        return self._exchange(built, seconds or self.timeout, self.max_answer_bytes)

    def call(self, request: ApiRequest) -> Any:
        """Send with retries; the unwrapped payload or the error."""
        from ..protocol.http import interpret

        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return interpret(self.send(request, self.budget(started)), request.path)
            except BambuError as error:
                time.sleep(self.give_up_or_wait(attempt, error, request, started))

    def raw(self, method: str, url: str, content: bytes, headers: dict[str, str]) -> HttpReply:
        """A bare request to a pre-signed URL: none of the API headers, no token."""
        with translate(url):
            built = self._http.build_request(method, url, content=content, headers=headers)
        return self._exchange(built, self.timeout * RAW_TIMEOUT_FACTOR, self.max_answer_bytes)

    def put_stream(
        self, url: str, chunks: Iterable[bytes], size: int, *, idle: float | None = None
    ) -> HttpReply:
        """PUT ``size`` bytes from ``chunks`` to a pre-signed URL, streamed.

        Only ``Content-Length`` is added (the signer expects no other header).
        There is no whole-request deadline: every connect, write and read must
        finish within ``idle`` seconds (default: the timeout) of the last chunk
        handed over, so a large file may take as long as it needs while a
        stalled server is still noticed.
        """
        idle = idle or self.timeout

        def paced() -> Iterator[bytes]:
            for chunk in chunks:
                _DEADLINE.set(time.monotonic() + idle)  # progress moves the deadline
                yield chunk
            _DEADLINE.set(time.monotonic() + idle)

        with translate(url):
            built = self._http.build_request(
                "PUT", url, content=paced(), headers={"Content-Length": str(size)}
            )
        return self._exchange(built, idle, self.max_answer_bytes)

    def _exchange(self, request: httpx.Request, seconds: float, cap: int) -> HttpReply:
        url = str(request.url)
        deadline = time.monotonic() + seconds
        request.extensions["timeout"] = httpx.Timeout(seconds).as_dict()
        reset = _DEADLINE.set(deadline)
        try:
            with translate(url, seconds):
                response = self._http.send(request, stream=True)
                try:
                    body = AnswerBody(_origin(url), response.headers.get("content-length"), cap)
                    try:
                        for chunk in response.iter_bytes():
                            body.feed(chunk)
                            # A streamed PUT moves the deadline as it makes progress.
                            if time.monotonic() > (_DEADLINE.get() or deadline):
                                raise _timed_out(url, seconds)
                    except _CUT_SHORT as exc:
                        raise body.truncated(response.num_bytes_downloaded) from exc
                    return to_reply(response, body.content())
                finally:
                    response.close()
        finally:
            _DEADLINE.reset(reset)

    @contextmanager
    def stream(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        max_bytes: int | None = None,
        seconds: float | None = None,
    ) -> Iterator[tuple[Download, Iterator[bytes]]]:
        """A download: the answer's head, and its body as an iterator of chunks.

        No JSON cap: the body is bounded by its declared ``Content-Length``
        (a shorter body is :class:`ProtocolError` "truncated") and by
        ``max_bytes`` when given; an answer with neither is refused.
        ``seconds`` is an overall deadline (default: none, only the
        per-read timeout, since a large file may rightly take long).
        """
        deadline = time.monotonic() + seconds if seconds is not None else None
        reset = _DEADLINE.set(deadline)
        try:
            with translate(url, seconds):
                built = self._http.build_request(method, url, headers=headers)
                response = self._http.send(built, stream=True)
                try:
                    body, head = _download_head(response, url, max_bytes)

                    def chunks() -> Iterator[bytes]:
                        try:
                            for chunk in response.iter_raw():
                                body.feed(chunk)
                                yield chunk
                        except _CUT_SHORT as exc:
                            raise body.truncated(response.num_bytes_downloaded) from exc

                    yield head, chunks()
                finally:
                    response.close()
        finally:
            _DEADLINE.reset(reset)

    def close(self) -> None:
        self._http.close()


def _download_head(
    response: httpx.Response, url: str, max_bytes: int | None
) -> tuple[AnswerBody, Download]:
    """The body counter of a download (bounded by its declared size) and its head."""
    body = AnswerBody(_origin(url), response.headers.get("content-length"), max_bytes, keep=False)
    head = Download(response.status_code, list(response.headers.multi_items()), body.declared, body)
    return body, head


class _Pacer:
    """Pushes an ``asyncio.timeout`` scope ``idle`` seconds past the latest progress."""

    def __init__(self, idle: float) -> None:
        self.idle = idle
        self.scope: asyncio.Timeout | None = None

    def touch(self) -> None:
        if self.scope is not None:
            self.scope.reschedule(asyncio.get_running_loop().time() + self.idle)


class AsyncTransport(_Policy):
    """Non-blocking requests over one pooled ``httpx.AsyncClient``."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), follow_redirects=False)

    async def send(self, request: ApiRequest, seconds: float | None = None) -> HttpReply:
        """One try, no interpretation, within ``seconds`` (default: the timeout)."""
        built = self._http.build_request(**self.kwargs(request))
        return await self._exchange(built, seconds or self.timeout, self.max_answer_bytes)

    async def call(self, request: ApiRequest) -> Any:
        """Send with retries; the unwrapped payload or the error."""
        from ..protocol.http import interpret

        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = await self.send(request, self.budget(started))
                return interpret(reply, request.path)
            except BambuError as error:
                await asyncio.sleep(self.give_up_or_wait(attempt, error, request, started))

    async def raw(
        self, method: str, url: str, content: bytes, headers: dict[str, str]
    ) -> HttpReply:
        """A bare request to a pre-signed URL: none of the API headers, no token."""
        with translate(url):
            built = self._http.build_request(method, url, content=content, headers=headers)
        return await self._exchange(built, self.timeout * RAW_TIMEOUT_FACTOR, self.max_answer_bytes)

    async def put_stream(
        self, url: str, chunks: AsyncIterable[bytes], size: int, *, idle: float | None = None
    ) -> HttpReply:
        """PUT ``size`` bytes from ``chunks``, as :meth:`SyncTransport.put_stream`."""
        idle = idle or self.timeout
        pacer = _Pacer(idle)

        async def paced() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                pacer.touch()  # progress moves the deadline
                yield chunk
            pacer.touch()

        with translate(url):
            built = self._http.build_request(
                "PUT", url, content=paced(), headers={"Content-Length": str(size)}
            )
        return await self._exchange(built, idle, self.max_answer_bytes, pacer)

    async def _exchange(
        self, request: httpx.Request, seconds: float, cap: int, pacer: _Pacer | None = None
    ) -> HttpReply:
        url = str(request.url)
        request.extensions["timeout"] = httpx.Timeout(seconds).as_dict()
        with translate(url, seconds):
            async with asyncio.timeout(seconds) as scope:
                if pacer is not None:
                    pacer.scope = scope
                response = await self._http.send(request, stream=True)
                try:
                    body = AnswerBody(_origin(url), response.headers.get("content-length"), cap)
                    try:
                        async for chunk in response.aiter_bytes():
                            body.feed(chunk)
                    except _CUT_SHORT as exc:
                        raise body.truncated(response.num_bytes_downloaded) from exc
                    return to_reply(response, body.content())
                finally:
                    await response.aclose()

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        max_bytes: int | None = None,
        seconds: float | None = None,
    ) -> AsyncIterator[tuple[Download, AsyncIterator[bytes]]]:
        """A download, as :meth:`SyncTransport.stream` (the deadline covers the body too)."""
        with translate(url, seconds):
            async with asyncio.timeout(seconds):
                built = self._http.build_request(method, url, headers=headers)
                response = await self._http.send(built, stream=True)
                try:
                    body, head = _download_head(response, url, max_bytes)

                    async def chunks() -> AsyncIterator[bytes]:
                        try:
                            async for chunk in response.aiter_raw():
                                body.feed(chunk)
                                yield chunk
                        except _CUT_SHORT as exc:
                            raise body.truncated(response.num_bytes_downloaded) from exc

                    yield head, chunks()
                finally:
                    await response.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
