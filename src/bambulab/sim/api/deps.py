"""Request plumbing shared by all endpoints: the world, the caller, rate limits.

Authentication and the per-account rate limits of PROTOCOL.md §1 are applied
in one dependency, by method and path, so no endpoint can forget them:
device queries are every GET under ``/v1/iot-service/api/user/``, uploads the
requests that hand out upload URLs, profile the profile and preference
endpoints. (Authentication limits need the account from the body and are
applied by the login endpoints themselves.)

Every dependency is ``async def`` on purpose: FastAPI runs plain ``def``
dependencies in a thread pool, and the world must only be touched from the
event loop.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from ..errors import unauthorized
from ..records import Account
from ..world import World

USER_PREFIX = "/v1/iot-service/api/user/"
UPLOAD_PATH = "/v1/iot-service/api/user/upload"
PROFILE_PATHS = ("/v1/user-service/my/profile", "/v1/design-user-service/my/preference")


def world_from(request: Request) -> World:
    """The world this app serves (for handlers that read the raw request)."""
    return cast(World, request.app.state.world)


async def world_of(request: Request) -> World:
    """The world this app serves."""
    return world_from(request)


async def base_url(request: Request) -> str:
    """Scheme, host and port the client used, for absolute URLs in answers."""
    return str(request.base_url).rstrip("/")


def rate_categories(method: str, path: str) -> tuple[str, ...]:
    """Which rate-limit categories a request counts against."""
    categories: list[str] = []
    if method == "GET" and path.startswith(USER_PREFIX):
        categories.append("device")
    if path == UPLOAD_PATH and method in ("GET", "POST"):
        categories.append("upload")
    if path in PROFILE_PATHS:
        categories.append("profile")
    return tuple(categories)


def bearer_token(request: Request) -> str:
    """The token of ``Authorization: Bearer <token>``; 401/1001 when absent."""
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized(1001, "Missing or malformed Authorization header")
    return token.strip()


async def current_account(request: Request) -> Account:
    """The caller, after token checks and rate limits."""
    world = world_from(request)
    account = world.authenticate(bearer_token(request))
    categories = rate_categories(request.method, request.url.path)
    if categories:
        world.check_rate(categories, f"uid:{account.uid}")
    return account


WorldDep = Annotated[World, Depends(world_of)]
AccountDep = Annotated[Account, Depends(current_account)]
BaseUrlDep = Annotated[str, Depends(base_url)]
