"""Live printers through both MQTT faces, over TLS, against the simulated brokers and printers.

The module's simulator runs once with the embedded amqtt brokers and once
with mosquitto; tests that need a feature only the embedded brokers have
(token checks on the cloud listener, swapping a printer's certificate) ask
for amqtt alone.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bambulab import AsyncBambuMQTT, BambuMQTT
from bambulab.errors import (
    CertificateError,
    CommandError,
    CommandTimeoutError,
    ConfigurationError,
    MQTTAuthenticationError,
)
from bambulab.models.events import (
    Connected,
    ConnectionEvent,
    ConnectionLost,
    HMSRaised,
    PrinterOffline,
    PrinterOnline,
    PrintFailed,
    PrintFinished,
    PrintPaused,
    PrintResumed,
    PrintStarted,
    Reconnected,
    RetryScheduled,
)
from bambulab.models.state import PrinterState
from bambulab.mqtt import Backoff
from bambulab.sim.live import Simulator
from tests.binaries import needs
from tests.conftest import LoopThread, unlimited, wait_for

SEED = "01234567890ABCD"  # P1P, printing in the default fleet


class Latest:
    """The newest state of one printer at every read.

    A ``PrinterState`` is immutable: the one ``get_full_status`` returned never
    changes, so a test waiting for an effect asks the client again each time.
    """

    def __init__(self, client: Any, serial: str | None = None) -> None:
        self.client = client
        self.serial = serial

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client.state(self.serial), name)

    def get(self, key: str, default: Any = None) -> Any:
        return self.client.state(self.serial).get(key, default)


BROKERS = ["amqtt", pytest.param("mosquitto", marks=needs("mosquitto"))]
AMQTT_ONLY = pytest.mark.parametrize("live", ["amqtt"], indirect=True)


@pytest.fixture(scope="module", params=BROKERS)
def live(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    with Simulator(unlimited(), broker=request.param, time_scale=60, tick_interval=0.2) as sim:
        yield sim


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def serials(sim: Simulator) -> list[str]:
    return [e.serial for e in sim.endpoints()]


def online_serials(sim: Simulator) -> list[str]:
    return [s for s in serials(sim) if sim.printers[s].online]


def truth(sim: Simulator, serial: str) -> dict[str, Any]:
    return sim.with_printer(serial, lambda p: p.truth())  # type: ignore[no-any-return]


class Live:
    """A connected client of either face behind one calling convention."""

    def __init__(self, face: str, client: BambuMQTT | AsyncBambuMQTT) -> None:
        self.face = face
        self.client = client
        self.loop = LoopThread() if face == "async" else None
        self.events: list[Any] = []

    def connect(self) -> Live:
        if isinstance(self.client, BambuMQTT):
            self.client.on_event = self.events.append
            self.client.connect()
        else:
            assert self.loop is not None
            self.loop.run(self.client.connect())
            self.loop.run(self._drain_forever_start())
        return self

    async def _drain_forever_start(self) -> None:
        import asyncio

        async def drain() -> None:
            async for event in self.client.events():  # type: ignore[union-attr]
                self.events.append(event)

        self._drain = asyncio.ensure_future(drain())

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if self.loop is None or not callable(attr):
            return attr
        loop = self.loop

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            return loop.run(result) if hasattr(result, "__await__") else result

        return call

    def close(self) -> None:
        if isinstance(self.client, BambuMQTT):
            self.client.disconnect()
        else:
            assert self.loop is not None
            self.loop.run(self.client.aclose())
            self.loop.run(self._stop_drain())
            self.loop.close()

    async def _stop_drain(self) -> None:
        import asyncio
        import contextlib

        drain = getattr(self, "_drain", None)
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain


def ensure_printing(client: Live, sim: Simulator, serial: str) -> Latest:
    """The printer's newest state once it runs a job (an earlier test may have finished its job)."""
    client.get_full_status(serial)
    state = Latest(client, serial)
    if state.gcode_state not in ("PREPARE", "RUNNING"):
        client.start_print("file:///sdcard/" + sim.printers[serial].sdcard_files[0], 1, serial)
        wait_for(lambda: state.gcode_state in ("PREPARE", "RUNNING"), what="job started")
    return state


