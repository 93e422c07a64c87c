"""Sans-IO plan of a cloud upload (PROTOCOL.md §1.3), driven by both client faces.

Two flows. ``"urls"`` (the seed's ``upload_file``): ``GET /user/upload``
hands out a pre-signed URL for the bytes and one for the decimal size; both
PUTs must arrive. ``"single"`` (the seed's alternative): ``POST /user/upload``
hands out one URL, then ``POST /user/upload/confirm`` registers the file.

The URLs are S3-style pre-signed URLs whose signature covers the method and
the ``Content-Type``/``Content-MD5`` headers, so the PUTs carry no header the
signer did not expect: only ``Content-Length`` (the bytes stream from disk
with their size known up front; no chunked encoding, which S3 refuses).

:class:`UploadFlow` says what to do next (:class:`AskUrls`, :class:`PutFile`,
:class:`PutBytes`, :class:`Confirm`, :class:`Wait`, :class:`Done`); the face
does it and reports back. The rules it applies:

* a PUT is idempotent, so a transient failure (connection reset, timeout,
  5xx, an answer cut short) is retried after a backoff, a bounded number of
  times, then raised;
* a 403 whose S3 code says the URL is no longer good (expired, signature
  mismatch) asks for fresh URLs once and redoes every PUT; a second such
  refusal is raised as a clear :class:`~bambulab.errors.ForbiddenError`;
* an ETag that is a plain MD5 and differs from the MD5 of what was sent
  means storage kept other bytes: retried like a transient failure.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import (
    APIError,
    BadRequestError,
    BambuError,
    ConfigurationError,
    ForbiddenError,
    ProtocolError,
    RateLimitError,
    ServerError,
    TransportError,
)
from ..models import UploadResult, UploadTicket
from . import cloud_api as api
from .http import ApiCall, HttpReply, RetryPolicy

CHUNK = 1 << 20  # bytes read from disk and handed to the socket at a time
# S3 codes of a 403 that fresh URLs cure (the URL expired or its signature no longer holds).
REASK_CODES = frozenset({"AccessDenied", "SignatureDoesNotMatch", "ExpiredToken", "RequestExpired"})
_MD5 = re.compile(r"^[0-9a-f]{32}$")

Flow = Literal["urls", "single"]


@dataclass(frozen=True, slots=True)
class AskUrls:
    """Ask the API for upload URLs (``GET`` or ``POST /user/upload``)."""

    call: ApiCall[Any]


@dataclass(frozen=True, slots=True)
class PutFile:
    """Stream the file (``size`` bytes) to ``url``; report its MD5 with the answer."""

    url: str
    size: int


@dataclass(frozen=True, slots=True)
class PutBytes:
    """PUT a small body (the decimal size) to ``url``."""

    url: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Confirm:
    """Register the uploaded file (``POST /user/upload/confirm``)."""

    call: ApiCall[Any]


@dataclass(frozen=True, slots=True)
class Wait:
    """Sleep before the next try."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Done:
    """The upload is complete."""

    result: UploadResult


Step = AskUrls | PutFile | PutBytes | Confirm | Wait | Done


@dataclass(slots=True)
class _Urls:
    file_id: str
    file_name: str
    file_url: str
    size_url: str | None  # None in the single-URL flow


