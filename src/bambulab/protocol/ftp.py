"""FTP, sans-IO: replies (multi-line included), passive addresses, listings, paths.

What a printer's FTPS server (vsftpd on the real ones, PROTOCOL.md §3)
answers, turned into values: :class:`ReplyParser` takes bytes as they come
and yields :class:`Reply` objects, with every line and every reply capped so
a hostile server cannot make the client hold an unbounded answer;
:func:`parse_pasv`/:func:`parse_epsv` read the data port; :func:`parse_list`
turns ``LIST`` (unix ``ls -l``) and ``NLST`` lines into :class:`RemoteEntry`
rows. The X1 answers ``NLST`` with full paths and the P1 with bare names
(§3): both become the same entries (name = last component, path = the
directory joined with it). No sockets here; ``bambulab.local.ftps`` drives it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import ConfigurationError, ProtocolError

# One reply line (RFC 959 lines are short; vsftpd's longest are ~100 bytes).
MAX_LINE = 8192
# Lines of one multi-line reply (FEAT, HELP, a banner).
MAX_REPLY_LINES = 200
# One listing line, and the lines of one listing (a card holds thousands of files at most).
MAX_LIST_LINE = 4096
MAX_LIST_ENTRIES = 100_000

_CODE = re.compile(rb"^([1-5][0-9]{2})([ -])(.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Reply:
    """One server reply: the 3-digit code and its text (lines joined by newlines)."""

    code: int
    text: str

    @property
    def kind(self) -> int:
        """The first digit: 1 preliminary, 2 done, 3 more needed, 4 transient, 5 refused."""
        return self.code // 100

    @property
    def line(self) -> str:
        """The last line's text without the code: what to quote in a message."""
        last = self.text.rsplit("\n", 1)[-1]
        return last[4:] if len(last) >= 4 and last[:3].isdigit() else last

    def __str__(self) -> str:
        return f"{self.code} {self.line}"


class ReplyParser:
    """Bytes in, replies out; lines over :data:`MAX_LINE` or replies over
    :data:`MAX_REPLY_LINES` lines raise :class:`ProtocolError`.

    A multi-line reply starts ``123-`` and ends at a line ``123 `` with the
    same code (RFC 959 §4.2); lines between may say anything.
    """

    def __init__(self, server: str = "") -> None:
        self._buffer = bytearray()
        self._pending: list[str] = []
        self._code: bytes | None = None
        self._server = server

    def feed(self, data: bytes) -> list[Reply]:
        """Add received bytes; return the replies they complete (usually none or one)."""
        self._buffer += data
        done: list[Reply] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    raise self._error("a reply line longer than the limit")
                return done
            if end > MAX_LINE:
                raise self._error("a reply line longer than the limit")
            raw = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            reply = self._line(raw)
            if reply is not None:
                done.append(reply)

    def _line(self, raw: bytes) -> Reply | None:
        text = raw.decode("utf-8", "replace")
        match = _CODE.match(raw)
        if self._code is None:
            if match is None:
                raise self._error(f"not an FTP reply: {text[:40]!r}")
            code, sep = match.group(1), match.group(2)
            if sep == b" ":
                return Reply(int(code), text)
            self._code = code
            self._pending = [text]
            return None
        self._pending.append(text)
        if len(self._pending) > MAX_REPLY_LINES:
            raise self._error("a multi-line reply longer than the limit")
        if match is not None and match.group(1) == self._code and match.group(2) == b" ":
            reply = Reply(int(self._code), "\n".join(self._pending))
            self._code, self._pending = None, []
            return reply
        return None

    def _error(self, what: str) -> ProtocolError:
        where = f" from {self._server}" if self._server else ""
        return ProtocolError(f"FTP server{where} sent {what}", url=self._server or None)


