"""Server misbehaviour seen from both faces: blocks, limits, failures, garbage, silence."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from bambulab import BambuClient, RetryPolicy
from bambulab.errors import (
    CloudflareBlockedError,
    CSRFBlockedError,
    ProtocolError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    TransportError,
)
from bambulab.sim import CloudSimulator
from tests.conftest import Face

BIND = "/v1/iot-service/api/user/bind"
Inject = Callable[..., None]


def test_cloudflare_block_is_explained(client: Face, faults: Inject) -> None:
    faults(path=BIND, kind="cloudflare")
    with pytest.raises(CloudflareBlockedError, match="Cloudflare"):
        client.get_devices()


def test_csrf_gate_is_explained(client: Face, faults: Inject) -> None:
    faults(path=BIND, kind="csrf")
    with pytest.raises(CSRFBlockedError, match="CSRF"):
        client.get_devices()


def test_429_is_retried_after_retry_after(client: Face, faults: Inject) -> None:
    faults(path=BIND, kind="ratelimit", retry_after=1, count=1)
    started = time.monotonic()
    assert client.get_devices()
    assert time.monotonic() - started >= 0.9, "the client waited as the server asked"


def test_429_on_a_post_is_not_repeated(client: Face, faults: Inject) -> None:
    faults(path="/v1/iot-service/api/user/ttcode", kind="ratelimit", retry_after=30, count=1)
    with pytest.raises(RateLimitError) as info:
        client.get_camera_credentials("01234567890ABCD")
    assert info.value.retry_after == 30


def test_500_then_success_is_retried(client: Face, faults: Inject) -> None:
    faults(path=BIND, kind="status", status=500, count=2)
    assert client.get_devices()


def test_persistent_500_gives_up_bounded(sim: CloudSimulator, faults: Inject) -> None:
    faults(path=BIND, kind="status", status=503, count=50)
    policy = RetryPolicy(max_attempts=3, base_delay=0.05)
    with BambuClient(
        token=sim.issue_token(sim.demo_account.email), base_url=sim.url, retry=policy
    ) as c:
        started = time.monotonic()
        with pytest.raises(ServerError, match="503"):
            c.get_devices()
        assert time.monotonic() - started < 2


@pytest.mark.parametrize(("kind", "word"), [("garbage", "not JSON"), ("truncated", "truncated")])
def test_garbage_and_truncated_answers_are_errors(
    client: Face, faults: Inject, kind: str, word: str
) -> None:
    faults(path=BIND, kind=kind)
    with pytest.raises(ProtocolError, match=word):
        client.get_devices()


def test_a_silent_server_times_out(sim: CloudSimulator, faults: Inject) -> None:
    faults(path=BIND, kind="delay", seconds=5, count=5)
    token = sim.issue_token(sim.demo_account.email)
    with BambuClient(
        token=token,
        base_url=sim.url,
        timeout=0.5,
        retry=RetryPolicy(max_attempts=2, base_delay=0.05),
    ) as c:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError, match=r"no complete answer .* within 0\.5 s"):
            c.get_devices()
        assert time.monotonic() - started < 3


def test_unreachable_host_fails_fast_with_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
    with BambuClient(
        token="t",
        base_url=f"http://127.0.0.1:{port}",
        retry=RetryPolicy(max_attempts=2, base_delay=0.05),
    ) as c:
        started = time.monotonic()
        with pytest.raises(TransportError) as info:
            c.get_devices()
        assert time.monotonic() - started < 2
    message = str(info.value)
    assert "cannot reach" in message and "\n" not in message and "Bearer" not in message
