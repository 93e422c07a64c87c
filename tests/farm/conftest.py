"""Fixtures of the farm's tests: a private PostgreSQL cluster, and a store on either engine.

``pg_url`` starts one throwaway cluster per test session (per pytest-xdist
worker): ``initdb`` into a temporary directory, then ``postgres`` on a free
loopback port with its unix socket in that directory, password
authentication (so the tests can check the password never shows; their
URLs name a libpq password file instead), no fsync.
PostgreSQL refuses to run as root: as root the cluster runs as ``nobody``.
``store_url`` gives each test a database of its own: a fresh SQLite file, or
a fresh database in that cluster.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.binaries import needs
from tests.conftest import binary_path, free_port_block, wait_for

PG_USER = "farm"


def _as_unprivileged() -> dict[str, Any]:
    """What makes a child process run as ``nobody`` when we are root (nothing otherwise)."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


def _pg_connect(url: str, **options: Any) -> Any:
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        connect_timeout=5,
        **{str(k): str(v) for k, v in parsed.query.items()},
        **options,
    )


def _pg_ready(url: str) -> bool:
    try:
        with _pg_connect(url) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[tuple[str, str]]:
    """A private cluster: its URL and the password of its user ``farm``."""
    bindir = Path(os.path.realpath(binary_path("postgres"))).parent
    as_nobody = _as_unprivileged()
    # short (the unix socket's path has a length limit) and reachable by nobody
    workdir = Path(tempfile.mkdtemp(prefix="bambu-pg-", dir="/tmp"))
    password = secrets.token_hex(12)
    (workdir / "pw").write_text(password + "\n")
    if as_nobody:
        for path in (workdir, workdir / "pw"):
            os.chown(path, as_nobody["user"], as_nobody["group"])
    data = workdir / "data"
    # The URLs the tests use carry no password (a failing test prints its arguments):
    # libpq reads it from this file, which only we can read.
    passfile = workdir / "pgpass"
    passfile.write_text(f"127.0.0.1:*:*:{PG_USER}:{password}\n")
    passfile.chmod(0o600)
    initdb = subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            PG_USER,
            "--auth=scram-sha-256",
            f"--pwfile={workdir / 'pw'}",
            "--no-sync",
            "--no-locale",
            "-E",
            "UTF8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **as_nobody,
    )
    (workdir / "pw").unlink()
    if initdb.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"initdb failed: {initdb.stderr.strip()[-500:]}")
    proc: subprocess.Popen[bytes] | None = None
    url = ""
    for _ in range(5):  # the port was free a moment ago; another worker may take it first
        port = free_port_block()
        log = open(workdir / f"postgres-{port}.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-k",
                str(workdir),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            **as_nobody,
        )
        log.close()
        url = f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres?passfile={passfile}"
        running = proc

        def up(url: str = url, running: subprocess.Popen[bytes] = running) -> bool:
            return running.poll() is not None or _pg_ready(url)

        wait_for(up, 30, "postgres to accept connections")
        if proc.poll() is None:
            break
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail("postgres did not start")
    try:
        yield url, password
    finally:
        assert proc is not None
        proc.send_signal(signal.SIGINT)  # fast shutdown: clients are disconnected
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url(pg_cluster: tuple[str, str]) -> str:
    """``postgresql://farm@127.0.0.1:<port>/postgres?passfile=...`` of a private cluster."""
    return pg_cluster[0]


@pytest.fixture(scope="session")
def _pg_farm_database(pg_url: str) -> str:
    """One database of the session's cluster for the farm's tests (emptied before each)."""
    name = f"farm_{uuid.uuid4().hex[:16]}"
    with _pg_connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg_url.replace("/postgres?", f"/{name}?")


@pytest.fixture
def pg_database(_pg_farm_database: str) -> str:
    """The URL of an empty database in the session's cluster.

    Emptied rather than created anew (a CREATE DATABASE and the tables cost a
    quarter of a second a test): the farm's tables are dropped, so each test
    also sees the store create them.
    """
    with _pg_connect(_pg_farm_database, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS farm_jobs, farm_printers")
    return _pg_farm_database


ENGINES = ["sqlite", pytest.param("postgresql", marks=needs("postgres"))]


@pytest.fixture(params=ENGINES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty farm database: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'farm.db'}"
    return str(request.getfixturevalue("pg_database"))
