"""The API proxy: ``/v1/...`` to the Bambu cloud behind the tokens this server issues.

A client calls ``/v1/<the cloud's path>`` with one of *our* tokens
(``Authorization: Bearer bbt_...``); the proxy checks it, forwards the request
to ``ctx.cloud_url`` with the **account** token instead, and answers with the
cloud's JSON, filtered to the token's printers and masked by its scope. The
account token goes upstream only: it is never returned, logged or put in an
error.

Every rule is data, in this module, and applied in one place
(:func:`check_request` for the request, :func:`shape` for the answer):

* **Canonical paths only.** The raw path (``scope["raw_path"]``, before any
  decoding) must be ``/v1`` followed by segments of ``[A-Za-z0-9_-]``: no
  ``%`` escape, dot, ``;`` parameter, double or trailing slash, backslash or
  upper-case spelling of a known path gets through; such a request is refused
  (403), never normalised and then allowed.
* **strict** mode: ``GET`` of the read endpoints in :data:`STRICT_READS` with a
  ``read`` token; everything else is 403 (other methods, ``HEAD``,
  ``OPTIONS``, ``TRACE``, a body, login, codes, upload URLs, camera
  credentials...). **full** mode: every canonical ``/v1`` path with
  ``GET/POST/PUT/PATCH/DELETE`` and a ``control`` token, except the account's
  own credentials (:data:`FULL_REFUSED_PREFIXES`, :data:`FULL_REFUSED_WORDS`).
* In both modes: method-override headers or ``_method``, and a token in the
  query string (:data:`~bambulab.servers.common.QUERY_TOKEN_NAMES`), are 403.
  These refusals of the request's *shape* come before the token check: they
  do not depend on who asks, and junk never costs a token lookup.
* **Printers**: a token with a printer allowlist may only name those printers
  (query ``device_id``/``dev_id``/``deviceId`` in any spelling of case and
  ``_``, the same names anywhere in a JSON body), and a change it makes must
  name one (one that names none is the account's: profile, notifications,
  projects); an answer's lists drop the
  entries that name another printer, and an answer that is *about* another
  printer (task detail...) is 403. Query and body are forwarded as parsed and
  re-encoded, so the cloud reads exactly what was checked.
* **Masking** by field name (:data:`FIELD_KINDS`, names compared without case,
  ``_`` or ``-``), whatever the depth; a masked value is ``"***"`` (``null``,
  ``""`` and booleans stay as they are). What each scope sees
  (:data:`SHOWN`):

  ======================= ====== ======= =====
  kind                    read   control admin
  ======================= ====== ======= =====
  presigned (file URLs)   ***    shown   shown
  access_code             ***    ***     shown
  ip                      ***    ***     shown
  contact (e-mail/phone)  ***    ***     shown
  credential (tokens...)  ***    ***     ***
  ======================= ====== ======= =====

* **Upstream**: one shared ``aiohttp`` client session (opened on start, closed on
  stop, no proxy from the environment), a total deadline per request
  (``ctx.extra["proxy_timeout"]``, 30 s: 504 past it) and a size cap
  (``ctx.extra["proxy_max_bytes"]``, 32 MiB: 502 past it); unreachable is 502.
  The cloud's errors pass through with their status and masked envelope,
  except its 401 (the *account* token was refused), which is the server's
  problem, not the client's: 502. Only a few harmless client headers go
  upstream, and only with printable ASCII values (never ``Authorization``,
  cookies or hop-by-hop headers); only ``Retry-After`` comes back (never
  ``Set-Cookie``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode

import aiohttp
import orjson
import yarl
from fastapi import APIRouter, Request, Response
from starlette.routing import Route

from .common import QUERY_TOKEN_NAMES, ApiError, Gate
from .tokens import Scope

if TYPE_CHECKING:
    from .app import ServerContext

__all__ = [
    "FIELD_KINDS",
    "FULL_REFUSED_PREFIXES",
    "FULL_REFUSED_WORDS",
    "SHOWN",
    "STRICT_READS",
    "Endpoint",
    "ForeignPrinter",
    "Kind",
    "check_request",
    "named_printers",
    "proxy_routes",
    "shape",
]

log = logging.getLogger("bambulab.servers.proxy")

Kind = Literal["presigned", "access_code", "ip", "contact", "credential"]
MASK = "***"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_BYTES = 32 << 20
MAX_REQUEST_BODY = 1 << 20
BODY_DEADLINE = 10.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One allowed path: literal segments, ``{id}`` for one id segment."""

    path: str
    purpose: str


