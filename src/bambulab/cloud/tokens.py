"""The saved token: the seed's ``~/.bambu_token`` JSON file ``{region, token}``.

Written with mode 0600 from the first byte and replaced atomically, so a
crash never leaves a half-written or world-readable token behind.
``BAMBU_TOKEN_FILE`` moves the file; ``BAMBU_TOKEN`` (read by the clients)
overrides it altogether.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError
from ..regions import normalize_region

log = logging.getLogger("bambulab.auth")

ENV_TOKEN_FILE = "BAMBU_TOKEN_FILE"
DEFAULT_TOKEN_FILE = "~/.bambu_token"


@dataclass(frozen=True, slots=True)
class SavedToken:
    """A token as stored: its region, and the refresh token when known."""

    token: str
    region: str = "global"
    refresh_token: str | None = None

    def __repr__(self) -> str:
        return f"SavedToken(region={self.region!r}, token=***)"


class TokenStore:
    """Reads and writes the token file."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        chosen = path or os.environ.get(ENV_TOKEN_FILE) or DEFAULT_TOKEN_FILE
        self.path = Path(chosen).expanduser()

    def load(self) -> SavedToken | None:
        """The saved token, or ``None`` when there is none (or it is unreadable)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the token file %s: %s", self.path, exc.strerror)
            return None
        try:
            data = json.loads(text)
        except ValueError:
            # The seed's tools also accept a file holding just the token.
            raw = text.strip()
            return SavedToken(raw) if raw and " " not in raw else None
        if not isinstance(data, dict) or not isinstance(data.get("token"), str):
            log.warning("the token file %s has no token; ignoring it", self.path)
            return None
        try:
            region = normalize_region(data.get("region"))
        except ConfigurationError:
            region = "global"
        refresh = data.get("refresh_token")
        return SavedToken(
            data["token"].strip(), region, refresh if isinstance(refresh, str) else None
        )

    def save(self, token: str, region: str = "global", refresh_token: str | None = None) -> Path:
        """Write the token file atomically with mode 0600; returns its path."""
        if not token:
            raise ConfigurationError("refusing to save an empty token")
        data: dict[str, str] = {"region": normalize_region(region), "token": token}
        if refresh_token and refresh_token != token:
            data["refresh_token"] = refresh_token
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file 0600 before a byte is written.
        fd, tmp = tempfile.mkstemp(prefix=".bambu_token.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return self.path

    def delete(self) -> bool:
        """Remove the token file; whether there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
