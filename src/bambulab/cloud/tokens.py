"""The saved token: the seed's ``~/.bambu_token`` JSON file ``{region, token}``.

Written with mode 0600 from the first byte and replaced atomically, so a
crash never leaves a half-written or world-readable token behind.
``BAMBU_TOKEN_FILE`` moves the file; ``BAMBU_TOKEN`` (read by the clients)
overrides it altogether.

Reading is strict where leniency would mislead: a file that others can read
is fixed to 0600 with a warning (in the spirit of ssh, but repairing rather
than refusing: the token may already have leaked, and the person should know),
and a file that holds no token raises :class:`~bambulab.errors.TokenFileError`
naming the file, rather than passing for "not logged in".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError, TokenFileError
from ..paths import PRIVATE_FILE, private_dir
from ..regions import normalize_region

log = logging.getLogger("bambulab.auth")

# The environment variable that overrides the token file, for every client.
ENV_TOKEN = "BAMBU_TOKEN"
ENV_TOKEN_FILE = "BAMBU_TOKEN_FILE"
DEFAULT_TOKEN_FILE = "~/.bambu_token"
# The seed's tools also accept a file holding just the token (JWT or opaque).
_RAW_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")
_JSON_WORDS = frozenset({"null", "true", "false"})
# Larger than any token file: a bigger one is not ours.
MAX_TOKEN_FILE = 64 * 1024


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
        """The saved token, or ``None`` when there is no token file.

        Raises :class:`~bambulab.errors.TokenFileError` when the file exists
        but cannot be read or holds no token.
        """
        try:
            with open(self.path, "rb") as handle:
                self._make_private(os.fstat(handle.fileno()))
                data = handle.read(MAX_TOKEN_FILE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TokenFileError(
                f"cannot read the token file {self.path}: {exc.strerror}", path=str(self.path)
            ) from None
        if len(data) > MAX_TOKEN_FILE:
            raise self._corrupt(f"it is larger than {MAX_TOKEN_FILE // 1024} KiB")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise self._corrupt("it is not UTF-8 text") from None
        return self._parse(text)

    def _parse(self, text: str) -> SavedToken:
        raw = text.strip()
        if not raw:
            raise self._corrupt("it is empty")
        if _RAW_TOKEN.fullmatch(raw) and raw not in _JSON_WORDS and raw[0] not in "-0123456789":
            return SavedToken(raw)
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            # The decoder's message says where, never what: no token text leaks.
            where = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            raise self._corrupt(f"not JSON ({where})") from None
        except RecursionError:
            raise self._corrupt("not JSON (nested too deeply)") from None
        if not isinstance(data, dict):
            raise self._corrupt(f"expected a JSON object, found {_json_kind(data)}")
        token = data.get("token")
        if not isinstance(token, str) or not token.strip():
            raise self._corrupt('no "token" string in it')
        try:
            region = normalize_region(data.get("region"))
        except ConfigurationError:
            region = "global"
        refresh = data.get("refresh_token")
        return SavedToken(token.strip(), region, refresh if isinstance(refresh, str) else None)

    def _corrupt(self, why: str) -> TokenFileError:
        return TokenFileError(
            f"token file {self.path} is corrupt: {why}; run `bambu login`", path=str(self.path)
        )

    def _make_private(self, info: os.stat_result) -> None:
        """Fix a token file that group or others can read to 0600, saying so once."""
        loose = stat.S_IMODE(info.st_mode) & 0o077
        if not loose or os.name != "posix" or not stat.S_ISREG(info.st_mode):
            return
        try:
            os.chmod(self.path, PRIVATE_FILE)
        except OSError as exc:
            log.warning(
                "the token file %s is readable by others (mode %03o) and could not be "
                "made private: %s",
                self.path,
                stat.S_IMODE(info.st_mode),
                exc.strerror,
            )
            return
        log.warning(
            "the token file %s was open to others (mode %03o); changed it to 600",
            self.path,
            stat.S_IMODE(info.st_mode),
        )

    def save(self, token: str, region: str = "global", refresh_token: str | None = None) -> Path:
        """Write the token file atomically with mode 0600; returns its path."""
        if not token:
            raise ConfigurationError("refusing to save an empty token")
        data: dict[str, str] = {"region": normalize_region(region), "token": token}
        if refresh_token and refresh_token != token:
            data["refresh_token"] = refresh_token
        private_dir(self.path.parent)  # any directory made for it is 0700
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


def _json_kind(value: object) -> str:
    kinds = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def resolve_token(
    token: str | None = None, token_file: str | os.PathLike[str] | None = None
) -> str | None:
    """An explicit token, else ``BAMBU_TOKEN``, else the saved token file (or ``None``).

    A corrupt token file raises :class:`~bambulab.errors.TokenFileError`.
    """
    if token:
        return token.strip()
    env = os.environ.get(ENV_TOKEN, "").strip()
    if env:
        return env
    saved = TokenStore(token_file).load()
    return saved.token if saved else None
