"""The seed's module path: ``from bambulab.bambuclient import BambuClient``."""

from .cloud.auth import AsyncBambuAuthenticator, BambuAuthenticator
from .cloud.client import AsyncBambuClient, BambuClient

__all__ = ["AsyncBambuAuthenticator", "AsyncBambuClient", "BambuAuthenticator", "BambuClient"]
