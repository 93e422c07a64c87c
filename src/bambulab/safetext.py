"""Text from servers and other people, made safe to show on a terminal.

Printer names, task titles, messages, file names and every other string that
came over the network may hold characters a terminal *executes* instead of
showing: ``ESC [2J`` clears the screen, ``ESC ]0;...BEL`` retitles the
window, the 8-bit CSI ``U+009B`` does the same as ``ESC [`` on some
terminals, ``CR`` and backspace overwrite what was printed, and the Unicode
bidi overrides (``U+202E``) make text read backwards. :func:`visible` turns
each such character into its Python escape, so a person sees what was sent
and nothing happens:

* ``\\t``, ``\\n``, ``\\r`` for tab, newline and carriage return;
* ``\\xNN`` for the other C0 controls, DEL and the C1 controls (``\\x1b``,
  ``\\x07``, ``\\x9b``);
* ``\\uNNNN`` / ``\\UNNNNNNNN`` above U+00FF (``\\u202e``, ``\\U000e0041``).

Neutralised: every code point of Unicode category Cc (controls), Cf (format:
bidi marks, overrides and isolates, zero-width space, word joiner, BOM, soft
hyphen, tag characters), Zl/Zp (line and paragraph separators) and Cs (lone
surrogates, which cannot even be encoded), except ZERO WIDTH NON-JOINER and
ZERO WIDTH JOINER, which Persian, Indic scripts and emoji sequences need and
which move nothing. With ``multiline=True`` newline and tab are kept.
Backslashes are left alone, so printable text passes unchanged (and an
escape typed literally looks like a neutralised one: ``--json`` stays exact
when that matters).

The table below is checked against :mod:`unicodedata` by the tests, so a new
Python with a newer Unicode fails a test instead of letting new format
characters through. Only the standard library is used, and the common case
(nothing to neutralise) costs one ``str.isprintable`` call.
"""

from __future__ import annotations

import logging
import re

__all__ = ["UNSAFE_RANGES", "VisibleFormatter", "visible", "visible_json"]

# Inclusive code point ranges of what is neutralised (Unicode 14/15: Cc, Cf,
# Zl, Zp, Cs minus U+200C/U+200D).
UNSAFE_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x001F),  # C0 controls: ESC, BEL, CR, BS, NL, TAB...
    (0x007F, 0x009F),  # DEL and the C1 controls (0x9B is an 8-bit CSI, 0x9D an OSC)
    (0x00AD, 0x00AD),  # soft hyphen
    (0x0600, 0x0605),  # Arabic prepended concatenation marks
    (0x061C, 0x061C),  # ARABIC LETTER MARK (bidi)
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),  # MONGOLIAN VOWEL SEPARATOR
    (0x200B, 0x200B),  # ZERO WIDTH SPACE
    (0x200E, 0x200F),  # LRM, RLM
    (0x2028, 0x202E),  # line/paragraph separators; LRE, RLE, PDF, LRO, RLO
    (0x2060, 0x2064),  # word joiner, invisible operators
    (0x2066, 0x206F),  # LRI, RLI, FSI, PDI; deprecated format characters
    (0xD800, 0xDFFF),  # lone surrogates
    (0xFEFF, 0xFEFF),  # BOM / ZERO WIDTH NO-BREAK SPACE
    (0xFFF9, 0xFFFB),  # interlinear annotation
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),  # Egyptian hieroglyph format controls (Unicode 15 adds 0x1343F)
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),  # musical symbol format controls
    (0xE0001, 0xE0001),  # LANGUAGE TAG
    (0xE0020, 0xE007F),  # tag characters: invisible ASCII look-alikes
)

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _char_class(ranges: tuple[tuple[int, int], ...], keep: str = "") -> str:
    """A regex character class of ``ranges`` minus the characters in ``keep``."""
    parts = []
    for low, high in ranges:
        start = low
        for cp in sorted(ord(c) for c in keep if low <= ord(c) <= high):
            if start < cp:
                parts.append(_range(start, cp - 1))
            start = cp + 1
        if start <= high:
            parts.append(_range(start, high))
    return "[" + "".join(parts) + "]"


def _range(low: int, high: int) -> str:
    first = f"\\U{low:08x}"
    return first if low == high else f"{first}-\\U{high:08x}"


_LINE = re.compile(_char_class(UNSAFE_RANGES))
_BLOCK = re.compile(_char_class(UNSAFE_RANGES, keep="\t\n"))
# In serialised JSON the C0 controls inside strings are already escaped and
# those outside are indentation: only DEL and what lies above ASCII is left.
_JSON = re.compile(_char_class(UNSAFE_RANGES[1:]))


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    cp = ord(char)
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def visible(text: str, *, multiline: bool = False) -> str:
    """``text`` with every control and invisible format character shown as its escape.

    One line by default (table cells, names, error lines: a newline in a
    name must not forge another row); ``multiline=True`` keeps newlines and
    tabs (messages that are meant to span lines, tracebacks).
    """
    if text.isprintable():  # the common case; every unsafe character is non-printable
        return text
    return (_BLOCK if multiline else _LINE).sub(_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    cp = ord(match.group())
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    cp -= 0x10000  # JSON writes astral characters as a surrogate pair
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


def visible_json(serialised: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with no raw control characters left.

    ``json.dumps`` escapes C0 controls but writes DEL, the C1 controls,
    bidi overrides and lone surrogates raw when ``ensure_ascii`` is off.
    Those can only occur inside strings, where ``\\uXXXX`` means the same
    character: the document parses to exactly the same value.
    """
    if serialised.isascii() and "\x7f" not in serialised:
        return serialised
    return _JSON.sub(_json_escape, serialised)


class VisibleFormatter(logging.Formatter):
    """A log formatter whose lines never carry a raw control character.

    Log messages embed printer names, file names and server messages. The
    message line is neutralised as one line (a newline in a name cannot forge
    a second record); a traceback keeps its line breaks.
    """

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        lines = [visible(self.formatMessage(record))]
        # Formatted here, not taken from record.exc_text: another handler's
        # formatter may have cached an unneutralised one there.
        details: list[str] = []
        if record.exc_info:
            details.append(self.formatException(record.exc_info))
        elif record.exc_text:
            details.append(record.exc_text)
        if record.stack_info:
            details.append(self.formatStack(record.stack_info))
        lines += [visible(d.rstrip("\n"), multiline=True) for d in details]
        return "\n".join(lines)
