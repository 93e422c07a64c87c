"""The capability table (models.printer.MODELS) and the refusal rule (protocol.mqtt.refusal)."""

from __future__ import annotations

import pytest

from bambulab.models.printer import MODELS, UNKNOWN_MODEL, PrinterModel, detect_model
from bambulab.protocol import mqtt as proto

HEATED = {"X1E", "X2D", "H2D", "H2D Pro", "H2S", "H2C"}  # Studio: support_chamber_temp_edit
OPEN_FRAME = {"A1", "A1 mini", "A2L"}  # Studio: no aux fan, no chamber fan


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.code)
def test_every_model_answers_from_the_table(model: PrinterModel) -> None:
    heat = proto.refusal(model, proto.set_chamber_temp(40))
    ctt = proto.refusal(model, proto.set_ctt(40))
    assert (heat is None) == (model.product in HEATED)
    assert (ctt is None) == (model.product in HEATED)
    if heat is not None:
        assert heat.command == "set_chamber_temp" and model.product in heat.reason
    for fan in ("aux", "chamber"):
        refused = proto.refusal(model, proto.set_fan_speed(fan, 50))
        assert (refused is None) == (model.product not in OPEN_FRAME), fan
    assert proto.refusal(model, proto.set_fan_speed("part", 50)) is None
    assert proto.refusal(model, proto.ledctrl("chamber_light", "on")) is None
    second = proto.refusal(model, proto.ledctrl("chamber_light2", "on"))
    assert (second is None) == (model.family in ("H2", "X2"))
    for harmless in (proto.set_nozzle_temp(200), proto.set_bed_temp(60), proto.pause()):
        assert proto.refusal(model, harmless) is None


@pytest.mark.parametrize(
    ("lines", "refused"),
    [
        ("M141 S40", "set_chamber_temp"),
        ("G28\nm191 s50 ; wait for the chamber", "set_chamber_temp"),
        ("M106 P2 S128", "set_fan_speed"),
        ("M107 P3", "set_fan_speed"),
        ("M106 S255\nM104 S200\n; M141 S40 in a comment", None),
        ("M1410 S1", None),
    ],
)
def test_gcode_lines_are_read_for_what_they_need(lines: str, refused: str | None) -> None:
    a1 = detect_model(dev_model_name="N2S")
    result = proto.refusal(a1, proto.gcode_line(lines))
    assert (result.command if result else None) == refused


def test_an_unknown_model_is_allowed_everything() -> None:
    assert not UNKNOWN_MODEL.known
    for command in (proto.set_chamber_temp(40), proto.ledctrl("heatbed_light", "on")):
        assert proto.refusal(UNKNOWN_MODEL, command) is None
