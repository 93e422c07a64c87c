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
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

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
