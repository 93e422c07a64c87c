"""LAN faces: a printer's SD card over implicit FTPS, printing a local file on it, its camera."""

from __future__ import annotations

from .camera import AsyncJPEGFrameStream, JPEGFrameStream, open_async_camera, open_camera
from .ftps import AsyncLocalFTPClient, LocalFTPClient

__all__ = [
    "AsyncJPEGFrameStream",
    "AsyncLocalFTPClient",
    "JPEGFrameStream",
    "LocalFTPClient",
    "open_async_camera",
    "open_camera",
]
