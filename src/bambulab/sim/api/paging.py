"""Cursor pagination shared by the task history and the message inbox.

``after`` is the ``id`` of the last hit the client has already seen. Ids grow
with time and lists are newest first, so the next page is made of the items
with a smaller id. An unknown cursor therefore still works (it is a position,
not a lookup), which is how real cursors behave when an item was deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ..errors import bad_request

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

T = TypeVar("T")


def int_or_none(value: object) -> int | None:
    """``value`` as an int when it is one (or a decimal string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def cursor_page(
    items: list[T], after: str | None, limit: str | None, key: Callable[[T], int]
) -> list[T]:
    """Up to ``limit`` items of a newest-first list that follow the id ``after``."""
    size = DEFAULT_LIMIT
    if limit not in (None, ""):
        parsed = int_or_none(limit)
        if parsed is None or not 1 <= parsed <= MAX_LIMIT:
            raise bad_request(f"limit must be an integer from 1 to {MAX_LIMIT}")
        size = parsed
    if after not in (None, "", "0"):
        cursor = int_or_none(after)
        if cursor is None or cursor < 0:
            raise bad_request("after must be the id of a hit")
        items = [item for item in items if key(item) < cursor]
    return items[:size]
