"""``bambu serve`` and ``bambu sim --serve`` as a user runs them, in real subprocesses.

``bambu serve`` reads the account from the environment ``bambu sim`` exports
(the token and the API URL, as after ``bambu login``), follows every printer
over one MQTT connection, prints its URL once and stops on Ctrl-C with status
0; each request gives one audit line with the token's id, never the token.
Bad options and a missing login are one line each; ``bambu sim --serve``
exports a working server URL and token.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bambulab.servers.tokens import TokenStore
from bambulab.sim.live import Simulator
from tests.cli import forkrun
from tests.cli.conftest import Background, sim_environment
from tests.conftest import unlimited, wait_for
from tests.farm.test_notify import Webhook
from tests.sim.simtools import SEED_DEVICE


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(unlimited(), tick_interval=0.5) as simulator:
        yield simulator


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return forkrun.run(args, env, 60)


def test_serve_follows_the_account_and_stops_on_ctrl_c(sim: Simulator, tmp_path: Path) -> None:
    store = tmp_path / "tokens.sqlite3"
    env = sim_environment(sim, BAMBU_TOKEN_STORE=str(store), HOME=str(tmp_path))
    secret, issued = TokenStore(store).create("read")
    server = Background(["serve", "--port", "0"], env)
    try:
        line = server.wait_line("Serving ")
        url = next(word for word in line.split() if word.startswith("http://"))
        printers = len(sim.world.devices_of(sim.user_id))
        assert f"({printers} printers;" in line
        health = httpx.get(f"{url}/health", timeout=10).json()
        assert health["parts"] == ["proxy", "compat", "live", "metrics", "farm"]
        assert health["printers"] == printers
        index = httpx.get(f"{url}/", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
        assert index.json()["proxy_mode"] == "strict"
    finally:
        status, rest = server.stop()
    assert status == 0, rest
    assert "Traceback" not in rest
    assert "GET /health 200" in rest  # the audit line
    assert secret not in rest and env["BAMBU_TOKEN"] not in rest
    assert issued.id  # known; the audit lines name ids only


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--mode", "open"], "--mode must be strict or full"),
        (["serve", "--rate", "lots"], "--rate: not a rate"),
        (["serve", "proxy", "--mode", "x"], "--mode must be strict or full"),
    ],
)
def test_bad_options_are_one_line(
    sim: Simulator, tmp_path: Path, args: list[str], message: str
) -> None:
    done = run(args, sim_environment(sim, HOME=str(tmp_path)))
    assert done.returncode == 2, done
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_serve_without_a_login_says_how(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMBU_")}
    env.update(HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"))
    done = run(["serve", "--port", "0"], env)
    assert done.returncode == 1, done
    assert "bambu login" in done.stderr and "Traceback" not in done.stderr


def test_serve_on_a_port_in_use_is_one_line(sim: Simulator, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = sim_environment(sim, HOME=str(tmp_path), BAMBU_TOKEN_STORE=str(tmp_path / "t.db"))
        done = run(["serve", "proxy", "--port", str(port)], env)
    assert done.returncode == 1, done
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_sim_serve_exports_a_working_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMBU_")}
    env.update(HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"))
    sim = Background(["sim", "--port", "0", "--serve", "proxy,compat"], env)
    try:
        sim.wait_line("BAMBU_PRINTER_PORT=")
        exports: dict[str, str] = {}
        for _ in range(3):
            line = sim.wait_line("BAMBU_")
            name, value = line.strip().removeprefix("export ").split("=", 1)
            exports[name] = shlex.split(value)[0]
            if len(exports) == 3:
                break
        url, token = exports["BAMBU_SERVER_URL"], exports["BAMBU_SERVER_TOKEN"]
        store = Path(exports["BAMBU_TOKEN_STORE"])
        assert oct(store.stat().st_mode & 0o777) == "0o600"
        health = httpx.get(f"{url}/health", timeout=10).json()
        assert health["parts"] == ["proxy", "compat"] and health["mqtt"] == "connected"
        listed = run(["serve", "token", "list", "--json"], {**env, "BAMBU_TOKEN_STORE": str(store)})
        rows = json.loads(listed.stdout)
        assert [r["scope"] for r in rows] == ["control"]
        assert token.startswith(f"bbt_{rows[0]['id']}_")
    finally:
        status, rest = sim.stop()
    assert status == 0, rest
    assert not store.exists()  # the simulator's own store goes with it


def test_sim_serve_refuses_unknown_parts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMBU_")}
    env.update(HOME=str(tmp_path))
    done = run(["sim", "--port", "0", "--serve", "proxy,nonsense"], env)
    assert done.returncode == 2
    assert "unknown part(s) nonsense" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.needs("redis-server")
def test_serve_shares_limits_through_redis(sim: Simulator, tmp_path: Path, redis_url: str) -> None:
    store = tmp_path / "tokens.sqlite3"
    env = sim_environment(sim, BAMBU_TOKEN_STORE=str(store), HOME=str(tmp_path))
    secret, _ = TokenStore(store).create("read")
    servers = [
        Background(["serve", "proxy", "--port", "0", "--rate", "3/min", "--redis", redis_url], env)
        for _ in range(2)
    ]
    try:
        urls = [
            next(w for w in s.wait_line("Serving ").split() if w.startswith("http://"))
            for s in servers
        ]
        auth = {"Authorization": f"Bearer {secret}"}
        codes = [
            httpx.get(f"{urls[i % 2]}/v1/iot-service/api/user/bind", headers=auth, timeout=10)
            for i in range(4)
        ]
        # Three requests in the minute, counted across both instances: the fourth is refused.
        assert [c.status_code for c in codes] == [200, 200, 200, 429]
        assert int(codes[3].headers["retry-after"]) >= 1
    finally:
        results = [s.stop() for s in servers]
    assert all(status == 0 for status, _ in results), results


def test_serve_with_redis_away_is_one_line(sim: Simulator, tmp_path: Path) -> None:
    env = sim_environment(sim, HOME=str(tmp_path), BAMBU_TOKEN_STORE=str(tmp_path / "t.db"))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = run(["serve", "--redis", f"redis://:pa55word@127.0.0.1:{port}/0"], env)
    assert done.returncode == 1, done
    assert "redis" in done.stderr.lower() and "pa55word" not in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_serve_farm_sends_the_notifications_its_file_routes(tmp_path: Path) -> None:
    """``bambu serve farm --notify FILE``: a print that finishes on a followed printer
    reaches the route's webhook, as a user would configure it."""
    hook = Webhook()
    try:
        with Simulator(unlimited(), tick_interval=0.2) as sim:
            notify = tmp_path / "notify.json"
            routes = [{"urls": [hook.url("done")], "events": ["finished"]}]
            notify.write_text(json.dumps({"routes": routes}))
            store = tmp_path / "tokens.sqlite3"
            env = sim_environment(sim, BAMBU_TOKEN_STORE=str(store), HOME=str(tmp_path))
            reader, _ = TokenStore(store).create("read")
            args = ["serve", "farm", "--port", "0", "--notify", str(notify)]
            args += ["--database", f"sqlite:///{tmp_path / 'farm.db'}"]
            args += ["--files", str(tmp_path / "files")]
            server = Background(args, env)
            try:
                line = server.wait_line("Serving ")
                url = next(word for word in line.split() if word.startswith("http://"))

                def printing() -> bool:
                    tiles = httpx.get(
                        f"{url}/farm/api/tiles",
                        headers={"Authorization": f"Bearer {reader}"},
                        timeout=10,
                    ).json()["tiles"]
                    return "s-printing" in tiles.get(SEED_DEVICE, "")

                wait_for(printing, 20, "the server follows the printing printer")
                sim.advance_clock(6 * 3600)  # the rest of its job, in simulated time
                wait_for(lambda: hook.at("done"), 30, "the webhook's message")
            finally:
                status, rest = server.stop()
        assert status == 0, rest
        assert "Traceback" not in rest
        (body,) = hook.at("done")
        assert body["title"].startswith("Print finished on ")
        assert SEED_DEVICE in body["message"]
    finally:
        hook.close()
