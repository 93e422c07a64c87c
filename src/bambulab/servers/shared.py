"""Rate limits and the event stream shared through Redis, for several workers or instances.

With ``--redis redis://...`` every worker and instance of a server counts
requests together and serves one event stream; without it each process has
its own (:class:`~bambulab.servers.common.MemoryRateLimiter`,
:class:`~bambulab.servers.common.MemoryEventBus`). :func:`shared_from_url`
makes the pair.

* :class:`RedisRateLimiter`: fixed windows, one key per token and window
  length, counted by one Lua script (``INCR``, ``PEXPIRE`` on the first hit,
  ``PTTL``) so that concurrent hits from every instance are counted exactly;
  the wait (``Retry-After``) is the key's remaining time to live.
* :class:`RedisEventBus`: a Redis stream (``XADD ... MAXLEN ~ keep``) whose
  entry ids are consecutive (``17-0``, shown as ``17`` like the in-process
  bus's), so a client can resume on any instance with the ``Last-Event-ID``
  another one gave it. ``dedupe``
  keys are claimed with ``SET NX EX`` in the same script as the ``XADD``:
  two instances following the same printers publish each event once.

  One follower task per process reads the stream (``XREAD BLOCK``, bounded
  so that closing is prompt) into a local ring that every subscriber of the
  process reads, like the in-process bus: a thousand Server-Sent-Events
  clients cost one Redis connection, not a thousand. A subscriber resuming
  from further back than the ring pages through ``XRANGE`` first; one
  resuming from before what the stream still keeps (its id older than the
  first kept one less one) first gets a ``reset`` event, as with the
  in-process bus.

When Redis cannot be reached the gate answers **503** (with ``Retry-After``)
rather than letting every request through: the limits stand in front of the
Bambu cloud's own, which lock out the whole account, not one client. Every
Redis call has a deadline (``timeout``); errors are one line, with the
address but never the password of the URL.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from ..errors import TransportError
from .common import ApiError, BusEvent, RateLimit, flatten

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ..models.events import Event

__all__ = [
    "RedisEventBus",
    "RedisRateLimiter",
    "SharedStoreError",
    "check_redis",
    "redact_url",
    "shared_from_url",
]

log = logging.getLogger("bambulab.servers.shared")

DEFAULT_TIMEOUT = 2.0  # seconds: any Redis call (connect, command, reply)
BLOCK_MS = 1000  # an XREAD waits this long at most: close() is seen within a second
PAGE = 500  # entries per XREAD / XRANGE: bounds what one reply holds
DEDUPE_TTL = 60  # seconds a dedupe key is remembered (instances see an event ms apart)
RETRY_AFTER_DOWN = 5  # seconds a client is told to wait while Redis is unreachable

# KEYS[1]: the window's key. ARGV[1]: the window in ms. -> {count, ms left}
_HIT = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if n == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""

# KEYS[1]: the stream, KEYS[2]: the dedupe key ('' for none).
# ARGV: keep, dedupe ttl, type, data, serial. -> the new id, or false (a duplicate).
# Ids are consecutive (n-0, the last one's n + 1): a reader whose id is older than the
# first kept one less one has missed events (a gap), exactly as with the in-process bus.
_PUBLISH = """
if KEYS[2] ~= '' then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return false end
end
local n = 1
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] then n = tonumber(string.match(last[1][1], '^(%d+)')) + 1 end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], n .. '-0',
                  'type', ARGV[3], 'data', ARGV[4], 'serial', ARGV[5])
"""


class SharedStoreError(TransportError):
    """Redis could not be used (one line: what failed, where, why)."""


def redact_url(url: str) -> str:
    """``url`` without its password (``redis://:***@host:6379/0``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def _connect(url: str, timeout: float) -> Redis:
    try:
        from redis.asyncio import Redis
    except ImportError:  # pragma: no cover - the server extra brings it
        raise SharedStoreError(
            "--redis needs the redis package (pip install bambulab[server])"
        ) from None
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise SharedStoreError(
            f"not a Redis URL: {redact_url(url)} (redis://host:6379/0, rediss:// or unix://)"
        )
    try:
        client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout + BLOCK_MS / 1000,  # an XREAD BLOCK answers within BLOCK_MS
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )
    except ValueError as exc:
        raise SharedStoreError(f"bad Redis URL {redact_url(url)}: {_why(exc)}") from None
    return client


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


