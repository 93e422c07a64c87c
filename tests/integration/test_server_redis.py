"""Rate limits and the event stream shared through a real redis-server.

The bus contract runs over both buses (in process and Redis) with the same
tests; then what only sharing gives: two limiters, two buses, two whole
server instances (each its own live hub following the simulator) on one
Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import Request

from bambulab.servers.common import ApiError, BusEvent, EventBus, MemoryEventBus, RateLimit
from bambulab.servers.shared import (
    RedisEventBus,
    SharedStoreError,
    check_redis,
    redact_url,
    shared_from_url,
)
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.needs("redis-server")


def prefix() -> str:
    """Keys of one test only: tests share the module's redis-server."""
    return f"test{uuid.uuid4().hex[:10]}:"


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(30):
            return await coro

    return asyncio.run(bounded())


# --- the bus contract, both buses ---------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def make_bus(request: pytest.FixtureRequest) -> Callable[..., EventBus]:
    """Buses of one kind; the Redis ones of one test share one stream (like instances)."""
    if request.param == "memory":
        return lambda keep=10_000: MemoryEventBus(keep=keep)
    url = request.getfixturevalue("redis_url")
    keys = prefix()
    return lambda keep=10_000: shared_from_url(url, prefix=keys, keep=keep)[1]


async def take(events: AsyncIterator[BusEvent], count: int, timeout: float = 10) -> list[BusEvent]:
    got = []
    async with asyncio.timeout(timeout):
        async for event in events:
            got.append(event)
            if len(got) == count:
                break
    return got


def bodies(events: list[BusEvent]) -> list[Any]:
    return [orjson.loads(e.data)["n"] for e in events]


def test_resume_after_an_id_yields_exactly_the_events_after_it(make_bus: Any) -> None:
    async def scenario() -> None:
        bus = make_bus()
        ids = [await bus.publish("tick", {"n": n}, f"S{n}") for n in range(6)]
        assert all(ids) and len(set(ids)) == 6
        got = await take(bus.subscribe(after=ids[2]), 3)
        assert [e.id for e in got] == ids[3:]
        assert bodies(got) == [3, 4, 5]
        assert [(e.type, e.serial) for e in got] == [("tick", "S3"), ("tick", "S4"), ("tick", "S5")]
        await bus.aclose()

    run(scenario())


def test_batches_hand_over_every_waiting_event_at_once(make_bus: Any) -> None:
    async def scenario() -> None:
        bus = make_bus()
        first = await bus.publish("tick", {"n": 0})
        for n in range(1, 6):
            await bus.publish("tick", {"n": n})
        batches = bus.batches(after=first)
        async with asyncio.timeout(10):
            batch = await anext(batches)
        # One list for the five waiting events, each already framed for the stream.
        assert bodies(list(batch)) == [1, 2, 3, 4, 5]
        assert batch[0].frame == (
            f"id: {batch[0].id}\nevent: tick\ndata: ".encode() + batch[0].data + b"\n\n"
        )
        await bus.publish("tick", {"n": 6})
        async with asyncio.timeout(10):
            assert bodies(list(await anext(batches))) == [6]
        await bus.aclose()

    run(scenario())


def test_replay_then_live_events_in_order(make_bus: Any) -> None:
    async def scenario() -> None:
        bus = make_bus()
        first = await bus.publish("tick", {"n": 0})
        await bus.publish("tick", {"n": 1})
        events = bus.subscribe(after=first)
        assert bodies(await take(events, 1)) == [1]  # replayed: the subscription is in place
        await bus.publish("tick", {"n": 2})
        await bus.publish("tick", {"n": 3})
        assert bodies(await take(events, 2)) == [2, 3]  # then the live ones
        await bus.aclose()

    run(scenario())


