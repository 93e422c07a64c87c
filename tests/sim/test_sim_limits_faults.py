"""Rate limits (429 + Retry-After on the simulated clock) and fault injection."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from bambulab.sim import CloudSimulator, RateLimit, RateLimits, SimConfig
from tests.sim.simtools import DEMO, DEMO_PASSWORD, PASSWORD_USER, assert_error, authed

LOGIN = "/v1/user-service/user/login"
BIND = "/v1/iot-service/api/user/bind"
PROFILE = "/v1/user-service/my/profile"
PREFERENCE = "/v1/design-user-service/my/preference"


def login(http: httpx.Client, account: str = PASSWORD_USER) -> httpx.Response:
    return http.post(LOGIN, json={"account": account, "password": DEMO_PASSWORD, "apiError": ""})


# --- rate limits ------------------------------------------------------------------------


def test_default_auth_limit_is_5_per_minute(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim(SimConfig())
    with httpx.Client(base_url=sim.url) as http:
        for _ in range(5):
            assert login(http).status_code == 200
        limited = login(http)
        body = assert_error(limited, 429, 429)
        retry = int(limited.headers["retry-after"])
        assert 1 <= retry <= 60
        assert body["details"]["retry_after"] == retry
        # Per account: another account is not affected.
        assert login(http, DEMO).status_code == 200
        sim.advance_clock(retry)
        assert login(http).status_code == 200


def test_auth_limit_override_and_unknown_accounts(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim(rate_limits=RateLimits(auth=RateLimit(2, 60)))
    with httpx.Client(base_url=sim.url) as http:
        wrong = {"account": "ghost@example.com", "password": "x"}
        assert_error(http.post(LOGIN, json=wrong), 400, 3)
        assert_error(http.post(LOGIN, json=wrong), 400, 3)
        assert_error(http.post(LOGIN, json=wrong), 429, 429)
        assert login(http).status_code == 200
        assert login(http).status_code == 200
        assert_error(login(http), 429, 429)
        # Code requests count as authentication too.
        send = {"email": PASSWORD_USER, "type": "codeLogin"}
        assert_error(http.post("/v1/user-service/user/sendemail/code", json=send), 429, 429)


def test_device_query_limit(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim(rate_limits=RateLimits(device=RateLimit(3, 60)))
    with authed(sim, DEMO) as http:
        for _ in range(3):
            assert http.get(BIND).status_code == 200
        limited = http.get(BIND)
        assert_error(limited, 429, 429)
        assert "retry-after" in limited.headers
        # Only GETs count as device queries; other endpoints are unaffected.
        assert http.get(PROFILE).status_code == 200
        sim.advance_clock(61)
        assert http.get(BIND).status_code == 200


def test_profile_limit_covers_profile_and_preference(
    make_sim: Callable[..., CloudSimulator],
) -> None:
    sim = make_sim(rate_limits=RateLimits(profile=RateLimit(2, 60)))
    with authed(sim, DEMO) as http:
        assert http.get(PROFILE).status_code == 200
        assert http.get(PREFERENCE).status_code == 200
        assert_error(http.get(PROFILE), 429, 429)
        assert_error(http.put(PROFILE, json={"bio": "x"}), 429, 429)


def test_limits_can_be_disabled(sim: CloudSimulator, demo: httpx.Client) -> None:
    # The shared simulator runs without limits: far more than 120 device queries pass.
    for _ in range(130):
        assert demo.get(BIND).status_code == 200


def test_retry_after_counts_down(make_sim: Callable[..., CloudSimulator]) -> None:
    sim = make_sim(rate_limits=RateLimits(auth=RateLimit(1, 60)))
    with httpx.Client(base_url=sim.url) as http:
        assert login(http).status_code == 200
        first = int(login(http).headers["retry-after"])
        sim.advance_clock(30)
        second = int(login(http).headers["retry-after"])
        assert second <= first - 29


# --- faults ----------------------------------------------------------------------------------


@pytest.fixture
def faulty(make_sim: Callable[..., CloudSimulator]) -> CloudSimulator:
    return make_sim()


def arm(sim: CloudSimulator, **fault: object) -> None:
    response = httpx.post(f"{sim.url}/sim/faults", json=fault)
    assert response.status_code == 200, response.text


def test_cloudflare_fault(faulty: CloudSimulator) -> None:
    arm(faulty, kind="cloudflare", path="/v1/user-service/user/login")
    with httpx.Client(base_url=faulty.url) as http:
        blocked = login(http)
        assert blocked.status_code == 403
        assert blocked.headers["content-type"].startswith("text/html")
        assert "Attention Required! | Cloudflare" in blocked.text
        assert login(http).status_code == 200  # count 1: only once


def test_csrf_fault(faulty: CloudSimulator) -> None:
    arm(faulty, kind="csrf")
    with authed(faulty, DEMO) as http:
        response = http.get(BIND)
        assert response.status_code == 403
        assert "missing_cookie" in response.json()["error"]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_status_fault(faulty: CloudSimulator, status: int) -> None:
    arm(faulty, kind="status", status=status, count=2, retry_after=7)
    with authed(faulty, DEMO) as http:
        for _ in range(2):
            response = http.get(BIND)
            assert_error(response, status, status)
            assert response.headers["retry-after"] == "7"
        assert http.get(BIND).status_code == 200


def test_garbage_fault(faulty: CloudSimulator) -> None:
    arm(faulty, kind="garbage")
    with authed(faulty, DEMO) as http:
        response = http.get(BIND)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.content)


def test_truncated_fault(faulty: CloudSimulator) -> None:
    with authed(faulty, DEMO) as http:
        full = http.get(BIND).content
        arm(faulty, kind="truncated", path=BIND)
        response = http.get(BIND)
        assert response.status_code == 200
        assert response.content == full[: len(full) // 2]
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.content)


def test_ratelimit_fault(faulty: CloudSimulator) -> None:
    arm(faulty, kind="ratelimit", retry_after=3)
    with authed(faulty, DEMO) as http:
        response = http.get(PROFILE)
        assert_error(response, 429, 429)
        assert response.headers["retry-after"] == "3"


def test_delay_fault(faulty: CloudSimulator) -> None:
    arm(faulty, kind="delay", seconds=0.3)
    with authed(faulty, DEMO) as http:
        started = time.monotonic()
        assert http.get(BIND).status_code == 200
        assert time.monotonic() - started >= 0.3


def test_fault_path_prefix_and_control_paths(faulty: CloudSimulator) -> None:
    arm(faulty, kind="status", status=500, path="/v1/iot-service/")
    arm(faulty, kind="status", status=502)  # every path, but never /sim/
    with authed(faulty, DEMO) as http:
        assert http.get("/sim/health").json() == {"ok": True}
        assert_error(http.get(PROFILE), 502, 502)  # the iot fault does not match
        assert_error(http.get(BIND), 500, 500)
        pending = http.get("/sim/faults").json()["faults"]
        assert pending == []


def test_faults_can_be_cleared(faulty: CloudSimulator) -> None:
    arm(faulty, kind="status", count=50)
    with authed(faulty, DEMO) as http:
        assert http.delete("/sim/faults").json() == {"ok": True, "cleared": 1}
        assert http.get(BIND).status_code == 200


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "explode"},
        {"kind": "status", "count": 0},
        {"kind": "status", "status": 99},
        {"kind": "delay", "seconds": -1},
        {"kind": "status", "path": "no-slash"},
    ],
)
def test_bad_fault_requests(faulty: CloudSimulator, fault: dict[str, object]) -> None:
    assert_error(httpx.post(f"{faulty.url}/sim/faults", json=fault), 400, 400)


def test_clock_endpoint(faulty: CloudSimulator) -> None:
    with httpx.Client(base_url=faulty.url) as http:
        before = http.get("/sim/clock").json()
        after = http.post("/sim/clock", json={"advance": 3600}).json()
        assert after["offset"] == before["offset"] + 3600
        assert after["unix"] >= before["unix"] + 3600
        assert_error(http.post("/sim/clock", json={"advance": -1}), 400, 400)
