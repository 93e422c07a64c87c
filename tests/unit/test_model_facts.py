"""The model table against PROTOCOL.md, written out here by hand, not copied from the table.

One table (:data:`bambulab.models.printer.MODELS`) holds every protocol fact
about a model; the client, the CLI and the simulator read it. These tests
state the facts of PROTOCOL.md §2.3, §2.4, §2.6 and §2.6.1 literally and
check the table, the client's model detection and the simulated printers'
behaviour against them.
"""

from __future__ import annotations

import pytest

from bambulab.models.printer import MODELS, detect_model, model_of
from bambulab.protocol.mqtt import stale_after
from bambulab.sim.catalog import MODELS as SIM_MODELS
from bambulab.sim.printer.profiles import profile_for
from tests.sim.printer_helpers import Rig

# PROTOCOL.md §2.6: dev_model_name, product, serial prefix, camera.
TABLE_2_6 = [
    ("BL-P001", "X1 Carbon", "00M", "rtsps"),
    ("BL-P002", "X1", "00W", "rtsps"),
    ("C13", "X1E", "03W", "rtsps"),
    ("C11", "P1P", "01S", "jpeg"),
    ("C12", "P1S", "01P", "jpeg"),
    ("N1", "A1 mini", "030", "jpeg"),
    ("N2S", "A1", "039", "jpeg"),
    ("N9", "A2L", "26A", "jpeg"),
    ("N7", "P2S", "22E", "rtsps"),
    ("N6", "X2D", "20P", "rtsps"),
    ("O1D", "H2D", "094", "rtsps"),
    ("O1E", "H2D Pro", "", "rtsps"),
    ("O1S", "H2S", "093", "rtsps"),
    ("O1C", "H2C", "31B", "rtsps"),
    ("O1C2", "H2C", "31B", "rtsps"),
]
# §2.3: "X1 series send the whole object every time. P1/A1 series send only
# the fields that changed". §2.6 leaves P2S, X2D and H2 blank: the project
# treats them as delta (a merging client is right either way, and a 10 s
# staleness limit would call a quiet delta printer stale).
FULL_REPORTS = {"BL-P001", "BL-P002", "C13"}
# §2.4 (M141: "X1E, H2 families") and Bambu Studio's support_chamber_temp_edit (X2D).
CHAMBER_HEATERS = {"C13", "O1D", "O1E", "O1S", "O1C", "O1C2", "N6"}
# §2.6.1: "Dual nozzle (H2D, H2D Pro, H2C, X2D)".
DUAL_NOZZLE = {"O1D", "O1E", "O1C", "O1C2", "N6"}
# §2.4 project_file url: file:///sdcard/<path> on X1, P1, A1; ftp:///<path> on H2.
FILE_URL = {"BL-P001", "BL-P002", "C13", "C11", "C12", "N1", "N2S"}
FTP_URL = {"O1D", "O1E", "O1S", "O1C", "O1C2"}


def test_the_table_has_every_model_of_protocol_2_6_once() -> None:
    assert sorted(m.code for m in MODELS) == sorted(row[0] for row in TABLE_2_6)


@pytest.mark.parametrize(("code", "product", "prefix", "camera"), TABLE_2_6)
def test_each_row_states_protocol_2_6(code: str, product: str, prefix: str, camera: str) -> None:
    model = model_of(code)
    assert model is not None
    assert (model.product, model.serial_prefix, model.camera) == (product, prefix, camera)
    assert model.report_style == ("full" if code in FULL_REPORTS else "delta")
    assert model.chamber_heater == (code in CHAMBER_HEATERS)
    assert model.dual_nozzle == (code in DUAL_NOZZLE)
    assert "chamber_light" in model.lights  # every model has the chamber light (§2.4)
    # The H2D's LAN stream is off by default (§2.6).
    assert model.camera_off_by_default == (code in FTP_URL)


@pytest.mark.parametrize(("code", "product", "prefix", "camera"), TABLE_2_6)
def test_the_client_detects_each_model(code: str, product: str, prefix: str, camera: str) -> None:
    assert detect_model(dev_model_name=code).product == product
    if prefix:
        found = detect_model(serial=f"{prefix}09A350100001")
        assert found.product == product
        assert found.report_style == ("full" if code in FULL_REPORTS else "delta")


def test_the_staleness_limit_follows_the_report_style() -> None:
    # X1s report every second or two; delta printers may stay quiet for a minute.
    assert stale_after(detect_model(dev_model_name="BL-P001").report_style) == 10.0
    for code in ("C12", "N7", "N6", "O1D"):
        assert stale_after(detect_model(dev_model_name=code).report_style) == 60.0


@pytest.mark.parametrize("code", sorted(FILE_URL | FTP_URL))
def test_lan_print_urls_take_the_documented_form(code: str) -> None:
    model = model_of(code)
    assert model is not None
    for path in ("Benchy.3mf", "/Benchy.3mf", "/sdcard/Benchy.3mf"):
        url = model.lan_url(path)
        assert url == ("ftp:///Benchy.3mf" if code in FTP_URL else "file:///sdcard/Benchy.3mf")


@pytest.mark.parametrize("key", sorted(SIM_MODELS))
def test_the_simulator_plays_each_model_as_documented(key: str) -> None:
    """A simulated printer's own wire output and answers, not its configuration, are checked."""
    code = SIM_MODELS[key].model_name
    product = next(row[1] for row in TABLE_2_6 if row[0] == code)
    rig = Rig(code)
    rig.ok("print", "gcode_line", param="M140 S60\n")  # the bed heats: reports change
    reports = rig.run(3)
    assert len(reports) == 3 and all("bed_temper" in r["print"] for r in reports), code
    full = code in FULL_REPORTS
    assert all(r["print"]["msg"] == (0 if full else 1) for r in reports), code
    assert all(("nozzle_temper" in r["print"]) == full for r in reports), code
    # Chamber heating: refused without a heater, accepted with one.
    reply = rig.send("print", "set_ctt", ctt_val=40)
    assert (reply.get("result", "").lower() == "success") == (code in CHAMBER_HEATERS), reply
    # LAN print URLs: the documented scheme and the other one both work (LAN libraries
    # send ftp:/// to every model, users report it working on P1S).
    for url in ("file:///sdcard/Benchy.3mf", "ftp:///Benchy.3mf"):
        rig.ok("print", "project_file", param="Metadata/plate_1.gcode", url=url)
        assert rig.view["gcode_file"] == "Benchy.3mf", (code, url)
        rig.ok("print", "stop", param="")
    assert profile_for(code).product == product