def test_new_subscriber_gets_only_new_events(make_bus: Any) -> None:
    async def scenario() -> None:
        bus = make_bus()
        await bus.publish("old", {"n": -1})
        events = bus.subscribe()
        got: list[BusEvent] = []

        async def read() -> None:
            async for event in events:
                got.append(event)

        reader = asyncio.ensure_future(read())
        published = []
        n = 0
        async with asyncio.timeout(10):
            while len(got) < 3:  # publish until the subscriber, once in place, has seen some
                await bus.publish("tick", {"n": n})
                published.append(n)
                n += 1
                await asyncio.sleep(0.01)
        reader.cancel()
        assert all(e.type == "tick" for e in got), "an event from before the subscription"
        seen = bodies(got)
        assert seen == published[published.index(seen[0]) :][: len(seen)]  # a gapless suffix
        await bus.aclose()

    run(scenario())


def test_dedupe_publishes_once(make_bus: Any) -> None:
    async def scenario() -> None:
        one, two = make_bus(), make_bus()
        start = await one.publish("tick", {"n": 0})
        first = await one.publish("print_finished", {"n": 1}, "S1", dedupe="S1:finished:abc")
        again = await two.publish("print_finished", {"n": 1}, "S1", dedupe="S1:finished:abc")
        other = await two.publish("print_finished", {"n": 2}, "S1", dedupe="S1:finished:def")
        assert first is not None and other is not None
        if isinstance(one, MemoryEventBus):  # in process, each instance has its own stream
            assert again is not None
        else:
            assert again is None
            got = await take(two.subscribe(after=start), 2)
            assert bodies(got) == [1, 2]
        await one.aclose()
        await two.aclose()

    run(scenario())


def test_too_old_an_id_gets_a_reset_then_what_is_kept(make_bus: Any) -> None:
    async def scenario() -> None:
        bus = make_bus(keep=5)
        ids = [await bus.publish("tick", {"n": n}) for n in range(400)]
        events = bus.subscribe(after=ids[0])
        reset = await take(events, 1)
        assert reset[0].type == "reset"
        rest: list[BusEvent] = []
        async with asyncio.timeout(10):
            async for event in events:
                rest.append(event)
                if orjson.loads(event.data)["n"] == 399:
                    break
        numbers = bodies(rest)
        assert numbers == list(range(numbers[0], 400)) and numbers[0] > 1
        await bus.aclose()

    run(scenario())


def test_an_id_from_the_future_starts_now(make_bus: Any) -> None:
    async def scenario() -> None:
        bus = make_bus()
        last = await bus.publish("tick", {"n": 0})
        assert last is not None
        events = bus.subscribe(after="99999999")
        reader = asyncio.ensure_future(take(events, 1))
        async with asyncio.timeout(10):
            while not reader.done():
                await bus.publish("tick", {"n": 1})
                await asyncio.sleep(0.02)
        assert bodies(reader.result()) == [1]
        await bus.aclose()

    run(scenario())


def test_close_ends_a_waiting_subscriber_promptly(make_bus: Any) -> None:
    async def scenario() -> None:
        bus = make_bus()
        last = await bus.publish("tick", {"n": 0})
        got: list[BusEvent] = []

        async def read() -> None:
            async for event in bus.subscribe(after=last):
                got.append(event)

        reader = asyncio.ensure_future(read())
        await asyncio.sleep(0.2)  # let it block on an empty stream
        started = time.monotonic()
        await bus.aclose()
        async with asyncio.timeout(3):
            await reader
        assert time.monotonic() - started < 2.5 and got == []

    run(scenario())


# --- Redis only -----------------------------------------------------------------------------


def test_subscribers_far_behind_page_through_the_stream(redis_url: str) -> None:
    """More events than the local ring holds: a late reader pages them from Redis, in order."""

    async def scenario() -> None:
        keys = prefix()
        writer = shared_from_url(redis_url, prefix=keys)[1]
        reader = RedisEventBus(
            shared_from_url(redis_url, prefix=keys)[1]._redis, prefix=keys, local_keep=50
        )
        live = reader.subscribe()
        follower = asyncio.ensure_future(take(live, 1200, timeout=20))
        ids = []
        async with asyncio.timeout(10):
            while not follower.done() and len(ids) < 1300:
                ids.append(await writer.publish("tick", {"n": len(ids)}))
        got = await take(reader.subscribe(after=ids[0]), 1199, timeout=20)
        assert bodies(got) == list(range(1, 1200))
        follower.cancel()
        await writer.aclose()
        await reader.aclose()

    run(scenario())


