"""AMS mapping tables: the file's filaments against the trays a printer reports."""

from __future__ import annotations

from typing import Any

import pytest

from bambulab import AmsMappingError, PrinterState, ams_mapping
from bambulab.models.threemf import Filament
from bambulab.protocol.ams_mapping import colour_distance, same_type


def _state(
    *units: list[tuple[str, str] | None],
    external: tuple[str, str] | None = None,
    ht: tuple[str, str] | None = None,
) -> PrinterState:
    """A printer whose report lists these AMS units (None: an empty slot)."""
    ams: list[dict[str, Any]] = []
    for unit_id, trays in enumerate(units):
        ams.append(
            {
                "id": str(unit_id),
                "tray": [
                    {"id": str(slot), "tray_type": t[0], "tray_color": t[1]}
                    if t is not None
                    else {"id": str(slot)}
                    for slot, t in enumerate(trays)
                ],
            }
        )
    if ht is not None:
        ams.append({"id": "128", "tray": [{"id": "0", "tray_type": ht[0], "tray_color": ht[1]}]})
    raw: dict[str, Any] = {"ams": {"ams": ams}}
    if external is not None:
        raw["vt_tray"] = {"id": "254", "tray_type": external[0], "tray_color": external[1]}
    return PrinterState("01P00A000000001", raw)


def _f(slot: int, kind: str, colour: str, grams: float = 5.0) -> Filament:
    return Filament(slot=slot, type=kind, colour=colour, grams=grams)


RED, GREEN, BLUE, WHITE, BLACK = "#FF0000FF", "#00FF00FF", "#0000FFFF", "#FFFFFFFF", "#000000FF"
FOUR = [("PLA", "FF0000FF"), ("PLA", "0000FFFF"), ("PETG", "FFFFFFFF"), ("PLA", "101010FF")]


@pytest.mark.parametrize(
    ("filaments", "length", "state", "want"),
    [
        # Same type first: the PETG filament goes to the PETG tray even though it is red.
        ([_f(1, "PETG", RED)], None, _state(FOUR), [2]),
        # Then the nearest colour among trays of that type.
        ([_f(1, "PLA", BLUE)], None, _state(FOUR), [1]),
        ([_f(1, "PLA", "#200000FF")], None, _state(FOUR), [3]),  # near-black → the dark grey
        # Two filaments, each to its own nearest tray; unused project slots are -1.
        ([_f(1, "PLA", RED), _f(3, "PLA", BLACK)], 4, _state(FOUR), [0, -1, 3, -1]),
        # A tray is used once while another of that type is left...
        ([_f(1, "PLA", RED), _f(2, "PLA", "#EE0000FF")], None, _state(FOUR), [0, 3]),
        # ...and shared when it is the only one of the type.
        ([_f(1, "PETG", RED), _f(2, "PETG", BLUE)], None, _state(FOUR), [2, 2]),
        # External spool (254) and AMS HT (128) are trays like the others.
        ([_f(1, "TPU", WHITE)], None, _state(FOUR, external=("TPU", "FFFFFFFF")), [254]),
        ([_f(1, "ABS", WHITE)], None, _state(FOUR, ht=("ABS", "EEEEEEFF")), [128]),
        # A second AMS: global ids are ams*4+slot.
        (
            [_f(1, "ASA", GREEN)],
            None,
            _state(FOUR, [None, ("ASA", "00FF00FF"), None, None]),
            [5],
        ),
        # Case and spacing of type names do not matter.
        ([_f(1, "pla", RED)], None, _state(FOUR), [0]),
    ],
)
def test_automatic_mapping(
    filaments: list[Filament], length: int | None, state: PrinterState, want: list[int]
) -> None:
    assert ams_mapping(filaments, state.trays, length=length) == want


def test_empty_slots_are_never_chosen() -> None:
    state = _state([None, ("PLA", "FF0000FF"), None, None])
    assert ams_mapping([_f(1, "PLA", RED)], state.trays) == [1]


def test_no_tray_of_the_type_names_the_filament_and_what_is_loaded() -> None:
    with pytest.raises(AmsMappingError) as caught:
        ams_mapping([_f(1, "PLA", RED), _f(2, "PA-CF", BLACK)], _state(FOUR).trays)
    message = str(caught.value)
    assert "filament 2 (PA-CF #000000)" in message
    assert "0 PLA #FF0000" in message and "2 PETG #FFFFFF" in message
    assert caught.value.filament == 2


def test_nothing_loaded() -> None:
    with pytest.raises(AmsMappingError, match="loaded: nothing"):
        ams_mapping([_f(1, "PLA", RED)], _state([None, None, None, None]).trays)


@pytest.mark.parametrize(
    ("explicit", "message"),
    [
        ([0], None),
        ([3, -1], None),
        ([], "has 0 entries; the file has 1"),
        ([9], "names tray 9, which the printer lacks"),
        ([-1], "used but mapped to no tray"),
        ([2], "is PLA but tray 2 holds PETG"),
    ],
)
def test_explicit_mapping_is_checked(explicit: list[int], message: str | None) -> None:
    trays = _state(FOUR).trays
    if message is None:
        assert ams_mapping([_f(1, "PLA", RED)], trays, explicit=explicit) == explicit
    else:
        with pytest.raises(AmsMappingError, match=message):
            ams_mapping([_f(1, "PLA", RED)], trays, explicit=explicit)


def test_explicit_mapping_to_an_empty_tray() -> None:
    trays = _state([None, ("PLA", "FF0000FF"), None, None]).trays
    with pytest.raises(AmsMappingError, match="tray 0, which is empty"):
        ams_mapping([_f(1, "PLA", RED)], trays, explicit=[0])


def test_colour_distance_is_perceptual() -> None:
    assert colour_distance(RED, RED) == 0
    # Distances order colours as people see them.
    assert colour_distance(RED, "#CC0000FF") < colour_distance(RED, "#00FF00FF")
    assert colour_distance("#000000", "#101010") < colour_distance("#000000", "#0000FF")
    assert colour_distance("nonsense", RED) > 500
    assert same_type(" PLA ", "pla") and not same_type("PLA", "PLA-CF")
