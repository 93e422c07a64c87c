"""Notifications (iot-service, old envelope) and messages (user-service, bare, cursor)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from ..clock import iso
from ..errors import not_found
from ..records import Message, Notification
from ..wire import bare, old
from .deps import AccountDep, WorldDep
from .paging import cursor_page, int_or_none

router = APIRouter(tags=["inbox"])

TRUE_WORDS = ("1", "true", "yes")


class MarkBody(BaseModel):
    """``{notification_id, read}``."""

    model_config = ConfigDict(extra="allow")
    notification_id: str | int
    read: bool = True


@router.get("/v1/iot-service/api/user/notification")
async def notifications(
    account: AccountDep,
    world: WorldDep,
    unread: str | None = None,
    action: str | None = None,
    ticket: str | None = None,
) -> JSONResponse:
    """The caller's notifications, newest first, optionally only unread or one action/ticket."""
    items = sorted(
        (n for n in world.notifications.values() if n.owner == account.uid),
        key=lambda n: n.create_time,
        reverse=True,
    )
    if unread is not None and unread.strip().lower() in TRUE_WORDS:
        items = [n for n in items if not n.read]
    if action:
        items = [n for n in items if n.action == action]
    if ticket:
        items = [n for n in items if n.ticket == ticket]
    return old({"notifications": [_notification(n) for n in items], "total": len(items)})


@router.put("/v1/iot-service/api/user/notification")
async def mark_notification(body: MarkBody, account: AccountDep, world: WorldDep) -> JSONResponse:
    """Mark one notification read (or unread)."""
    notification = world.notifications.get(int_or_none(body.notification_id) or -1)
    if notification is None or notification.owner != account.uid:
        raise not_found("Notification not found")
    notification.read = body.read
    return old({"notification_id": notification.id, "read": notification.read})


@router.get("/v1/user-service/my/messages")
async def messages(
    account: AccountDep,
    world: WorldDep,
    kind: Annotated[str | None, Query(alias="type")] = None,
    after: str | None = None,
    limit: str | None = None,
) -> JSONResponse:
    """The caller's messages, newest first, with the same cursor rule as tasks."""
    items = sorted(
        (
            m
            for m in world.messages.values()
            if m.owner == account.uid and (not kind or str(m.type) == kind.strip())
        ),
        key=lambda m: m.id,
        reverse=True,
    )
    page = cursor_page(items, after, limit, key=lambda m: m.id)
    return bare({"total": len(items), "hits": [_message(m) for m in page]})


def _notification(item: Notification) -> dict[str, Any]:
    return {
        "id": item.id,
        "type": item.type,
        "title": item.title,
        "content": item.content,
        "read": item.read,
        "create_time": iso(item.create_time),
        "action": item.action,
        "ticket": item.ticket,
    }


def _message(item: Message) -> dict[str, Any]:
    return {
        "id": item.id,
        "type": item.type,
        "title": item.title,
        "content": item.content,
        "createTime": iso(item.create_time),
        "read": item.read,
    }
