"""Every route of the servers, fuzzed from their own OpenAPI schema (schemathesis).

The app mounts every part that exists (live, compat, and proxy and metrics
when they are built) over a simulated fleet; schemathesis draws requests
from the schema, valid and invalid, with a token that may do everything,
and checks each answer: no 5xx, status codes, content types, headers and
bodies as documented, invalid input refused, auth enforced. A serial that
fits the schema is swapped for one of the fleet's, so the routes are fuzzed
on real printers and not only on 404s. The event stream never ends by
design and is left out (``test_server_live`` covers it).
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
    unsupported_method,
)

from bambulab.servers.app import PARTS, ServerContext, build_app
from bambulab.servers.common import Gate
from bambulab.servers.tokens import TokenStore
from tests.integration.live_server import Env, live_env

EXAMPLES = 10
SERIAL = re.compile(r"[0-9A-Za-z_-]{1,64}")
ENDLESS = ["/api/v2/events", "/farm/api/events"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with live_env(tmp_path_factory.mktemp("fuzz"), PARTS, command_timeout=3.0) as running:
        yield running


def document() -> dict[str, Any]:
    """The OpenAPI document of an app with every part (it does not depend on the fleet)."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = ServerContext(Gate(TokenStore(Path(tmp) / "tokens.sqlite3")))
        return build_app(ctx, PARTS).openapi()


# Loaded at collection (schemathesis' lazy fixture loader does not run on pytest 9).
schema = schemathesis.openapi.from_dict(document()).exclude(path=ENDLESS)


def real_printer(case: Any, env: Env) -> None:
    """Point a well-formed serial at one of the fleet's printers (a bad one stays bad)."""
    params = case.path_parameters or {}
    fleet = [env.printing, env.idle, env.offline]
    for name in ("serial", "device_id"):
        value = params.get(name)
        if isinstance(value, str) and SERIAL.fullmatch(value):
            params[name] = fleet[sum(map(ord, value)) % len(fleet)]
    query = case.query or {}
    value = query.get("device_id")
    if isinstance(value, str) and SERIAL.fullmatch(value):
        query["device_id"] = fleet[sum(map(ord, value)) % len(fleet)]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_route_keeps_its_contract(case: Any, env: Env) -> None:
    real_printer(case, env)
    # The proxy answers every method it does not allow with its own 403 (never the
    # framework's 405): a strict proxy refuses a write whatever it is called. Requests
    # drawn to break the schema are not judged by their acceptance: the caller's token
    # header replaces a "missing" one, and unknown query parameters are ignored by design.
    excluded: list[Any] = [negative_data_rejection]
    if case.path.startswith("/v1/"):
        excluded.append(unsupported_method)
    if case.path == "/farm/api/jobs" and case.method == "POST":
        # Its body is a sliced 3MF: no schema can say which bytes are one, so drawn
        # bodies are refused (422) and "valid data rejected" cannot be judged.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(
        base_url=env.url,
        headers={"Authorization": f"Bearer {env.token('admin')}"},
        timeout=15,
        excluded_checks=excluded,
    )


def test_every_operation_has_its_own_id(env: Env) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FastAPI warns of the duplicates it makes
        paths = env.server.app.openapi()["paths"]  # type: ignore[attr-defined]
    ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    login = paths["/farm/login"]
    assert login["get"]["operationId"] != login["post"]["operationId"]


def test_the_schema_documents_every_route(env: Env) -> None:
    paths = env.server.app.openapi()["paths"]  # type: ignore[attr-defined]
    for path in (
        "/api/v2/printers",
        "/api/v2/printers/{serial}",
        "/api/v2/events",
        "/api/v2/printers/{serial}/commands/pause",
        "/api/version",
        "/api/v1/status",
        "/api/v1/print",
        "/api/v1/devices",
        "/api/v1/printers/{serial}/light",
    ):
        assert path in paths, path
    state = paths["/api/v2/printers/{serial}"]["get"]["responses"]["200"]
    assert state["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PrinterStateOut"
    }
    events = paths["/api/v2/events"]["get"]["responses"]["200"]["content"]
    assert "text/event-stream" in events
    assert paths["/api/v2/printers"]["get"]["security"] == [{"token": []}]
