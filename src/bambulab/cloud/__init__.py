"""The cloud HTTP API: clients, authentication and the token file."""

from .auth import AsyncBambuAuthenticator, BambuAuthenticator
from .client import AsyncBambuClient, BambuClient
from .tokens import SavedToken, TokenStore

__all__ = [
    "AsyncBambuAuthenticator",
    "AsyncBambuClient",
    "BambuAuthenticator",
    "BambuClient",
    "SavedToken",
    "TokenStore",
]
