"""Profile (new envelope, editable) and MakerWorld preference (bare).

The preference's ``uid`` is what MQTT clients turn into the broker user
``u_<uid>`` (PROTOCOL.md §2.1), so it is an int here exactly as on the wire.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..clock import iso
from ..errors import bad_request
from ..records import Account
from ..wire import absolute, bare, new
from .deps import AccountDep, BaseUrlDep

router = APIRouter(tags=["account"])

EDITABLE = {"name": 32, "bio": 512, "avatar": 1024}  # field -> max length


@router.get("/v1/user-service/my/profile")
async def profile(account: AccountDep, base: BaseUrlDep) -> JSONResponse:
    """The caller's profile."""
    return new(_profile(account, base))


@router.put("/v1/user-service/my/profile")
async def update_profile(request: Request, account: AccountDep, base: BaseUrlDep) -> JSONResponse:
    """Change ``name``, ``bio`` and/or ``avatar``; anything else is refused."""
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("body must be a JSON object") from None
    if not isinstance(body, dict) or not body:
        raise bad_request("body must be a JSON object with name, bio or avatar")
    unknown = sorted(set(body) - set(EDITABLE))
    if unknown:
        raise bad_request(f"unknown profile field: {unknown[0]}", fields=unknown)
    for key, value in body.items():
        if not isinstance(value, str) or len(value) > EDITABLE[key]:
            raise bad_request(f"{key} must be a string of at most {EDITABLE[key]} characters")
        if key == "name" and not value.strip():
            raise bad_request("name must not be empty")
    for key, value in body.items():
        setattr(account, key, value.strip() if key == "name" else value)
    return new(_profile(account, base))


@router.get("/v1/design-user-service/my/preference")
async def preference(account: AccountDep, base: BaseUrlDep) -> JSONResponse:
    """The MakerWorld preference object."""
    return bare(
        {
            "uid": account.uid,
            "name": account.name,
            "handle": account.handle,
            "avatar": absolute(base, account.avatar),
            "bio": account.bio,
            "links": [],
            "backgroundUrl": absolute(base, f"/sim-cdn/backgrounds/{account.uid}.png"),
        }
    )


def _profile(account: Account, base: str) -> dict[str, Any]:
    return {
        "uid": account.uid,
        "account": account.login,
        "name": account.name,
        "avatar": absolute(base, account.avatar),
        "bio": account.bio,
        "handle": account.handle,
        "createTime": iso(account.create_time),
        "email": account.email or "",
        "phone": account.phone or "",
        "region": "global",
    }
