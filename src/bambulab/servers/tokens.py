"""Tokens the servers issue to their own clients: scoped, per-printer, expiring, stored hashed.

A token reads ``bbt_<id>_<secret>``: the id finds the row, the secret (32
random bytes, URL-safe) is checked against its SHA-256, so the store never
holds anything that opens the server (a high-entropy secret needs no slow
hash; :func:`hmac.compare_digest` keeps the check constant-time). The secret
is returned once, by :meth:`TokenStore.create`, and never again.

Scopes are ordered: ``read`` < ``control`` < ``admin``; a token allows its
scope and those below. ``printers`` is an allowlist of serials (empty: every
printer). The Bambu account token the servers use is not here: it stays in
the server's own token file, and no client of the server ever sees it.

Embedded default: SQLite at ``$XDG_STATE_HOME/bambulab/servers/tokens.sqlite3``
(``~/.local/state/...``), the directory 0700 and the file 0600. One short
connection per call, so threads and worker processes share the file safely.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import AuthenticationError, ConfigurationError
from ..paths import PRIVATE_FILE, private_dir

Scope = Literal["read", "control", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "control", "admin")
PREFIX = "bbt_"
ENV_STORE = "BAMBU_TOKEN_STORE"
# last_used is written at most this often per token (a busy client must not
# turn every request into a write).
LAST_USE_EVERY = 60.0

_TOKEN = re.compile(r"bbt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    scope TEXT NOT NULL,
    printers TEXT NOT NULL,
    label TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    last_used REAL,
    revoked INTEGER NOT NULL DEFAULT 0
)
"""


class ServerTokenError(AuthenticationError):
    """A token presented to a server is unknown, malformed, expired, revoked or out of scope."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """What the store knows of a token (never the secret)."""

    id: str
    scope: Scope
    printers: tuple[str, ...]
    label: str
    created: float
    expires: float | None
    last_used: float | None
    revoked: bool

    def expired(self, now: float | None = None) -> bool:
        """Whether the expiry has passed."""
        return self.expires is not None and (now or time.time()) >= self.expires

    def allows(self, scope: Scope, printer: str | None = None) -> bool:
        """Whether this token may act at ``scope`` (on ``printer``, when one is named)."""
        if SCOPES.index(self.scope) < SCOPES.index(scope):
            return False
        return printer is None or not self.printers or printer in self.printers

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready row for ``bambu serve token list --json``."""
        return {
            "id": self.id,
            "scope": self.scope,
            "printers": list(self.printers),
            "label": self.label,
            "created": self.created,
            "expires": self.expires,
            "last_used": self.last_used,
            "revoked": self.revoked,
        }


def default_store_path() -> Path:
    """``BAMBU_TOKEN_STORE``, else ``$XDG_STATE_HOME/bambulab/servers/tokens.sqlite3``."""
    chosen = os.environ.get(ENV_STORE, "").strip()
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_STATE_HOME", "").strip() or str(Path.home() / ".local" / "state")
    return Path(base) / "bambulab" / "servers" / "tokens.sqlite3"


def parse_duration(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"2w"``, ``"45s"`` or plain seconds, as seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or float(match.group(1)) <= 0:
        raise ConfigurationError(
            f"not a duration: {text.strip()[:40]!r} (say 30d, 12h, 90m, 2w or seconds)"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


class TokenStore:
    """The servers' issued tokens in one SQLite file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self._local = threading.local()
        private_dir(self.path.parent)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
        os.chmod(self.path, PRIVATE_FILE)
        with self._db() as db:
            db.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r})"

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection, kept open: a check is one indexed SELECT.

        Autocommit: every SELECT reads what is committed at that moment, so a
        token revoked by another process is refused from the next request on.
        Opening a connection (and taking the write lock) per check cost most
        of the proxy's own time per request.
        """
        local = self._local
        db: sqlite3.Connection | None = getattr(local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            local.db = db
        return db

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def create(
        self,
        scope: Scope,
        *,
        printers: tuple[str, ...] | list[str] = (),
        expires_in: float | None = None,
        label: str = "",
    ) -> tuple[str, IssuedToken]:
        """A new token: ``(secret token, its row)``. The secret is not kept: show it now."""
        if scope not in SCOPES:
            raise ConfigurationError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if expires_in is not None and expires_in <= 0:
            raise ConfigurationError("a token's lifetime must be positive")
        wanted = tuple(dict.fromkeys(p.strip() for p in printers if p.strip()))
        now = time.time()
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        row = IssuedToken(
            id=token_id,
            scope=scope,
            printers=wanted,
            label=label.strip()[:200],
            created=now,
            expires=None if expires_in is None else now + expires_in,
            last_used=None,
            revoked=False,
        )
        with self._db() as db:
            db.execute(
                "INSERT INTO tokens (id, digest, scope, printers, label, created, expires) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    row.id,
                    _digest(secret),
                    row.scope,
                    ",".join(row.printers),
                    row.label,
                    row.created,
                    row.expires,
                ),
            )
        return f"{PREFIX}{token_id}_{secret}", row

    def tokens(self) -> list[IssuedToken]:
        """Every token, newest first (revoked and expired ones included, marked)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT id, scope, printers, label, created, expires, last_used, revoked "
                "FROM tokens ORDER BY created DESC"
            ).fetchall()
        return [_row(r) for r in rows]

    def revoke(self, token_id: str) -> bool:
        """Revoke a token by id (or by the token itself); whether one was revoked now."""
        match = _TOKEN.fullmatch(token_id.strip())
        wanted = match.group(1) if match else token_id.strip()
        with self._db() as db:
            done = db.execute(
                "UPDATE tokens SET revoked = 1 WHERE id = ? AND revoked = 0", (wanted,)
            )
            return done.rowcount > 0

    def verify(self, token: str, scope: Scope = "read", printer: str | None = None) -> IssuedToken:
        """The row of a valid ``token`` allowed ``scope`` (on ``printer``); ServerTokenError if not.

        The message never repeats the token. A successful check records the
        time of use (at most once a minute per token).
        """
        match = _TOKEN.fullmatch(token.strip())
        if match is None:
            raise ServerTokenError("not a token this server issued")
        token_id, secret = match.groups()
        now = time.time()
        found = (
            self._reader()
            .execute(
                "SELECT id, scope, printers, label, created, expires, last_used, revoked, digest "
                "FROM tokens WHERE id = ?",
                (token_id,),
            )
            .fetchone()
        )
        if found is None or not hmac.compare_digest(found[8], _digest(secret)):
            raise ServerTokenError("unknown token")
        row = _row(found[:8])
        if row.revoked:
            raise ServerTokenError(f"token {row.id} was revoked")
        if row.expired(now):
            raise ServerTokenError(f"token {row.id} has expired")
        if not row.allows(scope, printer):
            where = f" on printer {printer}" if printer and row.printers else ""
            raise ServerTokenError(f"token {row.id} ({row.scope}) may not {scope}{where}")
        if row.last_used is None or now - row.last_used >= LAST_USE_EVERY:
            with self._db() as db:
                db.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (now, row.id))
        return row


def _row(values: tuple[Any, ...]) -> IssuedToken:
    token_id, scope, printers, label, created, expires, last_used, revoked = values
    return IssuedToken(
        id=str(token_id),
        scope=scope if scope in SCOPES else "read",
        printers=tuple(p for p in str(printers).split(",") if p),
        label=str(label),
        created=float(created),
        expires=None if expires is None else float(expires),
        last_used=None if last_used is None else float(last_used),
        revoked=bool(revoked),
    )
