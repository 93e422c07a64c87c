"""CameraHub against an in-test frame source: one upstream, bounded queues, linger, reopen.

The source here is an in-memory async iterator (the hub's whole interface to
a camera); the same behaviours are proved over real sockets against the
simulated camera in tests/integration/test_camera_fanout.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest

from bambulab.errors import CameraAuthenticationError, CameraError, CameraStallError
from bambulab.models.camera import Frame
from bambulab.servers.camera import CameraHub

T = TypeVar("T")
JPEG = b"\xff\xd8" + b"x" * 100 + b"\xff\xd9"


class Source:
    """Frames pushed by the test; ``fail`` ends the iteration with an error."""

    def __init__(self, registry: Registry, serial: str) -> None:
        self.registry = registry
        self.serial = serial
        self.queue: asyncio.Queue[Frame | BaseException | None] = asyncio.Queue()
        self.closed = False

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[Frame]:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def aclose(self) -> None:
        await asyncio.sleep(self.registry.close_delay)
        self.closed = True
        self.registry.open.remove(self)


class Registry:
    """The opener the hub gets, and what it opened."""

    def __init__(self) -> None:
        self.open: list[Source] = []
        self.opened = 0
        self.index = 0
        self.refuse = False
        self.close_delay = 0.0

    def __call__(self, serial: str) -> Source:
        if self.refuse:
            raise OSError("connection refused")
        source = Source(self, serial)
        self.open.append(source)
        self.opened += 1
        return source

    def frame(self, serial: str = "S1") -> Frame:
        self.index += 1
        return Frame(JPEG, time.time(), self.index, time.monotonic(), serial)

    def push(self, serial: str = "S1") -> Frame:
        frame = self.frame(serial)
        for source in self.open:
            if source.serial == serial:
                source.queue.put_nowait(frame)
        return frame


def run(test: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(test(), 10))


async def until(check: Callable[[], object], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def test_many_viewers_share_one_upstream_and_get_every_frame() -> None:
    async def body() -> None:
        reg = Registry()
        hub = CameraHub(reg, linger=0.05)
        viewers = [hub.join("S1") for _ in range(50)]
        await until(lambda: reg.open)
        frames = [reg.push() for _ in range(2)]
        for viewer in viewers:
            assert [await viewer.next(1), await viewer.next(1)] == frames
        assert reg.opened == 1
        stats = hub.stats("S1")
        assert (stats.viewers, stats.upstream_open, stats.frames_in) == (50, True, 2)
        assert stats.dropped == (0,) * 50
        await hub.aclose()
        assert not reg.open

    run(body)


def test_slow_viewer_drops_oldest_and_never_holds_more_than_the_queue() -> None:
    async def body() -> None:
        reg = Registry()
        hub = CameraHub(reg, queue_size=2)
        slow, fast = hub.join("S1"), hub.join("S1")
        await until(lambda: reg.open)
        pushed = []
        for _ in range(10):
            pushed.append(reg.push())
            await until(lambda: fast.queued)
            assert (await fast.next(1)) is pushed[-1]
            assert slow.queued <= 2
        stats = hub.stats("S1")
        assert stats.dropped == (8, 0)
        assert stats.queued == (2, 0)
        # the slow one gets the newest two, in order
        assert [await slow.next(1), await slow.next(1)] == pushed[-2:]
        await hub.aclose()

    run(body)


def test_upstream_closes_after_linger_and_reopens_for_a_new_viewer() -> None:
    async def body() -> None:
        reg = Registry()
        hub = CameraHub(reg, linger=0.15)
        viewer = hub.join("S1")
        await until(lambda: reg.open)
        reg.push()
        await viewer.next(1)
        viewer.close()
        await asyncio.sleep(0.05)
        assert reg.open, "closed before the linger was over"
        # a viewer coming back within the linger keeps the same upstream
        back = hub.join("S1")
        await asyncio.sleep(0.2)
        assert reg.opened == 1 and reg.open
        back.close()
        await until(lambda: not reg.open, 1.0)
        assert not hub.stats("S1").upstream_open
        again = hub.join("S1")
        await until(lambda: reg.open)
        assert reg.opened == 2
        reg.push()
        await again.next(1)
        await hub.aclose()

    run(body)


def test_a_failing_source_is_reopened_with_backoff_while_viewers_remain() -> None:
    async def body() -> None:
        reg = Registry()
        hub = CameraHub(reg, backoff=0.02, max_backoff=0.05)
        viewer = hub.join("S1")
        await until(lambda: reg.open)
        reg.open[0].queue.put_nowait(CameraError("the camera closed the connection"))
        await until(lambda: reg.opened == 2 and reg.open)
        assert hub.stats("S1").last_error is None or "closed" in str(hub.stats("S1").last_error)
        reg.open[0].queue.put_nowait(None)  # a source that simply ends is reopened too
        await until(lambda: reg.opened == 3 and reg.open)
        reg.refuse = True
        reg.open[0].queue.put_nowait(None)
        await asyncio.sleep(0.2)
        assert "refused" in str(hub.stats("S1").last_error)
        reg.refuse = False
        await until(lambda: reg.open, 1.0)
        frame = reg.push()
        assert (await viewer.next(1)) is frame
        await hub.aclose()

    run(body)


def test_a_refused_access_code_is_retried_slowly_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        reg = Registry()
        hub = CameraHub(reg, backoff=0.01, max_backoff=0.15)
        viewer = hub.join("S1")
        caplog.set_level("WARNING", logger="bambulab")
        for _ in range(3):
            await until(lambda: reg.open)
            reg.open[0].queue.put_nowait(CameraAuthenticationError("access code refused"))
            await until(lambda: not reg.open)
        began, opened = time.monotonic(), reg.opened
        await until(lambda: reg.open, 1.0)
        # after a refusal the hub waits max_backoff, not the fast first steps
        assert time.monotonic() - began >= 0.1 and reg.opened == opened + 1
        said = [r for r in caplog.records if "access code refused" in r.getMessage()]
        assert len(said) == 1, said
        assert hub.stats("S1").last_error == "access code refused"
        frame = reg.push()
        assert (await viewer.next(1)) is frame
        await hub.aclose()

    run(body)


def test_snapshot_uses_the_live_frame_or_opens_the_upstream() -> None:
    async def body() -> None:
        reg = Registry()
        hub = CameraHub(reg, linger=0.05)
        task = asyncio.ensure_future(hub.snapshot("S1", 1))
        await until(lambda: reg.open)
        frame = reg.push()
        assert (await task) is frame
        # within the linger the upstream is open: the cached frame comes at once
        assert (await hub.snapshot("S1", 1)) is frame
        await until(lambda: not reg.open, 1.0)
        reg.refuse = True
        with pytest.raises(CameraError, match="refused"):
            await hub.snapshot("S1", 0.2)
        await hub.aclose()

    run(body)


def test_viewer_stall_and_unknown_printer() -> None:
    async def body() -> None:
        reg = Registry()
        hub = CameraHub(reg, serials=["S1"])
        viewer = hub.join("S1")
        with pytest.raises(CameraStallError):
            await viewer.next(0.05)
        with pytest.raises(CameraError):
            hub.join("nope")
        await hub.aclose()

    run(body)


def test_a_viewer_joining_while_the_upstream_closes_gets_a_new_one() -> None:
    async def body() -> None:
        reg = Registry()
        reg.close_delay = 0.2  # a TLS close that takes a while
        hub = CameraHub(reg, linger=0.01)
        hub.join("S1").close()
        await until(lambda: reg.open)
        await until(lambda: not hub.stats("S1").upstream_open)  # linger over, closing
        assert reg.open, "the close should still be under way"
        late = hub.join("S1")
        await until(lambda: reg.opened == 2 and len(reg.open) == 1, 2.0)
        frame = reg.push()
        assert (await late.next(1)) is frame
        await hub.aclose()

    run(body)
