"""Rate limits and events shared through Redis (being built: refuses until then)."""

from __future__ import annotations

from ..errors import ConfigurationError
from .common import EventBus, RateLimiter


def shared_from_url(url: str) -> tuple[RateLimiter, EventBus]:
    raise ConfigurationError("--redis is not available in this build")
