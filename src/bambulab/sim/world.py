"""The simulated cloud's whole in-memory state and the lookups every endpoint shares.

One :class:`World` per simulator start. It owns the clock, the token issuer,
the URL signer, the rate limiter, the fault book and every record (accounts,
devices, history, files...). Endpoints read and change it from the server's
event loop, one request at a time with no ``await`` in between, so no lock
is needed around records; the parts other threads touch (clock, faults,
token issuing, reading stored objects) are thread-safe on their own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import BinaryIO, Literal

from .clock import SimClock
from .config import SimConfig
from .errors import device_not_found, rate_limited, unauthorized
from .faults import FaultBook
from .fleet import populate
from .ratelimit import RateLimiter
from .records import (
    Account,
    CloudFile,
    CloudJob,
    Device,
    Message,
    Notification,
    OutboxMessage,
    PendingCode,
    Project,
    SlicerSetting,
    StoredObject,
    Task,
    TfaTicket,
    Upload,
)
from .s3 import ObjectStore, Presigner
from .tokens import TokenError, TokenIssuer

log = logging.getLogger("bambulab.sim")


class World:
    """Everything the simulated cloud knows; built from a :class:`SimConfig`."""

    def __init__(self, config: SimConfig, clock: SimClock | None = None) -> None:
        self.config = config
        self.clock = clock or SimClock()
        self.started_at = self.clock.now()
        self.tokens = TokenIssuer(self.clock, config.token_ttl)
        self.limiter = RateLimiter(config.rate_limits, self.clock)
        self.presigner = Presigner()
        self.faults = FaultBook()

        self.accounts: dict[int, Account] = {}
        self.devices: dict[str, Device] = {}
        self.tasks: dict[int, Task] = {}
        self.projects: dict[str, Project] = {}
        self.messages: dict[int, Message] = {}
        self.notifications: dict[int, Notification] = {}
        self.settings: dict[str, SlicerSetting] = {}
        # The simulated S3 bucket: objects are files in a private directory.
        self.objects = ObjectStore()
        self.uploads: dict[str, Upload] = {}
        self.files: dict[str, CloudFile] = {}
        self.jobs: dict[str, CloudJob] = {}
        self.codes: dict[int, PendingCode] = {}
        self.tfa_tickets: dict[str, TfaTicket] = {}
        self.outbox: list[OutboxMessage] = []
        # Told after a printer is bound or unbound: brokers that keep their own
        # access lists (mosquitto's ACL file) rewrite them at once.
        self.binding_listeners: list[Callable[[], None]] = []
        self._serial = 0
        populate(self)

    def set_owner(self, device: Device, uid: int | None) -> None:
        """Bind ``device`` to ``uid`` (``None``: unbind it), and tell the brokers."""
        device.owner = uid
        for listener in list(self.binding_listeners):
            listener()

    # --- accounts and tokens ------------------------------------------------

    @property
    def demo_account(self) -> Account:
        """The account the demo and the export lines use."""
        for account in self.accounts.values():
            if account.demo:
                return account
        return next(iter(self.accounts.values()))

    def find_account(self, login: str) -> Account | None:
        """The account whose email (any case) or phone number is ``login``."""
        wanted = normalize_login(login)
        if not wanted:
            return None
        for account in self.accounts.values():
            if account.email and account.email.lower() == wanted:
                return account
            if account.phone and normalize_login(account.phone) == wanted:
                return account
        return None

    def issue_token(self, account: Account) -> str:
        """A fresh access token for ``account``."""
        return self.tokens.issue(account.uid)

    def authenticate(self, token: str) -> Account:
        """The account a bearer token belongs to; 401 with 1001/1002 otherwise."""
        try:
            claims = self.tokens.verify(token)
        except TokenError as exc:
            raise unauthorized(exc.code, exc.reason) from None
        account = self.accounts.get(claims.uid)
        if account is None:
            raise unauthorized(1001, "Invalid token")
        return account

    # --- rate limits ---------------------------------------------------------

    def check_rate(self, categories: tuple[str, ...], key: str) -> None:
        """Count a request against ``categories``; raise 429 when one is exhausted."""
        wait = self.limiter.check(categories, key)
        if wait is not None:
            log.info("rate limit: %s for %s, retry after %d s", "/".join(categories), key, wait)
            raise rate_limited(wait)

    # --- devices -------------------------------------------------------------

    def devices_of(self, uid: int) -> list[Device]:
        """Devices bound to ``uid``, in binding order."""
        return [device for device in self.devices.values() if device.owner == uid]

    def owned_device(self, uid: int, dev_id: str | None) -> Device:
        """The device if ``uid`` owns it; 404/1003 without telling whether it exists."""
        device = self.devices.get((dev_id or "").strip())
        if device is None or device.owner != uid:
            raise device_not_found()
        return device

    # --- ids, outbox, objects ------------------------------------------------

    def next_serial(self) -> int:
        """A process-unique counter for ids that only need to be distinct."""
        self._serial += 1
        return self._serial

    def next_task_id(self) -> int:
        """History ids grow with time, which is what makes the ``after`` cursor work."""
        return max(self.tasks, default=50_000_000) + 1

    def send(
        self, kind: Literal["email", "sms", "tfa"], to: str, code: str, ttl: float
    ) -> OutboxMessage:
        """Record a code as sent and log it: the simulator is where codes are shown."""
        now = self.clock.now()
        message = OutboxMessage(to=to, kind=kind, code=code, sent_at=now, expires_at=now + ttl)
        self.outbox.append(message)
        log.info("outbox: %s code %s for %s (expires in %d s)", kind, code, to, round(ttl))
        return message

    def store(self, key: str, data: bytes) -> StoredObject:
        """Put bytes into the object store (small objects: samples, tests)."""
        return self.objects.store(key, data)

    def store_file(self, key: str, src_path: str | os.PathLike[str]) -> StoredObject:
        """Copy a file into the object store, streaming; returns its record (size, MD5)."""
        return self.objects.store_file(key, src_path)

    def open_object(self, key: str) -> BinaryIO:
        """Open a stored object read-only; usable from any thread. KeyError if absent."""
        return self.objects.open(key)

    def close(self) -> None:
        """Release what lives outside memory (the object store's directory)."""
        self.objects.close()

    def presigned_url(self, base: str, method: str, key: str) -> str:
        """A URL valid for ``config.url_ttl`` seconds of simulated time."""
        expires = int(self.clock.now()) + self.config.url_ttl
        return self.presigner.url(base, method, key, expires)


def normalize_login(login: str) -> str:
    """Emails compare case-insensitively; phone numbers ignore spaces and dashes."""
    text = login.strip()
    if "@" in text:
        return text.lower()
    return "".join(ch for ch in text if ch not in " -()")
