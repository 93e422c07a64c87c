"""The API proxy against the simulated cloud, over real sockets.

The simulated cloud gets a recording middleware before it starts, so every
test can see exactly which requests reached "upstream" and with which
headers: a refused request must leave no trace there. Strict and full
proxies (and a few special ones) run on :class:`AppServer` in front of it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from bambulab.servers.app import ServerContext, build_app
from bambulab.servers.common import Gate, RateLimit
from bambulab.servers.runner import AppServer
from bambulab.servers.tokens import TokenStore
from bambulab.sim.config import RateLimit as SimRateLimit
from bambulab.sim.config import RateLimits, SimConfig
from bambulab.sim.server import CloudSimulator
from tests.conftest import unlimited, wait_for

MASK = "***"
BIND = "/v1/iot-service/api/user/bind"
# What the simulator really returns in each secret field, by field name (the test's own
# list, not the proxy's table): masked for read, and what admin sees.
CONTACT = {"email", "account", "phone"}
ACCESS = {"dev_access_code"}
PRESIGNED = {"url"}


@dataclass
class Seen:
    """What reached the simulated cloud."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def v1(self) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.requests if r[1].startswith("/v1/")]


class Recorder:
    """ASGI middleware on the simulated cloud: records method, raw path and headers."""

    def __init__(self, app: Any, seen: Seen) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            self.seen.requests.append((scope["method"], scope["raw_path"].decode(), headers))
        await self.app(scope, receive, send)


@dataclass
class Rig:
    cloud: CloudSimulator
    seen: Seen
    store: TokenStore
    strict: AppServer
    full: AppServer
    account_token: str

    def token(self, scope: str = "read", printers: tuple[str, ...] = (), **kw: Any) -> str:
        secret, _ = self.store.create(scope, printers=printers, **kw)  # type: ignore[arg-type]
        return secret

    def direct(self, path: str, **kw: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.account_token}"}
        return HTTP.get(self.cloud.url + path, headers=headers, **kw)


def recorded_cloud(config: SimConfig) -> tuple[CloudSimulator, Seen]:
    cloud = CloudSimulator(config)
    seen = Seen()
    cloud.app.add_middleware(Recorder, seen=seen)
    return cloud, seen


def serve(ctx: ServerContext, parts: tuple[str, ...] = ("proxy",)) -> AppServer:
    return AppServer(build_app(ctx, list(parts)), on_start=ctx.start, on_stop=ctx.aclose)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    cloud, seen = recorded_cloud(unlimited())
    store = TokenStore(tmp_path_factory.mktemp("proxy") / "tokens.sqlite3")
    with cloud:
        account = cloud.issue_token(cloud.demo_account.login)

        def context(mode: str) -> ServerContext:
            return ServerContext(
                Gate(store), cloud_url=cloud.url, account_token=account, proxy_mode=mode
            )

        strict_ctx, full_ctx = context("strict"), context("full")
        with serve(strict_ctx) as strict, serve(full_ctx) as full:
            yield Rig(cloud, seen, store, strict, full, account)


# One client for the module (a client per call costs an SSL context each); no proxies
# from the environment.
HTTP = httpx.Client(timeout=10, trust_env=False)


