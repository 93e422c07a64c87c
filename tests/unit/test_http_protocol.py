"""Envelopes, error mapping and retry policy of the sans-IO HTTP core."""

from __future__ import annotations

import json
import random

import pytest

from bambulab.errors import (
    BadRequestError,
    CloudflareBlockedError,
    CSRFBlockedError,
    ForbiddenError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    TokenExpiredError,
    TokenInvalidError,
    TransportError,
)
from bambulab.protocol.http import ApiRequest, HttpReply, RetryPolicy, interpret, unwrap


def reply(status: int, body: object, headers: list[tuple[str, str]] | None = None) -> HttpReply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpReply(status, headers or [], raw)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"message": "success", "code": None, "error": None, "devices": [1]}, {"devices": [1]}),
        ({"code": 0, "message": "Success", "data": {"uid": 7}}, {"uid": 7}),
        ({"total": 2, "hits": []}, {"total": 2, "hits": []}),
        ([1, 2], [1, 2]),
    ],
)
def test_both_envelopes_and_bare_objects_unwrap(payload: object, expected: object) -> None:
    assert unwrap(payload) == expected
    assert interpret(reply(200, payload), "/x") == expected


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"code": 400, "message": "Bad Request", "error": "bad id"}, BadRequestError),
        (401, {"code": 1001, "message": "Invalid token"}, TokenInvalidError),
        (401, {"code": 1002, "message": "Token expired"}, TokenExpiredError),
        (403, {"code": 403, "message": "permission denied"}, ForbiddenError),
        (404, {"code": 1003, "message": "device not found"}, NotFoundError),
        (500, {"code": 500, "message": "boom"}, ServerError),
        (502, b"<html>bad gateway</html>", ServerError),
    ],
)
def test_statuses_map_to_the_error_tree(status: int, body: object, error: type) -> None:
    with pytest.raises(error) as info:
        interpret(reply(status, body), "/v1/x")
    assert info.value.http_status == status
    assert "\n" not in str(info.value)


def test_cloudflare_and_csrf_blocks_are_recognised() -> None:
    page = b"<html><title>Attention Required! | Cloudflare</title></html>"
    with pytest.raises(CloudflareBlockedError, match="Cloudflare"):
        interpret(reply(403, page), "/v1/user-service/user/login")
    with pytest.raises(CSRFBlockedError, match="CSRF"):
        interpret(reply(403, {"code": 403, "error": "missing_cookie"}), "/api/sign-in/tfa")


def test_rate_limit_carries_retry_after() -> None:
    with pytest.raises(RateLimitError) as info:
        interpret(reply(429, {"code": 429}, [("Retry-After", "7")]), "/x")
    assert info.value.retry_after == 7.0
    assert "7 s" in str(info.value)


def test_application_error_code_inside_a_200_is_an_error() -> None:
    with pytest.raises(NotFoundError):
        interpret(reply(200, {"code": 1003, "message": "device not found"}), "/x")


@pytest.mark.parametrize("body", [b"<html>oops", b'{"devices": [{"dev_id": "0', b"\x00\xff\xfe"])
def test_garbage_and_truncated_json_raise_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        interpret(reply(200, body), "/v1/iot-service/api/user/bind")
    assert "/v1/iot-service/api/user/bind" in str(info.value)


def test_truncation_is_named() -> None:
    with pytest.raises(ProtocolError, match="truncated"):
        interpret(reply(200, b'{"devices": [{"dev_id": "0'), "/x")


GET = ApiRequest("GET", "/x")
POST = ApiRequest("POST", "/x")


def test_retry_only_idempotent_requests_and_honour_retry_after() -> None:
    policy = RetryPolicy(max_attempts=4, max_elapsed=60, jitter=0, rng=random.Random(1))
    limited = RateLimitError("x", retry_after=5)
    assert policy.delay(1, limited, GET, 0) == 5
    assert policy.delay(1, limited, POST, 0) is None
    assert policy.delay(1, ServerError("x"), GET, 0) == 0.5
    assert policy.delay(2, ServerError("x"), GET, 0) == 1.0
    assert policy.delay(1, TransportError("x"), GET, 0) == 0.5
    assert policy.delay(1, RequestTimeoutError("x"), POST, 0) is None
    assert policy.delay(1, BadRequestError("x"), GET, 0) is None


def test_retry_is_bounded_in_count_and_time() -> None:
    policy = RetryPolicy(max_attempts=3, max_elapsed=10, jitter=0)
    assert policy.delay(3, ServerError("x"), GET, 0) is None
    assert policy.delay(1, RateLimitError("x", retry_after=30), GET, 0) is None
    assert policy.delay(1, ServerError("x"), GET, 9.9) is None
