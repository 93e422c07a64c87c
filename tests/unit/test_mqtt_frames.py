"""MQTT packet framing over a buffer (``protocol.mqtt_frames``): bytes in, boundaries out."""

from __future__ import annotations

import pytest

from bambulab.protocol.mqtt_frames import (
    MAX_PACKET,
    FrameError,
    is_qos0_publish,
    next_packet,
    publish_parts,
    remaining_length,
)


def publish(topic: str, payload: bytes, first: int = 0x30) -> bytes:
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name + payload
    return bytes([first]) + remaining_length(len(body)) + body


def test_a_whole_packet_is_found_and_every_prefix_of_it_is_incomplete() -> None:
    packet = publish("device/01P00A000000001/report", b"x" * 300)  # a 2-byte remaining length
    assert next_packet(packet) == (0x30, 3, len(packet))
    for cut in range(len(packet)):
        assert next_packet(packet[:cut]) is None
    assert next_packet(bytearray(packet + b"\xd0")) == (0x30, 3, len(packet))


@pytest.mark.parametrize("size", [0, 127, 128, 16383, 16384, 2_097_151, 2_097_152])
def test_remaining_lengths_of_one_to_four_bytes(size: int) -> None:
    head = b"\x30" + remaining_length(size)
    found = next_packet(head + b"\x00" * size)
    assert found == (0x30, len(head), len(head) + size)


def test_a_fifth_length_byte_or_a_size_over_the_cap_is_refused() -> None:
    with pytest.raises(FrameError, match="longer than 4 bytes"):
        next_packet(b"\x30\xff\xff\xff\xff\x01")
    with pytest.raises(FrameError, match=f"the limit is {MAX_PACKET}"):
        next_packet(b"\x30" + remaining_length(MAX_PACKET + 1))  # refused from the header alone
    with pytest.raises(FrameError, match="the limit is 10"):
        next_packet(b"\x30\x0b", limit=10)


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (0x30, True),  # QoS 0
        (0x31, True),  # QoS 0, retained
        (0x32, False),  # QoS 1: paho acknowledges it
        (0x34, False),  # QoS 2
        (0x3A, False),  # QoS 1, DUP
        (0x20, False),  # CONNACK
        (0x90, False),  # SUBACK
        (0xD0, False),  # PINGRESP
    ],
)
def test_only_qos0_publishes_are_taken(first: int, expected: bool) -> None:
    assert is_qos0_publish(first) is expected


def test_publish_parts_split_topic_and_payload() -> None:
    packet = publish("device/S/report", b'{"print":{}}')
    _, start, end = next_packet(packet) or (0, 0, 0)
    assert publish_parts(packet, start, end) == ("device/S/report", b'{"print":{}}')
    empty = publish("t", b"")
    _, start, end = next_packet(empty) or (0, 0, 0)
    assert publish_parts(empty, start, end) == ("t", b"")


def test_malformed_publishes_are_refused() -> None:
    with pytest.raises(FrameError, match="too short"):
        publish_parts(b"\x30\x01\x00", 2, 3)
    with pytest.raises(FrameError, match="longer than the packet"):
        publish_parts(b"\x30\x04\x00\x09ab", 2, 6)
    with pytest.raises(FrameError, match="not UTF-8"):
        publish_parts(b"\x30\x04\x00\x02\xff\xfe", 2, 6)
