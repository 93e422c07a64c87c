"""The sans-IO FTP layer: replies (multi-line, split anywhere, capped), passive
addresses, paths (no command injection), and the listing forms of the X1
(full paths), the P1 (bare names) and ``ls -l``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bambulab.errors import ConfigurationError, ProtocolError
from bambulab.protocol import ftp


def feed_all(data: bytes, step: int) -> list[ftp.Reply]:
    parser = ftp.ReplyParser()
    out: list[ftp.Reply] = []
    for i in range(0, len(data), step):
        out.extend(parser.feed(data[i : i + step]))
    return out


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_replies_whatever_the_split(step: int) -> None:
    data = (
        b"220 (vsFTPd 3.0.3)\r\n"
        b"211-Features:\r\n EPSV\r\n PASV\r\n211 End\r\n"
        b"230-Welcome\r\n230-still\r\n230 Login successful.\r\n"
    )
    replies = feed_all(data, step)
    assert [r.code for r in replies] == [220, 211, 230]
    assert replies[1].text.splitlines() == ["211-Features:", " EPSV", " PASV", "211 End"]
    assert replies[2].line == "Login successful."
    assert str(replies[0]) == "220 (vsFTPd 3.0.3)"


def test_a_line_with_another_code_does_not_end_a_multiline_reply() -> None:
    parser = ftp.ReplyParser()
    assert parser.feed(b"220-hello\r\n123 not the end\r\n") == []
    (reply,) = parser.feed(b"220 end\r\n")
    assert reply.code == 220 and "123 not the end" in reply.text


@pytest.mark.parametrize(
    "data",
    [
        b"x" * (ftp.MAX_LINE + 1),  # no newline ever
        b"220 " + b"x" * (ftp.MAX_LINE + 1) + b"\r\n",
        b"hello there\r\n",  # not a reply
        b"220-a\r\n" + b"more\r\n" * (ftp.MAX_REPLY_LINES + 1),
    ],
)
def test_hostile_replies_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        feed_all(data, 4096)


def test_passive_addresses() -> None:
    assert ftp.parse_pasv("227 Entering Passive Mode (127,0,0,1,195,80).") == ("127.0.0.1", 50000)
    assert ftp.parse_epsv("229 Entering Extended Passive Mode (|||50001|)") == 50001
    for bad in ("227 nope", "227 (999,0,0,1,1,1)", "227 (1,2,3,4,0,0)"):
        with pytest.raises(ProtocolError):
            ftp.parse_pasv(bad)
    for bad in ("229 (|||0|)", "229 (|||70000|)", "229 nothing"):
        with pytest.raises(ProtocolError):
            ftp.parse_epsv(bad)


def test_paths_cannot_inject_commands() -> None:
    for bad in ("/a\r\nDELE /b", "/a\nb", "a\0b", ""):
        with pytest.raises(ConfigurationError):
            ftp.normalise(bad)
    assert ftp.normalise("cache//x/../a.3mf") == "/cache/a.3mf"
    assert ftp.normalise("/../../etc") == "/etc"
    assert ftp.split("/cache/a.3mf") == ("/cache", "a.3mf")
    assert ftp.split("/a.3mf") == ("/", "a.3mf")
    assert ftp.join("/cache", "a.3mf") == "/cache/a.3mf"


NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_ls_lines() -> None:
    lines = [
        "total 12",
        "drwxr-xr-x    2 0        0            4096 Nov 30 09:15 cache",
        "-rw-r--r--    1 0        0         1234567 Dec 01 10:02 Cube Plate 1.3mf",
        "-rw-r--r--    1 0        0              42 Jan 05  2024 old.gcode",
        "-rw-r--r--    1 0        0              10 Dec 25 10:00 future-is-last-year.gcode",
        "lrwxrwxrwx    1 0        0               4 Nov 30 09:15 link -> cache",
        "garbage that is not a listing",
    ]
    entries = ftp.parse_list(lines, "/", now=NOW)
    by = {e.name: e for e in entries}
    assert by["cache"].is_dir and by["cache"].path == "/cache"
    cube = by["Cube Plate 1.3mf"]
    assert (cube.size, cube.path, cube.is_dir) == (1234567, "/Cube Plate 1.3mf", False)
    assert cube.mtime == datetime(2026, 12, 1, 10, 2, tzinfo=UTC)
    assert by["old.gcode"].mtime == datetime(2024, 1, 5, tzinfo=UTC)
    assert by["future-is-last-year.gcode"].mtime.year == 2025  # type: ignore[union-attr]
    assert "link" in by
    # a line that is no ls row is read as a bare name (a server answering LIST like NLST)
    assert "garbage that is not a listing" in by


@pytest.mark.parametrize(
    "lines",
    [
        ["a.3mf", "b.gcode"],  # P1: bare names
        ["/cache/a.3mf", "/cache/b.gcode"],  # X1: full paths
        ["cache/a.3mf", "cache/b.gcode"],  # full paths relative to the root
    ],
)
def test_nlst_forms_give_the_same_entries(lines: list[str]) -> None:
    entries = ftp.parse_nlst(lines, "/cache")
    assert [(e.name, e.path) for e in entries] == [
        ("a.3mf", "/cache/a.3mf"),
        ("b.gcode", "/cache/b.gcode"),
    ]


def test_listings_are_capped() -> None:
    with pytest.raises(ProtocolError):
        ftp.parse_list(["x" * (ftp.MAX_LIST_LINE + 1)], "/")
    with pytest.raises(ProtocolError):
        ftp.parse_nlst(("f" for _ in range(ftp.MAX_LIST_ENTRIES + 1)), "/")


def test_as_dict() -> None:
    (entry,) = ftp.parse_list(["-rw-r--r-- 1 0 0 5 Dec 01 10:02 a.3mf"], "/cache", now=NOW)
    assert entry.as_dict() == {
        "name": "a.3mf",
        "path": "/cache/a.3mf",
        "size": 5,
        "mtime": "2026-12-01T10:02:00+00:00",
        "is_dir": False,
    }
