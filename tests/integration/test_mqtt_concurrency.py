"""Concurrency of the live connection against the real brokers (amqtt and mosquitto), both faces.

One thread owns each socket; callbacks never run on it; a command cut off by
a drop fails at once and never reaches the printer later; a link with nothing
but pings on it stays up; what callers read never changes under them.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from typing import Any

import pytest

from bambulab import AsyncBambuMQTT
from bambulab.errors import CommandInterruptedError
from bambulab.models.events import StateChanged
from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from tests.conftest import unlimited
from tests.integration.test_mqtt_live import broker, cloud, online_serials, wait_for

__all__ = ["broker"]  # the fixture: amqtt, and mosquitto where installed


def socket_writers(monkeypatch: pytest.MonkeyPatch, port: int) -> list[str]:
    """Names of the threads that write to TLS sockets connected to ``port`` (from now on)."""
    writers: list[str] = []
    real_send, real_sendall = ssl.SSLSocket.send, ssl.SSLSocket.sendall

    def note(sock: ssl.SSLSocket) -> None:
        try:
            peer = sock.getpeername()[1]
        except OSError:
            return
        if peer == port:  # the client's end, not the broker's
            writers.append(threading.current_thread().name)

    def send(self: ssl.SSLSocket, data: Any, flags: int = 0) -> int:
        note(self)
        return real_send(self, data, flags)

    def sendall(self: ssl.SSLSocket, data: Any, flags: int = 0) -> None:
        note(self)
        real_sendall(self, data, flags)

    monkeypatch.setattr(ssl.SSLSocket, "send", send)
    monkeypatch.setattr(ssl.SSLSocket, "sendall", sendall)
    return writers


def test_only_the_network_thread_writes_the_socket(
    broker: str, face: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Simulator(unlimited(), broker=broker, time_scale=60, tick_interval=0.2) as sim:
        writers = socket_writers(monkeypatch, sim.mqtt_port)
        printers = online_serials(sim)
        client = cloud(sim, face, printers[:1]).connect()
        try:

            def commands(serial: str) -> None:
                for i in range(5):
                    client.set_light(i % 2 == 0, serial=serial)

            for serial in printers[1:3]:
                client.add_printer(serial)
            for serial in printers[:3]:
                client.get_full_status(serial)
            callers = [threading.Thread(target=commands, args=(s,)) for s in printers[:3] * 2]
            for thread in callers:
                thread.start()
            for thread in callers:
                thread.join(30)
            client.request_full_status(printers[0])
        finally:
            client.close()
        assert len(writers) >= 30
        others = sorted({name for name in writers if not name.startswith("bambu-mqtt-")})
        assert not others, f"the socket was written by {others}"


def test_a_command_sent_from_an_event_handler_is_answered(broker: str, face: str) -> None:
    with Simulator(unlimited(), broker=broker, time_scale=60, tick_interval=0.2) as sim:
        serial = online_serials(sim)[0]
        client = cloud(sim, face, [serial])
        outcome: list[Any] = []
        if face == "sync":

            def on_event(event: Any) -> None:
                if isinstance(event, StateChanged) and not outcome:
                    started = time.monotonic()
                    reply = client.client.set_light(True, serial=serial)
                    outcome.append((reply.succeeded, time.monotonic() - started))

            client.client.on_event = on_event
            client.client.connect()
            try:
                wait_for(lambda: outcome, 10, "the handler's command")
            finally:
                client.close()
        else:

            async def main() -> None:
                async with client.client as mqtt:
                    assert isinstance(mqtt, AsyncBambuMQTT)
                    async for event in mqtt:
                        if isinstance(event, StateChanged):
                            started = time.monotonic()
                            reply = await mqtt.set_light(True, serial=serial)
                            outcome.append((reply.succeeded, time.monotonic() - started))
                            return

            asyncio.run(asyncio.wait_for(main(), 15))
        succeeded, took = outcome[0]
        assert succeeded and took < 2.0, outcome


def test_a_command_cut_off_by_a_drop_is_never_delivered_later(broker: str, face: str) -> None:
    with Simulator(unlimited(), broker=broker, time_scale=60, tick_interval=0.2) as sim:
        serial = next(s for s in online_serials(sim) if s.startswith("00M"))
        client = cloud(sim, face, [serial], command_timeout=20).connect()
        try:
            client.get_full_status(serial)

            def received() -> list[tuple[str, str]]:
                return sim.with_printer(serial, lambda p: list(p.received))  # type: ignore[no-any-return]

            before = len(received())
            sim.stall(serial, 30)  # it executes, but its reply never comes back
            outcome: list[BaseException] = []

            def pause() -> None:
                try:
                    client.pause(serial)
                except BaseException as exc:
                    outcome.append(exc)

            waiting = threading.Thread(target=pause)
            waiting.start()

            def pauses() -> list[tuple[str, str]]:
                return [k for k in received()[before:] if k[0] == "print.pause"]

            wait_for(pauses, 5, "the pause at the printer")
            key = pauses()[0]
            cut = time.monotonic()
            sim.drop_connections()
            waiting.join(5)
            assert outcome and isinstance(outcome[0], CommandInterruptedError), outcome
            assert time.monotonic() - cut < 3.0
            wait_for(lambda: client.connected, 10, "the reconnect")
            time.sleep(1.0)  # a replay would have arrived by now
            assert received().count(key) == 1
            assert sim.with_printer(serial, lambda p: p.duplicates) == 0
        finally:
            client.close()


def test_a_link_with_only_pings_on_it_stays_up(broker: str, face: str) -> None:
    with Simulator(unlimited(), broker=broker, time_scale=60, tick_interval=0.2) as sim:
        silent = next(s for s in sim.printers if not sim.printers[s].online)
        client = cloud(sim, face, [silent], keepalive=1, stall_timeout=1.0).connect()
        try:
            time.sleep(4.0)
            assert client.client.connection.connects == 1
            assert client.connection_status.state == "connected"
        finally:
            client.close()


def test_readers_never_see_the_state_change_under_them(broker: str, face: str) -> None:
    config = unlimited().with_demo_fleet(parse_fleet(["x1c"] * 2 + ["p1s"] * 2))
    with Simulator(config, lan=False, broker=broker, time_scale=60, tick_interval=0.05) as sim:
        serials = [e.serial for e in sim.endpoints()]
        client = cloud(sim, face, serials).connect()
        for serial in serials:
            client.get_full_status(serial)
        problems: list[str] = []
        reads = 0
        stop = time.monotonic() + 3.0
        try:
            while time.monotonic() < stop:
                for serial in serials:
                    state = client.state(serial)
                    try:
                        first = state.to_dict()
                        state.snapshot()
                        trays = [t.global_id for unit in state.ams_units for t in unit.trays]
                        again = state.to_dict()
                    except Exception as exc:  # the defect this test is about
                        problems.append(repr(exc))
                        continue
                    if first != again or trays != [
                        t.global_id for unit in state.ams_units for t in unit.trays
                    ]:
                        problems.append(f"{serial}: the state changed while it was read")
                    reads += 1
        finally:
            client.close()
        assert not problems, problems[:3]
        assert reads > 100


def test_an_events_state_is_the_state_of_that_moment(broker: str, face: str) -> None:
    with Simulator(unlimited(), broker=broker, time_scale=60, tick_interval=0.05) as sim:
        serial = next(s for s in online_serials(sim) if s.startswith("00M"))
        client = cloud(sim, face, [serial]).connect()
        try:
            client.get_full_status(serial)
            wait_for(
                lambda: sum(isinstance(e, StateChanged) for e in client.events) >= 5, 10, "events"
            )
            seen = [(e, e.state.to_dict()) for e in client.events if isinstance(e, StateChanged)]
            time.sleep(1.0)  # many more reports merged since
            for event, then in seen:
                assert event.state.to_dict() == then
            assert client.state(serial) is not seen[0][0].state
        finally:
            client.close()


def test_an_event_reader_can_be_cancelled_while_events_pour_in_and_ends_with_the_connection(
    broker: str,
) -> None:
    config = unlimited().with_demo_fleet(parse_fleet(["x1c"] * 4))
    with Simulator(config, lan=False, broker=broker, time_scale=60, tick_interval=0.02) as sim:
        serials = [e.serial for e in sim.endpoints()]
        client = cloud(sim, "async", serials).client

        async def main() -> tuple[int, float]:
            await client.connect()
            cancelled = 0
            for _ in range(30):
                seen = asyncio.Event()

                async def read(seen: asyncio.Event) -> None:
                    async for _event in client.events():
                        seen.set()

                task = asyncio.ensure_future(read(seen))
                await asyncio.wait_for(seen.wait(), 5)
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=1.0)
                assert done, "a cancelled event reader kept running"
                cancelled += 1
            reader = asyncio.ensure_future(_count(client))
            await asyncio.sleep(0.2)
            closing = time.monotonic()
            await client.aclose()
            await asyncio.wait_for(reader, 2.0)
            return cancelled, time.monotonic() - closing

        cancelled, took = asyncio.run(asyncio.wait_for(main(), 60))
        assert cancelled == 30
        assert took < 1.0, f"the event reader ended {took:.2f} s after the connection"


async def _count(client: AsyncBambuMQTT) -> int:
    return sum([1 async for _ in client.events()])
