"""Slicer presets carry the keys real private filament presets have (issue 8, point 10).

A popular Home Assistant integration reads ``filament_vendor``,
``filament_type`` and ``nozzle_temperature`` of every private filament preset
while it sets up its cloud connection; a list without them stops it.
"""

from __future__ import annotations

import httpx

from tests.sim.simtools import assert_old

SETTINGS = "/v1/iot-service/api/slicer/setting"
PRIVATE_FILAMENT_KEYS = {
    "setting_id",
    "version",
    "name",
    "update_time",
    "base_id",
    "filament_id",
    "filament_type",
    "filament_is_support",
    "nozzle_temperature",
    "nozzle_hrc",
    "filament_vendor",
}


def test_private_filament_presets_carry_the_real_keys(demo: httpx.Client) -> None:
    body = assert_old(demo.get(SETTINGS, params={"version": "02.01.01.52"}))
    private = body["filament"]["private"]
    assert private
    for item in private:
        assert set(item) >= PRIVATE_FILAMENT_KEYS
        assert isinstance(item["filament_vendor"], str) and item["filament_vendor"]
        assert item["filament_type"] in ("PLA", "PETG", "ABS")
        assert item["filament_is_support"] in ("0", "1")
        low, high = item["nozzle_temperature"]
        assert isinstance(low, int) and isinstance(high, int) and 150 <= low < high <= 350
        assert isinstance(item["nozzle_hrc"], str)
    # A PETG preset inherits its type from the public PETG preset it is based on.
    petg = next(i for i in private if "PETG" in i["name"])
    assert petg["filament_type"] == "PETG" and petg["nozzle_temperature"] == [230, 260]
    # Public presets keep their short form.
    for item in body["filament"]["public"]:
        assert "filament_id" in item and "filament_vendor" not in item
