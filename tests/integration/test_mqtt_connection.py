"""The connection under both faces, against a broker the test scripts (see ``script_broker``).

What real brokers will not do on cue: answer a command late, answer with
another client's sequence number, die before a PUBACK, stop answering pings
while TCP stays up, accept a connection and drop it at once, refuse the
credentials. Each test checks what a caller sees, and what reached the wire.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bambulab import AsyncBambuClient, AsyncBambuMQTT, BambuClient, BambuMQTT
from bambulab.errors import (
    CommandError,
    CommandInterruptedError,
    CommandTimeoutError,
    MQTTAuthenticationError,
    NotConnectedError,
)
from bambulab.models.events import ConnectionLost, PrinterOffline
from bambulab.mqtt import Backoff
from tests.integration.script_broker import SERIAL, Link, Received, ScriptBroker
from tests.integration.test_mqtt_concurrency import socket_writers
from tests.integration.test_mqtt_live import Live, wait_for


@pytest.fixture
def broker() -> Iterator[ScriptBroker]:
    server = ScriptBroker()
    yield server
    server.close()


def client_of(broker: ScriptBroker, face: str, **options: Any) -> Live:
    options.setdefault("backoff", Backoff(initial=0.05, maximum=0.2, jitter=0.0))
    options.setdefault("command_timeout", 2.0)
    return Live(face, bare(broker, BambuMQTT if face == "sync" else AsyncBambuMQTT, **options))


def bare(broker: ScriptBroker, cls: type[Any], **options: Any) -> Any:
    """A client of ``broker`` for its one printer, not connected."""
    return cls(
        "1000",
        SERIAL,
        token="not-checked-here",
        host="127.0.0.1",
        port=broker.port,
        ca_file=broker.certs.ca_file,
        **options,
    )


def answering(broker: ScriptBroker) -> None:
    """The broker answers every request at once, as a printer would."""

    def on_publish(link: Link, got: Received) -> str:
        if got.command[1] not in ("pushall", "get_version"):
            broker.reply(link, got)
        return "ack"

    broker.on_publish = on_publish


def test_replies_settle_only_the_command_they_answer(broker: ScriptBroker, face: str) -> None:
    held: list[tuple[Link, Received]] = []

    def on_publish(link: Link, got: Received) -> str:
        if got.command[1] == "ledctrl":
            held.append((link, got))  # answered by the test, when it chooses
        return "ack"

    broker.on_publish = on_publish
    client = client_of(broker, face, command_timeout=1.0).connect()
    try:
        # 1. No reply at all: a timeout naming the command, and nothing left waiting.
        started = time.monotonic()
        with pytest.raises(CommandTimeoutError, match="ledctrl within 1 s"):
            client.set_light(True)
        assert 0.9 < time.monotonic() - started < 2.0
        late_link, late = held.pop()
        # 2. A second command; first the late reply of the first one, then another
        #    client's reply carrying this command's number but another command.
        result: list[Any] = []
        thread = threading.Thread(target=lambda: result.append(_outcome(client.set_light, False)))
        thread.start()
        broker.wait_for(lambda: bool(held))
        link, current = held.pop()
        broker.reply(late_link, late)
        family, _, seq = current.command
        link.send(
            f"device/{SERIAL}/report",
            {family: {"command": "gcode_line", "sequence_id": seq, "result": "failed"}},
        )
        time.sleep(0.3)
        assert not result, f"settled by a reply that was not its own: {result}"
        broker.reply(link, current, reason="")
        thread.join(3)
        assert result and result[0].get("sequence_id") == seq, result
        # 3. A refusal becomes a CommandError with the printer's reason and code.
        thread = threading.Thread(target=lambda: result.append(_outcome(client.set_light, True)))
        thread.start()
        broker.wait_for(lambda: bool(held))
        link, refused = held.pop()
        broker.reply(link, refused, result="failed", reason="busy", err_code=0x0500400E)
        thread.join(3)
        error = result[-1]
        assert isinstance(error, CommandError) and not isinstance(error, CommandTimeoutError)
        assert (error.reason, error.err_code, error.command) == ("busy", 0x0500400E, "ledctrl")
        assert client.client.connection._pending == {}
    finally:
        client.close()


def _outcome(call: Any, *args: Any) -> Any:
    try:
        reply = call(*args)
    except Exception as exc:
        return exc
    return {"sequence_id": reply.sequence_id}


def test_a_drop_fails_waiting_commands_at_once_and_never_sends_them_again(
    broker: ScriptBroker, face: str
) -> None:
    # The first pause dies with its connection, after the broker passed it on.
    broker.on_publish = lambda link, got: (
        "kill" if got.command[1] == "pause" and link.number == 1 else "ack"
    )
    client = client_of(broker, face, command_timeout=8.0).connect()
    try:
        started = time.monotonic()
        with pytest.raises(CommandInterruptedError, match="may or may not have been delivered"):
            client.pause()
        assert time.monotonic() - started < 1.5, "waited for the timeout instead of failing at once"
        wait_for(lambda: client.connected and len(broker.links) >= 2, 5, "the reconnect")
        answering(broker)
        client.set_light(True)  # the new session works
        time.sleep(0.5)  # time for a replay to arrive, if there were one
        pauses = broker.requests("pause")
        assert [(p.connection, p.dup) for p in pauses] == [(1, False)], pauses
        assert client.client.connection._pending == {}
    finally:
        client.close()


def test_commands_while_down_are_refused_not_queued(broker: ScriptBroker, face: str) -> None:
    answering(broker)
    client = client_of(broker, face, backoff=Backoff(initial=1.0, jitter=0.0)).connect()
    try:
        broker.link.kill()
        wait_for(lambda: not client.connected, 5, "the drop")
        with pytest.raises(NotConnectedError, match="was not sent"):
            client.stop()
        # Following a printer during the outage is fine: it is subscribed on reconnecting.
        client.add_printer("01P00A000000002")
        wait_for(lambda: client.connected, 5, "the reconnect")
        broker.wait_for(lambda: (2, "device/01P00A000000002/report") in broker.subscribed)
        time.sleep(0.3)
        assert broker.requests("stop") == []
    finally:
        client.close()


def test_every_drop_is_told_and_the_printers_go_offline(broker: ScriptBroker, face: str) -> None:
    answering(broker)
    client = client_of(broker, face, backoff=Backoff(initial=0.05, jitter=0.0, stable_after=0.2))
    client.connect()
    try:
        for round_ in range(1, 4):
            # The printer reports, so it is online; then the connection drops.
            broker.link.send(f"device/{SERIAL}/report", {"print": {"gcode_state": "IDLE"}})
            wait_for(lambda: client.state().gcode_state == "IDLE", 3, "a report")
            time.sleep(0.25)  # a healthy session
            broker.link.kill()
            wait_for(
                lambda r=round_: sum(isinstance(e, PrinterOffline) for e in client.events) == r,
                3,
                f"PrinterOffline #{round_}",
            )
            wait_for(lambda r=round_: len(broker.connects) == r + 1, 3, f"reconnect #{round_}")
        lost = [e for e in client.events if isinstance(e, ConnectionLost)]
        assert len(lost) == 3
        # Healthy sessions: every reconnect came after the first backoff step, not a growing one.
        gaps = [b - a for a, b in zip(broker.connects, broker.connects[1:], strict=False)]
        assert all(gap < 0.2 + 0.25 + 0.5 for gap in gaps), gaps
    finally:
        client.close()


def test_a_flapping_broker_gets_a_growing_backoff(broker: ScriptBroker) -> None:
    """CONNACK then an immediate drop is not a healthy session: the delay keeps growing."""
    client = client_of(broker, "sync", backoff=Backoff(initial=0.1, jitter=0.0, stable_after=2.0))
    client.connect()
    try:
        broker.drop_after_connack = True
        broker.link.kill()
        wait_for(lambda: len(broker.connects) >= 5, 10, "five connections")
        gaps = [b - a for a, b in zip(broker.connects[1:], broker.connects[2:], strict=False)]
        assert gaps[0] < gaps[1] < gaps[2], gaps
        assert gaps[2] > 0.35, gaps  # 0.1, 0.2, 0.4 s
    finally:
        client.close()


def test_a_quiet_healthy_link_is_kept(broker: ScriptBroker, face: str) -> None:
    """Only PINGRESPs arrive (the printer is silent): the printer is nudged, nothing reconnects."""
    client = client_of(broker, face, keepalive=1, stall_timeout=0.6).connect()
    try:
        time.sleep(3.5)
        assert len(broker.connects) == 1
        nudges = [r for r in broker.requests("pushall") if r.connection == 1]
        assert 3 <= len(nudges) <= 6, nudges  # the first refresh, then one per 0.6 s silence
    finally:
        client.close()


def test_a_link_that_stops_answering_pings_is_replaced(broker: ScriptBroker, face: str) -> None:
    client = client_of(broker, face, keepalive=1).connect()
    try:
        frozen = time.monotonic()
        broker.link.frozen = True  # TCP stays up; nothing comes back, not even PINGRESP
        wait_for(lambda: len(broker.connects) >= 2 and client.connected, 6, "a new connection")
        assert time.monotonic() - frozen < 4.0
    finally:
        client.close()


def test_a_refused_login_is_raised_fresh_each_time(broker: ScriptBroker, face: str) -> None:
    broker.refuse_code = 5
    client = client_of(broker, face)
    errors = []
    for _ in range(2):
        with pytest.raises(MQTTAuthenticationError) as caught:
            client.connect()
        errors.append(caught.value)
    with pytest.raises(MQTTAuthenticationError) as caught:
        client.pause()
    errors.append(caught.value)
    client.close()
    assert len({id(e) for e in errors}) == 3, "one stored exception raised again"
    assert all(e.__cause__ is not None for e in errors[2:])
    assert len(broker.connects) == 2  # each connect() tried once; no retry storm


def test_a_callback_may_send_a_command_and_wait(broker: ScriptBroker) -> None:
    answering(broker)
    client = client_of(broker, "sync", command_timeout=3.0)
    outcome: list[Any] = []
    blocked = threading.Event()

    def on_event(event: Any) -> None:
        if outcome or type(event).__name__ != "StateChanged":
            return
        outcome.append(_outcome(client.set_light, True))
        blocked.wait(2)  # a slow callback: the connection must go on meanwhile

    client.client.on_event = on_event
    client.client.connect()
    try:
        started = time.monotonic()
        broker.link.send(f"device/{SERIAL}/report", {"print": {"gcode_state": "IDLE"}})
        wait_for(lambda: outcome, 5, "the callback's command")
        assert isinstance(outcome[0], dict), outcome
        assert time.monotonic() - started < 1.5
        # While the callback sleeps, reports are still read and merged.
        broker.link.send(f"device/{SERIAL}/report", {"print": {"mc_percent": 42}})
        wait_for(lambda: client.client.state().percent == 42, 1.5, "the next report")
        assert not blocked.is_set()
    finally:
        blocked.set()
        client.close()


def test_every_socket_write_is_made_by_the_network_thread(
    broker: ScriptBroker, face: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers = socket_writers(monkeypatch, broker.port)
    answering(broker)
    client = client_of(broker, face).connect()
    try:
        callers = [
            threading.Thread(target=lambda: [client.set_light(i % 2 == 0) for i in range(5)])
            for _ in range(4)
        ]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join(10)
        client.publish({"print": {"command": "noop", "sequence_id": "0"}})
        client.add_printer("01P00A000000003")
        broker.wait_for(lambda: len(broker.requests("ledctrl")) == 20)
        broker.wait_for(lambda: len(broker.requests("noop")) == 1)
    finally:
        client.close()
    assert len(writers) >= 22
    others = {name for name in writers if not name.startswith("bambu-mqtt-")}
    assert not others, f"socket written by {others}"


def test_both_faces_declare_the_same_parameters() -> None:
    for sync, async_ in ((BambuMQTT, AsyncBambuMQTT), (BambuClient, AsyncBambuClient)):
        params = inspect.signature(sync).parameters
        assert params.keys() == inspect.signature(async_).parameters.keys()
        kinds = {p.kind for p in params.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds, f"{sync.__name__} hides parameters"
        assert inspect.Parameter.VAR_POSITIONAL not in kinds
    assert {"token", "host", "port", "lan", "command_timeout", "pin_file"} <= set(
        inspect.signature(BambuMQTT).parameters
    )
    public = {n for n in dir(BambuMQTT) if not n.startswith("_")}
    public_async = {n for n in dir(AsyncBambuMQTT) if not n.startswith("_")}
    # Callbacks and a blocking loop are the sync face's way; the async face iterates events.
    missing = public - public_async - {"loop_forever", "on_event", "on_message"}
    assert not missing, f"only on the sync face: {missing}"
    extra = public_async - public - {"events", "aclose"}
    assert not extra, f"only on the async face: {extra}"


def test_the_async_face_uses_no_threads_and_connects_once(broker: ScriptBroker) -> None:
    answering(broker)

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()

        def refuse(*args: Any) -> Any:
            raise AssertionError("the async face used the default thread pool")

        loop.run_in_executor = refuse  # type: ignore[method-assign]
        client: AsyncBambuMQTT = bare(broker, AsyncBambuMQTT)
        await client.connect()
        first = client.connection
        await client.connect()
        assert client.connection is first
        replies = await asyncio.gather(*(client.set_light(i % 2 == 0) for i in range(30)))
        threads = sum(t.name.startswith("bambu-mqtt-") for t in threading.enumerate())
        await client.publish(b'{"print": {"command": "noop"}}')
        await client.aclose()
        return len(replies), threads

    answered, threads = asyncio.run(main())
    assert answered == 30
    assert threads == 1
    assert len(broker.connects) == 1


def test_the_printer_table_can_be_read_while_printers_are_added(broker: ScriptBroker) -> None:
    client = client_of(broker, "sync").connect()
    connection = client.client.connection
    problems: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                for printer in connection.printers.values():
                    printer.report_age()
            except RuntimeError as exc:  # "dictionary changed size during iteration"
                problems.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for number in range(500):
            client.add_printer(f"01P00B{number:09d}")
    finally:
        done.set()
        reader.join(5)
    try:
        assert not problems, problems[:1]
        broker.wait_for(lambda: len(broker.subscribed) >= 501, 20)
    finally:
        client.close()


def test_a_publish_paho_refuses_fails_its_command_and_leaves_nothing_waiting(
    broker: ScriptBroker, face: str
) -> None:
    from paho.mqtt.client import MQTTMessageInfo
    from paho.mqtt.enums import MQTTErrorCode

    answering(broker)
    client = client_of(broker, face).connect()
    connection = client.client.connection
    try:

        def refuse(*args: Any, **kwargs: Any) -> MQTTMessageInfo:
            info = MQTTMessageInfo(0)
            info.rc = MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
            return info

        connection._client.publish = refuse  # type: ignore[method-assign]
        started = time.monotonic()
        with pytest.raises(NotConnectedError, match="could not send ledctrl"):
            client.set_light(True)
        assert time.monotonic() - started < 1.0
        assert connection._pending == {}
        del connection._client.publish  # paho's own again
        assert client.set_light(False).succeeded
    finally:
        client.close()