def cloud(sim: Simulator, face: str, printers: list[str] | None = None, **kw: Any) -> Live:
    cls = BambuMQTT if face == "sync" else AsyncBambuMQTT
    token = sim.issue_token(sim.demo_account.email)
    kw.setdefault("command_timeout", 5)
    client = cls(
        sim.user_id,
        printers or online_serials(sim),
        token=token,
        host=sim.mqtt_host,
        port=sim.mqtt_port,
        ca_file=sim.ca_file,
        **kw,
    )
    return Live(face, client)


def lan(sim: Simulator, face: str, serial: str, **kw: Any) -> Live:
    cls = BambuMQTT if face == "sync" else AsyncBambuMQTT
    host, port = sim.lan_address(serial)
    kw.setdefault("ca_file", sim.ca_file)
    client = cls.lan(
        host, serial, sim.printers[serial].access_code, port=port, command_timeout=5, **kw
    )
    return Live(face, client)


def executed(sim: Simulator) -> dict[str, tuple[int, list[tuple[str, str]]]]:
    """Per printer, how many requests it executed and the recent ones (command, sequence_id)."""
    return {s: sim.with_printer(s, lambda p: (p.executed, list(p.received))) for s in serials(sim)}


@pytest.fixture(autouse=True)
def nothing_executed_twice(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test on the module's simulator, no printer executed a request twice.

    Each test drives a printer through one client at a time, whose
    ``sequence_id`` values never repeat: a client that sent a command twice
    (a replay, a double publish) shows up here, whatever the test checks.
    Only this test's requests (the printer's ``executed`` counter tells how
    many) are compared. Two clients of one printer do not collide either:
    each connection starts its ``sequence_id`` count at a random point.
    """
    if "live" not in request.fixturenames:
        yield
        return
    sim: Simulator = request.getfixturevalue("live")
    before = executed(sim)
    yield
    for serial, (count, received) in executed(sim).items():
        new = count - before[serial][0]
        assert new <= len(received), "more requests than the printer remembers"
        mine = received[len(received) - new :] if new else []
        twice = sorted({key for key in mine if key[1] and mine.count(key) > 1})
        assert not twice, f"{serial} executed {twice} twice"


@pytest.fixture
def fleet(live: Simulator, face: str) -> Iterator[Live]:
    client = cloud(live, face).connect()
    yield client
    client.close()


def test_cloud_status_of_every_printer_matches_the_simulator(fleet: Live, live: Simulator) -> None:
    for serial in online_serials(live):
        state: PrinterState = fleet.get_full_status(serial, timeout=10)
        real = truth(live, serial)
        assert state.gcode_state == real["gcode_state"]
        assert state.nozzle_target == real["nozzle_target_temper"]
        units = real.get("ams", {}).get("ams", [])
        assert [u.id for u in state.ams_units] == sorted(int(u["id"]) for u in units)
        assert [len(u.trays) for u in state.ams_units] == [
            len(u["tray"]) for u in sorted(units, key=lambda u: int(u["id"]))
        ]
    assert fleet.state(SEED).model.product == "P1P" or wait_for(
        lambda: fleet.state(SEED).model.product == "P1P"
    )


def test_every_command_takes_effect(fleet: Live, live: Simulator) -> None:
    serial = next(s for s in online_serials(live) if s.startswith("01P"))
    fleet.get_full_status(serial)
    state = Latest(fleet, serial)
    fleet.set_bed_temp(65, serial)
    fleet.set_nozzle_temp(200, serial)
    fleet.set_fan_speed("part", 100, serial)
    fleet.set_light(False, "chamber_light", serial)
    wait_for(
        lambda: state.bed_target == 65 and state.nozzle_target == 200, what="temperature targets"
    )
    wait_for(lambda: state.part_fan == 100, what="fan at 100 %")
    wait_for(lambda: state.lights.get("chamber_light") == "off", what="light off")
    fleet.send_gcode("M140 S40", serial)
    wait_for(lambda: state.bed_target == 40, what="M140 from send_gcode")
    reply = fleet.get_access_code(serial)
    assert reply.body["access_code"] == live.printers[serial].access_code
    fleet.get_version(serial)
    wait_for(lambda: state.firmware, what="firmware from get_version")
    fleet.start_print(
        "file:///sdcard/" + live.printers[serial].sdcard_files[0], 1, serial, subtask_name="cube"
    )
    wait_for(lambda: state.gcode_state in ("PREPARE", "RUNNING"), what="job started")
    fleet.set_print_speed("sport", serial)
    wait_for(lambda: state.speed_name == "sport", what="sport speed")
    fleet.pause(serial)
    wait_for(lambda: state.gcode_state == "PAUSE", what="paused")
    fleet.resume(serial)
    wait_for(lambda: state.gcode_state in ("PREPARE", "RUNNING"), what="resumed")
    fleet.stop(serial)
    wait_for(lambda: state.gcode_state == "FAILED" and state.print_error, what="stopped")
    assert "cancelled" in state.print_error.text
    wait_for(lambda: any(isinstance(e, PrintFailed) for e in fleet.events), what="PrintFailed")
    kinds = {type(e) for e in fleet.events}
    assert {PrintStarted, PrintPaused, PrintResumed, PrintFailed} <= kinds


def test_the_remaining_commands_take_effect(fleet: Live, live: Simulator) -> None:
    serial = next(s for s in online_serials(live) if s.startswith("00M"))
    fleet.get_full_status(serial)
    state = Latest(fleet, serial)
    if state.gcode_state in ("PREPARE", "RUNNING", "PAUSE"):  # another test's job: AMS needs idle
        fleet.stop(serial)
        wait_for(lambda: state.gcode_state == "FAILED", what="idle before the AMS commands")
    fleet.ams_set_filament(
        0,
        1,
        serial,
        tray_type="PETG",
        tray_color="#00AA00",
        nozzle_temp_min=220,
        nozzle_temp_max=250,
    )
    wait_for(
        lambda: (
            state.ams_units[0].trays[1].type == "PETG"
            and state.ams_units[0].trays[1].colour == "00AA00FF"
        ),
        what="tray described",
    )
    fleet.ams_load(0, 1, serial)
    wait_for(lambda: state.tray_now == 1, what="tray 1 loaded")
    fleet.set_timelapse(True, serial)
    wait_for(lambda: state.get("ipcam", {}).get("timelapse") == "enable", what="timelapse on")
    fleet.set_camera_recording(False, serial)
    wait_for(lambda: state.get("ipcam", {}).get("ipcam_record") == "disable", what="recording off")
    fleet.set_nozzle(0.6, "hardened_steel", serial)
    wait_for(
        lambda: state.nozzle_diameter == 0.6 and state.nozzle_type == "hardened_steel",
        what="nozzle",
    )
    fleet.start_print("file:///sdcard/" + live.printers[serial].sdcard_files[0], 1, serial)
    wait_for(lambda: state.gcode_state in ("PREPARE", "RUNNING"), what="job started")
    fleet.skip_objects([3, 5], serial)
    wait_for(lambda: state.skipped_objects == [3, 5], what="objects skipped")
    # Each setting shows in the printer's next report, not only in its reply: both ways,
    # since an earlier test (or the other face) may have left it either way.
    # (The X1 Carbon has no prompt-sound speaker, Bambu Studio's BL-P001.json says, so
    # its home_flag never shows sound_enable: the tangle-detection option, bit 20, does.)
    tangle = 1 << 20  # home_flag's filament_tangle_detect bit
    for on in (True, False):
        assert fleet.set_print_option("filament_tangle_detect", on, serial).succeeded
        wait_for(lambda on=on: bool(state.get("home_flag", 0) & tangle) is on, what="tangle")
        assert fleet.set_detector("spaghetti_detector", on, serial).succeeded
        wait_for(
            lambda on=on: state.get("xcam", {}).get("spaghetti_detector") is on, what="detector"
        )
        assert fleet.ams_user_setting(serial, startup_read_option=on).succeeded
        wait_for(lambda on=on: state.get("ams", {}).get("power_on_flag") is on, what="RFID flag")
    rfid = fleet.ams_read_rfid(0, 1, serial)  # a read: the reply is the effect
    assert rfid.succeeded and rfid.body["command"] == "ams_get_rfid", rfid.body
    history = fleet.upgrade_history(serial)
    fleet.get_version(serial)
    firmware = wait_for(lambda: state.firmware, what="firmware from get_version")
    assert history.body["firmware_optional"] == [{"module": "ota", "version": firmware}]
    fleet.stop(serial)
    wait_for(lambda: state.gcode_state == "FAILED", what="stopped")


def test_a_partial_ams_delta_over_the_wire_keeps_the_other_trays(
    fleet: Live, live: Simulator
) -> None:
    """A P1/A1 delta naming one tray of one unit (or only ``tray_now``) changes just that."""
    serial = next(
        s
        for s in online_serials(live)
        if s.startswith(("01P", "01S")) and truth(live, s).get("ams", {}).get("ams")
    )
    fleet.get_full_status(serial)
    state = Latest(fleet, serial)
    wait_for(lambda: state.ams_units, what="AMS units")

    def trays() -> dict[int, tuple[str, str]]:
        return {t.global_id: (t.type, t.colour) for t in state.trays}

    before_trays, before_units = trays(), [(u.id, len(u.trays)) for u in state.ams_units]
    unit = state.ams_units[-1]
    target = unit.trays[-1]
    delta = {
        "print": {
            "command": "push_status",
            "msg": 1,
            "sequence_id": "9001",
            "ams": {
                "ams": [
                    {
                        "id": str(unit.id),
                        "tray": [{"id": str(target.id), "remain": 37, "tray_color": "123456FF"}],
                    }
                ]
            },
        }
    }
    live.publish_message(serial, delta)
    wait_for(lambda: state.ams_units[-1].trays[-1].colour == "123456FF", what="the delta merged")
    after = trays()
    assert after.pop(target.global_id) == (target.type, "123456FF")
    before_trays.pop(target.global_id)
    assert after == before_trays, "a one-tray delta changed other trays"
    assert [(u.id, len(u.trays)) for u in state.ams_units] == before_units
    assert state.ams_units[-1].trays[-1].remain == 37

    live.publish_message(
        serial,
        {
            "print": {
                "command": "push_status",
                "msg": 1,
                "sequence_id": "9002",
                "ams": {"tray_now": "254"},
            }
        },
    )
    wait_for(lambda: state.tray_now == 254, what="tray_now merged")
    assert [(u.id, len(u.trays)) for u in state.ams_units] == before_units
    assert state.active_tray is not None and state.active_tray.ams_id == 254
    fleet.get_full_status(serial)  # the printer's own truth again for later tests


def test_a_finished_print_is_an_event(live: Simulator, face: str) -> None:
    client = cloud(live, face, [SEED]).connect()
    try:
        state = ensure_printing(client, live, SEED)
        live.advance_clock(6 * 3600)  # the rest of the job, in simulated time
        wait_for(lambda: state.gcode_state == "FINISH", 15, "FINISH")
        wait_for(
            lambda: any(isinstance(e, PrintFinished) for e in client.events), what="PrintFinished"
        )
        assert state.percent == 100
    finally:
        client.close()


def test_reconnect_keeps_the_p1p_pushall_rule(broker: str) -> None:
    with Simulator(unlimited(), broker=broker, time_scale=60, tick_interval=0.2) as sim:
        p1s = next(s for s in online_serials(sim) if s.startswith("01P"))
        client = cloud(sim, "sync", [SEED, p1s]).connect()
        try:
            client.get_full_status(SEED)
            client.get_full_status(p1s)
            connection = client.client.connection
            sim.restart_broker(downtime=0.2)
            wait_for(lambda: connection.connects >= 2 and connection.connected, 15, "reconnect")
            wait_for(
                lambda: (
                    sum(
                        n == "pushing.pushall"
                        for n, _ in sim.with_printer(p1s, lambda p: list(p.received))
                    )
                    >= 2
                ),
                what="the P1S refreshed after the reconnect",
            )

            def pushalls(serial: str) -> int:
                received = sim.with_printer(serial, lambda p: list(p.received))
                return sum(name == "pushing.pushall" for name, _ in received)

            assert pushalls(SEED) == 1, "a P1P gets pushall at most every 5 minutes"
            assert client.get_full_status(SEED).gcode_state
        finally:
            client.close()


def test_refusal_is_a_command_error_with_context(fleet: Live, live: Simulator) -> None:
    serial = next(s for s in online_serials(live) if s.startswith("030"))
    fleet.get_full_status(serial)
    with pytest.raises(CommandError) as info:
        fleet.resume(serial)
    assert info.value.serial == serial and info.value.command == "resume"
    assert info.value.sequence_id and info.value.reason


def test_a_silent_printer_times_out(live: Simulator, face: str) -> None:
    serial = next(s for s in online_serials(live) if s.startswith("00M"))
    client = cloud(live, face, [serial], stall_timeout=30).connect()
    try:
        client.get_full_status(serial)
        live.stall(serial, 3)
        client.client.command_timeout = 1
        started = time.monotonic()
        with pytest.raises(CommandTimeoutError, match="did not answer"):
            client.pause(serial)
        assert time.monotonic() - started < 2.5
    finally:
        client.close()


def test_runout_raises_hms_and_pauses(live: Simulator, face: str) -> None:
    serial = SEED
    client = cloud(live, face, [serial]).connect()
    try:
        state = ensure_printing(client, live, serial)
        wait_for(lambda: state.gcode_state == "RUNNING", what="seed printer running")
        live.with_printer(serial, lambda p: p.runout(0, 0))
        wait_for(lambda: state.gcode_state == "PAUSE" and state.hms, what="runout pause")
        entry = state.hms[0]
        assert entry.code_string == "0700_2000_0002_0001" and "run out" in entry.text
        wait_for(lambda: any(isinstance(e, HMSRaised) for e in client.events), what="HMSRaised")
        client.ams_control("resume", serial)
        wait_for(
            lambda: not state.hms and state.gcode_state == "RUNNING", what="resumed after runout"
        )
    finally:
        client.close()


def test_lan_over_tls_with_the_ca_file(live: Simulator, face: str) -> None:
    serial = next(s for s in online_serials(live) if s.startswith("00M"))
    client = lan(live, face, serial).connect()
    try:
        state = client.get_full_status()
        assert (
            state.model.product == "X1 Carbon"
            and state.gcode_state == truth(live, serial)["gcode_state"]
        )
        client.set_light(True, "work_light")
        wait_for(lambda: client.state().lights.get("work_light") == "on", what="work light on")
    finally:
        client.close()


def test_lan_pins_the_certificate_on_first_use(
    live: Simulator, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BAMBU_CA_FILE", raising=False)
    serial = next(s for s in online_serials(live) if s.startswith("01P"))
    pins = tmp_path / "pins.json"
    first = lan(live, "sync", serial, ca_file=None, pin_file=pins).connect()
    first.close()
    assert serial in pins.read_text()
    second = lan(live, "sync", serial, ca_file=None, pin_file=pins).connect()
    assert second.get_full_status().gcode_state
    second.close()


def test_a_certificate_for_another_serial_is_refused(tmp_path: Any) -> None:
    with Simulator(unlimited(), time_scale=60, tick_interval=0.2) as sim:
        serial = next(s for s in online_serials(sim) if s.startswith("01P"))
        sim.use_wrong_certificate(serial)
        with pytest.raises(CertificateError, match=r"refused|not printer"):
            lan(sim, "sync", serial).connect()
        with pytest.raises(CertificateError):
            lan(sim, "sync", serial, ca_file=None, pin_file=tmp_path / "p.json").connect()


def test_wrong_access_code_fails_fast_without_retrying(live: Simulator, face: str) -> None:
    serial = next(s for s in online_serials(live) if s.startswith("00M"))
    host, port = live.lan_address(serial)
    cls = BambuMQTT if face == "sync" else AsyncBambuMQTT
    client = Live(face, cls.lan(host, serial, "00000000", port=port, ca_file=live.ca_file))
    started = time.monotonic()
    with pytest.raises(MQTTAuthenticationError, match="refused the credentials"):
        client.connect()
    assert time.monotonic() - started < 2
    assert client.client.connection.connects == 0
    client.close()


@AMQTT_ONLY  # mosquitto's cloud listener checks user names, not tokens
def test_wrong_token_fails_fast(live: Simulator) -> None:
    client = BambuMQTT(
        live.user_id,
        serials(live)[:1],
        token="a.b.c" + "x" * 50,
        host=live.mqtt_host,
        port=live.mqtt_port,
        ca_file=live.ca_file,
    )
    with pytest.raises(MQTTAuthenticationError):
        client.connect()


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(ConfigurationError, match="8 characters"):
        BambuMQTT.lan("127.0.0.1", "01P00A000000001", "123").connect()
    with pytest.raises(ConfigurationError, match="user id"):
        BambuMQTT(None, "01P00A000000001", token="opaque").connect()


def test_hostile_payloads_never_escape(fleet: Live, live: Simulator) -> None:
    serial = next(s for s in online_serials(live) if s.startswith("00M"))
    fleet.get_full_status(serial)
    state = Latest(fleet, serial)
    printer = fleet.client.connection.printers[serial]
    problems, reports = printer.stream.problems, printer.stream.reports
    # Five are not a report at all and are counted as problems; a report of wrong
    # types is a report (every field read defensively), not a problem.
    for kind in ("not_json", "wrong_types", "deep", "noise", "empty", "not_object"):
        live.publish_malformed(serial, kind, target="cloud")
    wait_for(lambda: printer.stream.problems == problems + 5, what="five malformed payloads")
    wait_for(lambda: printer.stream.reports > reports + 3, what="reports after the garbage")
    assert printer.stream.problems == problems + 5
    assert fleet.client.connected
    # The next real report puts the truth back; every typed field reads as its type.
    wait_for(
        lambda: state.gcode_state == truth(live, serial)["gcode_state"], what="true state again"
    )
    assert isinstance(state.nozzle_temp, float) and isinstance(state.percent, int)
    assert state.ams_units and state.lights


def test_presence_event_marks_a_printer_offline(live: Simulator, face: str) -> None:
    serial = next(s for s in online_serials(live) if s.startswith("030"))
    client = cloud(live, face, [serial]).connect()
    try:
        client.get_full_status(serial)
        live.take_offline(serial)
        wait_for(
            lambda: any(isinstance(e, PrinterOffline) for e in client.events), what="PrinterOffline"
        )
    finally:
        live.bring_online(serial)
        client.close()


def test_reconnect_after_broker_restarts_keeps_state_true_and_sends_nothing_twice(
    face: str,
) -> None:
    with Simulator(unlimited(), time_scale=60, tick_interval=0.2) as sim:
        serial = next(s for s in online_serials(sim) if s.startswith("01P"))
        client = cloud(sim, face, [serial], backoff=None).connect()
        try:
            client.get_full_status(serial)
            state = Latest(client, serial)
            connection = client.client.connection
            for round_ in range(3):
                sim.restart_broker(downtime=0.3)
                wait_for(
                    lambda n=round_: connection.connects >= n + 2 and connection.connected,
                    15,
                    "reconnect",
                )
                client.set_bed_temp(50 + round_, serial)
                wait_for(
                    lambda r=round_: state.bed_target == 50 + r, what="command after reconnect"
                )
            wait_for(
                lambda: state.gcode_state == truth(sim, serial)["gcode_state"],
                what="state equal to truth",
            )
            assert state.bed_target == truth(sim, serial)["bed_target_temper"]
            # One client numbers every request once: the printer executed none twice,
            # and each of the three bed commands exactly once.
            executed, duplicated, received = sim.with_printer(
                serial, lambda p: (p.executed, list(p.duplicated), list(p.received))
            )
            assert duplicated == [], "no command arrived twice"
            assert executed == len(received) >= 3
            beds = [key for key in received if key[0] == "print.gcode_line"]
            assert len(beds) == len({seq for _, seq in beds}) == 3, received
        finally:
            client.close()


def test_connection_status_and_events_through_an_outage(face: str) -> None:
    """Both faces say what the connection does: a snapshot to read, events as it happens."""
    with Simulator(unlimited(), time_scale=60, tick_interval=0.2) as sim:
        serial = next(s for s in online_serials(sim) if s.startswith("00M"))
        backoff = Backoff(initial=0.2, maximum=0.8)
        client = cloud(sim, face, [serial], backoff=backoff).connect()
        try:
            up = client.connection_status
            assert (up.state, up.connects, up.attempt, up.next_retry) == ("connected", 1, 0, None)
            assert up.broker.startswith("the Bambu cloud broker")
            with pytest.raises(dataclasses.FrozenInstanceError):
                up.state = "failed"  # type: ignore[misc]
            client.get_full_status(serial)
            wait_for(lambda: (client.report_age(serial) or 99.0) < 1.0, what="a fresh report")
            assert abs(client.last_report(serial) - time.time()) < 1.5

            killed = time.time()
            broker = threading.Thread(
                target=sim.restart_broker, kwargs={"downtime": 1.5, "wait": False}
            )
            broker.start()
            down = wait_for(
                lambda: (now := client.connection_status).state == "reconnecting" and now,
                5,
                "reconnecting",
            )
            assert down.attempt >= 1 and down.last_error and down.since >= killed - 0.1
            assert up.state == "connected"  # a snapshot never changes under its reader
            broker.join()
            wait_for(lambda: client.connection_status.connected, 10, "reconnected")
            again = client.connection_status
            assert again.connects == 2 and again.attempt == 0 and again.since > down.since
            wait_for(
                lambda: any(isinstance(e, Reconnected) for e in client.events), what="Reconnected"
            )
            news = [e for e in client.events if isinstance(e, ConnectionEvent)]
            kinds = [type(e) for e in news]
            assert kinds[0] is Connected and kinds[1] is ConnectionLost and kinds[-1] is Reconnected
            assert set(kinds[2:-1]) <= {RetryScheduled}
            lost = news[1].status
            assert lost.state == "reconnecting" and lost.attempt == 1
            assert lost.next_retry is not None and 0 < lost.next_retry - lost.since < 1.0
            # Every failed retry names the next attempt and when it starts.
            attempts = [e.status.attempt for e in news[2:-1]]
            assert attempts == list(range(2, 2 + len(attempts)))
            assert all(e.status.next_retry and e.status.last_error for e in news[2:-1])
            # The outage marked the printer offline; its first report after it, online.
            after = next(i for i, e in enumerate(client.events) if isinstance(e, Reconnected))
            wait_for(
                lambda: any(isinstance(e, PrinterOnline) for e in client.events[after:]),
                what="the printer online again",
            )
        finally:
            client.close()
        assert client.connection_status.state == "closed"


def test_a_silent_printer_is_asked_to_report_and_the_link_is_kept(face: str, broker: str) -> None:
    """A printer silent past its period gets a ``pushall``; nobody is reconnected for it."""
    with Simulator(unlimited(), broker=broker, time_scale=60, tick_interval=0.2) as sim:
        serial = next(s for s in online_serials(sim) if s.startswith("00M"))
        client = cloud(sim, face, [serial], stall_timeout=1.0).connect()
        try:
            client.get_full_status(serial)
            connection = client.client.connection

            def pushalls() -> int:
                received = sim.with_printer(serial, lambda p: list(p.received))
                return sum(1 for name, _ in received if name == "pushing.pushall")

            before = pushalls()
            stalled = time.monotonic()
            sim.stall(serial, 2.5)
            wait_for(lambda: pushalls() > before, 10, "a pushall for the silent printer")
            asked = time.monotonic() - stalled
            wait_for(
                lambda: (
                    time.monotonic() - connection.printers[serial].last_report < 0.5
                    and time.monotonic() - stalled > 2.5
                ),
                10,
                "reports again",
            )
            assert connection.connects == 1, "a silent printer must not reconnect everyone"
            assert asked >= 0.9, f"asked after {asked:.2f} s, before its 1 s period"
        finally:
            client.close()


def test_many_printers_on_one_async_connection(live: Simulator) -> None:
    client = cloud(live, "async").connect()
    try:
        for serial in online_serials(live):
            assert client.get_full_status(serial).gcode_state
        assert client.client.connection.connects == 1
    finally:
        client.close()
