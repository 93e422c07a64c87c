"""MQTT 3.1.1 packet framing over a byte buffer (sans-IO).

The network thread reads whatever the socket holds in one go and takes the
QoS 0 ``PUBLISH`` packets (every printer report) out of the buffer itself;
any other packet (``CONNACK``, ``SUBACK``, ``PINGRESP``, a QoS 1 publish) is
left for paho, which reads it from the same buffer. These functions only look
at bytes: where the next whole packet is, and a QoS 0 publish's topic and
payload.
"""

from __future__ import annotations

# A report is tens of KiB at most; a broker announcing more than this is broken or hostile.
MAX_PACKET = 8 * 1024 * 1024


class FrameError(ValueError):
    """The buffer does not hold MQTT packets (bad remaining length, oversize, bad topic)."""


def remaining_length(size: int) -> bytes:
    """``size`` as MQTT's remaining length: 7 bits a byte, low first, high bit = more."""
    out = bytearray()
    while True:
        size, byte = size >> 7, size & 0x7F
        out.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(out)


def next_packet(buf: bytes | bytearray, limit: int = MAX_PACKET) -> tuple[int, int, int] | None:
    """The whole packet at the start of ``buf``: ``(first byte, body start, end)``.

    ``None`` while the packet is still incomplete. ``FrameError`` for a
    remaining length longer than 4 bytes or larger than ``limit``.
    """
    size = len(buf)
    if size < 2:
        return None
    length = 0
    shift = 0
    pos = 1
    while True:
        if pos >= size:
            return None
        byte = buf[pos]
        length |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            break
        shift += 7
        if pos > 4:
            raise FrameError("an MQTT remaining length longer than 4 bytes")
    if length > limit:
        raise FrameError(f"an MQTT packet of {length} bytes (the limit is {limit})")
    end = pos + length
    if end > size:
        return None
    return buf[0], pos, end


def is_qos0_publish(first: int) -> bool:
    """Whether a packet's first byte is a ``PUBLISH`` at QoS 0 (no packet id, nothing to ack)."""
    return first & 0xF6 == 0x30


def publish_parts(buf: bytes | bytearray, start: int, end: int) -> tuple[str, bytes]:
    """Topic and payload of the QoS 0 ``PUBLISH`` whose body is ``buf[start:end]``."""
    if end - start < 2:
        raise FrameError("a PUBLISH too short for its topic length")
    topic_end = start + 2 + (buf[start] << 8 | buf[start + 1])
    if topic_end > end:
        raise FrameError("a PUBLISH topic longer than the packet")
    try:
        topic = bytes(buf[start + 2 : topic_end]).decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("a PUBLISH topic that is not UTF-8") from None
    return topic, bytes(buf[topic_end:end])
