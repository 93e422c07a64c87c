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
from bambulab.protocol.http import (
    MAX_ANSWER_BYTES,
    AnswerBody,
    ApiRequest,
    HttpReply,
    RetryPolicy,
    interpret,
    unwrap,
)
from bambulab.protocol.json_limits import nesting_exceeds


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


# --- limits: nesting, size, truncation -----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "limit", "exceeds"),
    [
        (b"[[[]]]", 3, False),
        (b"[[[[]]]]", 3, True),
        (b'{"a": {"b": {"c": 1}}}', 3, False),
        (b'["[[[[[[", "{{{{"]', 2, False),
        (b'["\\"[[[[", {"x": [[1]]}]', 2, True),
        (b'"\\\\"[[[[', 3, True),
        (b"[" * 100_000, 64, True),
        (b"[]" * 100_000, 1, False),
    ],
)
def test_nesting_is_measured_outside_strings(body: bytes, limit: int, exceeds: bool) -> None:
    assert nesting_exceeds(body, limit) is exceeds


def test_deep_json_is_a_protocol_error_never_a_recursion_error() -> None:
    with pytest.raises(ProtocolError, match="nests deeper than 64 levels"):
        interpret(reply(200, b"[" * 100_000), "/x")
    with pytest.raises(ProtocolError, match="nests deeper than 64 levels"):
        interpret(reply(200, b"[" * 65 + b"]" * 65), "/x")
    assert interpret(reply(200, b"[" * 64 + b"]" * 64), "/x") is not None
    # An error page nested too deeply still maps by its status.
    with pytest.raises(ServerError):
        interpret(reply(502, b"[" * 100_000), "/x")


def test_answer_body_refuses_a_declared_size_over_the_cap_before_reading() -> None:
    with pytest.raises(ProtocolError, match=r"larger than 8 MiB \(declares 9000000 bytes\)"):
        AnswerBody("http://h:1", "9000000", MAX_ANSWER_BYTES)
    with pytest.raises(ProtocolError, match="malformed Content-Length"):
        AnswerBody("http://h:1", "lots", MAX_ANSWER_BYTES)
    with pytest.raises(ProtocolError, match="declares no size"):
        AnswerBody("http://h:1", None, None)


def test_answer_body_stops_at_the_cap_and_names_truncation() -> None:
    body = AnswerBody("http://h:1", None, 1024)
    body.feed(b"x" * 1000)
    with pytest.raises(ProtocolError, match=r"larger than 1 KiB$"):
        body.feed(b"x" * 25)
    declared = AnswerBody("http://h:1", "1000", 1024)
    declared.feed(b"0123456789")
    assert str(declared.truncated(10)) == "answer from http://h:1 truncated: got 10 of 1000 bytes"
    assert "after 10 bytes" in str(AnswerBody("http://h:1", None, 99).truncated(10))
    whole = AnswerBody("http://h:1", "4", 1024)
    whole.feed(b"[1]")
    whole.feed(b" ")
    assert whole.content() == b"[1] "
