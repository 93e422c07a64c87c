"""bambulab: the Python toolkit for Bambu Lab 3D printers.

Public names are imported lazily, so ``import bambulab`` (and ``bambu --help``)
stays fast; ``from bambulab import BambuClient`` loads the cloud layer then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "BambuClient": "bambulab.cloud.client",
    "AsyncBambuClient": "bambulab.cloud.client",
    "BambuAuthenticator": "bambulab.cloud.auth",
    "AsyncBambuAuthenticator": "bambulab.cloud.auth",
    "TokenStore": "bambulab.cloud.tokens",
    "RetryPolicy": "bambulab.protocol.http",
    "AskCode": "bambulab.protocol.login",
    "TokenClaims": "bambulab.protocol.jwt",
    "BambuMQTT": "bambulab.mqtt.client",
    "AsyncBambuMQTT": "bambulab.mqtt.client",
    "MQTTClient": "bambulab.mqtt.client",
    "PrinterState": "bambulab.models.state",
    "ThreeMF": "bambulab.models.threemf",
    "read_3mf": "bambulab.protocol.threemf",
    "ams_mapping": "bambulab.protocol.ams_mapping",
    "decode_claims": "bambulab.protocol.jwt",
    "LocalFTPClient": "bambulab.local.ftps",
    "AsyncLocalFTPClient": "bambulab.local.ftps",
    "LanPrinter": "bambulab.local.lan_print",
    "JPEGFrameStream": "bambulab.local.camera",
    "AsyncJPEGFrameStream": "bambulab.local.camera",
    "open_camera": "bambulab.local.camera",
    "open_async_camera": "bambulab.local.camera",
    "Frame": "bambulab.models.camera",
}
_ERRORS = (
    "APIError",
    "AmsMappingError",
    "ThreeMFError",
    "CertificateError",
    "CertificatePinMismatchError",
    "CommandError",
    "CommandInterruptedError",
    "CommandTimeoutError",
    "MQTTAuthenticationError",
    "MQTTError",
    "NotConnectedError",
    "UnsupportedCommandError",
    "AuthenticationError",
    "BadRequestError",
    "BambuError",
    "CSRFBlockedError",
    "CloudflareBlockedError",
    "CodeRequiredError",
    "ConfigurationError",
    "ForbiddenError",
    "InvalidCredentialsError",
    "LoginError",
    "NotFoundError",
    "ProtocolError",
    "RateLimitError",
    "RequestTimeoutError",
    "ServerError",
    "TokenExpiredError",
    "TokenFileError",
    "TokenInvalidError",
    "TransportError",
    "VerificationCodeError",
    "FTPError",
    "FTPAuthenticationError",
    "RemoteFileNotFoundError",
    "StorageFullError",
    "SessionReuseError",
    "TransferInterruptedError",
    "PrinterBusyError",
    "CameraError",
    "CameraAuthenticationError",
    "CameraUnavailableError",
    "CameraStallError",
)
_EXPORTS.update(dict.fromkeys(_ERRORS, "bambulab.errors"))

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
    from .cloud.auth import AsyncBambuAuthenticator, BambuAuthenticator
    from .cloud.client import AsyncBambuClient, BambuClient
    from .cloud.tokens import TokenStore
    from .errors import *
    from .local.camera import (
        AsyncJPEGFrameStream,
        JPEGFrameStream,
        open_async_camera,
        open_camera,
    )
    from .local.ftps import AsyncLocalFTPClient, LocalFTPClient
    from .local.lan_print import LanPrinter
    from .models.camera import Frame
    from .models.state import PrinterState
    from .models.threemf import ThreeMF
    from .mqtt.client import AsyncBambuMQTT, BambuMQTT, MQTTClient
    from .protocol.ams_mapping import ams_mapping
    from .protocol.http import RetryPolicy
    from .protocol.jwt import TokenClaims, decode_claims
    from .protocol.login import AskCode
    from .protocol.threemf import read_3mf


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bambulab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