class RedisRateLimiter:
    """:class:`~bambulab.servers.common.RateLimiter` whose windows live in Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "bambulab:",
        timeout: float = DEFAULT_TIMEOUT,
        where: str = "redis",
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._timeout = timeout
        self._where = where
        self._script = redis.register_script(_HIT)

    async def hit(self, key: str, limit: RateLimit) -> float | None:
        window_ms = max(1, int(limit.per * 1000))
        name = f"{self._prefix}rate:{window_ms}:{key}"
        try:
            async with asyncio.timeout(self._timeout):
                count, left_ms = await self._script(keys=[name], args=[window_ms])
        except _redis_errors() as exc:
            log.error("rate limit store %s unreachable: %s", self._where, _why(exc))
            raise ApiError(
                503,
                f"the rate limit store (Redis) is unreachable: retry in {RETRY_AFTER_DOWN} s",
                {"retry-after": str(RETRY_AFTER_DOWN)},
            ) from None
        if int(count) <= limit.requests:
            return None
        return max(0.001, int(left_ms) / 1000)

    async def aclose(self) -> None:
        with contextlib.suppress(*_redis_errors()):
            await self._redis.aclose()


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation that the Redis client turned into one of its errors."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _parse_id(text: str | bytes | None) -> tuple[int, int] | None:
    """A stream id as a comparable pair (``None``: not an id)."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    ms, sep, seq = text.strip().partition("-")
    try:
        pair = (int(ms), int(seq) if sep else 0)
    except ValueError:
        return None
    return pair if pair[0] >= 0 and pair[1] >= 0 else None


def _fmt(pair: tuple[int, int]) -> str:
    return f"{pair[0]}-{pair[1]}"


def _decode(entry_id: bytes, fields: Mapping[bytes, bytes]) -> BusEvent:
    serial = fields.get(b"serial", b"").decode("utf-8", "replace")
    return BusEvent(
        entry_id.decode("ascii").removesuffix("-0"),
        fields.get(b"type", b"").decode("utf-8", "replace"),
        fields.get(b"data", b"{}"),
        serial or None,
    )