# strict mode: GET only, exactly these (PROTOCOL.md §1.2, the read endpoints).
STRICT_READS: tuple[Endpoint, ...] = (
    Endpoint("/v1/iot-service/api/user/bind", "bound printers"),
    Endpoint("/v1/iot-service/api/user/device/info", "one printer's info"),
    Endpoint("/v1/iot-service/api/user/device/version", "firmware versions"),
    Endpoint("/v1/iot-service/api/user/print", "print status"),
    Endpoint("/v1/iot-service/api/user/project", "projects"),
    Endpoint("/v1/iot-service/api/user/project/{id}", "one project"),
    Endpoint("/v1/user-service/my/tasks", "print history"),
    Endpoint("/v1/iot-service/api/user/task/{id}", "one task"),
    Endpoint("/v1/iot-service/api/user/notification", "notifications"),
    Endpoint("/v1/user-service/my/messages", "messages"),
    Endpoint("/v1/user-service/my/profile", "profile"),
    Endpoint("/v1/design-user-service/my/preference", "MakerWorld preference"),
    Endpoint("/v1/iot-service/api/slicer/setting", "slicer presets"),
    Endpoint("/v1/iot-service/api/slicer/setting/{id}", "one slicer preset"),
    Endpoint("/v1/iot-service/api/slicer/resource", "slicer resources"),
)
# full mode refuses the account's own credentials: login, codes, TFA, refresh...
FULL_REFUSED_PREFIXES: tuple[str, ...] = ("/v1/user-service/user/",)
FULL_REFUSED_WORDS: tuple[str, ...] = ("login", "logout", "token", "password", "sign-in", "tfa")
FULL_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

OVERRIDE_HEADERS = frozenset({b"x-http-method-override", b"x-http-method", b"x-method-override"})
OVERRIDE_QUERY = frozenset({"_method", "method"})
# The client headers that may go upstream (slicer-like identification); nothing else.
FORWARDED_HEADERS = frozenset(
    {
        b"accept-language",
        b"user-agent",
        b"x-bbl-client-name",
        b"x-bbl-client-type",
        b"x-bbl-client-version",
        b"x-bbl-language",
        b"x-bbl-os-type",
        b"x-bbl-os-version",
        b"x-bbl-agent-version",
    }
)

# Field names (compared by _norm) that name a printer.
PRINTER_KEYS = frozenset({"devid", "deviceid"})

# Field name (compared by _norm) -> what it holds.
FIELD_KINDS: Mapping[str, Kind] = {
    **dict.fromkeys(("devaccesscode", "accesscode", "lanaccesscode"), "access_code"),
    **dict.fromkeys(("email", "phone", "mobile", "account", "phonenumber"), "contact"),
    **dict.fromkeys(("ip", "devip", "ipaddress", "lanip", "wanip", "localip"), "ip"),
    **dict.fromkeys(
        ("url", "uploadurl", "fileurl", "downloadurl", "signedurl", "presignedurl"), "presigned"
    ),
    **dict.fromkeys(
        (
            "accesstoken",
            "refreshtoken",
            "token",
            "ttcode",
            "authkey",
            "passwd",
            "password",
            "secret",
            "tfakey",
            "streamkey",
            "streamsalt",
            "apikey",
            "bindcode",
        ),
        "credential",
    ),
}
# What each scope sees unmasked (credentials: nobody).
SHOWN: Mapping[Scope, frozenset[Kind]] = {
    "read": frozenset(),
    "control": frozenset({"presigned"}),
    "admin": frozenset({"presigned", "access_code", "ip", "contact"}),
}

_CANONICAL = re.compile(rb"/v1(?:/[A-Za-z0-9_-]{1,128}){1,12}")
_ID = "[A-Za-z0-9_-]{1,128}"


def _compile(endpoints: Iterable[Endpoint]) -> re.Pattern[str]:
    parts = (re.escape(e.path).replace(re.escape("{id}"), _ID) for e in endpoints)
    return re.compile("|".join(f"(?:{p})" for p in parts))


_STRICT = _compile(STRICT_READS)


