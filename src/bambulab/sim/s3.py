"""Pre-signed URLs in the style of S3 signature version 2.

The cloud hands out URLs whose query carries ``AWSAccessKeyId``, ``Expires``
and ``Signature`` (PROTOCOL.md §1.3). The signature covers the method, the
``Content-MD5`` and ``Content-Type`` headers exactly as sent, the expiry and
the resource path, so the classic client mistakes fail here as they do on
S3: a wrong method, an added ``Content-Type``, an altered URL or an expired
one answer 403 with an S3 XML error body.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import os
import secrets
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

from .records import StoredObject

S3_PREFIX = "/sim-s3"
BUCKET = "bbl-sim-cloud-storage"
# Deliberately not shaped like a real AWS key id, so no scanner mistakes it for one.
ACCESS_KEY_ID = "BAMBUSIMULATORKEY"


class S3Error(Exception):
    """An S3-style refusal, rendered as the XML body S3 sends."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def xml(self, resource: str, request_id: str) -> str:
        """The ``<Error>`` document for this refusal."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(self.code)}</Code>"
            f"<Message>{escape(self.message)}</Message>"
            f"<Resource>{escape(resource)}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>"
        )


class Presigner:
    """Signs and checks URLs with a secret made fresh for every simulator start."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def signature(
        self,
        method: str,
        resource: str,
        expires: int,
        content_type: str = "",
        content_md5: str = "",
    ) -> str:
        """Base64 HMAC-SHA1 over the S3 v2 string-to-sign."""
        string_to_sign = f"{method}\n{content_md5}\n{content_type}\n{expires}\n{resource}"
        mac = hmac.new(self._secret, string_to_sign.encode("utf-8"), hashlib.sha1).digest()
        return base64.b64encode(mac).decode("ascii")

    def url(self, base: str, method: str, key: str, expires: int) -> str:
        """A pre-signed URL for ``method`` on ``key``; the signer includes no headers."""
        resource = f"/{BUCKET}/{key}"
        query = urlencode(
            {
                "AWSAccessKeyId": ACCESS_KEY_ID,
                "Expires": str(expires),
                "Signature": self.signature(method, resource, expires),
            }
        )
        return f"{base}{S3_PREFIX}{quote(resource)}?{query}"

    def check(
        self,
        method: str,
        resource: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        now: float,
    ) -> None:
        """Raise :class:`S3Error` unless the request matches what was signed."""
        signature = query.get("Signature")
        expires_text = query.get("Expires")
        access_key = query.get("AWSAccessKeyId")
        if not signature or not expires_text or not access_key:
            raise S3Error(
                403,
                "AccessDenied",
                "Query-string authentication requires the Signature, Expires and "
                "AWSAccessKeyId parameters",
            )
        if access_key != ACCESS_KEY_ID:
            raise S3Error(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            )
        try:
            expires = int(expires_text)
        except ValueError:
            raise S3Error(
                403, "AccessDenied", "Invalid date (should be seconds since epoch)"
            ) from None
        expected = self.signature(
            method,
            resource,
            expires,
            content_type=headers.get("content-type", ""),
            content_md5=headers.get("content-md5", ""),
        )
        if not hmac.compare_digest(expected, signature):
            raise S3Error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you "
                "provided. Check your key and signing method.",
            )
        if now > expires:
            raise S3Error(403, "AccessDenied", "Request has expired")


CHUNK = 1 << 20


class ObjectStore:
    """The bucket's objects as files in a private temporary directory.

    The directory appears with the first object and is removed by
    :meth:`close` (the simulator's stop) or, failing that, when the store is
    garbage-collected or the process exits. Every object is written to a
    temporary file first and renamed into place complete, so a reader never
    sees half an object; records are immutable, so :meth:`open` works from
    any thread while the event loop stores new objects.
    """

    def __init__(self) -> None:
        self._root: Path | None = None
        self._objects: dict[str, StoredObject] = {}
        self._lock = threading.Lock()
        self._serial = itertools.count(1)
        self._cleanup: Callable[[], object] | None = None

    @property
    def root(self) -> Path:
        """The store's directory, created on first use."""
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="bambu-sim-s3-"))
                self._cleanup = weakref.finalize(self, _remove_tree, str(self._root))
            return self._root

    def get(self, key: str) -> StoredObject | None:
        """The object stored under ``key``, or None."""
        with self._lock:
            return self._objects.get(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._objects

    def __getitem__(self, key: str) -> StoredObject:
        stored = self.get(key)
        if stored is None:
            raise KeyError(key)
        return stored

    def keys(self) -> list[str]:
        """Every key, in storing order."""
        with self._lock:
            return list(self._objects)

    def temp_path(self) -> Path:
        """A fresh path inside the store for an object being written."""
        return self.root / f"incoming-{next(self._serial)}"

    def commit(self, key: str, written: Path, size: int, md5: str) -> StoredObject:
        """Rename a completely written temporary file into place as ``key``."""
        final = self.root / f"object-{next(self._serial)}"
        os.replace(written, final)
        stored = StoredObject(key=key, path=final, size=size, md5=md5)
        with self._lock:
            old = self._objects.get(key)
            self._objects[key] = stored
        if old is not None:
            # Readers holding the old file open keep reading it (POSIX unlink).
            with contextlib.suppress(OSError):
                old.path.unlink()
        return stored

    def store(self, key: str, data: bytes) -> StoredObject:
        """Store bytes under ``key``."""
        temp = self.temp_path()
        temp.write_bytes(data)
        return self.commit(
            key, temp, len(data), hashlib.md5(data, usedforsecurity=False).hexdigest()
        )

    def store_file(self, key: str, source: str | os.PathLike[str]) -> StoredObject:
        """Copy a file into the store under ``key``, hashing it on the way."""
        temp = self.temp_path()
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            with open(source, "rb") as src, temp.open("wb") as dst:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return self.commit(key, temp, size, digest.hexdigest())

    def open(self, key: str) -> BinaryIO:
        """Open the object's file for reading (from any thread); KeyError if absent."""
        return self[key].path.open("rb")

    def discard(self, path: Path) -> None:
        """Remove a temporary file that will not be committed."""
        with contextlib.suppress(OSError):
            path.unlink()

    def close(self) -> None:
        """Remove every object and the directory (safe to call twice)."""
        with self._lock:
            self._objects.clear()
            cleanup, self._cleanup, self._root = self._cleanup, None, None
        if cleanup is not None:
            cleanup()


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