class UploadFlow:
    """The state of one upload; see the module docstring for the rules."""

    def __init__(
        self,
        name: str,
        size: int,
        *,
        flow: Flow = "urls",
        retry: RetryPolicy | None = None,
    ) -> None:
        self.name = api.check_upload_name(name)
        if size <= 0:
            raise ConfigurationError(f"cannot upload {self.name!r}: the file is empty")
        if flow not in ("urls", "single"):
            raise ConfigurationError(f"unknown upload flow {flow!r}: use 'urls' or 'single'")
        self.size = size
        self.flow: Flow = flow
        self.retry = retry or RetryPolicy()
        self._rng = random.Random()
        self._urls: _Urls | None = None
        self._stage: Literal["ask", "file", "size", "confirm", "done"] = "ask"
        self._reasked = False
        self._attempt = 0  # failed tries of the current PUT
        self._wait: float | None = None
        self._md5 = ""
        self._confirmed: dict[str, Any] = {}

    # --- what to do next -------------------------------------------------------------

    def next_step(self) -> Step:
        """The next thing the face must do."""
        if self._wait is not None:
            seconds, self._wait = self._wait, None
            return Wait(seconds)
        if self._stage == "ask":
            if self.flow == "urls":
                return AskUrls(api.get_upload_urls(self.name, self.size))
            return AskUrls(api.request_upload(self.name, self.size))
        urls = self._urls
        assert urls is not None
        if self._stage == "file":
            return PutFile(urls.file_url, self.size)
        if self._stage == "size":
            assert urls.size_url is not None
            return PutBytes(urls.size_url, str(self.size).encode("ascii"))
        if self._stage == "confirm":
            return Confirm(api.confirm_upload(urls.file_id))
        return Done(self._result())

    # --- what happened ---------------------------------------------------------------

    def answered(self, value: Any) -> None:
        """The answer of :class:`AskUrls` or :class:`Confirm`."""
        if self._stage == "ask":
            if isinstance(value, UploadTicket):
                self._urls = _Urls(
                    value.file_id, value.file_name or self.name, value.filename_url, value.size_url
                )
            else:
                self._urls = _Urls(
                    str(value["file_id"]),
                    str(value.get("file_name") or self.name),
                    str(value["upload_url"]),
                    None,
                )
            self._advance("file")
        elif self._stage == "confirm":
            self._confirmed = dict(value) if isinstance(value, dict) else {}
            self._advance("done")
        else:
            raise RuntimeError(f"no API answer expected while at {self._stage!r}")

    def put_answered(self, reply: HttpReply, md5: str = "") -> None:
        """The answer of a PUT; ``md5`` is the MD5 of the streamed file (:class:`PutFile`)."""
        what = "file" if self._stage == "file" else "size"
        if 200 <= reply.status < 300:
            etag = (reply.header("etag") or "").strip('"').lower()
            if what == "file" and md5 and _MD5.match(etag) and etag != md5:
                self.put_failed(
                    ProtocolError(
                        "cloud storage kept different bytes than were sent "
                        f"(ETag {etag}, sent MD5 {md5})"
                    )
                )
                return
            if what == "file":
                self._md5 = md5
                self._advance("size" if self.flow == "urls" else "confirm")
            else:
                self._advance("done")
            return
        code, message = _s3_error(reply)
        if reply.status == 403 and code in REASK_CODES:
            if self._reasked:
                detail = code + (f" ({message})" if message else "")
                raise ForbiddenError(
                    f"cloud storage refused the {what} upload again with fresh URLs: {detail}",
                    http_status=403,
                    server_message=detail,
                    path="upload",
                )
            self._reasked = True
            self._urls = None
            self._advance("ask")
            return
        self.put_failed(refusal(reply, what))

    def put_failed(self, error: BambuError) -> None:
        """A PUT raised (or was refused with) ``error``: retry after a wait, or re-raise."""
        if not _transient(error):
            raise error
        self._attempt += 1
        if self._attempt >= self.retry.max_attempts:
            raise error
        backoff = min(self.retry.max_delay, self.retry.base_delay * 2.0 ** (self._attempt - 1))
        backoff *= 1 + self.retry.jitter * (self._rng.random() * 2 - 1)
        after = error.retry_after if isinstance(error, RateLimitError) else None
        self._wait = max(backoff, after or 0.0)

    def _advance(self, stage: Literal["ask", "file", "size", "confirm", "done"]) -> None:
        self._stage = stage
        self._attempt = 0

    def _result(self) -> UploadResult:
        urls = self._urls
        assert urls is not None
        return UploadResult.from_wire(
            {
                "success": True,
                "file_id": urls.file_id,
                "file_name": str(self._confirmed.get("file_name") or urls.file_name),
                "file_url": urls.file_url.split("?", 1)[0],
                "size": self.size,
                "md5": self._md5,
            }
        )


def _transient(error: BambuError) -> bool:
    # ProtocolError: the answer was cut short or mangled; the PUT may be repeated.
    return isinstance(error, (TransportError, ServerError, RateLimitError, ProtocolError))


def _s3_error(reply: HttpReply) -> tuple[str, str]:
    text = reply.body[:2048].decode("utf-8", "replace")
    return (_xml(text, "Code") or f"HTTP {reply.status}", _xml(text, "Message") or "")


def refusal(reply: HttpReply, what: str) -> APIError:
    """The error for cloud storage refusing a PUT (S3's XML error named when present)."""
    code, message = _s3_error(reply)
    detail = code + (f" ({message})" if message else "")
    msg = f"cloud storage refused the {what} upload: {detail}"
    kw: dict[str, Any] = {"http_status": reply.status, "server_message": detail, "path": "upload"}
    if reply.status == 403:
        return ForbiddenError(msg, **kw)
    if reply.status == 429:
        return RateLimitError(msg, **kw)
    if reply.status >= 500:
        return ServerError(msg, **kw)
    if reply.status == 400:
        return BadRequestError(msg, **kw)
    return APIError(msg, **kw)


def _xml(text: str, tag: str) -> str | None:
    match = re.search(rf"<{tag}>([^<]{{0,200}})</{tag}>", text)
    return match.group(1) if match else None


__all__ = [
    "CHUNK",
    "AskUrls",
    "Confirm",
    "Done",
    "PutBytes",
    "PutFile",
    "Step",
    "UploadFlow",
    "Wait",
    "refusal",
]