_PASV = re.compile(r"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
_EPSV = re.compile(r"\(([!-~])\1\1(\d{1,5})\1\)")


def parse_pasv(text: str) -> tuple[str, int]:
    """``227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`` → (host, port)."""
    match = _PASV.search(text)
    if match is None:
        raise ProtocolError(f"unreadable PASV reply: {text[:60]!r}")
    parts = [int(v) for v in match.groups()]
    if any(p > 255 for p in parts):
        raise ProtocolError(f"unreadable PASV reply: {text[:60]!r}")
    port = parts[4] * 256 + parts[5]
    if port == 0:
        raise ProtocolError("PASV reply names port 0")
    return ".".join(str(p) for p in parts[:4]), port


def parse_epsv(text: str) -> int:
    """``229 Entering Extended Passive Mode (|||port|)`` → port (RFC 2428)."""
    match = _EPSV.search(text)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ProtocolError(f"unreadable EPSV reply: {text[:60]!r}")
    return int(match.group(2))


def parse_size(reply: Reply) -> int:
    """``213 <bytes>`` → bytes."""
    text = reply.line.strip()
    if reply.code != 213 or not text.isdigit():
        raise ProtocolError(f"unreadable SIZE reply: {str(reply)[:60]!r}")
    return int(text)


# --- paths -------------------------------------------------------------------------------


def check_path(path: str) -> str:
    """A remote path safe to put on a command line: no CR, LF or NUL (command injection)."""
    if not path or any(c in path for c in "\r\n\0"):
        raise ConfigurationError(f"not a usable path on the printer: {path[:40]!r}")
    return path


def normalise(path: str) -> str:
    """An absolute remote path: ``/`` separators, no ``.`` or empty parts, ``..`` resolved."""
    parts: list[str] = []
    for part in check_path(path).replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def join(directory: str, name: str) -> str:
    """``name`` inside ``directory`` (``name`` may itself be absolute: X1 listings)."""
    if name.startswith("/"):
        return normalise(name)
    return normalise(f"{directory}/{name}")


def split(path: str) -> tuple[str, str]:
    """(directory, name) of a remote path."""
    clean = normalise(path)
    head, _, tail = clean.rpartition("/")
    return head or "/", tail


# --- listings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    """One file or directory on the printer's card, however the server listed it.

    ``mtime`` is UTC when the listing gave a time (``ls -l`` lines without a
    year are read as the current year, as ``ls`` means them); ``None`` for
    bare ``NLST`` names. ``size`` is ``None`` when unknown.
    """

    name: str
    path: str
    size: int | None = None
    mtime: datetime | None = None
    is_dir: bool = False

    def as_dict(self) -> dict[str, object]:
        """The entry for ``--json``."""
        return {
            "name": self.name,
            "path": self.path,
            "size": self.size,
            "mtime": self.mtime.isoformat() if self.mtime else None,
            "is_dir": self.is_dir,
        }


_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
# perms links owner group size month day (time|year) name
_LS = re.compile(
    r"^([dlbcps-])[rwxsStT-]{9}[+@.]?\s+\d+\s+\S+\s+\S+\s+(\d+)\s+"
    r"([A-Za-z]{3})\s+(\d{1,2})\s+(\d{1,2}:\d{2}|\d{4})\s(.+)$"
)


def _ls_time(month: str, day: str, when: str, now: datetime) -> datetime | None:
    number = _MONTHS.get(month.lower())
    if number is None:
        return None
    try:
        if ":" in when:
            hour, minute = (int(v) for v in when.split(":"))
            stamp = datetime(now.year, number, int(day), hour, minute, tzinfo=UTC)
            # ``ls`` shows a time (no year) for the last six months: a date ahead
            # of now by more than a day belongs to last year.
            if (stamp - now).days > 1:
                stamp = stamp.replace(year=now.year - 1)
            return stamp
        return datetime(int(when), number, int(day), tzinfo=UTC)
    except ValueError:
        return None


def parse_list_line(line: str, directory: str, now: datetime | None = None) -> RemoteEntry | None:
    """One ``LIST`` line (``ls -l``) in ``directory``; ``None`` for ``total N`` and junk."""
    match = _LS.match(line.rstrip("\r\n"))
    if match is None:
        return None
    kind, size, month, day, when, name = match.groups()
    if kind == "l" and " -> " in name:
        name = name.split(" -> ", 1)[0]
    return _entry(
        directory,
        name,
        size=int(size),
        mtime=_ls_time(month, day, when, now or datetime.now(UTC)),
        is_dir=kind == "d",
    )


def _listed_path(directory: str, raw: str) -> str:
    """Where a listed name points: bare (P1), absolute (X1), or relative to the root
    with the listed directory in front (``cache/a.3mf`` when listing ``/cache``)."""
    if not raw.startswith("/") and "/" in raw.strip("/"):
        rooted = normalise("/" + raw)
        if directory != "/" and rooted.startswith(directory + "/"):
            return rooted
    return join(directory, raw)


def _entry(directory: str, raw: str, **fields: object) -> RemoteEntry | None:
    path = _listed_path(directory, raw) if raw.strip() else ""
    name = path.rsplit("/", 1)[-1]
    if not name or name in (".", ".."):
        return None
    return RemoteEntry(name=name, path=path, **fields)  # type: ignore[arg-type]


def parse_list(
    lines: Iterable[str], directory: str, *, now: datetime | None = None
) -> list[RemoteEntry]:
    """A whole ``LIST`` answer; lines that are not ``ls -l`` rows are read as ``NLST`` names.

    Bare names (P1) and full paths (X1) give the same entries; the order is
    the server's.
    """
    base = normalise(directory)
    found: list[RemoteEntry] = []
    for count, line in enumerate(lines):
        if count >= MAX_LIST_ENTRIES:
            raise ProtocolError("the listing is longer than the limit")
        if len(line) > MAX_LIST_LINE:
            raise ProtocolError("a listing line is longer than the limit")
        text = line.rstrip("\r\n")
        if not text or text.startswith("total "):
            continue
        entry = parse_list_line(text, base, now)
        if entry is None and not _LS_LIKE.match(text):
            entry = _entry(base, text)
        if entry is not None:
            found.append(entry)
    return found


_LS_LIKE = re.compile(r"^[dlbcps-][rwxsStT-]{9}\s")


def parse_nlst(lines: Iterable[str], directory: str) -> list[RemoteEntry]:
    """An ``NLST`` answer: names (P1) or full paths (X1), as entries without size or time."""
    base = normalise(directory)
    found: list[RemoteEntry] = []
    for count, line in enumerate(lines):
        if count >= MAX_LIST_ENTRIES:
            raise ProtocolError("the listing is longer than the limit")
        text = line.rstrip("\r\n")
        if text:
            entry = _entry(base, text)
            if entry is not None:
                found.append(entry)
    return found