class RedisEventBus:
    """:class:`~bambulab.servers.common.EventBus` on a Redis stream (see the module).

    ``keep``: entries the stream keeps (about: ``MAXLEN ~``). ``local_keep``:
    entries this process keeps in memory for its subscribers.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        keep: int = 10_000,
        local_keep: int = 10_000,
        prefix: str = "bambulab:",
        timeout: float = DEFAULT_TIMEOUT,
        where: str = "redis",
    ) -> None:
        self._redis = redis
        self._keep = keep
        self._local_keep = local_keep
        self._prefix = prefix
        self._stream = f"{prefix}events"
        self._timeout = timeout
        self._where = where
        self._publish = redis.register_script(_PUBLISH)
        # The follower's ring: every stream entry after _floor is in it (None: not following).
        # Two lists in step (ids, events), trimmed by halves: a reader bisects the ids.
        self._ids: list[tuple[int, int]] = []
        self._events: list[BusEvent] = []
        self._floor: tuple[int, int] | None = None
        self._wake: asyncio.Event | None = None
        self._follower: asyncio.Task[None] | None = None
        self._closed = False

    # --- publishing -----------------------------------------------------------------

    @staticmethod
    def dedupe_key(kind: str, event: Event) -> str:
        """The same key on every instance that sees this event (the live hub's ``dedupe``).

        The printer, the event type, what the event says (job, HMS code,
        changed fields) and a digest of the printer's whole state right after
        the report: instances reading the same reports in the same order hold
        the same state. Two events alike in all of that within
        :data:`DEDUPE_TTL` (a light switched on, off and on again with nothing
        else changed) are published once; an instance that joined late may
        hold a different state until the next full report, and then publishes
        its copy too (a duplicate, never a loss).
        """
        from .live import event_body

        body = event_body(event)
        body.pop("time", None)
        detail = orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        state = orjson.dumps(
            dict(event.state.raw),
            option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
            default=str,
        )
        digest = hashlib.blake2b(detail + b"\0" + state, digest_size=16).hexdigest()
        return f"{event.serial}:{kind}:{digest}"

    async def publish(
        self,
        type: str,
        data: Mapping[str, Any],
        serial: str | None = None,
        dedupe: str | None = None,
    ) -> str | None:
        dedupe_key = f"{self._prefix}dedupe:{dedupe}" if dedupe is not None else ""
        try:
            async with asyncio.timeout(self._timeout):
                new_id = await self._publish(
                    keys=[self._stream, dedupe_key],
                    args=[self._keep, DEDUPE_TTL, type, orjson.dumps(data), serial or ""],
                )
        except _redis_errors() as exc:
            raise SharedStoreError(
                f"event not published: Redis {self._where} unreachable: {_why(exc)}"
            ) from None
        if new_id is None:
            return None
        text = new_id.decode("ascii") if isinstance(new_id, bytes) else str(new_id)
        return text.removesuffix("-0")

    # --- reading --------------------------------------------------------------------

    async def _call(self, what: str, *args: Any) -> Any:
        async with asyncio.timeout(self._timeout + BLOCK_MS / 1000):
            return await self._redis.execute_command(what, *args)  # type: ignore[no-untyped-call]

    async def _last_id(self) -> tuple[int, int]:
        rows = await self._call("XREVRANGE", self._stream, "+", "-", "COUNT", 1)
        return _parse_id(rows[0][0]) or (0, 0) if rows else (0, 0)

    async def _trimmed_after(self, position: tuple[int, int]) -> bool:
        """Whether entries after ``position`` were trimmed away (a gap for that reader)."""
        rows = await self._call("XRANGE", self._stream, "-", "+", "COUNT", 1)
        first = _parse_id(rows[0][0]) if rows else None
        return first is not None and position[0] < first[0] - 1

    def _signal(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake

    def _ensure_follower(self) -> None:
        if self._follower is None or self._follower.done():
            self._follower = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        """Read the stream's new entries into the ring, for every subscriber of the process."""
        delay = 0.2
        while not self._closed:
            try:
                if self._floor is None:
                    start = await self._last_id()
                    self._ids, self._events = [], []
                    self._floor = start
                last = self._ids[-1] if self._ids else self._floor
                reply = await self._call(
                    "XREAD", "COUNT", PAGE, "BLOCK", BLOCK_MS, "STREAMS", self._stream, _fmt(last)
                )
                delay = 0.2
            except _redis_errors() as exc:
                _raise_if_cancelled()
                if self._closed:
                    return
                # What was missed while Redis was away is read by each subscriber from the
                # stream itself (with its gap check): the ring starts again from the end.
                self._floor = None
                log.error("event stream %s unreachable: %s", self._where, _why(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            added = False
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    pair = _parse_id(entry_id)
                    if pair is None:
                        continue
                    self._ids.append(pair)
                    self._events.append(_decode(entry_id, fields))
                    added = True
            if len(self._ids) > 2 * self._local_keep:
                cut = len(self._ids) - self._local_keep
                self._floor = self._ids[cut - 1]
                # New lists, not del in place: a reader holding the old ones stays consistent.
                self._ids, self._events = self._ids[cut:], self._events[cut:]
            if added:
                wake = self._signal()
                self._wake = asyncio.Event()
                wake.set()

    def _from_ring(self, position: tuple[int, int]) -> list[BusEvent] | None:
        """The ring's events after ``position`` (``None``: the ring does not cover it)."""
        if self._floor is None or position < self._floor:
            return None
        ids, events = self._ids, self._events
        return events[bisect.bisect_right(ids, position) :]

    def subscribe(self, after: str | None = None) -> AsyncIterator[BusEvent]:
        return flatten(self.batches(after))

    async def batches(self, after: str | None = None) -> AsyncIterator[Sequence[BusEvent]]:
        self._ensure_follower()
        while True:
            try:
                last = await self._last_id()
                break
            except _redis_errors() as exc:
                _raise_if_cancelled()
                log.error("event stream %s unreachable: %s", self._where, _why(exc))
                if self._closed:
                    return
                await asyncio.sleep(1.0)
        parsed = _parse_id(after) if after is not None else last
        position = min(parsed if parsed is not None else (0, 0), last)
        while not self._closed:
            pending = self._from_ring(position)
            if pending is None:
                try:
                    gap = await self._trimmed_after(position)
                    rows = await self._call(
                        "XRANGE", self._stream, "(" + _fmt(position), "+", "COUNT", PAGE
                    )
                except _redis_errors() as exc:
                    _raise_if_cancelled()
                    log.error("event stream %s unreachable: %s", self._where, _why(exc))
                    await asyncio.sleep(1.0)
                    continue
                if gap:
                    yield [BusEvent(str(position[0]), "reset", b"{}")]
                if not rows:  # caught up with the stream; the follower will have the rest
                    self._ensure_follower()
                    if self._floor is None or position < self._floor:
                        await self._wait(1.0)
                        continue
                page = [_decode(entry_id, fields) for entry_id, fields in rows]
                if page:
                    position = _parse_id(rows[-1][0]) or position
                    yield page
                continue
            if pending:
                position = _parse_id(pending[-1].id) or position
                yield pending
            else:
                await self._wait(None)

    async def _wait(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._signal().wait()

    async def aclose(self) -> None:
        self._closed = True
        self._signal().set()
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follower
        with contextlib.suppress(*_redis_errors()):
            await self._redis.aclose()


def shared_from_url(
    url: str, *, prefix: str = "bambulab:", keep: int = 10_000, timeout: float = DEFAULT_TIMEOUT
) -> tuple[RedisRateLimiter, RedisEventBus]:
    """The limiter and bus of ``--redis URL`` (one connection pool each; nothing dialled yet)."""
    where = redact_url(url)
    limiter = RedisRateLimiter(_connect(url, timeout), prefix=prefix, timeout=timeout, where=where)
    bus = RedisEventBus(
        _connect(url, timeout), keep=keep, prefix=prefix, timeout=timeout, where=where
    )
    return limiter, bus


async def check_redis(url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Ping ``url`` once: :class:`SharedStoreError` with a one-line reason if it fails."""
    client = _connect(url, timeout)
    try:
        async with asyncio.timeout(timeout):
            await client.ping()
    except _redis_errors() as exc:
        raise SharedStoreError(f"Redis {redact_url(url)} unreachable: {_why(exc)}") from None
    finally:
        with contextlib.suppress(*_redis_errors()):
            await client.aclose()
