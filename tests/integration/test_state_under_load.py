"""A reader hammering a live client's state while reports pour in over a real broker.

The client's network thread merges each report into a new immutable state
and swaps it in; the test's thread reads ``state()``, ``snapshot()``,
``to_dict()`` and the AMS views the whole time. Every probe report sets
three fields (top level, nested, inside an id-keyed list) to the same
number: a reader that ever sees them differ has seen a half-merged state.
Both faces, the amqtt broker (mosquitto too when installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest

from bambulab import AsyncBambuMQTT
from bambulab.models.events import StateChanged
from bambulab.models.state import PrinterState
from bambulab.sim.live import Simulator
from tests.binaries import needs
from tests.conftest import LoopThread, cloud_mqtt, unlimited

PROBES = 500


def probe(i: int) -> dict[str, Any]:
    return {
        "print": {
            "command": "push_status",
            "sequence_id": f"probe-{i}",
            "msg": 1,
            "probe_top": i,
            "probe_nest": {"inner": {"value": i}, f"k{i}": i},
            "probe_units": [{"id": "0", "value": i}, {"id": "1", "value": i}],
        }
    }


def probe_values(state: PrinterState) -> set[Any]:
    raw = state.raw
    if "probe_top" not in raw:
        return set()
    units = {u["id"]: u["value"] for u in raw["probe_units"]}
    return {raw["probe_top"], raw["probe_nest"]["inner"]["value"], units["0"], units["1"]}


@pytest.mark.parametrize("broker", ["amqtt", pytest.param("mosquitto", marks=needs("mosquitto"))])
@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_reader_never_sees_a_half_merged_state_over_the_wire(broker: str, face: str) -> None:
    with Simulator(unlimited(), broker=broker, lan=False, time_scale=60, tick_interval=0.2) as sim:
        serial = next(e.serial for e in sim.endpoints() if e.serial.startswith("01P"))
        events: list[Any] = []
        loop = LoopThread() if face == "async" else None
        if loop is None:
            client = cloud_mqtt(sim, [serial], command_timeout=5)
            client.on_event = events.append
            client.connect()
        else:
            client = AsyncBambuMQTT(
                sim.user_id,
                [serial],
                token=sim.issue_token(sim.demo_account.email),
                host=sim.mqtt_host,
                port=sim.mqtt_port,
                ca_file=sim.ca_file,
                command_timeout=5,
            )
            loop.run(client.connect())

            async def drain() -> None:
                async for event in client.events():
                    events.append(event)

            async def start() -> asyncio.Task[None]:
                return asyncio.ensure_future(drain())

            drainer = loop.run(start())
        try:
            client.get_full_status(serial) if loop is None else loop.run(
                client.get_full_status(serial)
            )
            done = threading.Event()

            def publish() -> None:
                try:
                    for i in range(1, PROBES + 1):
                        sim.publish_message(serial, probe(i))
                finally:
                    done.set()

            writer = threading.Thread(target=publish)
            writer.start()
            reads, seen = 0, set()
            deadline = time.monotonic() + 60
            while not done.is_set() or probe_values(client.state(serial)) != {PROBES}:
                assert time.monotonic() < deadline, f"the last probe never arrived ({seen=})"
                state = client.state(serial)
                got = probe_values(state.snapshot())
                assert len(got) <= 1, f"half-merged state: {got}"
                summary = state.to_dict()
                assert summary["serial"] == serial and state.ams_units == state.ams_units
                assert [t.global_id for t in state.trays] == [
                    t["id"] for u in summary["ams"] for t in u["trays"]
                ] + [t["id"] for t in summary["external_spools"]]
                seen |= got
                reads += 1
            writer.join()
            assert len(seen) >= 3, "the reader should have seen the probes move"

            def probes() -> list[StateChanged]:
                # The async face hands events to its loop: the last may still be on the way.
                return [
                    e
                    for e in list(events)
                    if isinstance(e, StateChanged) and "probe_top" in e.changed
                ]

            while len(probes()) < PROBES and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(probes()) == PROBES
            for event in probes():
                i = event.state.raw["probe_top"]
                assert probe_values(event.state) == {i}
                assert len(event.state.raw["probe_nest"]) == i + 1  # inner + k1..ki
                assert set(event.changed) == {"probe_top", "probe_nest", "probe_units"}
        finally:
            if loop is None:
                client.disconnect()
            else:

                async def stop() -> None:
                    drainer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await drainer
                    await client.aclose()

                loop.run(stop())
                loop.close()
