"""A report of wrong types through the live client: what ``bambu watch`` shows stays (issue 8, point 8).

The simulated printer is stalled (it publishes nothing of its own), the
simulator publishes its ``wrong_types`` payload on the printer's report topic
twice, and the client's state must still read every value it read before;
the problem is logged once per field, not once per message. Then the printer
speaks again and its good values come through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bambulab import BambuMQTT
from bambulab.models.state import PrinterState
from bambulab.sim.live import Simulator
from tests.conftest import unlimited, wait_for


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(unlimited(), time_scale=60, tick_interval=0.2) as simulator:
        yield simulator


def watched(state: PrinterState) -> dict[str, Any]:
    return {
        "state": state.gcode_state,
        "nozzle": state.nozzle_temp,
        "bed": state.bed_temp,
        "remaining": state.remaining_minutes,
        "layer": state.layer,
        "wifi": state.wifi_dbm,
        "lights": dict(state.lights),
        "ams": [(u.id, [(t.type, t.remain) for t in u.trays]) for u in state.ams_units],
        "hms": [h.code_string for h in state.hms],
    }


def test_wrong_types_leave_the_last_good_values_and_are_logged_once(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    serial = next(e.serial for e in sim.endpoints() if e.serial.startswith("01P"))
    host, port = sim.lan_address(serial)
    client = BambuMQTT.lan(
        host, serial, sim.printers[serial].access_code, port=port, ca_file=sim.ca_file
    )
    client.connect()
    try:
        client.get_full_status(serial)
        stream = client.connection.printers[serial].stream
        sim.stall(serial, 30)
        time.sleep(0.5)  # whatever the printer had in flight arrives first
        before = watched(client.state(serial))
        assert before["state"] and before["nozzle"] is not None and before["ams"]
        reports = stream.reports
        with caplog.at_level(logging.WARNING, logger="bambulab.mqtt"):
            sim.publish_malformed(serial, "wrong_types", target="lan")
            sim.publish_malformed(serial, "wrong_types", target="lan")
            wait_for(lambda: stream.reports >= reports + 2, what="both bad reports")
        assert watched(client.state(serial)) == before
        warned = [r.getMessage() for r in caplog.records if "wrong type" in r.getMessage()]
        fields = [m.split("report's ", 1)[1].split(" had", 1)[0] for m in warned]
        assert sorted(fields) == sorted(set(fields)), "once per field, not per message"
        assert {"nozzle_temper", "gcode_state", "ams", "lights_report"} <= set(fields)
        # The printer speaks again: its good values replace the kept ones.
        sim.stall(serial, 0)
        client.get_full_status(serial)
        truth = sim.with_printer(serial, lambda p: p.truth())
        wait_for(
            lambda: client.state(serial).gcode_state == truth["gcode_state"], what="true state"
        )
        assert isinstance(client.state(serial).nozzle_temp, float)
    finally:
        client.disconnect()
