"""Helpers shared by the simulator tests (plain functions; fixtures live in conftest)."""

from __future__ import annotations

from typing import Any

import httpx

from bambulab.sim import CloudSimulator
from tests.conftest import unlimited

DEMO = "maker@example.com"
PASSWORD_USER = "password@example.com"
PHONE_USER = "+15550100"
TFA_USER = "tfa@example.com"
DEMO_PASSWORD = "bambu-demo"
SEED_DEVICE = "01234567890ABCD"

UNLIMITED = unlimited()  # rate limits off, the seed's device printing


def authed(sim: CloudSimulator, login: str) -> httpx.Client:
    """A client with a bearer token for ``login``."""
    token = sim.issue_token(login)
    return httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def assert_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    """The response is the cloud's error envelope with this status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"code", "message", "error", "details"}, body
    assert body["code"] == code, body
    return body


def assert_old(response: httpx.Response) -> dict[str, Any]:
    """A 200 in the old (iot-service) envelope."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "success"
    assert body["code"] is None
    assert body["error"] is None
    return body


def latest_code(http: httpx.Client, account: str, kind: str = "email") -> str:
    """The newest code the simulated outbox holds for ``account``."""
    response = http.get("/sim/outbox", params={"account": account, "kind": kind})
    assert response.status_code == 200
    messages = response.json()["messages"]
    assert messages, f"no {kind} code for {account}"
    return str(messages[-1]["code"])


UPLOAD = "/v1/iot-service/api/user/upload"


def upload_file(http: httpx.Client, name: str, data: bytes) -> str:
    """Upload through the two-URL flow with plain httpx; returns the file id."""
    body = assert_old(http.get(UPLOAD, params={"filename": name, "size": len(data)}))
    urls = {entry["type"]: entry["url"] for entry in body["urls"]}
    # Pre-signed URLs must be used without the API's Authorization header.
    assert httpx.put(urls["filename"], content=data).status_code == 200
    assert httpx.put(urls["size"], content=str(len(data)).encode()).status_code == 200
    return str(body["file_id"])
