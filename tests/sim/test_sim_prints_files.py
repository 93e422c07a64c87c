"""Simulated printers print the file they are sent, over LAN MQTT with the product's client.

Nothing is uploaded here: a 3MF written by the test goes straight onto a
printer's SD card (``printer.card.write``, on the printer host's thread),
then ``project_file`` starts it through :class:`bambulab.BambuMQTT`. Layers,
time and grams per filament must follow the file; a wrong or empty tray and
an unreadable file raise the printer's errors; a timelapse leaves a video.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bambulab import BambuMQTT, CommandError, ams_mapping, read_3mf
from bambulab.models.printer import model_named
from bambulab.sim.live import Simulator
from bambulab.sim.printer import SimPrinter
from bambulab.sim.threemf_writer import gcode_bytes, threemf_bytes
from tests.conftest import unlimited, wait_for

X1C, P1S, A1_MINI = "00M02A401924168", "01P03C318305155", "03002C340510980"
ERROR_AMS_MAPPING = 0x07008012  # "Failed to get AMS mapping table"
ERROR_RUNOUT = 0x07008011


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(unlimited(), time_scale=600, tick_interval=0.1) as running:
        yield running


@pytest.fixture
def lan(sim: Simulator) -> Iterator[Callable[[str], BambuMQTT]]:
    opened: list[BambuMQTT] = []

    def connect(serial: str) -> BambuMQTT:
        host, port = sim.lan_address(serial)
        code = sim.with_printer(serial, lambda p: p.access_code)
        client = BambuMQTT.lan(host, serial, code, port=port, ca_file=sim.ca_file).connect()
        opened.append(client)
        client.get_full_status(serial)
        return client

    yield connect
    for client in opened:
        client.disconnect()


def on(sim: Simulator, serial: str, function: Callable[[SimPrinter], Any]) -> Any:
    return sim.with_printer(serial, function)


def idle(sim: Simulator, serial: str) -> None:
    """Whatever the printer was doing (a seeded job, another test), it is idle now."""

    def reset(printer: SimPrinter) -> None:
        if printer.state.active:
            printer.state.stop()
        printer.state.print_error = 0
        printer.state.hms.clear()

    on(sim, serial, reset)


def loaded_pair(client: BambuMQTT, serial: str) -> list[tuple[str, str]]:
    """Two (type, colour) of trays the printer has loaded, for a file that fits it."""
    trays = [t for t in client.state(serial).trays if not t.empty and t.global_id < 254]
    assert len(trays) >= 2, trays
    return [(t.type, f"#{t.colour}") for t in trays[:2]]


def url_for(serial: str, name: str) -> str:
    model = model_named({"00M": "X1C", "01P": "P1S", "030": "A1 mini"}[serial[:3]])
    assert model is not None
    return model.lan_url(name)


@pytest.mark.parametrize(("serial", "video"), [(X1C, ".mp4"), (P1S, ".avi")])
def test_a_print_follows_the_file(
    sim: Simulator, lan: Callable[[str], BambuMQTT], serial: str, video: str
) -> None:
    idle(sim, serial)
    client = lan(serial)
    filaments = loaded_pair(client, serial)
    data = threemf_bytes(
        name="Bracket",
        plates=2,
        filaments=filaments,
        objects=("Left", "Right"),
        layers=37,
        seconds=1500,
        grams=(6.0, 1.5),
    )
    project = read_3mf(data)
    plate = project.plate(2)
    mapping = ams_mapping(plate.filaments, client.state(serial).trays, length=2)
    name = f"jobs/bracket-{serial}.3mf"
    on(sim, serial, lambda p: p.card.write(name, data))
    before = on(sim, serial, lambda p: dict(p.state.ams.consumed))
    videos = on(sim, serial, lambda p: [n for n in p.sdcard_files if n.startswith("timelapse/")])

    client.start_print(
        url_for(serial, name), 2, serial, use_ams=True, ams_mapping=mapping, timelapse=True
    )
    state = wait_for(lambda: client.state(serial).total_layers == 37 and client.state(serial))
    assert state.gcode_state in ("PREPARE", "RUNNING")
    assert state.remaining_minutes == 25  # 1500 s of the file's prediction
    assert state.raw["gcode_file"] == name
    wait_for(lambda: client.state(serial).gcode_state == "FINISH", timeout=60, what="FINISH")
    assert client.state(serial).layer == 37

    after = on(sim, serial, lambda p: dict(p.state.ams.consumed))
    used = {tray: after.get(tray, 0.0) - before.get(tray, 0.0) for tray in set(after)}
    want = {mapping[0]: 6.0, mapping[1]: 1.5} if mapping[0] != mapping[1] else {mapping[0]: 7.5}
    assert {t: round(g, 3) for t, g in used.items() if g} == pytest.approx(want)
    made = on(sim, serial, lambda p: [n for n in p.sdcard_files if n.startswith("timelapse/")])
    new = sorted(set(made) - set(videos))
    assert len(new) == 1 and new[0].endswith(video), new


def test_a_tray_of_another_type_is_refused_with_the_mapping_error(
    sim: Simulator, lan: Callable[[str], BambuMQTT]
) -> None:
    idle(sim, A1_MINI)
    client = lan(A1_MINI)
    trays = [t for t in client.state(A1_MINI).trays if not t.empty and t.global_id < 254]
    other = "PETG" if trays[0].type != "PETG" else "PLA"
    data = threemf_bytes(filaments=[(other, "#123456FF")])
    on(sim, A1_MINI, lambda p: p.card.write("wrong-type.3mf", data))
    with pytest.raises(CommandError, match="failed to get the AMS mapping table"):
        client.start_print(
            url_for(A1_MINI, "wrong-type.3mf"), 1, use_ams=True, ams_mapping=[trays[0].global_id]
        )
    state = wait_for(lambda: client.state(A1_MINI).print_error.value and client.state(A1_MINI))
    assert state.print_error.value == ERROR_AMS_MAPPING
    assert state.gcode_state not in ("PREPARE", "RUNNING")


def test_an_empty_tray_raises_the_runout_error_and_hms(
    sim: Simulator, lan: Callable[[str], BambuMQTT]
) -> None:
    idle(sim, A1_MINI)
    client = lan(A1_MINI)
    kind = loaded_pair(client, A1_MINI)[0][0]

    def empty_slot_1(printer: SimPrinter) -> None:
        spool = printer.state.ams.spool(1)
        assert spool is not None
        spool.remain = 0.0
        spool.tray_type = kind  # still described, but nothing left on it
        printer.state.ams.version += 1

    on(sim, A1_MINI, empty_slot_1)
    on(
        sim,
        A1_MINI,
        lambda p: p.card.write("empty.3mf", threemf_bytes(filaments=[(kind, "#FFFFFFFF")])),
    )
    try:
        with pytest.raises(CommandError, match="tray 1 is empty"):
            client.start_print(url_for(A1_MINI, "empty.3mf"), 1, use_ams=True, ams_mapping=[1])
        state = wait_for(lambda: client.state(A1_MINI).hms and client.state(A1_MINI))
        assert state.print_error.value == ERROR_RUNOUT
        assert (0x07002100, 0x00020001) in [(h.attr, h.code) for h in state.hms]
    finally:
        on(sim, A1_MINI, lambda p: setattr(p.state.ams.spool(1), "remain", 100.0))


@pytest.mark.parametrize(
    ("content", "plate", "message"),
    [
        (b"this is not a zip", 1, "not a 3MF"),
        (threemf_bytes(sliced=False), 1, "not sliced"),
        (threemf_bytes(plates=2), 3, "no plate 3"),
    ],
    ids=["garbage", "unsliced", "missing-plate"],
)
def test_a_file_that_cannot_be_printed_leaves_the_printer_idle(
    sim: Simulator, lan: Callable[[str], BambuMQTT], content: bytes, plate: int, message: str
) -> None:
    idle(sim, P1S)
    client = lan(P1S)
    on(sim, P1S, lambda p: p.card.write("bad.3mf", content))
    with pytest.raises(CommandError, match=message):
        client.start_print(url_for(P1S, "bad.3mf"), plate)
    state = wait_for(lambda: client.state(P1S).print_error.value and client.state(P1S))
    assert state.gcode_state not in ("PREPARE", "RUNNING")


def test_plain_gcode_runs_from_its_header(sim: Simulator, lan: Callable[[str], BambuMQTT]) -> None:
    idle(sim, X1C)
    client = lan(X1C)
    on(sim, X1C, lambda p: p.card.write("cube.gcode", gcode_bytes(layers=23, seconds=420)))
    client.print_gcode_file("/sdcard/cube.gcode", X1C)
    state = wait_for(lambda: client.state(X1C).total_layers == 23 and client.state(X1C))
    # 420 s from the header: 7 minutes at the start, less what a loaded machine let pass
    # before this report (a run saw 33 % done and 5 minutes left)
    assert state.remaining_minutes is not None and state.percent is not None
    assert abs(state.remaining_minutes - 7 * (100 - state.percent) / 100) <= 1, state
    wait_for(lambda: client.state(X1C).gcode_state == "FINISH", timeout=60, what="FINISH")


def test_sample_files_on_the_card_are_real_3mfs(sim: Simulator) -> None:
    def read_sample(printer: SimPrinter) -> Any:
        with printer.card.open("Benchy.3mf") as stream:
            return read_3mf(stream)

    benchy = on(sim, X1C, read_sample)
    plate = benchy.plate(1)
    assert (plate.layers, plate.seconds, plate.weight) == (240, 47 * 60, 14.7)
