"""The port-6000 camera stream, sans-IO: auth packet, frame decoder, URL helpers (PROTOCOL.md §4)."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bambulab.errors import ConfigurationError, ProtocolError
from bambulab.protocol.camera import (
    AUTH_SIZE,
    HEADER_SIZE,
    FrameDecoder,
    auth_packet,
    frame_header,
    is_jpeg,
    parse_auth_packet,
    rtsps_url,
    with_credentials,
    without_credentials,
)


def jpeg(body: bytes) -> bytes:
    return b"\xff\xd8" + body + b"\xff\xd9"


def framed(payload: bytes) -> bytes:
    return frame_header(len(payload)) + payload


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# --- the auth packet -------------------------------------------------------------------


def test_auth_packet_layout_byte_by_byte() -> None:
    packet = auth_packet("12345678")
    assert len(packet) == AUTH_SIZE == 80
    assert packet[0:4] == b"\x40\x00\x00\x00"  # u32 0x40, little-endian
    assert packet[4:8] == b"\x00\x30\x00\x00"  # u32 0x3000
    assert packet[8:16] == bytes(8)  # two u32 zeros
    assert packet[16:20] == b"bblp" and packet[20:48] == bytes(28)
    assert packet[48:56] == b"12345678" and packet[56:80] == bytes(24)


def test_auth_packet_round_trip_and_full_width_code() -> None:
    code = "a" * 32
    assert parse_auth_packet(auth_packet(code)) == ("bblp", code)
    assert parse_auth_packet(auth_packet("abcdefgh", user="other")) == ("other", "abcdefgh")


def test_long_code_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="longer than 32"):
        auth_packet("a" * 33)
    with pytest.raises(ConfigurationError, match="longer than 32"):
        auth_packet("é" * 17)  # 34 bytes in UTF-8


@pytest.mark.parametrize(
    ("packet", "why"),
    [
        (auth_packet("12345678")[:-1], "79 bytes"),
        (struct.pack("<IIII", 0x41, 0x3000, 0, 0) + bytes(64), "unknown header"),
        (struct.pack("<IIII", 0x40, 0x3000, 0, 0) + b"\xff" * 64, "not text"),
    ],
)
def test_bad_auth_packets(packet: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        parse_auth_packet(packet)


# --- the frame header and decoder ------------------------------------------------------


def test_frame_header_layout() -> None:
    assert frame_header(0x01020304) == bytes.fromhex("04030201000000000100000000000000")
    assert len(frame_header(1)) == HEADER_SIZE


def test_one_byte_at_a_time() -> None:
    frames = [jpeg(b"a" * 100), jpeg(b"b"), jpeg(bytes(range(256)) * 40)]
    stream = b"".join(framed(f) for f in frames)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(len(stream)):
        got += decoder.feed(stream[i : i + 1])
    assert got == frames
    assert decoder.frames == 3 and not decoder.mid_frame and decoder.pending == 0


@settings(max_examples=200, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_any_split_yields_the_same_frames(bodies: list[bytes], cuts: list[int]) -> None:
    frames = [jpeg(body) for body in bodies]
    stream = b"".join(framed(f) for f in frames)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for chunk in split(stream, cuts):
        got += decoder.feed(chunk)
    assert got == frames
    assert not decoder.mid_frame


@pytest.mark.parametrize("keep", [1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 5])
def test_truncated_frame_is_mid_frame_and_no_frame(keep: int) -> None:
    data = framed(jpeg(b"x" * 50))
    decoder = FrameDecoder()
    assert decoder.feed(data[:keep]) == []
    assert decoder.mid_frame
    assert decoder.frames == 0


def test_frames_arrive_as_soon_as_complete() -> None:
    first, second = jpeg(b"1"), jpeg(b"22")
    decoder = FrameDecoder()
    assert decoder.feed(framed(first) + framed(second)[:3]) == [first]
    assert decoder.mid_frame
    assert decoder.feed(framed(second)[3:]) == [second]


@pytest.mark.parametrize("size", [0, 1001])
def test_zero_and_oversize_headers_are_refused(size: int) -> None:
    decoder = FrameDecoder(max_frame=1000)
    with pytest.raises(ProtocolError, match=f"announces {size} bytes"):
        decoder.feed(frame_header(size))
    with pytest.raises(ProtocolError):  # the stream stays broken
        decoder.feed(framed(jpeg(b"ok")))


def test_size_at_the_cap_is_taken() -> None:
    payload = jpeg(b"z" * 996)
    assert FrameDecoder(max_frame=1000).feed(framed(payload)) == [payload]


@pytest.mark.parametrize(
    "payload", [b"not a jpeg at all", b"\xff\xd8 no end", b"no start \xff\xd9", b"\xff\xd9"]
)
def test_non_jpeg_payloads_are_refused(payload: bytes) -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="not a JPEG"):
        decoder.feed(framed(payload))


def test_is_jpeg() -> None:
    assert is_jpeg(jpeg(b"")) and is_jpeg(memoryview(jpeg(b"x")))
    assert not is_jpeg(b"\xff\xd8\xff") and not is_jpeg(b"")


# --- URLs ------------------------------------------------------------------------------


def test_rtsps_url() -> None:
    assert rtsps_url("192.168.1.5") == "rtsps://192.168.1.5:322/streaming/live/1"
    assert rtsps_url("fe80::1", 8322) == "rtsps://[fe80::1]:8322/streaming/live/1"


def test_credentials_go_in_encoded_and_come_out() -> None:
    url = rtsps_url("10.0.0.2")
    secret = with_credentials(url, "a:b@c/d")
    assert secret == "rtsps://bblp:a%3Ab%40c%2Fd@10.0.0.2:322/streaming/live/1"
    assert without_credentials(secret) == url
    assert without_credentials(url) == url
    ipv6 = with_credentials(rtsps_url("fe80::1"), "12345678")
    assert ipv6 == "rtsps://bblp:12345678@[fe80::1]:322/streaming/live/1"
    assert "12345678" not in without_credentials(ipv6)