def test_two_limiters_on_one_redis_count_together(redis_url: str) -> None:
    async def scenario() -> None:
        await check_redis(redis_url)  # what `--redis` asks at start: reachable
        keys = prefix()
        one = shared_from_url(redis_url, prefix=keys)[0]
        two = shared_from_url(redis_url, prefix=keys)[0]
        limit = RateLimit(20, 60.0)
        # 50 requests at once, split across both: exactly 20 pass (atomic counting).
        results = await asyncio.gather(
            *(limiter.hit("token:a", limit) for limiter in [one, two] * 25)
        )
        assert sum(r is None for r in results) == 20
        waits = [r for r in results if r is not None]
        assert all(0 < w <= 60 for w in waits)
        assert await one.hit("token:b", limit) is None  # another token has its own window
        await one.aclose()
        await two.aclose()

    run(scenario())


def test_a_window_ends_after_its_length(redis_url: str) -> None:
    async def scenario() -> None:
        limiter = shared_from_url(redis_url, prefix=prefix())[0]
        limit = RateLimit(2, 0.5)
        assert await limiter.hit("k", limit) is None
        assert await limiter.hit("k", limit) is None
        wait = await limiter.hit("k", limit)
        assert wait is not None and 0 < wait <= 0.5
        await asyncio.sleep(wait + 0.05)  # the window's own end, as Retry-After told
        assert await limiter.hit("k", limit) is None
        await limiter.aclose()

    run(scenario())


