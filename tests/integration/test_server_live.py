"""The live printer API v2 against a simulated fleet, over real sockets.

The server follows the fleet through one cloud MQTT connection (the hub);
the tests read and command the printers through HTTP with tokens the server
issued, and check the effect on the simulated printers themselves.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from bambulab.models.output import PrinterStateOut
from bambulab.servers.api_v2 import PrintersOut, StreamCounter
from bambulab.servers.common import MemoryEventBus
from tests.conftest import wait_for
from tests.integration.live_server import Env, SseEvent, live_env, sse

# Small enough that a test overflows it quickly with events of its own.
KEEP = 40


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with live_env(tmp_path_factory.mktemp("live"), bus=MemoryEventBus(keep=KEEP)) as running:
        yield running


def get(env: Env, path: str, headers: dict[str, str], **params: str) -> httpx.Response:
    return httpx.get(f"{env.url}{path}", headers=headers, params=params, timeout=10)


def post(
    env: Env, serial: str, command: str, headers: dict[str, str], body: object = None
) -> httpx.Response:
    return httpx.post(
        f"{env.url}/api/v2/printers/{serial}/commands/{command}",
        headers=headers,
        json=body,
        timeout=15,
    )


def state(env: Env, serial: str) -> dict[str, object]:
    response = get(env, f"/api/v2/printers/{serial}", env.auth("read"))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


# --- reading ---------------------------------------------------------------------------------


def test_printers_lists_every_printer_with_its_summary(env: Env) -> None:
    response = get(env, "/api/v2/printers", env.auth("read"))
    assert response.status_code == 200
    body = PrintersOut.model_validate(response.json())
    rows = {p.serial: p for p in body.printers}
    assert set(rows) == {env.printing, env.idle, env.offline}
    for serial, row in rows.items():
        assert row.name == env.names[serial]
    assert rows[env.printing].model == "P1S"
    assert rows[env.idle].model == "X1 Carbon"
    assert rows[env.offline].model == "A1"

    printing = rows[env.printing]
    assert printing.online and printing.last_report is not None
    assert printing.state is not None
    truth = env.truth(env.printing)
    assert printing.state.gcode_state == truth["gcode_state"] == "RUNNING"
    assert printing.state.job == truth["subtask_name"]
    assert printing.state.total_layers == truth["total_layer_num"]
    assert printing.state.bed_target == truth["bed_target_temper"]

    assert rows[env.idle].online and rows[env.idle].state is not None
    assert rows[env.idle].state.gcode_state == env.truth(env.idle)["gcode_state"]
    # known to the server, never heard from
    assert not rows[env.offline].online
    assert rows[env.offline].last_report is None and rows[env.offline].state is None


def test_state_is_the_typed_state(env: Env) -> None:
    body = state(env, env.printing)
    typed = PrinterStateOut.model_validate(body)  # the documented model, key for key
    truth = env.truth(env.printing)
    assert typed.serial == env.printing and typed.model == "P1S"
    assert typed.gcode_state == "RUNNING"
    assert typed.job == truth["subtask_name"]
    assert typed.total_layers == truth["total_layer_num"]
    assert typed.bed_target == truth["bed_target_temper"]
    assert len(typed.ams) == len(truth["ams"]["ams"])


def test_state_of_a_printer_that_never_reported_knows_nothing(env: Env) -> None:
    typed = PrinterStateOut.model_validate(state(env, env.offline))
    assert typed.serial == env.offline and typed.model == "A1"
    assert typed.percent is None and typed.nozzle_temp is None and typed.bed_temp is None


def test_unknown_printer_is_404_for_a_token_that_may_see_every_printer(env: Env) -> None:
    response = get(env, "/api/v2/printers/NOSUCHPRINTER00", env.auth("read"))
    assert response.status_code == 404
    assert response.json() == {"detail": "no printer NOSUCHPRINTER00 on this server"}


def test_a_token_for_printer_a_never_reads_printer_b(env: Env) -> None:
    only_a = env.auth("read", env.printing)
    listed = get(env, "/api/v2/printers", only_a).json()["printers"]
    assert [p["serial"] for p in listed] == [env.printing]
    assert get(env, f"/api/v2/printers/{env.printing}", only_a).status_code == 200
    for other in (env.idle, env.offline, "NOSUCHPRINTER00"):
        # outside its allowlist: 403 whether the printer exists or not (nothing leaks)
        refused = get(env, f"/api/v2/printers/{other}", only_a)
        assert refused.status_code == 403
        assert refused.json() == {"detail": "this token does not allow that printer"}
    admin_for_a = env.auth("admin", env.printing)
    assert get(env, f"/api/v2/printers/{env.idle}", admin_for_a).status_code == 403


def test_no_token_or_a_bad_one_is_401(env: Env) -> None:
    assert get(env, "/api/v2/printers", {}).status_code == 401
    bad = {"Authorization": "Bearer bbt_000000000000_" + "A" * 43}
    response = get(env, f"/api/v2/printers/{env.printing}", bad)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert get(env, "/api/v2/events", {}).status_code == 401


def test_revoked_token_is_refused_at_once(env: Env) -> None:
    token, row = env.store.create("read")
    headers = {"Authorization": f"Bearer {token}"}
    assert get(env, "/api/v2/printers", headers).status_code == 200
    env.store.revoke(row.id)
    response = get(env, "/api/v2/printers", headers)
    assert response.status_code == 401
    assert token not in response.text


# --- commands --------------------------------------------------------------------------------


def test_pause_and_resume_act_on_the_printer(env: Env) -> None:
    control = env.auth("control", env.printing)
    paused = post(env, env.printing, "pause", control)
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert body["serial"] == env.printing and body["command"] == "pause"
    assert body["result"] == "success" and body["sequence_id"]
    assert body["reply"]["command"] == "pause"
    assert env.truth(env.printing)["gcode_state"] == "PAUSE"
    wait_for(lambda: state(env, env.printing)["gcode_state"] == "PAUSE", 10, "PAUSE via the API")

    resumed = post(env, env.printing, "resume", control)
    assert resumed.status_code == 200, resumed.text
    wait_for(lambda: state(env, env.printing)["gcode_state"] == "RUNNING", 10, "RUNNING again")
    assert env.truth(env.printing)["gcode_state"] == "RUNNING"


def test_light_and_temperature_commands_reach_the_printer(env: Env) -> None:
    control = env.auth("control")
    off = post(env, env.idle, "light", control, {"on": False})
    assert off.status_code == 200, off.text
    lights = {light["node"]: light["mode"] for light in env.truth(env.idle)["lights_report"]}
    assert lights["chamber_light"] == "off"
    assert post(env, env.idle, "light", control, {"mode": "on"}).status_code == 200
    wait_for(
        lambda: (
            {light["node"]: light["mode"] for light in env.truth(env.idle)["lights_report"]}[
                "chamber_light"
            ]
            == "on"
        ),
        5,
        "the light on",
    )

    hot = post(env, env.idle, "bed_temperature", control, {"temp": 61})
    assert hot.status_code == 200, hot.text
    wait_for(lambda: env.truth(env.idle)["bed_target_temper"] == 61, 5, "bed target 61")
    wait_for(lambda: state(env, env.idle)["bed_target"] == 61, 10, "bed target via the API")
    assert post(env, env.idle, "bed_temperature", control, {"temp": 0}).status_code == 200


def test_a_read_token_may_not_command(env: Env) -> None:
    before = env.truth(env.printing)["gcode_state"]
    for headers in (env.auth("read"), env.auth("read", env.printing)):
        refused = post(env, env.printing, "pause", headers)
        assert refused.status_code == 403
        assert refused.json() == {"detail": "this token's scope is read; this needs control"}
    assert env.truth(env.printing)["gcode_state"] == before


def test_a_control_token_for_a_never_controls_b(env: Env) -> None:
    control_a = env.auth("control", env.printing)
    refused = post(env, env.idle, "light", control_a, {"on": False})
    assert refused.status_code == 403
    refused = post(env, env.idle, "gcode", control_a, {"gcode": "M140 S70"})
    assert refused.status_code == 403
    assert env.truth(env.idle)["bed_target_temper"] != 70


def test_command_bodies_are_validated(env: Env) -> None:
    control = env.auth("control")
    for command, body in [
        ("fan", {"fan": "part", "percent": 150}),
        ("fan", {"fan": "nose", "percent": 10}),
        ("bed_temperature", {"temp": 500}),
        ("speed", {"level": 9}),
        ("light", {"on": True, "node": "../../etc"}),
        ("gcode", {"gcode": "   "}),
        ("light", {"on": True, "surprise": 1}),
    ]:
        response = post(env, env.idle, command, control, body)
        assert response.status_code == 422, (command, body, response.text)
    assert post(env, env.idle, "selfdestruct", control).status_code == 404


def test_command_to_an_offline_printer_is_409(env: Env) -> None:
    response = post(env, env.offline, "pause", env.auth("control"))
    assert response.status_code == 409
    assert response.json() == {"detail": f"printer {env.offline} is offline; pause was not sent"}


def test_command_without_an_answer_is_504(env: Env) -> None:
    stall = 4.0  # longer than the hub's command timeout (3 s)
    env.sim.stall(env.idle, stall)  # the printer's messages (its replies too) are dropped
    over = time.time() + stall
    response = post(env, env.idle, "speed", env.auth("control"), {"level": "sport"})
    assert response.status_code == 504
    assert response.json() == {"detail": f"printer {env.idle} did not answer print_speed in time"}
    # the next test finds the printer talking again
    wait_for(
        lambda: (env.server.call(lambda: env.hub.last_report(env.idle)) or 0) > over,
        15,
        "the printer to report again",
    )


# --- the event stream ------------------------------------------------------------------------


def payload(event: SseEvent) -> dict[str, object]:
    return json.loads(event.data)  # type: ignore[no-any-return]


def test_events_arrive_with_the_changed_values(env: Env) -> None:
    with sse(env, env.auth("read")) as stream:
        seen = stream.take(8)
        assert stream.retry == 3000
    changed = [e for e in seen if e.type == "state_changed"]
    assert changed, seen
    ids = [int(e.id or 0) for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for event in changed:
        body = payload(event)
        assert body["serial"] in (env.printing, env.idle)
        assert isinstance(body["changed"], list)
    # a printing printer's reports move its progress and temperatures: the values come along
    moved = [payload(e)["values"] for e in changed if "values" in payload(e)]
    assert moved and all(isinstance(v, dict) and v for v in moved)


def test_events_are_filtered_to_the_tokens_printers(env: Env) -> None:
    only_idle = env.auth("read", env.idle)
    with sse(env, env.auth("read")) as everything, sse(env, only_idle) as mine:
        # make the idle printer talk: its light changes are events too
        post(env, env.idle, "light", env.auth("control"), {"on": False})
        post(env, env.idle, "light", env.auth("control"), {"on": True})
        got = mine.take(3)
        assert {payload(e)["serial"] for e in got} == {env.idle}
        # meanwhile the printing printer kept publishing: the unfiltered stream shows it
        others = [everything.next() for _ in range(30)]
        assert env.printing in {payload(e)["serial"] for e in others}
    refused = get(env, "/api/v2/events", only_idle, serial=env.printing)
    assert refused.status_code == 403
    with sse(env, env.auth("read"), {"serial": env.printing}) as one:
        assert {payload(e)["serial"] for e in one.take(5)} == {env.printing}


def test_resume_with_last_event_id_gets_exactly_the_missed_events(env: Env) -> None:
    headers = env.auth("read")
    with sse(env, headers) as reference:
        with sse(env, headers) as client:
            first = client.take(3)
        last = first[-1].id
        assert last is not None
        # the reference goes on reading while the client is away
        seen = reference.take(3 + 6)
        ids = [e.id for e in seen]
        assert last in ids
        missed = seen[ids.index(last) + 1 :]
        for resume in (
            {"Last-Event-ID": last, **headers},
            headers,  # the query fallback
        ):
            params = None if "Last-Event-ID" in resume else {"last_event_id": last}
            with sse(env, resume, params) as again:
                got = again.take(len(missed))
            assert [(e.id, e.type, e.data) for e in got] == [(e.id, e.type, e.data) for e in missed]


def test_an_id_older_than_the_bus_keeps_gets_reset(env: Env) -> None:
    async def flood() -> None:
        for i in range(KEEP + 5):
            await env.ctx.bus.publish("hms_raised", {"serial": env.idle, "n": i}, env.idle)

    env.server.run(flood())
    with sse(env, {"Last-Event-ID": "1", **env.auth("read")}) as stream:
        first = stream.next()
        assert first.type == "reset"
        assert stream.next().type != "reset"


def test_a_malformed_last_event_id_is_400(env: Env) -> None:
    response = get(env, "/api/v2/events", {**env.auth("read"), "Last-Event-ID": "x" * 200})
    assert response.status_code == 400
    spaced = get(env, "/api/v2/events", env.auth("read"), last_event_id="1 event: forged")
    assert spaced.status_code == 400


def test_a_quiet_stream_sends_keepalives_and_a_client_that_leaves_is_let_go(env: Env) -> None:
    counter = env.server.call(lambda: env.ctx.extra["sse"])
    assert isinstance(counter, StreamCounter)
    before = env.server.call(lambda: counter.open)
    # the offline printer never reports: only keep-alive comments come
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "GET",
            f"{env.url}/api/v2/events",
            headers=env.auth("read"),
            params={"serial": env.offline},
        ) as response,
    ):
        lines = response.iter_lines()
        assert next(lines) == "retry: 3000"
        comments = [line for line in (next(lines) for _ in range(6)) if line]
        assert comments and set(comments) == {": keep-alive"}
        assert env.server.call(lambda: counter.open) == before + 1
    wait_for(lambda: env.server.call(lambda: counter.open) == before, 5, "the stream ended")


def test_many_streams_share_the_one_upstream_connection(env: Env) -> None:
    async def readers() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:

            async def one() -> int:
                async with client.stream(
                    "GET", f"{env.url}/api/v2/events", headers=env.auth("read")
                ) as response:
                    count = 0
                    async for line in response.aiter_lines():
                        if line.startswith("id:"):
                            count += 1
                            if count == 3:
                                return count
                return count

            return list(await asyncio.gather(*(one() for _ in range(20))))

    assert asyncio.run(readers()) == [3] * 20
    assert env.server.call(lambda: env.hub.stats().connections) == 1


def test_a_body_over_the_cap_is_413_before_any_route_reads_it(env: Env) -> None:
    url = f"{env.url}/api/v2/printers/{env.idle}/commands/gcode"
    auth = env.auth("control")
    huge = b'{"gcode": "' + b"G28\\n" * 400_000 + b'"}'  # 1.6 MB
    declared = httpx.post(url, content=huge, headers={**auth, "content-type": "application/json"})
    assert declared.status_code == 413
    assert declared.json() == {"detail": "the request body is over 1024 KiB"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"gcode": "'
        for _ in range(20):
            yield b"G28\\n" * 20_000
        yield b'"}'

    streamed = httpx.post(
        url, content=chunks(), headers={**auth, "content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert httpx.get(f"{env.url}/health").status_code == 200  # the server carries on
