"""Delta reports: what changed between two full ``push_status`` bodies.

P1/A1 and newer printers send only the fields that changed (PROTOCOL.md
§2.3); clients merge them field by field, nested objects recursively and
lists of identified items by ``id``. This module produces exactly what such
a merge needs to reproduce the new state:

* a scalar or a plain list (``hms``, ``lights_report``, ``s_obj``...) that
  changed is sent whole;
* a nested object is sent with only its changed keys;
* a list whose items all carry an ``id`` (extruders, ``vir_slot``) is sent
  as the changed items only, each with its ``id`` and its changed keys,
  except AMS trays, which go whole: firmware writes a tray as one unit;
* the list of AMS units (``ams.ams``) goes whole when anything in it changed:
  it is the complete set of units (PROTOCOL.md §2.6.1; Bambu Studio removes a
  unit that a report's list leaves out).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Items of these lists are sent whole when anything in them changed.
WHOLE_ITEMS = frozenset({"tray"})
# These lists are sent whole (every item) when anything in them changed.
WHOLE_LISTS = frozenset({"ams"})


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The partial object that turns ``old`` into ``new`` under merge-by-id."""
    out: dict[str, Any] = {}
    for key, value in new.items():
        if key not in old:
            out[key] = value
            continue
        before = old[key]
        if before == value:
            continue
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            changed = diff(before, value)
            if changed:
                out[key] = changed
        elif _by_id(value) and _by_id(before):
            items = _diff_items(key, before, value)
            if items is None:
                out[key] = value
            elif items:
                out[key] = items
        else:
            out[key] = value
    return out


def _by_id(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, Mapping) and "id" in item for item in value)
    )


def _diff_items(key: str, old: list[Any], new: list[Any]) -> list[Any] | None:
    """Changed items by id; None when an item disappeared (merging cannot remove)."""
    previous = {str(item["id"]): item for item in old}
    if key in WHOLE_LISTS or not previous.keys() <= {str(item["id"]) for item in new}:
        return None
    items: list[Any] = []
    for item in new:
        before = previous.get(str(item["id"]))
        if before is None or key in WHOLE_ITEMS:
            if before != item:
                items.append(item)
            continue
        changed = diff(before, item)
        if changed:
            items.append({"id": item["id"], **changed})
    return items