def test_redis_down_is_503_and_never_shows_the_password(caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    assert "hunter2secret" not in redact_url(url)

    async def scenario() -> None:
        limiter, bus = shared_from_url(url, timeout=1.0)
        with pytest.raises(ApiError) as refused:
            await limiter.hit("token:x", RateLimit(5, 60.0))
        assert refused.value.status == 503
        assert refused.value.headers["retry-after"].isdigit()
        with pytest.raises(SharedStoreError) as failed:
            await bus.publish("tick", {"n": 1})
        assert "\n" not in str(failed.value)
        for text in (refused.value.detail, str(failed.value), caplog.text):
            assert "hunter2secret" not in text
        await limiter.aclose()
        await bus.aclose()

    with caplog.at_level(logging.DEBUG):
        started = time.monotonic()
        run(scenario())
        assert time.monotonic() - started < 10
    with pytest.raises(SharedStoreError, match="unreachable") as down:
        run(check_redis(url, timeout=1.0))
    assert "hunter2secret" not in str(down.value) and "***" in str(down.value)
    with pytest.raises(SharedStoreError, match="not a Redis URL"):
        shared_from_url("http://user:hunter2secret@example.invalid/")


# --- two server instances -----------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet_sim() -> Iterator[Any]:
    from bambulab.sim import Simulator

    with Simulator() as simulator:
        yield simulator


def instance(sim: Any, redis_url: str, keys: str, store_path: Path, limit: RateLimit) -> Any:
    """One server instance: its own live hub on the simulator, Redis limits and events."""
    from bambulab import AsyncBambuMQTT
    from bambulab.servers.app import ServerContext, build_app
    from bambulab.servers.common import Gate
    from bambulab.servers.live import LiveHub, PrinterEntry
    from bambulab.servers.runner import AppServer
    from bambulab.servers.tokens import TokenStore

    endpoints = sim.endpoints()
    mqtt = AsyncBambuMQTT(
        sim.user_id,
        [e.serial for e in endpoints],
        token=sim.issue_token(sim.demo_account.email),
        host=sim.mqtt_host,
        port=sim.mqtt_port,
        ca_file=sim.ca_file,
    )
    limiter, bus = shared_from_url(redis_url, prefix=keys)
    hub = LiveHub([mqtt], [PrinterEntry(e.serial) for e in endpoints], bus=bus)
    ctx = ServerContext(
        Gate(TokenStore(store_path), limiter=limiter, limit=limit), bus=bus, hub=hub
    )
    app = build_app(ctx, [])

    @app.get("/probe")  # any route behind the gate
    async def probe(request: Request) -> dict[str, str]:
        token = await ctx.gate.check(request)
        return {"token": token.id}

    return AppServer(app, on_start=ctx.start, on_stop=ctx.aclose), hub, bus


def test_two_instances_share_a_tokens_limit(fleet_sim: Any, redis_url: str, tmp_path: Path) -> None:
    from bambulab.servers.tokens import TokenStore

    store = tmp_path / "tokens.sqlite3"
    secret, _ = TokenStore(store).create("read")
    keys, limit = prefix(), RateLimit(7, 60.0)
    first, _, _ = instance(fleet_sim, redis_url, keys, store, limit)
    second, _, _ = instance(fleet_sim, redis_url, keys, store, limit)
    headers = {"authorization": f"Bearer {secret}"}
    with first, second, httpx.Client(timeout=10, headers=headers) as http:
        servers = [first.url, second.url]
        statuses = [http.get(servers[n % 2] + "/probe").status_code for n in range(7)]
        assert statuses == [200] * 7
        for url in servers:  # the 8th on either instance is over the shared limit
            over = http.get(url + "/probe")
            assert over.status_code == 429
            assert 0 < int(over.headers["retry-after"]) <= 60
            assert secret not in over.text


def test_resume_on_another_instance_gets_each_missed_event_once(
    fleet_sim: Any, redis_url: str, tmp_path: Path
) -> None:
    """Both hubs follow every printer; each event goes on the stream once; a reader that
    left instance 1 at some id resumes on instance 2 and gets exactly what it missed."""
    keys, limit = prefix(), RateLimit(100, 1.0)
    serial = fleet_sim.endpoints()[0].serial
    first, hub1, bus1 = instance(fleet_sim, redis_url, keys, tmp_path / "a.sqlite3", limit)
    second, hub2, bus2 = instance(fleet_sim, redis_url, keys, tmp_path / "b.sqlite3", limit)
    with first, second:
        wait_for(lambda: first.call(lambda: hub1.online(serial)), 20, "instance 1 online")
        wait_for(lambda: second.call(lambda: hub2.online(serial)), 20, "instance 2 online")

        async def read_until(bus: RedisEventBus, after: str, codes: set[str]) -> list[BusEvent]:
            """Events after ``after`` until HMS events of all ``codes`` have come."""
            got, wanted = [], set(codes)
            async with asyncio.timeout(20):
                async for event in bus.subscribe(after=after):
                    got.append(event)
                    if event.type == "hms_raised":
                        wanted.discard(orjson.loads(event.data)["code"])
                    if not wanted:
                        break
            return got

        # A client of instance 1 reads up to a first HMS event, then leaves.
        fleet_sim.with_printer(serial, lambda p: p.inject_hms(0x0C000300, 0x00030001))
        seen = first.run(read_until(bus1, "0", {"0C00_0300_0003_0001"}), timeout=25)
        last_seen = seen[-1].id
        # While it is away, three more HMS entries are raised (each seen by both hubs).
        codes = [(0x05000100, 0x00030004), (0x07002000, 0x00020001), (0x0300_0100, 0x0001_0001)]
        for attr, code in codes:
            fleet_sim.with_printer(serial, lambda p, a=attr, c=code: p.inject_hms(a, c))
        missed = ["0300_0100_0001_0001", "0500_0100_0003_0004", "0700_2000_0002_0001"]
        got = second.run(read_until(bus2, last_seen, set(missed)), timeout=25)

        assert int(got[0].id) > int(last_seen) and "reset" not in {e.type for e in got}
        hms = [orjson.loads(e.data)["code"] for e in got if e.type == "hms_raised"]
        assert sorted(hms) == missed  # each once: both hubs saw the report, one published
        assert len({e.id for e in got}) == len(got)
        stats = first.call(hub1.stats), second.call(hub2.stats)
        assert stats[0].messages > 0 and stats[1].messages > 0  # both hubs read every report
