"""The terminal neutraliser: what it escapes, what it leaves alone, and its JSON and log faces."""

from __future__ import annotations

import ast
import io
import json
import logging
import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bambulab.safetext import UNSAFE_RANGES, VisibleFormatter, visible, visible_json

UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}
KEPT = {"\u200c", "\u200d"}  # ZWNJ, ZWJ: needed by scripts and emoji, move nothing
# Any character, surrogates included, and the unsafe categories often.
ANY_TEXT = st.text(st.characters() | st.characters(categories=sorted(UNSAFE_CATEGORIES)))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=20,
)


def should_escape(char: str, *, multiline: bool = False) -> bool:
    if multiline and char in "\t\n":
        return False
    return unicodedata.category(char) in UNSAFE_CATEGORIES and char not in KEPT


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain name", "plain name"),
        ("", ""),
        ("Ünïcödé 打印机 🖨️", "Ünïcödé 打印机 🖨️"),
        ("back\\slash [bold]x[/bold]", "back\\slash [bold]x[/bold]"),  # not ours to change
        ("\x1b[2J", "\\x1b[2J"),  # clear screen
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # window title (OSC ... BEL)
        ("\x9b2J", "\\x9b2J"),  # 8-bit CSI
        ("\x9d0;t\x9c", "\\x9d0;t\\x9c"),  # 8-bit OSC ... ST
        ("abc\rxyz", "abc\\rxyz"),
        ("abc\x08\x08X", "abc\\x08\\x08X"),
        ("a\nb\tc", "a\\nb\\tc"),  # one line: a newline must not forge a row
        ("\x00\x7f", "\\x00\\x7f"),
        ("\u202eevil\u202c", "\\u202eevil\\u202c"),  # RLO ... PDF
        ("\u2066x\u2069", "\\u2066x\\u2069"),  # LRI ... PDI
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),  # LRM, RLM, ALM
        ("ad\u200bmin", "ad\\u200bmin"),  # zero-width space
        ("\ufeffname", "\\ufeffname"),  # BOM
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),  # line/paragraph separators
        ("hi\U000e0041\U000e0042", "hi\\U000e0041\\U000e0042"),  # invisible tag letters
        ("\ud800", "\\ud800"),  # a lone surrogate cannot even be encoded
        ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧"),  # ZWJ emoji sequence kept
        ("\xa0nbsp", "\xa0nbsp"),  # a no-break space is a space, shown as one
    ],
)
def test_visible_single_line(raw: str, shown: str) -> None:
    assert visible(raw) == shown


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("line 1\nline 2\tend", "line 1\nline 2\tend"),
        ("line\r\n", "line\\r\n"),
        ("\x1b[2J\n\u202e", "\\x1b[2J\n\\u202e"),
    ],
)
def test_visible_multiline_keeps_newline_and_tab(raw: str, shown: str) -> None:
    assert visible(raw, multiline=True) == shown


def test_the_table_covers_every_control_and_format_character() -> None:
    """Checked against this Python's Unicode database: a newer one cannot slip characters by."""
    listed = {cp for low, high in UNSAFE_RANGES for cp in range(low, high + 1)}
    for cp in range(sys.maxunicode + 1):
        char = chr(cp)
        category = unicodedata.category(char)
        if should_escape(char):
            assert cp in listed, f"U+{cp:04X} ({category}) is not neutralised"
        elif cp in listed:
            # Only code points a later Unicode made format characters may be unassigned here.
            assert category == "Cn", f"U+{cp:04X} ({category}) is neutralised for nothing"


@given(ANY_TEXT)
def test_output_never_holds_an_unsafe_character(raw: str) -> None:
    for multiline in (False, True):
        shown = visible(raw, multiline=multiline)
        assert not any(should_escape(c, multiline=multiline) for c in shown)
        if multiline:
            assert shown.count("\n") == raw.count("\n")
        else:
            assert "\n" not in shown and "\t" not in shown


@given(st.text(st.characters(blacklist_categories=("Cc", "Cf", "Zl", "Zp", "Cs"))))
def test_printable_text_passes_unchanged(raw: str) -> None:
    assert visible(raw) == raw
    assert visible(raw, multiline=True) == raw


@given(ANY_TEXT)
def test_escapes_read_back_as_python_literals(raw: str) -> None:
    """The visible form is the Python escape: evaluating it gives the original back."""
    if "\\" in raw or '"' in raw:
        return  # a literal backslash reads as an escape: shown as typed, by design
    assert ast.literal_eval(f'"{visible(raw)}"') == raw


@given(JSON_VALUES)
def test_visible_json_is_the_same_json_with_nothing_raw(value: object) -> None:
    serialised = visible_json(json.dumps(value, indent=2, ensure_ascii=False))
    assert json.loads(serialised) == value
    # Only the indentation's newlines and spaces remain outside printable text.
    assert not any(should_escape(c) and c != "\n" for c in serialised)
    serialised.encode("utf-8")  # lone surrogates are escaped, so it always encodes


def test_visible_json_leaves_plain_documents_alone() -> None:
    text = json.dumps({"name": "P1S 1", "title": "Ünïcödé"}, ensure_ascii=False)
    assert visible_json(text) == text
    assert visible_json('"\x7f\u202e\U000e0041"') == '"\\u007f\\u202e\\udb40\\udc41"'


def log_line(formatter: logging.Formatter, message: str, *args: object, **extra: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("test.safetext")
    logger.propagate = False
    logger.handlers[:] = [handler]
    try:
        logger.warning(message, *args, **extra)  # type: ignore[arg-type]
    finally:
        logger.handlers.clear()
    return stream.getvalue()


def test_log_formatter_neutralises_the_message_line() -> None:
    line = log_line(VisibleFormatter("warning: %(message)s"), "renamed to %s", "x\x1b[2J\ny")
    assert line == "warning: renamed to x\\x1b[2J\\ny\n"


def test_log_formatter_keeps_traceback_lines_but_not_their_controls() -> None:
    try:
        raise ValueError("server said \x1b]0;pwned\x07")
    except ValueError:
        line = log_line(VisibleFormatter("%(message)s"), "failed: %s", "\u202e", exc_info=True)
    assert line.startswith("failed: \\u202e\nTraceback (most recent call last):\n")
    assert "ValueError: server said \\x1b]0;pwned\\x07\n" in line
    assert "\x1b" not in line and "\x07" not in line
