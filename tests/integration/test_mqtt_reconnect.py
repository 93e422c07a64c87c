"""Every connection loss is met with a quick reconnect, however many came before.

The backoff must start again from its first step once a session was up for
``Backoff.stable_after`` seconds; it used to keep growing across sessions, so
the Nth reconnect of a long-lived client waited 0.5 * 2**N s (30 s from the
seventh on). Found by ``bench/soak.py``.
"""

from __future__ import annotations

import time

from bambulab import BambuMQTT
from bambulab.models.events import Event, PrinterOffline
from bambulab.mqtt import Backoff
from bambulab.sim.live import Simulator
from tests.conftest import cloud_mqtt, unlimited


def test_the_backoff_starts_over_after_each_session() -> None:
    with Simulator(unlimited(), lan=False, time_scale=60, tick_interval=0.2) as sim:
        serials = [e.serial for e in sim.endpoints() if sim.printers[e.serial].online]
        client: BambuMQTT = cloud_mqtt(sim, serials, backoff=Backoff(stable_after=0.5))
        events: list[Event] = []
        client.on_event = events.append
        client.connect()
        connection = client.connection
        try:
            for round_ in range(6):
                before = connection.connects
                cut = time.monotonic()
                sim.drop_connections()
                while connection.connects == before or not client.connected:
                    waited = time.monotonic() - cut
                    assert waited < 3, f"reconnect {round_ + 1} took more than {waited:.1f} s"
                    time.sleep(0.02)
                up = time.monotonic()
                printers = [connection.printers[s] for s in serials]
                while not all(p.last_report > cut for p in printers):  # back online
                    assert time.monotonic() - cut < 5, "printers did not report again"
                    time.sleep(0.02)
                time.sleep(max(0.0, up + 0.6 - time.monotonic()))  # a healthy session
            # Each loss also told the application its printers were out of reach.
            offline = [e for e in events if isinstance(e, PrinterOffline)]
            assert len(offline) >= 6 * len(serials)
        finally:
            client.disconnect()
