"""Streaming cloud uploads through both faces, against the simulated S3 over loopback sockets.

Faults come from the simulator's FaultBook (``expired``, ``drop``, ``status``)
on the ``/sim-s3/`` path, so the client's retry and re-ask paths run over
real connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bambulab import AsyncBambuClient, BambuClient
from bambulab.errors import (
    BambuError,
    ConfigurationError,
    ForbiddenError,
    ProtocolError,
    RequestTimeoutError,
    TransportError,
)
from bambulab.protocol.http import NO_RETRY
from bambulab.sim import CloudSimulator
from tests.cli import forkrun
from tests.conftest import Face, wait_for

S3 = "/sim-s3/"
MIB = 1 << 20


def _file(tmp_path: Path, size: int, name: str = "part.3mf") -> tuple[Path, str]:
    """A file of ``size`` pseudo-random-ish bytes (written in pieces) and its MD5."""
    path = tmp_path / name
    digest = hashlib.md5()
    block = hashlib.sha256(name.encode()).digest() * 4096  # 128 KiB pattern
    with path.open("wb") as out:
        left = size
        counter = 0
        while left:
            piece = (counter.to_bytes(8, "big") + block)[:left]
            out.write(piece)
            digest.update(piece)
            left -= len(piece)
            counter += 1
    return path, digest.hexdigest()


def _stored(sim: CloudSimulator, file_id: str) -> tuple[str, int]:
    """MD5 and size of the uploaded object, downloaded through a pre-signed GET."""
    cloud_file = sim.world.files[file_id]
    url = sim.world.presigned_url(sim.url, "GET", cloud_file.key)
    digest = hashlib.md5()
    size = 0
    with httpx.stream("GET", url, timeout=30) as answer:
        assert answer.status_code == 200
        for chunk in answer.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _leftovers(sim: CloudSimulator) -> list[str]:
    """Temporary files of the object store (a dropped or refused PUT must leave none)."""
    return sorted(p.name for p in sim.world.objects.root.glob("incoming-*"))


@pytest.fixture
def no_leftovers(sim: CloudSimulator) -> Iterator[None]:
    yield
    wait_for(lambda: not _leftovers(sim), 5, "the store's temporary files to be gone")


def test_round_trip_is_byte_exact_with_monotonic_progress(
    client: Face, sim: CloudSimulator, tmp_path: Path, no_leftovers: None
) -> None:
    path, md5 = _file(tmp_path, 3 * MIB + 12345)
    seen: list[tuple[int, int]] = []
    result = client.upload_file("part.3mf", str(path), progress=lambda s, t: seen.append((s, t)))
    assert result["success"] is True
    assert result.md5 == md5 and result.size == path.stat().st_size
    assert result.file_url and "Signature" not in result.file_url
    assert _stored(sim, result.file_id) == (md5, path.stat().st_size)
    assert sim.world.files[result.file_id].md5 == md5
    sent = [s for s, _ in seen]
    assert sent == sorted(sent) and len(set(sent)) == len(sent), "progress only grows"
    assert seen[-1] == (path.stat().st_size, path.stat().st_size)
    assert {t for _, t in seen} == {path.stat().st_size}


def test_get_streams_with_range(client: Face, sim: CloudSimulator, tmp_path: Path) -> None:
    path, _ = _file(tmp_path, 2 * MIB)
    result = client.upload_file("ranged.gcode", path)
    key = sim.world.files[result.file_id].key
    url = sim.world.presigned_url(sim.url, "GET", key)
    part = httpx.get(url, headers={"Range": "bytes=100-199"}, timeout=10)
    assert part.status_code == 206 and part.content == path.read_bytes()[100:200]
    head = httpx.head(sim.world.presigned_url(sim.url, "HEAD", key), timeout=10)
    assert head.status_code == 200 and head.headers["content-length"] == str(2 * MIB)
    with sim.world.open_object(key) as handle:
        assert hashlib.md5(handle.read()).hexdigest() == result.md5


def test_single_url_flow(client: Face, sim: CloudSimulator, tmp_path: Path) -> None:
    path, md5 = _file(tmp_path, MIB + 7, "single.gcode")
    seen: list[int] = []
    result = client.upload_file(
        "single.gcode", path, flow="single", progress=lambda s, t: seen.append(s)
    )
    assert result["success"] and result.md5 == md5
    assert sim.world.uploads[result.file_id].flow == "single"
    assert _stored(sim, result.file_id) == (md5, MIB + 7)
    assert seen[-1] == MIB + 7


def test_expired_url_is_asked_for_again_once(
    client: Face, sim: CloudSimulator, tmp_path: Path, faults: Callable[..., None]
) -> None:
    # Large enough that storage answers long before the body is sent.
    path, md5 = _file(tmp_path, 24 * MIB)
    before = set(sim.world.uploads)
    faults(kind="expired", path=S3, count=1)
    result = client.upload_file("part.3mf", path)
    assert result.md5 == md5
    asked = set(sim.world.uploads) - before
    assert len(asked) == 2, "fresh URLs were asked for exactly once"
    assert _stored(sim, result.file_id)[0] == md5


def test_expired_twice_is_a_clear_error(
    client: Face, sim: CloudSimulator, tmp_path: Path, faults: Callable[..., None]
) -> None:
    path, _ = _file(tmp_path, 200_000)
    before = set(sim.world.uploads)
    files_before = set(sim.world.files)
    faults(kind="expired", path=S3, count=2)
    with pytest.raises(ForbiddenError, match="again with fresh URLs: AccessDenied") as caught:
        client.upload_file("part.3mf", path)
    assert "Signature" not in str(caught.value)
    assert len(set(sim.world.uploads) - before) == 2, "asked once more, not in a loop"
    assert set(sim.world.files) == files_before


def test_server_error_is_retried(
    client: Face, sim: CloudSimulator, tmp_path: Path, faults: Callable[..., None]
) -> None:
    path, md5 = _file(tmp_path, 2 * MIB)
    faults(kind="status", path=S3, status=500, count=1)
    result = client.upload_file("part.3mf", path)
    assert _stored(sim, result.file_id) == (md5, 2 * MIB)


def test_dropped_connection_is_retried(
    client: Face,
    sim: CloudSimulator,
    tmp_path: Path,
    faults: Callable[..., None],
    no_leftovers: None,
) -> None:
    path, md5 = _file(tmp_path, 4 * MIB)
    faults(kind="drop", path=S3, after_bytes=2 * MIB + 100, count=1)
    seen: list[int] = []
    result = client.upload_file("part.3mf", path, progress=lambda s, t: seen.append(s))
    assert _stored(sim, result.file_id) == (md5, 4 * MIB)
    assert all(a < b for a, b in itertools.pairwise(seen)), f"progress went back: {seen}"
    assert seen[-1] == 4 * MIB


def test_connection_dropped_every_time_gives_up(
    client: Face,
    sim: CloudSimulator,
    tmp_path: Path,
    faults: Callable[..., None],
    no_leftovers: None,
) -> None:
    path, _ = _file(tmp_path, 3 * MIB)
    files_before = set(sim.world.files)
    faults(kind="drop", path=S3, after_bytes=MIB, count=20)
    with pytest.raises((TransportError, ProtocolError)) as caught:
        client.upload_file("part.3mf", path)
    assert "\n" not in str(caught.value) and "Signature" not in str(caught.value)
    assert set(sim.world.files) == files_before, "nothing registered"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.3mf", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "empty.3mf", b""), "empty"),
        (lambda d: _write(d / "notes.txt", b"x"), "3mf"),
    ],
    ids=["missing", "directory", "empty", "wrong-type"],
)
def test_bad_files_are_clear_errors_before_sending(
    client: Face, sim: CloudSimulator, tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    before = set(sim.world.uploads)
    target = make(tmp_path)
    with pytest.raises(ConfigurationError, match=message):
        client.upload_file(target.name or "x.3mf", str(target))
    assert set(sim.world.uploads) == before, "nothing was asked of the cloud"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("how", ["grew", "shrank"])
def test_file_changing_size_is_a_clear_error(
    client: Face, sim: CloudSimulator, tmp_path: Path, how: str, no_leftovers: None
) -> None:
    path, _ = _file(tmp_path, 3 * MIB)
    files_before = set(sim.world.files)

    def meddle(sent: int, total: int) -> None:
        if how == "grew":
            with path.open("ab") as out:
                out.write(b"more")
        else:
            os.truncate(path, MIB + 10)

    with pytest.raises(ConfigurationError, match=f"the file {how} during the upload"):
        client.upload_file("part.3mf", path, progress=meddle)
    assert set(sim.world.files) == files_before


def _upload_with(sim: CloudSimulator, face: str, path: Path, **options: Any) -> Any:
    """One upload through a fresh client of ``face`` built with ``options``."""
    token = sim.issue_token(sim.demo_account.email)
    progress = options.pop("progress", None)
    if face == "sync":
        with BambuClient(token=token, base_url=sim.url, **options) as client:
            return client.upload_file(path.name, path, progress=progress)

    async def run() -> Any:
        async with AsyncBambuClient(token=token, base_url=sim.url, **options) as client:
            return await client.upload_file(path.name, path, progress=progress)

    return asyncio.run(run())


def test_slow_but_steady_upload_outlives_the_request_timeout(
    sim: CloudSimulator, tmp_path: Path, face: str
) -> None:
    # timeout is a per-step deadline for uploads: 8 chunks 0.1 s apart take
    # longer than the 0.4 s timeout in all, and must still go through.
    path, md5 = _file(tmp_path, 8 * MIB, "slow.3mf")
    result = _upload_with(
        sim,
        face,
        path,
        timeout=0.4,
        retry=NO_RETRY,
        progress=lambda s, t: threading.Event().wait(0.1),
    )
    assert result.md5 == md5


def test_stalled_storage_times_out_and_is_retried(
    sim: CloudSimulator, tmp_path: Path, faults: Callable[..., None]
) -> None:
    path, md5 = _file(tmp_path, 2 * MIB)
    faults(kind="delay", path=S3, seconds=3.0, count=1)
    token = sim.issue_token(sim.demo_account.email)
    with BambuClient(token=token, base_url=sim.url, timeout=1.0) as client:
        result = client.upload_file("part.3mf", path)
    assert result.md5 == md5


def test_memory_stays_flat(sim: CloudSimulator, tmp_path: Path, face: str) -> None:
    # The cheap version of bench/cloud_upload.py: 64 MiB must not allocate
    # more than a few chunks' worth.
    path, md5 = _file(tmp_path, 64 * MIB, "big.3mf")
    tracemalloc.start()
    try:
        result = _upload_with(sim, face, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.md5 == md5
    assert peak < 16 * MIB, f"peak traced allocation {peak / MIB:.1f} MiB"


def test_retries_are_bounded(
    client: Face, tmp_path: Path, faults: Callable[..., None], sim: CloudSimulator
) -> None:
    path, _ = _file(tmp_path, 100_000)
    faults(kind="status", path=S3, status=503, count=50)
    with pytest.raises(BambuError, match="refused the file upload: HTTP 503"):
        client.upload_file("part.3mf", path)
    pending: list[dict[str, Any]] = httpx.get(f"{sim.url}/sim/faults", timeout=5).json()["faults"]
    assert pending and pending[0]["count"] >= 50 - 8, "a handful of tries, not a loop"


# --- bambu upload ------------------------------------------------------------------------


def _bambu(sim: CloudSimulator, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMBU_")}
    env.update(
        HOME=str(home),
        BAMBU_API_URL=sim.url,
        BAMBU_TOKEN=sim.issue_token(sim.demo_account.email),
        BAMBU_TOKEN_FILE=str(home / "token"),
        COLUMNS="200",
    )
    return forkrun.run(args, env, 60, cwd=home)


def test_cli_upload_json_and_errors(sim: CloudSimulator, tmp_path: Path) -> None:
    path, md5 = _file(tmp_path, MIB + 3, "cli.3mf")
    done = _bambu(sim, tmp_path, "upload", str(path), "--name", "named.3mf", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["success"] is True and answer["md5"] == md5 and answer["size"] == MIB + 3
    assert answer["file_name"] == "named.3mf" and "Signature" not in done.stdout
    assert _stored(sim, answer["file_id"]) == (md5, MIB + 3)
    shown = _bambu(sim, tmp_path, "upload", str(path))
    assert shown.returncode == 0 and md5 in shown.stdout and "file id" in shown.stdout
    for args, message in (
        (("upload", "missing.3mf"), "no such file"),
        (("upload", str(path), "--name", "notes.txt"), "the cloud takes .3mf"),
    ):
        failed = _bambu(sim, tmp_path, *args)
        assert failed.returncode == 1 and failed.stdout == ""
        assert failed.stderr.startswith("error: ") and message in failed.stderr
        assert failed.stderr.count("\n") == 1, failed.stderr


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_cli_upload_draws_a_progress_bar_on_a_terminal(sim: CloudSimulator, tmp_path: Path) -> None:
    path, md5 = _file(tmp_path, 8 * MIB, "bar.3mf")
    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMBU_")}
    env.update(
        HOME=str(tmp_path),
        BAMBU_API_URL=sim.url,
        BAMBU_TOKEN=sim.issue_token(sim.demo_account.email),
        BAMBU_TOKEN_FILE=str(tmp_path / "token"),
        COLUMNS="120",
        TERM="xterm",
    )
    with subprocess.Popen(
        [sys.executable, "-m", "bambulab.cli", "upload", str(path)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    ) as proc:
        os.close(slave)
        screen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the run is over
                break
            if not chunk:
                break
            screen += chunk
        os.close(master)
        assert proc.wait(60) == 0, screen
    assert md5.encode() in screen
    assert b"MB" in screen, screen
    assert b"\x1b[?25l" in screen, "rich hid the cursor to draw the bar"


# --- a hostile storage host: the streamed PUT still has deadlines -------------------------


def _put_to(face: str, base: str, url: str, idle: float) -> None:
    body = [b"x" * 1000]
    if face == "sync":
        with BambuClient(token="t", base_url=base, timeout=idle) as client:
            client._transport.put_stream(url, body, 1000)
        return

    async def run() -> None:
        async with AsyncBambuClient(token="t", base_url=base) as client:
            await client._transport.put_stream(url, _aiter(body), 1000, idle=idle)

    asyncio.run(run())


@pytest.mark.parametrize("mode", ["drip_headers", "silent", "truncated"])
def test_streamed_put_is_bounded_after_the_body(face: str, mode: str) -> None:
    from tests.integration.hostile_http import HostileServer

    idle = 0.5
    with HostileServer(mode) as server:
        started = time.monotonic()
        with pytest.raises(BambuError) as caught:
            _put_to(face, server.url, server.url + "/bucket/f?Signature=s", idle)
        elapsed = time.monotonic() - started
    if mode == "truncated":
        assert isinstance(caught.value, ProtocolError)
    else:
        assert isinstance(caught.value, RequestTimeoutError)
        assert elapsed < idle + 1.0, elapsed
    assert "Signature" not in str(caught.value) and "\n" not in str(caught.value)


async def _aiter(items: list[bytes]) -> Any:
    for item in items:
        yield item


def test_urls_expiring_mid_upload_are_asked_for_again(tmp_path: Path, face: str) -> None:
    # The real expiry check, not a fault: simulated time jumps past the URLs'
    # lifetime while the bytes are on their way, so the size PUT is refused.
    from tests.conftest import unlimited

    path, md5 = _file(tmp_path, 3 * MIB)
    with CloudSimulator(unlimited()) as own:
        jumped: list[int] = []

        def jump(sent: int, total: int) -> None:
            if not jumped:
                jumped.append(sent)
                own.advance_clock(own.config.url_ttl + 60)

        result = _upload_with(own, face, path, progress=jump)
        assert jumped and result.md5 == md5
        assert len(own.world.uploads) == 2, "fresh URLs asked for once"
        assert _stored(own, result.file_id) == (md5, 3 * MIB)


class _Cancelled(Exception):
    pass


def test_progress_callback_can_cancel(
    client: Face, sim: CloudSimulator, tmp_path: Path, no_leftovers: None
) -> None:
    path, _ = _file(tmp_path, 4 * MIB)
    files_before = set(sim.world.files)

    def cancel(sent: int, total: int) -> None:
        raise _Cancelled

    with pytest.raises(_Cancelled):
        client.upload_file("part.3mf", path, progress=cancel)
    assert set(sim.world.files) == files_before
    assert not [t for t in threading.enumerate() if t.name.startswith("bambu-upload-md5")]
