"""A cheap, sans-IO bound on how deeply a JSON document nests, checked before parsing.

Both ``json`` and ``orjson`` recurse once per ``[`` or ``{``: a hostile peer
that sends 100 000 of them gets a ``RecursionError`` out of ``json.loads`` (or
out of whatever walks the result later: the report merger, pydantic, a
``--json`` dump). No Bambu answer or report nests more than about ten levels,
so anything past :data:`MAX_DEPTH` is refused by a scan that never recurses,
before a parser sees the bytes. The HTTP and MQTT sides share it.
"""

from __future__ import annotations

import re
from itertools import accumulate

MAX_DEPTH = 64

# A JSON string, escapes included. Possessive quantifiers keep the match
# linear even on an unterminated string full of backslashes.
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_OPENER = bytes(b for b in range(256) if b not in b"[{")
# Each remaining byte becomes +1 (opener) or -1 (closer); C iterators sum them.
_STEP = [0] * 256
for _opener in b"[{":
    _STEP[_opener] = 1
for _closer in b"]}":
    _STEP[_closer] = -1


def nesting_exceeds(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether ``data`` opens more than ``limit`` arrays/objects inside each other.

    Brackets inside strings do not count. Malformed input is judged by its
    brackets alone: it fails to parse afterwards anyway.
    """
    if len(data.translate(None, _NOT_OPENER)) <= limit:
        # Cannot nest deeper than it opens: no scan. (One translate pass is
        # twice as fast as two counts; this runs on every MQTT report.)
        return False
    skeleton = _STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    if len(skeleton) <= limit:
        return False
    return max(accumulate(map(_STEP.__getitem__, skeleton))) > limit


__all__ = ["MAX_DEPTH", "nesting_exceeds"]
