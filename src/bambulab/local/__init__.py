"""LAN faces: a printer's SD card over implicit FTPS, and printing a local file on it."""

from __future__ import annotations

from .ftps import AsyncLocalFTPClient, LocalFTPClient

__all__ = ["AsyncLocalFTPClient", "LocalFTPClient"]
