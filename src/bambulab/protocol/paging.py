"""Sans-IO pagination: which page to ask for next, and when to stop.

Tasks and messages page by cursor (``after`` = the last id seen); projects by
page number. Both faces drive the same :class:`Pager`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..models import Page
from .http import ApiCall


class Pager:
    """Yields the calls of successive pages and collects their items.

    ``build(cursor)`` makes the call for one page: the cursor is ``None`` for
    the first page, then the last item's id (``mode="after"``) or the next
    page number (``mode="page"``).
    """

    def __init__(
        self,
        build: Callable[[Any], ApiCall[Page]],
        page_size: int,
        mode: str = "after",
        max_items: int | None = None,
    ) -> None:
        self._build = build
        self._size = page_size
        self._mode = mode
        self._max = max_items
        self._cursor: Any = None if mode == "after" else 1
        self._seen = 0
        self._done = max_items is not None and max_items <= 0

    def next_call(self) -> ApiCall[Page] | None:
        """The call for the next page, or ``None`` when everything was read."""
        return None if self._done else self._build(self._cursor)

    def feed(self, page: Page) -> list[Any]:
        """The items of a page just fetched (cut at ``max_items``)."""
        items = list(page.items)
        if self._max is not None:
            items = items[: self._max - self._seen]
        self._seen += len(items)
        total = page.total
        if (
            len(page.items) < self._size
            or not items
            or (self._max is not None and self._seen >= self._max)
            or (isinstance(total, int) and self._mode == "page" and self._seen >= total)
        ):
            self._done = True
        elif self._mode == "after":
            self._cursor = items[-1].get("id")
        else:
            self._cursor += 1
        return items
