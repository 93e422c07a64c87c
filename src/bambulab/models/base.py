"""The base of every cloud model: typed attributes plus the wire dict underneath.

The seed's examples index results by wire key (``devices[0]['dev_id']``,
``info['status']``); typed code reads attributes. A :class:`WireModel` does
both: attributes are validated leniently from the wire dict, and item access
reads the wire dict as received, so nothing the server sent is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from ..secrets import MASK, is_secret_key

log = logging.getLogger("bambulab.models")


class WireModel(BaseModel):
    """A pydantic model that keeps the wire dict it came from.

    Unknown fields are kept; a field of the wrong type is dropped (and logged)
    instead of failing the whole object, so a server change never crashes a caller.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        """Build from a wire dict; never raises for wrong field types."""
        raw: dict[str, Any] = dict(data) if isinstance(data, Mapping) else {}
        try:
            model = cls.model_validate(raw)
        except ValidationError as exc:
            bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
            log.debug(
                "%s: dropping fields of unexpected type: %s", cls.__name__, sorted(map(str, bad))
            )
            model = cls.model_validate({k: v for k, v in raw.items() if k not in bad})
        model._raw = raw
        return model

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Secrets (access codes, camera keys, tokens) never reach a repr.
        for name, value in super().__repr_args__():
            yield name, (MASK if name and is_secret_key(name) and value else value)

    # Mapping-style access to the wire dict, as the seed's examples use.
    def __getitem__(self, key: str) -> Any:
        if key in self._raw:
            return self._raw[key]
        extra = self.__pydantic_extra__ or {}
        if key in extra:
            return extra[key]
        if key in type(self).model_fields:
            return getattr(self, key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self._raw or key in type(self).model_fields)

    def get(self, key: str, default: Any = None) -> Any:
        """The wire value for ``key``, or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> Iterator[str]:
        """The wire keys as received."""
        return iter(self._raw)

    @property
    def raw(self) -> dict[str, Any]:
        """The wire dict exactly as the server sent it."""
        return self._raw

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the wire data (received keys, plus typed defaults)."""
        out = self.model_dump(mode="json", by_alias=True)
        out.update(self._raw)
        return out
