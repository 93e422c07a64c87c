"""Uploads: both flows, and the pre-signed URL checks S3 would make."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from bambulab.sim import CloudSimulator
from tests.sim.simtools import (
    DEMO,
    PASSWORD_USER,
    UPLOAD,
    assert_error,
    assert_old,
    authed,
    upload_file,
)

CONFIRM = "/v1/iot-service/api/user/upload/confirm"
DATA = b"PK\x03\x04" + bytes(range(256)) * 4


def upload_urls(
    http: httpx.Client, name: str = "model.3mf", size: int = len(DATA)
) -> dict[str, str]:
    body = assert_old(http.get(UPLOAD, params={"filename": name, "size": size}))
    assert isinstance(body["file_id"], str)
    return {"file_id": body["file_id"], **{u["type"]: u["url"] for u in body["urls"]}}


def xml_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/xml")
    text = response.text
    return text.split("<Code>")[1].split("</Code>")[0]


def test_upload_urls_shape(demo: httpx.Client) -> None:
    body = assert_old(demo.get(UPLOAD, params={"filename": "model.3mf", "size": 10}))
    assert [u["type"] for u in body["urls"]] == ["filename", "size"]
    for item in body["urls"]:
        assert item["file"] == "model.3mf"
        parts = urlsplit(item["url"])
        assert parts.path.startswith("/sim-s3/")
        query = parse_qs(parts.query)
        assert set(query) == {"AWSAccessKeyId", "Expires", "Signature"}


def test_two_url_flow_registers_file(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim()
    with authed(sim, DEMO) as http:
        urls = upload_urls(http, "my model.3mf")
        put = httpx.put(urls["filename"], content=DATA)
        assert put.status_code == 200
        assert put.headers["etag"] == f'"{hashlib.md5(DATA).hexdigest()}"'
        assert urls["file_id"] not in sim.world.files  # the size part is still missing
        assert httpx.put(urls["size"], content=str(len(DATA)).encode()).status_code == 200
        stored = sim.world.files[urls["file_id"]]
        assert stored.md5 == hashlib.md5(DATA).hexdigest()
        assert stored.owner == sim.demo_account.uid
        confirmed = assert_old(http.post(CONFIRM, json={"file_id": urls["file_id"]}))
        assert confirmed["status"] == "ready"
        fetched = httpx.get(confirmed["file_url"])
        assert fetched.status_code == 200
        assert fetched.content == DATA


def test_single_url_flow_with_confirm(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim()
    with authed(sim, DEMO) as http, authed(sim, PASSWORD_USER) as other:
        body = assert_old(http.post(UPLOAD, json={"filename": "part.stl", "size": len(DATA)}))
        assert set(body) >= {"file_id", "upload_url"}
        assert_error(http.post(CONFIRM, json={"file_id": body["file_id"]}), 404, 1006)
        assert httpx.put(body["upload_url"], content=DATA).status_code == 200
        assert_error(other.post(CONFIRM, json={"file_id": body["file_id"]}), 404, 1006)
        confirmed = assert_old(http.post(CONFIRM, json={"file_id": body["file_id"]}))
        assert confirmed["file_id"] == body["file_id"]
        assert confirmed["status"] == "ready"
        assert httpx.get(confirmed["file_url"]).content == DATA
        assert_error(http.post(CONFIRM, json={"file_id": "nope"}), 404, 1006)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("model.exe", "10"),
        ("model", "10"),
        ("", "10"),
        ("dir/model.3mf", "10"),
        ("model.3mf", "0"),
        ("model.3mf", "-1"),
        ("model.3mf", "abc"),
        ("model.3mf", str((1 << 30) + 1)),
    ],
)
def test_upload_validation(demo: httpx.Client, name: str, size: str) -> None:
    assert_error(demo.get(UPLOAD, params={"filename": name, "size": size}), 400, 1006)


@pytest.mark.parametrize("name", ["a.3MF", "b.gcode", "c.stl", "d.step"])
def test_supported_types(demo: httpx.Client, name: str) -> None:
    assert_old(demo.get(UPLOAD, params={"filename": name, "size": 1}))


def test_wrong_method_is_signature_mismatch(demo: httpx.Client) -> None:
    urls = upload_urls(demo)
    for method in ("POST", "GET", "DELETE"):
        response = httpx.request(method, urls["filename"], content=DATA)
        assert response.status_code == 403
        assert xml_code(response) == "SignatureDoesNotMatch"


def test_extra_content_type_is_signature_mismatch(demo: httpx.Client) -> None:
    urls = upload_urls(demo)
    response = httpx.put(
        urls["filename"], content=DATA, headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 403
    assert xml_code(response) == "SignatureDoesNotMatch"
    md5 = httpx.put(urls["filename"], content=DATA, headers={"Content-MD5": "abc"})
    assert xml_code(md5) == "SignatureDoesNotMatch"


def test_tampered_or_missing_signature(demo: httpx.Client) -> None:
    url = upload_urls(demo)["filename"]
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    later = {**query, "Expires": str(int(query["Expires"]) + 3600)}
    tampered = urlunsplit(parts._replace(query=urlencode(later)))
    assert xml_code(httpx.put(tampered, content=DATA)) == "SignatureDoesNotMatch"
    bare = urlunsplit(parts._replace(query=""))
    response = httpx.put(bare, content=DATA)
    assert response.status_code == 403
    assert xml_code(response) == "AccessDenied"
    other_key = urlunsplit(parts._replace(path=parts.path + "x"))
    assert xml_code(httpx.put(other_key, content=DATA)) == "SignatureDoesNotMatch"


def test_expired_url_is_access_denied(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim()
    with authed(sim, DEMO) as http:
        urls = upload_urls(http)
        sim.advance_clock(901)
        response = httpx.put(urls["filename"], content=DATA)
        assert response.status_code == 403
        assert xml_code(response) == "AccessDenied"
        assert "Request has expired" in response.text


def test_body_must_match_declared_size(demo: httpx.Client) -> None:
    urls = upload_urls(demo)
    short = httpx.put(urls["filename"], content=DATA[:-1])
    assert short.status_code == 400
    assert xml_code(short) == "IncompleteBody"
    long = httpx.put(urls["filename"], content=DATA + b"x")
    assert long.status_code == 400
    assert xml_code(long) == "BadDigest"
    size = httpx.put(urls["size"], content=b"12")
    assert size.status_code == 400
    assert xml_code(size) == "BadDigest"


def test_helper_upload_then_print_listing(demo: httpx.Client, sim: CloudSimulator) -> None:
    file_id = upload_file(demo, "listing.gcode", b"G28\n")
    assert sim.world.files[file_id].name == "listing.gcode"


def test_upload_is_rate_limited_per_hour(make_sim: Callable[..., CloudSimulator]) -> None:
    from bambulab.sim import RateLimit, RateLimits

    sim = make_sim(rate_limits=RateLimits(upload=RateLimit(2, 3600)))
    with authed(sim, DEMO) as http:
        for _ in range(2):
            assert_old(http.get(UPLOAD, params={"filename": "a.3mf", "size": 1}))
        limited = http.post(UPLOAD, json={"filename": "a.3mf", "size": 1})
        assert_error(limited, 429, 429)
        assert 3500 <= int(limited.headers["retry-after"]) <= 3600
        # Confirming is not an upload request.
        assert_error(http.post(CONFIRM, json={"file_id": "nope"}), 404, 1006)
