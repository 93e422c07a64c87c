"""A simulated printer's card never outlives it on disk."""

from __future__ import annotations

import gc
from pathlib import Path

from bambulab.sim.printer.sdcard import SdCard


def test_a_closed_card_removes_its_directory() -> None:
    card = SdCard(samples=lambda: {"a.3mf": b"x"})
    root = card.root
    assert (root / "a.3mf").read_bytes() == b"x"
    card.close()
    assert not root.exists()
    card.close()  # twice is harmless


def test_a_card_dropped_unclosed_removes_its_directory() -> None:
    card = SdCard()
    root = card.root
    assert root.is_dir()
    del card
    gc.collect()
    assert not root.exists()


def test_a_card_given_a_directory_leaves_it(tmp_path: Path) -> None:
    card = SdCard(tmp_path / "card")
    root = card.root
    card.close()
    del card
    gc.collect()
    assert root.is_dir()
