"""Projects: a paged list and details whose file URLs are freshly pre-signed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..clock import iso
from ..errors import bad_request, not_found
from ..records import Project
from ..wire import absolute, old
from ..world import World
from .deps import AccountDep, BaseUrlDep, WorldDep
from .paging import MAX_LIMIT, int_or_none

router = APIRouter(tags=["projects"])


@router.get("/v1/iot-service/api/user/project")
async def projects(
    account: AccountDep,
    world: WorldDep,
    base: BaseUrlDep,
    page: str | None = None,
    limit: str | None = None,
) -> JSONResponse:
    """The caller's projects, newest first, ``limit`` per page (pages from 1)."""
    number = _positive(page, "page", 1, None)
    size = _positive(limit, "limit", 20, MAX_LIMIT)
    items = sorted(
        (p for p in world.projects.values() if p.owner == account.uid),
        key=lambda p: p.create_time,
        reverse=True,
    )
    chunk = items[(number - 1) * size : number * size]
    return old(
        {
            "projects": [_summary(p, base) for p in chunk],
            "total": len(items),
            "page": number,
            "limit": size,
        }
    )


@router.get("/v1/iot-service/api/user/project/{project_id}")
async def project(
    project_id: str, account: AccountDep, world: WorldDep, base: BaseUrlDep
) -> JSONResponse:
    """One project with its files; URLs are valid for the configured URL lifetime."""
    item = world.projects.get(project_id)
    if item is None or item.owner != account.uid:
        raise not_found("Project not found")
    return old(_detail(world, item, base))


def _positive(value: str | None, name: str, default: int, maximum: int | None) -> int:
    if value in (None, ""):
        return default
    parsed = int_or_none(value)
    if parsed is None or parsed < 1 or (maximum is not None and parsed > maximum):
        bound = f" to {maximum}" if maximum else ""
        raise bad_request(f"{name} must be an integer from 1{bound}")
    return parsed


def _summary(item: Project, base: str) -> dict[str, Any]:
    return {
        "project_id": item.project_id,
        "name": item.name,
        "model_id": item.model_id,
        "status": item.status,
        "create_time": iso(item.create_time),
        "update_time": iso(item.update_time),
        "thumbnail": absolute(base, item.cover),
        "file_count": len(item.files),
    }


def _detail(world: World, item: Project, base: str) -> dict[str, Any]:
    return {
        **_summary(item, base),
        "files": [
            {
                "file_id": f.file_id,
                "name": f.name,
                "size": f.size,
                "url": world.presigned_url(base, "GET", f.key),
                "md5": f.md5,
            }
            for f in item.files
        ],
    }
