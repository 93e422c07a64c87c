"""The protocol's words, written once: lights, fans, heaters, speed levels, tray ids.

PROTOCOL.md §2.3 (reports) and §2.4 (commands). The command builders
(:mod:`bambulab.protocol.mqtt`), the printer state (:mod:`bambulab.models`),
the model table (:mod:`bambulab.models.printer`), the simulator and the CLI
all take these names from here. Standard library only and no imports at all,
so the CLI can offer them as choices at start-up without loading pydantic.
"""

from __future__ import annotations

# ``system.ledctrl`` ``led_node`` values and ``lights_report[].node``.
CHAMBER_LIGHT = "chamber_light"
WORK_LIGHT = "work_light"
CHAMBER_LIGHT2 = "chamber_light2"
HEATBED_LIGHT = "heatbed_light"
LIGHT_NODES = (CHAMBER_LIGHT, WORK_LIGHT, CHAMBER_LIGHT2, HEATBED_LIGHT)
# ``led_mode`` values.
LIGHT_MODES = ("on", "off", "flashing")

# Fans by name, and their ``M106 P<n>`` index (part, aux, chamber).
FANS = {"part": 1, "aux": 2, "chamber": 3}

# Heaters with a target temperature, and the highest target accepted (°C).
HEATER_LIMITS = {"nozzle": 320, "bed": 120, "chamber": 65}
HEATERS = tuple(HEATER_LIMITS)

# ``spd_lvl`` / ``print_speed`` levels.
SPEED_NAMES = {1: "silent", 2: "standard", 3: "sport", 4: "ludicrous"}
SPEED_LEVELS = {name: level for level, name in SPEED_NAMES.items()}

# ``tray_now`` and ``ams_mapping`` ids besides ``ams_id * 4 + slot``.
TRAY_EXTERNAL = 254  # the external spool (``vt_tray``)
TRAY_NONE = 255  # nothing loaded
AMS_HT_IDS = range(128, 136)  # AMS HT units: one slot each
