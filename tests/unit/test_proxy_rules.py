"""The proxy's rules as pure functions: which requests pass, what printers they name, masking.

The same rules are exercised end to end against the simulator in
``tests/integration/test_server_proxy.py``; these tables pin each rule down
case by case, fast.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bambulab.servers.common import ApiError
from bambulab.servers.proxy import (
    FIELD_KINDS,
    MASK,
    STRICT_READS,
    ForeignPrinter,
    check_request,
    named_printers,
    shape,
)

BIND = b"/v1/iot-service/api/user/bind"


def concrete(template: str) -> bytes:
    return template.replace("{id}", "60000001").encode()


@pytest.mark.parametrize("endpoint", STRICT_READS, ids=lambda e: e.path)
def test_strict_allows_each_read_endpoint_by_get_only(endpoint: Any) -> None:
    path = concrete(endpoint.path)
    assert check_request("strict", "GET", path, b"", []) == (path.decode(), "read")
    for method in ("POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "get"):
        with pytest.raises(ApiError) as refused:
            check_request("strict", method, path, b"", [])
        assert refused.value.status == 403


REFUSED_PATHS = [
    b"/v1/iot-service/api/user/ttcode",
    b"/v1/iot-service/api/user/upload",
    b"/v1/iot-service/api/user/upload/confirm",
    b"/v1/user-service/user/login",
    b"/v1/user-service/user/refreshtoken",
    b"/v1/user-service/user/sendemail/code",
    b"/v1/iot-service/api/user/bind/",
    b"/v1/iot-service/api/user/bind.",
    b"/v1/iot-service/api/user//bind",
    b"/v1//iot-service/api/user/bind",
    b"/v1/iot-service/api/user/./bind",
    b"/v1/iot-service/api/user/../user/bind",
    b"/v1/iot-service/api/user/%2e%2e/user/bind",
    b"/v1/iot-service/api/user%2fbind",
    b"/v1/iot-service/api/user/%62ind",
    b"/v1/IOT-SERVICE/api/user/bind",
    b"/v1/iot-service/api/user/Bind",
    b"/v1/iot-service/api/user/bind;x=1",
    b"/v1/iot-service/api/user/bind\x00",
    b"/v1/iot-service/api/user\\bind",
    b"/v1/iot-service/api/user/%c0%ae%c0%ae/bind",
    b"/v1/iot-service/api/user/bind\xc0\xae",
    b"/v1/iot-service/api/user/project/60000001/files",
    b"/%76%31/iot-service/api/user/bind",
    b"http://elsewhere/v1/iot-service/api/user/bind",
]


@pytest.mark.parametrize("raw", REFUSED_PATHS)
def test_strict_refuses_every_other_path_spelling(raw: bytes) -> None:
    with pytest.raises(ApiError) as refused:
        check_request("strict", "GET", raw, b"", [])
    assert refused.value.status == 403


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        (b"_method=DELETE", []),
        (b"_METHOD=delete", []),
        (b"token=x", []),
        (b"access_token=x", []),
        (b"Access-Token=x", []),
        (b"limit=1&api_key=x", []),
        (b"", [(b"X-HTTP-Method-Override", b"DELETE")]),
        (b"", [(b"x-http-method", b"POST")]),
        (b"", [(b"X-Method-Override", b"PUT")]),
    ],
)
@pytest.mark.parametrize("mode", ["strict", "full"])
def test_overrides_and_query_tokens_are_refused_in_both_modes(
    mode: str, query: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(ApiError) as refused:
        check_request(mode, "GET", BIND, query, headers)
    assert refused.value.status == 403


@pytest.mark.parametrize(
    "raw",
    [
        b"/v1/user-service/user/login",
        b"/v1/user-service/user/refreshtoken",
        b"/v1/user-service/user/tfa/login",
        b"/v1/user-service/User/Login",
        b"/v1/user-service/my/token",
        b"/v1/iot-service/api/sign-in/tfa",
    ],
)
def test_full_refuses_the_accounts_credentials(raw: bytes) -> None:
    with pytest.raises(ApiError) as refused:
        check_request("full", "POST", raw, b"", [])
    assert refused.value.status == 403


def test_full_allows_every_canonical_path_and_write_method_with_control() -> None:
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        assert check_request("full", method, b"/v1/iot-service/api/user/ttcode", b"", []) == (
            "/v1/iot-service/api/user/ttcode",
            "control",
        )
    for method in ("HEAD", "OPTIONS", "TRACE", "CONNECT"):
        with pytest.raises(ApiError):
            check_request("full", method, BIND, b"", [])
    with pytest.raises(ApiError):
        check_request("other", "GET", BIND, b"", [])


def test_named_printers_in_query_and_body_in_any_spelling() -> None:
    pairs = [("device_id", "A"), ("Dev_Id", "B "), ("DEVICEID", "C"), ("limit", "D")]
    body = {"x": [{"deviceId": "E"}, {"y": {"dev_id": "F"}}], "device-id": "G", "id": "H"}
    assert named_printers(pairs, body) == {"A", "B", "C", "E", "F", "G"}
    assert named_printers([], None) == set()


def test_shape_filters_lists_and_refuses_objects_about_other_printers() -> None:
    doc = {
        "devices": [{"dev_id": "A", "n": 1}, {"dev_id": "B", "n": 2}, "text"],
        "hits": [{"deviceId": "B"}, {"deviceId": "A"}],
        "jobs": [{"device_id": "B"}, {"DEVICE_ID": 12345}, {"devId": " A\n"}],
    }
    kept = shape(doc, "admin", frozenset({"A"}))
    assert kept == {
        "devices": [{"dev_id": "A", "n": 1}, "text"],
        "hits": [{"deviceId": "A"}],
        "jobs": [{"devId": " A\n"}],
    }
    assert shape(doc, "admin", None) == doc
    with pytest.raises(ForeignPrinter):
        shape({"deviceId": "B", "title": "x"}, "admin", frozenset({"A"}))


SECRETS: dict[str, Any] = {
    "devices": [{"dev_id": "A", "dev_access_code": "12345678\n", "dev_ip": "10.0.0.5"}],
    "data": {"email": "a@b.c", "phone": "", "account": "a@b.c", "uid": 7},
    "files": [{"url": "https://s3/x?Signature=1", "name": "cube.3mf"}],
    "accessToken": "jwt",
    "refresh_token": "jwt",
    "rtm": {"token": "t", "expire": 5},
    "ttcode": "ABC",
    "authkey": "k",
    "passwd": 123456,
    "tfaKey": None,
    "code": 1003,
    "online": True,
}


def test_masking_per_scope_by_field_name() -> None:
    original = copy.deepcopy(SECRETS)
    read = shape(SECRETS, "read", None)
    assert original == SECRETS  # never modified in place
    assert read["devices"] == [{"dev_id": "A", "dev_access_code": MASK, "dev_ip": MASK}]
    assert read["data"] == {"email": MASK, "phone": "", "account": MASK, "uid": 7}
    assert read["files"] == [{"url": MASK, "name": "cube.3mf"}]
    assert read["rtm"] == {"token": MASK, "expire": 5}
    assert (read["passwd"], read["tfaKey"]) == (MASK, None)
    assert (read["code"], read["online"]) == (1003, True)  # envelope code, booleans: kept
    control = shape(SECRETS, "control", None)
    assert control["files"] == SECRETS["files"]
    assert control["devices"][0]["dev_access_code"] == MASK
    admin = shape(SECRETS, "admin", None)
    assert admin["devices"] == SECRETS["devices"]
    assert admin["data"] == SECRETS["data"]
    for scope in ("read", "control", "admin"):
        masked = shape(SECRETS, scope, None)  # type: ignore[arg-type]
        for key in ("accessToken", "refresh_token", "ttcode", "authkey", "passwd"):
            assert masked[key] == MASK, (scope, key)
        assert masked["rtm"]["token"] == MASK


def test_every_kind_in_the_table_is_masked_for_read() -> None:
    for name in FIELD_KINDS:
        assert shape({name: "value"}, "read", None) == {name: MASK}
