"""The legacy compatibility API (being built: mounts nothing yet)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import APIRouter

    from .app import ServerContext


def compat_routes(ctx: ServerContext) -> APIRouter:
    from fastapi import APIRouter

    return APIRouter()