def get(server: AppServer, path: str, token: str | None, **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", {})
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return HTTP.request(kw.pop("method", "GET"), server.url + path, headers=headers, **kw)


def serials(rig: Rig) -> list[str]:
    devices = rig.direct(BIND).json()["devices"]
    return [d["dev_id"] for d in devices]


def read_paths(rig: Rig) -> list[str]:
    """Every strict endpoint with real ids and typical queries."""
    first = serials(rig)[0]
    project = rig.direct("/v1/iot-service/api/user/project").json()["projects"][0]["project_id"]
    task = rig.direct("/v1/user-service/my/tasks?limit=1").json()["hits"][0]["id"]
    settings = rig.direct("/v1/iot-service/api/slicer/setting?version=02.01.01.52").json()
    setting = settings["filament"]["public"][0]["setting_id"]
    return [
        BIND,
        f"/v1/iot-service/api/user/device/info?device_id={first}",
        f"/v1/iot-service/api/user/device/version?dev_id={first}",
        "/v1/iot-service/api/user/print?force=true",
        "/v1/iot-service/api/user/project?page=1&limit=5",
        f"/v1/iot-service/api/user/project/{project}",
        "/v1/user-service/my/tasks?limit=5",
        f"/v1/iot-service/api/user/task/{task}",
        "/v1/iot-service/api/user/notification?unread=false",
        "/v1/user-service/my/messages?limit=5",
        "/v1/user-service/my/profile",
        "/v1/design-user-service/my/preference",
        "/v1/iot-service/api/slicer/setting?version=02.01.01.52",
        f"/v1/iot-service/api/slicer/setting/{setting}",
        "/v1/iot-service/api/slicer/resource",
    ]


def same_but_masked(direct: Any, proxied: Any, masked: set[str], where: str = "") -> int:
    """Compare the simulator's answer with the proxy's: equal, except ``masked`` fields
    (when non-empty upstream) which must read ``***``. Returns how many were masked."""
    count = 0
    if isinstance(direct, dict):
        assert isinstance(proxied, dict) and proxied.keys() == direct.keys(), where
        for key, value in direct.items():
            if key in masked and value not in (None, "") and not isinstance(value, dict | list):
                assert proxied[key] == MASK, f"{where}.{key} not masked"
                count += 1
            else:
                count += same_but_masked(value, proxied[key], masked, f"{where}.{key}")
        return count
    if isinstance(direct, list):
        assert isinstance(proxied, list) and len(proxied) == len(direct), where
        return sum(
            same_but_masked(d, p, masked, f"{where}[{i}]")
            for i, (d, p) in enumerate(zip(direct, proxied, strict=True))
        )
    assert proxied == direct, where
    return 0


# --- every endpoint, both modes ---------------------------------------------------------


def test_strict_serves_every_read_endpoint_masked_for_read(rig: Rig) -> None:
    token = rig.token("read")
    paths = read_paths(rig)
    assert len(paths) == 15
    before = len(rig.seen.v1())
    masked_total = 0
    for path in paths:
        proxied = get(rig.strict, path, token)
        assert proxied.status_code == 200, (path, proxied.text)
        assert "set-cookie" not in proxied.headers
        direct = rig.direct(path)
        # pre-signed URLs are fresh on every call: compare them by masking only
        masked_total += same_but_masked(direct.json(), proxied.json(), CONTACT | ACCESS | PRESIGNED)
        assert rig.account_token not in proxied.text
    assert masked_total >= 8  # access codes, e-mail/account, file URLs were there to mask
    # each proxied request went upstream once (and each direct one), with its path exactly
    upstream = [r[1] for r in rig.seen.v1()[before:]]
    assert upstream == [p.partition("?")[0] for p in paths for _ in (1, 2)]


def test_full_mode_serves_reads_and_writes_with_control_only(rig: Rig) -> None:
    read, control = rig.token("read"), rig.token("control")
    paths = read_paths(rig)
    before = len(rig.seen.v1())
    for path in paths:
        assert get(rig.full, path, read).status_code == 403, path
    assert len(rig.seen.v1()) == before  # a read token in full mode reaches nothing
    for path in paths:
        assert get(rig.full, path, control).status_code == 200, path
    serial = serials(rig)[1]
    name = rig.direct(f"/v1/iot-service/api/user/device/info?device_id={serial}").json()
    renamed = get(
        rig.full,
        "/v1/iot-service/api/user/device/info",
        control,
        method="PATCH",
        json={"dev_id": serial, "name": "Renamed by proxy"},
    )
    assert renamed.status_code == 200, renamed.text
    info = rig.direct(f"/v1/iot-service/api/user/device/info?device_id={serial}").json()
    assert info["device_name"] == "Renamed by proxy"
    back = {"dev_id": serial, "name": name["device_name"]}
    path = "/v1/iot-service/api/user/device/info"
    assert get(rig.full, path, control, method="PATCH", json=back).status_code == 200
    note = rig.direct("/v1/iot-service/api/user/notification").json()["notifications"][0]
    marked = get(
        rig.full,
        "/v1/iot-service/api/user/notification",
        control,
        method="PUT",
        json={"notification_id": note["id"], "read": note["read"]},
    )
    assert marked.status_code == 200
    # upload URLs (a GET strict refuses) are shown to control: it needs them to upload
    upload = get(rig.full, "/v1/iot-service/api/user/upload?filename=a.3mf&size=10", control)
    assert upload.status_code == 200
    urls = [u["url"] for u in upload.json()["urls"]]
    assert urls and all(u.startswith("http") for u in urls)


def test_full_mode_never_serves_the_accounts_login_or_tokens(rig: Rig) -> None:
    admin = rig.token("admin")
    before = len(rig.seen.v1())
    for path, body in [
        ("/v1/user-service/user/login", {"account": "maker@example.com", "password": "x"}),
        ("/v1/user-service/user/refreshtoken", {"refreshToken": "x"}),
        ("/v1/user-service/user/sendemail/code", {"email": "a@b.c", "type": "codeLogin"}),
        ("/v1/user-service/user/sendsmscode", {"phone": "1", "type": "codeLogin"}),
        ("/v1/user-service/user/tfa/login", {"tfaKey": "x", "tfaCode": "1"}),
    ]:
        answer = get(rig.full, path, admin, method="POST", json=body)
        assert answer.status_code == 403, path
    assert len(rig.seen.v1()) == before


# --- bypass attempts against strict ---------------------------------------------------


def raw_request(url: str, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no client normalises them); the status and the body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def attempts(token: str, serial: str) -> list[tuple[str, bytes, int]]:
    """(what, request bytes, expected status). Every one is refused; none reaches upstream."""
    auth = f"Authorization: Bearer {token}\r\n".encode()

    def req(method: str, target: str, extra: bytes = b"", body: bytes = b"") -> bytes:
        length = f"Content-Length: {len(body)}\r\n".encode() if body else b""
        return (
            f"{method} {target} HTTP/1.1\r\nHost: proxy\r\n".encode()
            + auth
            + extra
            + length
            + b"Connection: close\r\n\r\n"
            + body
        )

    user = "/v1/iot-service/api/user"
    json_body = f'{{"dev_id":"{serial}","name":"pwned"}}'.encode()
    cases: list[tuple[str, bytes, int]] = [
        ("POST bind", req("POST", BIND, b"Content-Type: application/json\r\n", b"{}"), 403),
        ("PUT profile", req("PUT", "/v1/user-service/my/profile", body=b'{"name":"x"}'), 403),
        ("DELETE bind", req("DELETE", f"{BIND}?dev_id={serial}"), 403),
        ("PATCH rename", req("PATCH", f"{user}/device/info", body=json_body), 403),
        ("HEAD", req("HEAD", BIND), 403),
        ("OPTIONS", req("OPTIONS", BIND), 403),
        ("TRACE", req("TRACE", BIND), 403),
        ("lower-case get", req("get", BIND), 403),
        ("invented method", req("PROPFIND", BIND), 403),
        (
            "POST ttcode",
            req("POST", f"{user}/ttcode", body=f'{{"dev_id":"{serial}"}}'.encode()),
            403,
        ),
        ("GET ttcode", req("GET", f"{user}/ttcode"), 403),
        ("upload URLs", req("GET", f"{user}/upload?filename=a.3mf&size=1"), 403),
        ("login", req("POST", "/v1/user-service/user/login", body=b'{"account":"a"}'), 403),
        ("refresh", req("GET", "/v1/user-service/user/refreshtoken"), 403),
        ("dot-dot", req("GET", f"{user}/bind/../ttcode"), 403),
        ("dot", req("GET", f"{user}/./bind"), 403),
        ("%2e%2e", req("GET", f"{user}/%2e%2e/user/bind"), 403),
        ("%2E%2E to ttcode", req("GET", f"{user}/bind/%2E%2E/ttcode"), 403),
        ("double slash", req("GET", "/v1//iot-service/api/user/bind"), 403),
        ("double slash inside", req("GET", f"{user}//bind"), 403),
        ("%2f", req("GET", "/v1/iot-service/api/user%2fbind"), 403),
        ("%2F to ttcode", req("GET", "/v1/iot-service/api/user%2Fttcode"), 403),
        ("upper case", req("GET", "/v1/IOT-SERVICE/api/user/bind"), 403),
        ("mixed case", req("GET", f"{user}/Bind"), 403),
        ("trailing dot", req("GET", f"{BIND}."), 403),
        ("trailing slash", req("GET", f"{BIND}/"), 403),
        (";param", req("GET", f"{BIND};jsessionid=1"), 403),
        (";param mid-path", req("GET", "/v1/iot-service/api/user;x=1/bind"), 403),
        ("%00", req("GET", f"{BIND}%00"), 403),
        ("backslash", req("GET", "/v1/iot-service/api/user\\bind"), 403),
        ("overlong UTF-8 dots", req("GET", f"{user}/%c0%ae%c0%ae/ttcode"), 403),
        ("%20", req("GET", f"{BIND}%20"), 403),
        ("encoded letter", req("GET", f"{user}/%62ind"), 403),
        ("encoded /v1", req("GET", "/%76%31/iot-service/api/user/bind"), 403),
        ("%3F", req("GET", f"{BIND}%3Fx=1"), 403),
        (".json suffix", req("GET", f"{BIND}.json"), 403),
        ("task id dot-dot", req("GET", f"{user}/task/1/../../ttcode"), 403),
        ("project id %2f", req("GET", f"{user}/project/1%2F..%2F..%2Fttcode"), 403),
        ("X-HTTP-Method-Override", req("GET", BIND, b"X-HTTP-Method-Override: DELETE\r\n"), 403),
        ("X-HTTP-Method", req("GET", BIND, b"X-HTTP-Method: POST\r\n"), 403),
        ("X-Method-Override", req("GET", BIND, b"X-Method-Override: PUT\r\n"), 403),
        ("POST dressed as GET", req("POST", BIND, b"X-HTTP-Method-Override: GET\r\n", b"{}"), 403),
        ("_method", req("GET", f"{BIND}?_method=DELETE"), 403),
        ("_method later", req("GET", f"{BIND}?x=1&_method=POST"), 403),
        ("query token", req("GET", f"{BIND}?token=abc"), 403),
        ("query access_token", req("GET", f"{BIND}?access_token=abc"), 403),
        ("query ACCESS_TOKEN", req("GET", f"{BIND}?ACCESS_TOKEN=abc"), 403),
        ("GET with a body", req("GET", BIND, body=b"{}"), 403),
        ("absolute form", req("GET", f"http://elsewhere{BIND}"), 404),
        ("leading double slash", req("GET", f"/{BIND}"), 404),
        ("/V1", req("GET", "/V1/iot-service/api/user/bind"), 404),
    ]
    return cases


def test_strict_refuses_every_bypass_and_none_reaches_upstream(rig: Rig) -> None:
    token = rig.token("admin")  # the most a token can be: strict still refuses
    cases = attempts(token, serials(rig)[0])
    assert len(cases) >= 40
    before = len(rig.seen.v1())
    got = {what: raw_request(rig.strict.url, request) for what, request, _ in cases}
    wrong = {w: got[w][0] for w, _, expected in cases if got[w][0] != expected}
    assert wrong == {}
    assert rig.seen.v1()[before:] == []
    # every refusal is one line of JSON; none repeats the token
    for what, (_status, body) in got.items():
        assert token.encode() not in body, what
        assert b"\n" not in body.strip(), what
    # and the plain request still works: the refusals are not a broken proxy
    plain = f"GET {BIND} HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {token}\r\n"
    assert raw_request(rig.strict.url, (plain + "Connection: close\r\n\r\n").encode())[0] == 200


# --- printers -------------------------------------------------------------------------------


def test_a_token_for_printer_a_never_reads_or_controls_b(rig: Rig) -> None:
    a, b = serials(rig)[:2]
    reader = rig.token("read", (a,))
    controller = rig.token("control", (a,))
    user = "/v1/iot-service/api/user"

    bound = get(rig.strict, BIND, reader).json()["devices"]
    assert [d["dev_id"] for d in bound] == [a]
    status = get(rig.strict, f"{user}/print", reader).json()["devices"]
    assert [d["dev_id"] for d in status] == [a]
    versions = get(rig.strict, f"{user}/device/version", reader).json()["devices"]
    assert [d["dev_id"] for d in versions] == [a]
    hits = get(rig.strict, "/v1/user-service/my/tasks?limit=50", reader).json()["hits"]
    all_hits = rig.direct("/v1/user-service/my/tasks?limit=50").json()["hits"]
    assert {h["deviceId"] for h in all_hits} >= {a, b}
    everyone = get(rig.strict, "/v1/user-service/my/tasks?limit=50", rig.token("read")).json()
    assert hits == [h for h in everyone["hits"] if h["deviceId"] == a]
    b_task = next(h["id"] for h in all_hits if h["deviceId"] == b)
    assert get(rig.strict, f"{user}/task/{b_task}", reader).status_code == 403
    a_task = next(h["id"] for h in all_hits if h["deviceId"] == a)
    assert get(rig.strict, f"{user}/task/{a_task}", reader).status_code == 200

    before = len(rig.seen.v1())
    for path in (
        f"{user}/device/info?device_id={b}",
        f"{user}/device/version?dev_id={b}",
        f"{user}/print?device_id={b}",
        f"/v1/user-service/my/tasks?deviceId={b}",
        f"/v1/user-service/my/tasks?DeviceID={b}",
        f"{user}/print?device_id={a}&device_id={b}",
        f"{user}/print?device%5Fid={b}",
    ):
        assert get(rig.strict, path, reader).status_code == 403, path
    for method, path, body in (
        ("PATCH", f"{user}/device/info", {"dev_id": b, "name": "x"}),
        ("POST", f"{user}/ttcode", {"dev_id": b}),
        ("POST", f"{user}/print", {"device_id": b, "file_name": "a.3mf"}),
        ("POST", "/v1/user-service/my/task", {"deviceId": b, "title": "x"}),
        ("POST", f"{user}/print", {"device_id": a, "settings": {"deviceId": b}}),
        ("DELETE", f"{BIND}?dev_id={b}", None),
        # changes that name no printer are the account's, not a printer token's
        ("PUT", f"{user}/notification", {"notification_id": "1", "read": True}),
        ("POST", "/v1/user-service/my/task", {"title": "x"}),
        ("PATCH", "/v1/user-service/my/profile", {"name": "x"}),
    ):
        answer = get(rig.full, path, controller, method=method, json=body)
        assert answer.status_code == 403, (method, path)
    assert rig.seen.v1()[before:] == []
    info = get(rig.full, f"{user}/device/info?device_id={a}", controller)
    assert info.status_code == 200
    same = {"dev_id": a, "name": info.json()["device_name"]}  # a change naming a: allowed
    assert (
        get(rig.full, f"{user}/device/info", controller, method="PATCH", json=same).status_code
        == 200
    )


# --- tokens, limits -------------------------------------------------------------------------


def test_expired_and_revoked_tokens_are_refused_at_once(rig: Rig) -> None:
    expired = rig.token("admin", expires_in=0.001)
    answer = get(rig.strict, BIND, expired)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    secret, row = rig.store.create("admin")
    assert get(rig.strict, BIND, secret).status_code == 200
    assert rig.store.revoke(row.id)
    assert get(rig.strict, BIND, secret).status_code == 401
    assert get(rig.full, BIND, secret).status_code == 401
    assert get(rig.strict, BIND, None).status_code == 401
    assert get(rig.strict, BIND, "bbt_000000000000_" + "x" * 43).status_code == 401


def test_rate_limit_per_token_answers_429_with_retry_after(rig: Rig) -> None:
    ctx = ServerContext(
        Gate(rig.store, limit=RateLimit(3, 60)),
        cloud_url=rig.cloud.url,
        account_token=rig.account_token,
    )
    first, second = rig.token("read"), rig.token("read")
    with serve(ctx) as server:
        assert [get(server, BIND, first).status_code for _ in range(3)] == [200] * 3
        limited = get(server, BIND, first)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "rate limit" in limited.json()["detail"]
        assert get(server, BIND, second).status_code == 200  # per token


# --- masking --------------------------------------------------------------------------------


def test_masking_by_scope_against_what_the_cloud_returned(rig: Rig) -> None:
    direct_bind = rig.direct(BIND).json()
    direct_profile = rig.direct("/v1/user-service/my/profile").json()
    codes = [d["dev_access_code"] for d in direct_bind["devices"]]
    assert all(codes) and direct_profile["data"]["email"]
    for scope in ("read", "control"):
        token = rig.token(scope)
        bind = get(rig.strict, BIND, token).json()
        assert same_but_masked(direct_bind, bind, ACCESS) == len(codes)
        profile = get(rig.strict, "/v1/user-service/my/profile", token).json()
        assert same_but_masked(direct_profile, profile, CONTACT) >= 2
    admin = rig.token("admin")
    assert get(rig.strict, BIND, admin).json() == direct_bind
    assert get(rig.strict, "/v1/user-service/my/profile", admin).json() == direct_profile

    project = rig.direct("/v1/iot-service/api/user/project").json()["projects"][0]["project_id"]
    path = f"/v1/iot-service/api/user/project/{project}"
    read_files = get(rig.strict, path, rig.token("read")).json()["files"]
    control_files = get(rig.strict, path, rig.token("control")).json()["files"]
    assert read_files and all(f["url"] == MASK for f in read_files)
    for f in control_files:  # a control token downloads: the signed URL works as given
        assert HTTP.get(f["url"]).status_code == 200


def test_camera_credentials_are_masked_even_for_admin(rig: Rig) -> None:
    serial = serials(rig)[0]
    direct = HTTP.post(
        rig.cloud.url + "/v1/iot-service/api/user/ttcode",
        json={"dev_id": serial},
        headers={"authorization": f"Bearer {rig.account_token}"},
    ).json()
    secret = {"ttcode", "authkey", "passwd", "stream_key", "stream_salt", "token"}
    answer = get(
        rig.full,
        "/v1/iot-service/api/user/ttcode",
        rig.token("admin"),
        method="POST",
        json={"dev_id": serial},
    )
    assert answer.status_code == 200
    proxied = answer.json()
    # the same fields as upstream; every credential masked, and each was really there
    assert proxied.keys() == direct.keys()
    top = secret - {"token"}
    assert same_but_masked({k: direct[k] for k in top}, {k: proxied[k] for k in top}, secret) == 5
    assert direct["rtm"]["token"] and proxied["rtm"]["token"] == MASK
    assert abs(proxied["rtm"]["expire"] - direct["rtm"]["expire"]) <= 5  # a second apart
    assert proxied["peers"] == direct["peers"]


# --- upstream -------------------------------------------------------------------------------


def test_upstream_errors_pass_through_with_status_and_message(rig: Rig) -> None:
    path = "/v1/iot-service/api/user/device/info?device_id=NOSUCHDEVICE000"
    direct = rig.direct(path)
    proxied = get(rig.strict, path, rig.token("read"))
    assert direct.status_code == proxied.status_code == 404
    assert proxied.json() == direct.json()
    assert proxied.json()["code"] == 1003


def test_the_clouds_own_rate_limit_passes_through(tmp_path: Any) -> None:
    limits = RateLimits(device=SimRateLimit(2, 60))
    cloud, _ = recorded_cloud(SimConfig(rate_limits=limits))
    with cloud:
        ctx = ServerContext(
            Gate(TokenStore(tmp_path / "t.sqlite3")),
            cloud_url=cloud.url,
            account_token=cloud.issue_token(cloud.demo_account.login),
        )
        token, _ = ctx.gate.store.create("read")
        with serve(ctx) as server:
            assert [get(server, BIND, token).status_code for _ in range(2)] == [200, 200]
            limited = get(server, BIND, token)
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.json()["message"]  # the cloud's own envelope and message


def test_a_compressed_answer_is_decoded_masked_and_capped(tmp_path: Any) -> None:
    from starlette.middleware.gzip import GZipMiddleware

    cloud, seen = recorded_cloud(unlimited())
    cloud.app.add_middleware(GZipMiddleware, minimum_size=10)
    with cloud:
        store = TokenStore(tmp_path / "t.sqlite3")
        account = cloud.issue_token(cloud.demo_account.login)
        token, _ = store.create("read")
        direct = HTTP.get(cloud.url + BIND, headers={"authorization": f"Bearer {account}"})
        assert direct.headers["content-encoding"] == "gzip"
        ctx = ServerContext(Gate(store), cloud_url=cloud.url, account_token=account)
        with serve(ctx) as server:
            proxied = get(server, BIND, token)
            assert proxied.status_code == 200
            assert same_but_masked(direct.json(), proxied.json(), ACCESS) >= 1
        # the cap counts decoded bytes: a small compressed answer cannot unpack past it
        size = len(direct.content)
        capped = ServerContext(
            Gate(store),
            cloud_url=cloud.url,
            account_token=account,
            extra={"proxy_max_bytes": size - 1},
        )
        with serve(capped) as server:
            assert get(server, BIND, token).status_code == 502
        assert seen.v1()[-1][2]["accept-encoding"]


def test_unreachable_slow_and_oversized_upstreams(rig: Rig, faults_on: Callable[..., None]) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    token = rig.token("read")

    def ctx(url: str, **extra: Any) -> ServerContext:
        return ServerContext(
            Gate(rig.store), cloud_url=url, account_token=rig.account_token, extra=extra
        )

    with serve(ctx(f"http://127.0.0.1:{port}")) as server:
        down = get(server, BIND, token)
        assert down.status_code == 502
        assert "could not be reached" in down.json()["detail"]
    refused = ServerContext(Gate(rig.store), cloud_url=rig.cloud.url, account_token="expired-jwt")
    with serve(refused) as server:
        # the cloud's 401 is about the server's account token, not the client's: 502
        answer = get(server, BIND, token)
        assert answer.status_code == 502
        assert "account token" in answer.json()["detail"]
        assert "expired-jwt" not in answer.text
    with serve(ctx(rig.cloud.url, proxy_timeout=0.5)) as server:
        faults_on(kind="delay", path=BIND, seconds=1.5)
        slow = get(server, BIND, token)
        assert slow.status_code == 504
        assert "0.5 s" in slow.json()["detail"]
    with serve(ctx(rig.cloud.url, proxy_max_bytes=500)) as server:
        big = get(server, BIND, token)
        assert big.status_code == 502
        assert "larger" in big.json()["detail"]
    with serve(ctx(rig.cloud.url)) as server:
        faults_on(kind="garbage", path=BIND)
        assert get(server, BIND, token).status_code == 502  # a 200 that is not JSON
        faults_on(kind="cloudflare", path=BIND)
        blocked = get(server, BIND, token)
        assert blocked.status_code == 403
        assert blocked.json() == {"detail": "the cloud answered 403 (not JSON)"}


@pytest.fixture
def faults_on(rig: Rig) -> Iterator[Callable[..., None]]:
    def arm(**fault: Any) -> None:
        HTTP.post(f"{rig.cloud.url}/sim/faults", json=fault).raise_for_status()

    yield arm
    HTTP.delete(f"{rig.cloud.url}/sim/faults")


# --- headers, audit, CORS -------------------------------------------------------------------


def test_caller_credentials_never_go_upstream_and_the_account_token_never_comes_back(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    token = rig.token("read")
    caplog.set_level(logging.DEBUG)
    before = len(rig.seen.v1())
    answer = get(
        rig.strict,
        BIND,
        token,
        headers={
            "cookie": "session=secret-cookie",
            "proxy-authorization": "Basic c2VjcmV0",
            "x-forwarded-for": "10.9.8.7",
            "x-bbl-client-name": "OrcaSlicer",
            "user-agent": "Slicer \xe9t\xe9".encode("latin-1"),  # type: ignore[dict-item]
            "connection": "keep-alive, x-custom",
            "x-custom": "1",
        },
    )
    assert answer.status_code == 200
    ((method, path, headers),) = rig.seen.v1()[before:]
    assert (method, path) == ("GET", BIND)
    assert headers["authorization"] == f"Bearer {rig.account_token}"
    assert headers["x-bbl-client-name"] == "OrcaSlicer"
    # Not printable ASCII: not forwarded (it would be re-encoded on the way), and no 500.
    assert "user-agent" not in headers
    for name in ("cookie", "proxy-authorization", "x-forwarded-for", "x-custom"):
        assert name not in headers
    assert token not in str(headers)
    assert rig.account_token not in answer.text
    assert "set-cookie" not in answer.headers
    # the audit line names the token's id; no log line carries either token
    wait_for(lambda: any(BIND in r.getMessage() for r in caplog.records), what="audit line")
    token_id = token.split("_")[1]
    audit = [r.getMessage() for r in caplog.records if r.name == "bambulab.servers.audit"]
    assert any(f"token={token_id}" in line and " 200 " in line for line in audit)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in text
    assert rig.account_token not in text


def test_cors_is_off_by_default_and_on_when_configured(rig: Rig) -> None:
    token = rig.token("read")
    origin = {"origin": "https://dash.example"}
    plain = get(rig.strict, BIND, token, headers=dict(origin))
    assert plain.status_code == 200
    assert "access-control-allow-origin" not in plain.headers
    ctx = ServerContext(
        Gate(rig.store),
        cloud_url=rig.cloud.url,
        account_token=rig.account_token,
        cors_origins=("https://dash.example",),
    )
    with serve(ctx) as server:
        allowed = get(server, BIND, token, headers=dict(origin))
        assert allowed.headers["access-control-allow-origin"] == "https://dash.example"
        other = get(server, BIND, token, headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_environment_proxies_are_not_used(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    # an HTTP proxy from the environment would see the account token: it is ignored
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    ctx = ServerContext(Gate(rig.store), cloud_url=rig.cloud.url, account_token=rig.account_token)
    with serve(ctx) as server:
        assert get(server, BIND, rig.token("read")).status_code == 200
    assert os.environ["HTTP_PROXY"]