def _norm(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


# Field name as sent -> (its kind, whether it names a printer). Answers repeat the same
# few dozen names: look each up once (bounded: names come from upstream).
_FIELDS: dict[str, tuple[Kind | None, bool]] = {}


def _field(name: str) -> tuple[Kind | None, bool]:
    known = _FIELDS.get(name)
    if known is None:
        norm = _norm(name)
        known = (FIELD_KINDS.get(norm), norm in PRINTER_KEYS)
        if len(_FIELDS) < 4096:
            _FIELDS[name] = known
    return known


# --- the request ---------------------------------------------------------------------------


def _refuse(why: str) -> ApiError:
    return ApiError(403, why)


def check_request(
    mode: str, method: str, raw_path: bytes, query: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> tuple[str, Scope]:
    """The canonical path to forward and the scope it needs; 403 :class:`ApiError` if refused."""
    match = _CANONICAL.fullmatch(raw_path)
    if match is None:
        raise _refuse("not a canonical /v1 path: this proxy forwards exact paths only")
    path = raw_path.decode("ascii")
    for name, _value in headers:
        if name.lower() in OVERRIDE_HEADERS:
            raise _refuse("method override headers are refused")
    names = {_norm(k) for k, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)}
    if names & {_norm(n) for n in OVERRIDE_QUERY}:
        raise _refuse("method override parameters are refused")
    if names & {_norm(n) for n in QUERY_TOKEN_NAMES}:
        raise _refuse("tokens go in the Authorization header, never in the address")
    if mode == "strict":
        if method != "GET":
            raise _refuse(f"strict proxy: {method[:16]} is refused (read endpoints only)")
        if _STRICT.fullmatch(path) is None:
            raise _refuse("strict proxy: not one of the read endpoints it allows")
        return path, "read"
    if mode != "full":
        raise _refuse(f"proxy mode {mode[:16]!r} serves nothing")
    if method not in FULL_METHODS:
        raise _refuse(f"{method[:16]} is refused")
    lowered = path.lower()
    if lowered.startswith(FULL_REFUSED_PREFIXES) or any(w in lowered for w in FULL_REFUSED_WORDS):
        raise _refuse("the account's own login and tokens are not served")
    return path, "control"


def named_printers(pairs: Iterable[tuple[str, str]], body: Any) -> set[str]:
    """Every printer a request names: query pairs and (at any depth) JSON body fields."""
    named = {v.strip() for k, v in pairs if _norm(k) in PRINTER_KEYS}
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if _norm(str(key)) in PRINTER_KEYS:
                    named.add(str(value).strip() if value is not None else "")
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return named


# --- the answer ----------------------------------------------------------------------------


class ForeignPrinter(Exception):
    """An answer is about a printer the token does not allow."""


def _masked(value: Any) -> Any:
    if value is None or value == "" or isinstance(value, bool):
        return value
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return MASK


def _foreign(item: Mapping[str, Any], allowed: frozenset[str]) -> bool:
    """Whether ``item`` names (directly) a printer outside ``allowed``."""
    return any(
        _field(str(k))[1]
        and v is not None
        and not isinstance(v, dict | list)
        and str(v).strip() not in allowed
        for k, v in item.items()
    )


def shape(doc: Any, scope: Scope, allowed: frozenset[str] | None) -> Any:
    """``doc`` masked for ``scope`` and filtered to ``allowed`` printers (None: all).

    List entries naming another printer are dropped; any other object naming
    one raises :class:`ForeignPrinter`. The input is not modified.
    """
    shown = SHOWN[scope]

    def walk(value: Any, kind: Kind | None) -> Any:
        if kind is not None and kind not in shown:
            return _masked(value)
        if isinstance(value, dict):
            if allowed is not None and _foreign(value, allowed):
                raise ForeignPrinter
            out: dict[Any, Any] = {}
            for key, item in value.items():
                kind = _field(str(key))[0]
                # plain values of plain fields (most of an answer) skip the call
                out[key] = (
                    item if kind is None and not isinstance(item, dict | list) else walk(item, kind)
                )
            return out
        if isinstance(value, list):
            return [
                walk(v, None)
                for v in value
                if allowed is None or not isinstance(v, dict) or not _foreign(v, allowed)
            ]
        return value

    return walk(doc, None)


# --- the route -----------------------------------------------------------------------------


def _retry_after(value: str | None) -> dict[str, str]:
    if value and value.strip().isdigit() and len(value.strip()) <= 9:
        return {"retry-after": value.strip()}
    return {}


async def _read_body(request: Request) -> Any:
    """The request's JSON body (None when empty); 413/415 past the cap or if not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_REQUEST_BODY):
        raise ApiError(413, f"request bodies are limited to {MAX_REQUEST_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_DEADLINE):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_REQUEST_BODY:
                    raise ApiError(413, f"request bodies are limited to {MAX_REQUEST_BODY} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "the request body did not arrive in time") from None
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(415, "request bodies must be JSON") from None


# What the proxy documents: its own refusals, and the cloud's answers passed through.
PROXY_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No token, or not a valid one"},
    403: {"description": "Not allowed: the mode, the token's scope or printers, or the path"},
    429: {"description": "The token's rate limit, or the cloud's (see Retry-After)"},
    502: {"description": "The cloud is unreachable or answered something unusable"},
    504: {"description": "The cloud did not answer in time"},
    "default": {"description": "The cloud's own answer, its status passed through (masked)"},
}


_PRINTABLE = re.compile(rb"[\x20-\x7e]*")


class UnwantedEncoding(Exception):
    """The cloud's answer came in an encoding the proxy did not ask for."""


# What reaching the cloud can raise besides a timeout (one 502 line each).
UPSTREAM_ERRORS: tuple[type[Exception], ...] = (
    aiohttp.ClientError,
    UnwantedEncoding,
    OSError,
    zlib.error,
)


def _decoder(encoding: bytes) -> Any:
    """A zlib decompressor for a gzip or deflate answer (``None``: not compressed)."""
    name = encoding.strip().lower()
    if name in (b"", b"identity"):
        return None
    if name in (b"gzip", b"x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if name == b"deflate":
        return zlib.decompressobj()
    raise UnwantedEncoding(f"answer encoded as {name[:20]!r}, which was not asked")


def proxy_routes(ctx: ServerContext) -> APIRouter:
    """``/v1/{path}`` forwarded to ``ctx.cloud_url`` (see the module for the rules)."""
    mode = ctx.proxy_mode
    timeout = float(ctx.extra.get("proxy_timeout", DEFAULT_TIMEOUT))
    max_bytes = int(ctx.extra.get("proxy_max_bytes", DEFAULT_MAX_BYTES))
    base = ctx.cloud_url.rstrip("/")
    account = ctx.account_token.encode()
    account_auth = b"Bearer " + account
    holder: dict[str, aiohttp.ClientSession] = {}

    async def open_client() -> None:
        # aiohttp's client session for the upstream hop: its C HTTP parser costs 0.4 ms of
        # CPU per request where httpcore's pure-Python h11 cost 1.0 ms, and this hop was
        # half of the proxy's own time (measured: bench/RESULTS.md). No proxy from the
        # environment (trust_env stays off): an HTTP(S)_PROXY must never see the token.
        # Answers are decoded here, not by aiohttp, so the size cap counts what is inflated.
        holder["client"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=30.0),
            auto_decompress=False,
            trust_env=False,
            skip_auto_headers=("User-Agent",),
            timeout=aiohttp.ClientTimeout(total=None, connect=min(timeout, 10.0)),
        )

    async def close_client() -> None:
        client = holder.pop("client", None)
        if client is not None:
            await client.close()

    ctx.on_start.append(open_client)
    ctx.on_stop.append(close_client)

    async def upstream(
        method: str, path: str, query: str, body: bytes | None, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, bytes, str | None]:
        """Status, body and Retry-After of the cloud's answer (logs name the path, no query)."""
        client = holder.get("client")
        if client is None:
            raise ApiError(503, "the proxy is not started")
        # Sent as checked: the path is canonical and the query re-encoded, never re-quoted.
        url = yarl.URL(base + path + ("?" + query if query else ""), encoded=True)
        sent = [("accept-encoding", "gzip, deflate")]
        # Identification headers are printable ASCII; another byte would be re-encoded on
        # the way (a latin-1 User-Agent becomes UTF-8), so such a value is not forwarded.
        sent += [(n.decode(), v.decode()) for n, v in headers if _PRINTABLE.fullmatch(v)]
        try:
            async with (
                asyncio.timeout(timeout),
                client.request(
                    method, url, headers=sent, data=body, allow_redirects=False
                ) as response,
            ):
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise ApiError(502, "the cloud's answer is larger than the proxy allows")
                decoder = _decoder(response.headers.get("content-encoding", "").encode("latin-1"))
                chunks: list[bytes] = []
                size = 0
                async for raw in response.content.iter_any():
                    # decoded (gzip...) bytes: the cap counts what is parsed, and no
                    # more than the cap is ever inflated (a zip bomb stops there)
                    chunk = decoder.decompress(raw, max_bytes + 1 - size) if decoder else raw
                    size += len(chunk)
                    if size > max_bytes or (decoder is not None and decoder.unconsumed_tail):
                        raise ApiError(502, "the cloud's answer is larger than the proxy allows")
                    chunks.append(chunk)
                status = response.status
                retry = response.headers.get("retry-after")
        except TimeoutError:
            log.warning("proxy: %s %s: the cloud did not answer in %g s", method, path, timeout)
            raise ApiError(504, f"the cloud did not answer within {timeout:g} s") from None
        except UPSTREAM_ERRORS as exc:
            log.warning("proxy: %s %s: %s", method, path, type(exc).__name__)
            raise ApiError(502, f"the cloud could not be reached ({type(exc).__name__})") from None
        return status, b"".join(chunks), retry

    async def forward(request: Request) -> Response:
        scope = request.scope
        method = str(scope.get("method", ""))
        query = bytes(scope.get("query_string", b""))
        raw_path = scope.get("raw_path")
        if not isinstance(raw_path, bytes):
            raise _refuse("the raw path is unknown: refused")
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        path, needed = check_request(mode, method, raw_path, query, headers)
        token = await ctx.gate.check(request, needed)
        allowed = frozenset(token.printers) or None
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        body: Any = None
        if method in BODY_METHODS:
            body = await _read_body(request)
        elif request.headers.get("content-length", "0") != "0" or (
            "transfer-encoding" in request.headers
        ):
            raise _refuse(f"a {method[:16]} request carries no body here")
        if allowed is not None:
            named = named_printers(pairs, body)
            for serial in named:
                Gate.authorize(token, needed, serial)
            if method != "GET" and not named:
                # A change that names no printer is the account's (profile,
                # notifications, projects): not for a token limited to printers.
                raise _refuse("a token for some printers may only change those printers")
        # bytes as received (no re-encoding can fail); only the listed names
        sent = [(b"authorization", account_auth), (b"accept", b"application/json")]
        sent += [(n.lower(), v) for n, v in headers if n.lower() in FORWARDED_HEADERS]
        payload = None
        if body is not None:
            payload = orjson.dumps(body)
            sent.append((b"content-type", b"application/json"))
        status, raw, retry = await upstream(method, path, urlencode(pairs), payload, sent)
        extra = {"cache-control": "no-store", **_retry_after(retry)}
        if status == 401:
            log.warning("proxy: the cloud refused the account token (%s %s)", method, path)
            raise ApiError(502, "the cloud refused this server's account token (log in again)")
        if not raw.strip():
            return Response(status_code=status, headers=extra)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            if status >= 400:
                raise ApiError(status, f"the cloud answered {status} (not JSON)", extra) from None
            raise ApiError(502, "the cloud answered with something that is not JSON") from None
        try:
            out = orjson.dumps(shape(doc, token.scope, allowed))
        except ForeignPrinter:
            raise ApiError(403, "this token does not allow that printer") from None
        if account and account in out:  # a field no rule knows carried it: never let it out
            log.warning("proxy: an answer to %s %s carried the account token", method, path)
            raise ApiError(502, "the cloud's answer carried a credential; withheld")
        return Response(out, status_code=status, media_type="application/json", headers=extra)

    router = APIRouter(tags=["proxy"])

    async def proxy(path: str, request: Request) -> Response:
        del path  # the raw path is what counts
        return await forward(request)  # (documents the route; the one below serves it)

    for method in sorted(FULL_METHODS):  # one operation per method: unique operation ids
        router.add_api_route(
            "/v1/{path:path}",
            proxy,
            methods=[method],
            operation_id=f"proxy_{method.lower()}",
            summary=f"The Bambu cloud API ({mode} mode)",
            responses=PROXY_RESPONSES,
            description=(
                "Forwards /v1/... to the cloud with this server's account token. strict: GET "
                "of the read endpoints with a read token; full: every method with a control "
                "token. Answers are filtered to the token's printers and masked by its scope."
            ),
        )

    async def any_method(scope: Any, receive: Any, send: Any) -> None:
        response = await forward(Request(scope, receive))
        await response(scope, receive, send)

    # Served by a plain ASGI route placed first: an app (not a function) as the endpoint is
    # a route for every method, so HEAD, OPTIONS, TRACE, lower-case or invented methods get
    # the proxy's refusal instead of the framework's 405, and no request pays for FastAPI's
    # parameter machinery (the route above stays for the OpenAPI schema).
    router.routes.insert(
        0, Route("/v1/{path:path}", _AnyMethod(any_method), include_in_schema=False)
    )
    return router


class _AnyMethod:
    """An ASGI app wrapping a coroutine function (Starlette routes an app for every method)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
