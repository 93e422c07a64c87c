"""Sans-IO plan of a cloud upload (PROTOCOL.md §1.3).

The bytes go to one pre-signed URL and the decimal size to another; both are
S3-style URLs whose signature covers method and headers, so the PUTs carry no
header the signer did not expect (no Authorization, no Content-Type).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..errors import APIError, BadRequestError, ForbiddenError, ServerError
from ..models import UploadResult, UploadTicket
from .http import HttpReply


@dataclass(frozen=True, slots=True)
class RawPut:
    """One PUT to a pre-signed URL."""

    url: str
    content: bytes
    what: str


def plan(ticket: UploadTicket, data: bytes) -> list[RawPut]:
    """The two PUTs of the pre-signed flow: the bytes, then their size."""
    return [
        RawPut(ticket.filename_url, data, "file"),
        RawPut(ticket.size_url, str(len(data)).encode(), "size"),
    ]


def check_put(reply: HttpReply, put: RawPut) -> None:
    """Raise a clear error if cloud storage refused a PUT."""
    if 200 <= reply.status < 300:
        return
    text = reply.body[:2048].decode("utf-8", "replace")
    code = _xml(text, "Code") or f"HTTP {reply.status}"
    message = _xml(text, "Message")
    detail = f"{code}" + (f" ({message})" if message else "")
    msg = f"cloud storage refused the {put.what} upload: {detail}"
    kw = {"http_status": reply.status, "server_message": detail, "path": "upload"}
    if reply.status == 403:
        raise ForbiddenError(msg, **kw)  # type: ignore[arg-type]
    if reply.status >= 500:
        raise ServerError(msg, **kw)  # type: ignore[arg-type]
    if reply.status == 400:
        raise BadRequestError(msg, **kw)  # type: ignore[arg-type]
    raise APIError(msg, **kw)  # type: ignore[arg-type]


def _xml(text: str, tag: str) -> str | None:
    match = re.search(rf"<{tag}>([^<]{{0,200}})</{tag}>", text)
    return match.group(1) if match else None


def result(ticket: UploadTicket, data: bytes) -> UploadResult:
    """What the caller gets back once both PUTs succeeded."""
    return UploadResult.from_wire(
        {
            "success": True,
            "file_id": ticket.file_id,
            "file_name": ticket.file_name,
            "file_url": ticket.filename_url.split("?", 1)[0],
            "size": len(data),
            "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        }
    )
