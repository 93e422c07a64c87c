"""Hostile HTTP servers: every request ends by its deadline, within its size cap, in one line.

Both faces (and ``bambu devices``) talk to :class:`HostileServer` over real
loopback sockets with a short deadline. The drips send a byte every 0.25 s,
well inside any per-read timeout, so only a wall-clock deadline ends them.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bambulab import AsyncBambuClient, BambuClient, RetryPolicy
from bambulab.cloud.transport import Download
from bambulab.errors import BambuError, ProtocolError, RequestTimeoutError, TransportError
from bambulab.protocol.http import NO_RETRY
from tests.cli import forkrun
from tests.integration.hostile_http import HostileServer

DEADLINE = 1.0  # four drip intervals: per-read timeouts never fire
SLACK = 1.0
TOKEN = "eyJhbGciOiJub25lIn0.eyJ1aWQiOjQyfQ.not-a-real-token"


def get_devices(face: str, url: str, **kw: Any) -> Any:
    kw.setdefault("timeout", DEADLINE)
    kw.setdefault("retry", NO_RETRY)
    if face == "sync":
        with BambuClient(token=TOKEN, base_url=url, **kw) as client:
            return client.get_devices()

    async def run() -> Any:
        async with AsyncBambuClient(token=TOKEN, base_url=url, **kw) as client:
            return await client.get_devices()

    return asyncio.run(run())


def raw_put(face: str, url: str, timeout: float) -> Any:
    """A bare PUT to a pre-signed URL, as uploads make (deadline: 4 x timeout)."""
    if face == "sync":
        with BambuClient(token=TOKEN, base_url=url, timeout=timeout) as client:
            return client._transport.raw("PUT", url + "/bucket/f?Signature=s", b"x", {})

    async def run() -> Any:
        async with AsyncBambuClient(token=TOKEN, base_url=url, timeout=timeout) as client:
            return await client._transport.raw("PUT", url + "/bucket/f?Signature=s", b"x", {})

    return asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def failure(face: str, mode: str, **kw: Any) -> tuple[BambuError, float]:
    with HostileServer(mode) as server:
        started = time.monotonic()
        with pytest.raises(BambuError) as info:
            get_devices(face, server.url, **kw)
        elapsed = time.monotonic() - started
    message = str(info.value)
    assert "\n" not in message and message.strip() == message, message
    assert "Bearer" not in message and TOKEN not in message
    return info.value, elapsed


@pytest.mark.parametrize("mode", ["drip_body", "drip_headers", "silent"])
def test_a_slow_or_silent_server_ends_at_the_deadline(face: str, mode: str) -> None:
    error, elapsed = failure(face, mode)
    assert isinstance(error, RequestTimeoutError), repr(error)
    assert f"no complete answer from http://127.0.0.1:{error.url.rsplit(':', 1)[1]}" in str(error)
    assert str(error).endswith(f"within {DEADLINE:g} s")
    assert DEADLINE - 0.1 <= elapsed <= DEADLINE + SLACK, elapsed


@pytest.mark.parametrize(
    ("mode", "pattern", "quick"),
    [
        ("huge_declared", r"larger than 8 MiB \(declares 1073741824 bytes\)", 0.5),
        ("huge_undeclared", r"larger than 8 MiB$", DEADLINE),
        ("deep", r"nests deeper than 64 levels", DEADLINE),
        ("truncated", r"truncated: got 10 of 1000 bytes$", DEADLINE),
        ("garbage", r"malformed answer from http://127\.0\.0\.1:\d+", DEADLINE),
        ("bad_gzip", r"Content-Encoding does not decode", DEADLINE),
    ],
)
def test_bad_answers_are_protocol_errors_named_in_one_line(
    face: str, mode: str, pattern: str, quick: float
) -> None:
    error, elapsed = failure(face, mode)
    assert isinstance(error, ProtocolError), repr(error)
    assert not isinstance(error, TransportError)
    assert re.search(pattern, str(error)), str(error)
    assert elapsed < quick, elapsed


def test_the_cap_is_configurable(face: str) -> None:
    error, _ = failure(face, "huge_undeclared", max_answer_bytes=256 * 1024)
    assert isinstance(error, ProtocolError) and str(error).endswith("larger than 256 KiB")


def test_retries_fit_in_max_elapsed_instead_of_multiplying_the_deadline(face: str) -> None:
    budget = DEADLINE * 1.5
    policy = RetryPolicy(max_attempts=4, max_elapsed=budget, base_delay=0.1, jitter=0)
    error, elapsed = failure(face, "drip_body", retry=policy)
    assert isinstance(error, RequestTimeoutError)
    # One full try and one squeezed into what is left of max_elapsed. A second
    # full try would end 0.6 s later, four of them three deadlines later.
    assert budget - 0.2 <= elapsed <= budget + 0.45, elapsed


@pytest.mark.parametrize("mode", ["drip_headers", "truncated"])
def test_presigned_url_requests_have_the_same_limits(face: str, mode: str) -> None:
    timeout = 0.25  # raw requests (uploads) get four deadlines: 1 s
    with HostileServer(mode) as server:
        started = time.monotonic()
        with pytest.raises(BambuError) as info:
            raw_put(face, server.url, timeout)
        elapsed = time.monotonic() - started
    if mode == "drip_headers":
        assert isinstance(info.value, RequestTimeoutError)
        assert 4 * timeout - 0.1 <= elapsed <= 4 * timeout + SLACK, elapsed
    else:
        assert isinstance(info.value, ProtocolError)
    assert "Signature" not in str(info.value) and "\n" not in str(info.value)


# --- memory: a 1 GiB answer is never held ---------------------------------------------------

MEMORY_PROBE = textwrap.dedent(
    """
    import asyncio, resource, sys, tracemalloc
    from bambulab import AsyncBambuClient, BambuClient
    from bambulab.errors import ProtocolError
    from bambulab.protocol.http import NO_RETRY
    from tests.integration.hostile_http import HostileServer

    face, fill = sys.argv[1], sys.argv[2].encode()
    server = HostileServer("huge_undeclared", fill=fill)
    tracemalloc.start()
    try:
        if face == "sync":
            with BambuClient(token="t", base_url=server.url, retry=NO_RETRY) as c:
                c.get_devices()
        else:
            async def run():
                async with AsyncBambuClient(token="t", base_url=server.url, retry=NO_RETRY) as c:
                    await c.get_devices()
            asyncio.run(run())
    except ProtocolError as exc:
        print("error:", exc, file=sys.stderr)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    server.stop()
    # VmHWM is this program's own peak. ru_maxrss is not: Linux carries it over
    # exec from the forked parent, so a big pytest process made it look big.
    try:
        with open("/proc/self/status") as status:
            rss = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(peak // (1 << 20), rss // 1024, server.sent // (1 << 20))
    """
)


@pytest.mark.parametrize("fill", ["[", " "])
def test_a_1_gib_answer_costs_little_memory(face: str, fill: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, face, fill],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert proc.returncode == 0, proc.stderr
    peak_mib, rss_mib, sent_mib = map(int, proc.stdout.split())
    print(
        f"{face} {fill!r}: peak traced {peak_mib} MiB, max RSS {rss_mib} MiB, sent {sent_mib} MiB"
    )
    assert "larger than 8 MiB" in proc.stderr
    assert peak_mib < 24, f"reading a capped answer peaked at {peak_mib} MiB"
    assert rss_mib < 120, f"the whole process peaked at {rss_mib} MiB"
    assert sent_mib < 512, "the client stopped reading long before 1 GiB"


# --- downloads: no JSON cap, bounded by the declared size -----------------------------------


def drain(transport: Any, url: str, **kw: Any) -> tuple[Download, int]:
    with transport.stream("GET", url, **kw) as (head, chunks):
        return head, sum(len(chunk) for chunk in chunks)


async def adrain(transport: Any, url: str, **kw: Any) -> tuple[Download, int]:
    got = 0
    async with transport.stream("GET", url, **kw) as (head, chunks):
        async for chunk in chunks:
            got += len(chunk)
    return head, got


def test_a_download_passes_the_json_cap_but_not_its_declared_size() -> None:
    with BambuClient(token=TOKEN, base_url="http://127.0.0.1:1") as client:
        transport = client._transport
        with HostileServer("big_file") as server:
            head, got = drain(transport, server.url + "/file")
        assert head.status == 200 and head.size == got == 20 * 1024 * 1024
        with HostileServer("truncated") as server, pytest.raises(ProtocolError, match="got 10 of"):
            drain(transport, server.url)
        with HostileServer("huge_undeclared") as server:
            with pytest.raises(ProtocolError, match="declares no size"):
                drain(transport, server.url)
            with pytest.raises(ProtocolError, match="larger than 1 MiB"):
                drain(transport, server.url, max_bytes=1 << 20)
        with HostileServer("drip_body") as server:
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError):
                drain(transport, server.url, seconds=DEADLINE)
            assert time.monotonic() - started < DEADLINE + SLACK


def test_an_async_download_has_the_same_bounds() -> None:
    async def run() -> None:
        async with AsyncBambuClient(token=TOKEN, base_url="http://127.0.0.1:1") as client:
            transport = client._transport
            with HostileServer("big_file") as server:
                head, got = await adrain(transport, server.url)
            assert head.size == got == 20 * 1024 * 1024
            with HostileServer("truncated") as server, pytest.raises(ProtocolError, match="10 of"):
                await adrain(transport, server.url)
            with HostileServer("drip_body") as server:
                started = time.monotonic()
                with pytest.raises(RequestTimeoutError):
                    await adrain(transport, server.url, seconds=DEADLINE)
                assert time.monotonic() - started < DEADLINE + SLACK

    asyncio.run(run())


# --- the CLI ---------------------------------------------------------------------------------


def bambu(url: str, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMBU_")}
    env.update(BAMBU_API_URL=url, BAMBU_TOKEN=TOKEN, BAMBU_TIMEOUT=str(timeout))
    started = time.monotonic()
    proc = forkrun.run(args, env, 30)
    return proc, time.monotonic() - started


@pytest.fixture
def cli_servers() -> Iterator[dict[str, HostileServer]]:
    servers = {mode: HostileServer(mode) for mode in ("drip_headers", "deep")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.mark.parametrize(
    ("mode", "word"), [("drip_headers", "no complete answer"), ("deep", "nests deeper")]
)
def test_bambu_devices_ends_with_one_error_line(
    cli_servers: dict[str, HostileServer], mode: str, word: str
) -> None:
    # The CLI retries a timed-out GET within its 8 s budget: 0.5 s tries fit
    # three times (0.5 + 0.5 + 0.5 + 1 + 0.5 s of tries and backoff), then it stops.
    proc, elapsed = bambu(cli_servers[mode].url, "devices", timeout=0.5)
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and TOKEN not in proc.stderr + proc.stdout
    assert elapsed < 8.0 + 3.0, elapsed


# --- proxies from the environment ------------------------------------------------------------


def test_an_environment_proxy_is_used_and_bounded_by_the_deadline(
    face: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through the proxy, the request waits on a silent server until the
    # deadline; a client ignoring HTTP_PROXY fails at once on the unknown host.
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with HostileServer("silent") as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError, match=r"bambu-proxy-test\.invalid"):
            get_devices(face, "http://bambu-proxy-test.invalid")
        assert DEADLINE - 0.1 <= time.monotonic() - started <= DEADLINE + SLACK


def test_no_proxy_sends_a_host_around_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with HostileServer("silent") as proxy, HostileServer("deep") as server:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        with pytest.raises(ProtocolError, match="nests deeper"):
            get_devices("sync", server.url)
