"""Several servers following one fleet through one shared broker (a real mosquitto).

The shared mosquitto *bridges* to the simulator's cloud broker: it pulls
``device/<serial>/report`` of every printer in and pushes
``device/<serial>/request`` out, with one account session for the whole
fleet (the cloud refuses wildcards, so one topic line per printer). Two live
hubs, each in its own server, follow the fleet through it with
``AsyncBambuMQTT(broker="mqtts://...")``: they agree on every printer's
state, and a command sent through the shared broker reaches the printer.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bambulab import AsyncBambuMQTT
from bambulab.errors import ConfigurationError
from bambulab.mqtt.client import broker_endpoint
from bambulab.servers.app import ServerContext, build_app
from bambulab.servers.common import Gate
from bambulab.servers.live import LiveHub, PrinterEntry
from bambulab.servers.runner import AppServer
from bambulab.servers.tokens import TokenStore
from bambulab.sim import Simulator
from bambulab.sim.certs import SimCertificates
from bambulab.sim.mosquitto import _current_user, password_line
from tests.cli.conftest import Background, sim_environment
from tests.conftest import binary_path, free_port_block, wait_for

PASSWORD = "fleet-pw-7c1d"  # the shared broker's password for the servers (test only)


@pytest.fixture(scope="module")
def fleet() -> Iterator[Any]:
    with Simulator() as simulator:
        yield simulator


@pytest.fixture(scope="module")
def shared_broker(fleet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """mosquitto bridged to the simulator's cloud broker; yields (url, ca_file)."""
    binary = binary_path("mosquitto")
    workdir = tmp_path_factory.mktemp("shared-broker")
    certs = SimCertificates()
    leaf = certs.cloud()  # SAN localhost and 127.0.0.1: the servers check the name
    (workdir / "passwords").write_text(password_line("server", PASSWORD))
    (workdir / "passwords").chmod(0o600)
    bridge_topics = "".join(
        f"topic device/{e.serial}/report in 0\ntopic device/{e.serial}/request out 0\n"
        for e in fleet.endpoints()
    )
    for _ in range(5):
        port = free_port_block()
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"user {_current_user()}\n"
            "per_listener_settings false\nallow_anonymous false\n"
            f"password_file {workdir / 'passwords'}\n"
            f"listener {port} 127.0.0.1\n"
            f"cafile {certs.ca_file}\ncertfile {leaf.cert_file}\nkeyfile {leaf.key_file}\n"
            # The bridge: one session of the account to the cloud broker for the fleet.
            "connection simulator-cloud\n"
            f"address 127.0.0.1:{fleet.mqtt_port}\n"
            f"bridge_cafile {fleet.ca_file}\n"
            "bridge_protocol_version mqttv311\ntry_private false\nnotifications false\n"
            "cleansession true\nrestart_timeout 1\nstart_type automatic\n"
            f"remote_clientid shared-bridge-{port}\n"
            f"remote_username u_{fleet.user_id}\n"
            f"remote_password {fleet.issue_token(fleet.demo_account.email)}\n" + bridge_topics
        )
        conf.chmod(0o600)
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

        def up(port: int = port, proc: subprocess.Popen[bytes] = proc) -> bool:
            if proc.poll() is not None:
                return True
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return True
            except OSError:
                return False

        wait_for(up, 10, "mosquitto")
        if proc.poll() is None:
            break
    else:
        pytest.fail("mosquitto did not start")
    yield f"mqtts://server:{PASSWORD}@127.0.0.1:{port}", certs.ca_file
    proc.terminate()
    proc.wait(10)
    certs.cleanup()


def server(fleet: Any, url: str, ca_file: Any, store: Path) -> tuple[AppServer, LiveHub]:
    """One server instance whose hub follows the whole fleet through the shared broker."""
    serials = [e.serial for e in fleet.endpoints()]
    mqtt = AsyncBambuMQTT(None, serials, broker=url, ca_file=ca_file, stall_timeout=5)
    hub = LiveHub([mqtt], [PrinterEntry(s) for s in serials])
    ctx = ServerContext(Gate(TokenStore(store)), bus=hub.bus, hub=hub)
    return AppServer(build_app(ctx, []), on_start=ctx.start, on_stop=ctx.aclose), hub


@pytest.mark.needs("mosquitto")
def test_two_servers_follow_one_fleet_through_a_shared_broker(
    fleet: Any, shared_broker: Any, tmp_path: Path
) -> None:
    url, ca_file = shared_broker
    token = fleet.issue_token(fleet.demo_account.email)
    bound = httpx.get(
        fleet.url + "/v1/iot-service/api/user/bind", headers={"authorization": f"Bearer {token}"}
    ).json()["devices"]
    serials = [d["dev_id"] for d in bound if d["online"]]  # the demo fleet has one powered off
    offline = [d["dev_id"] for d in bound if not d["online"]]
    assert serials and offline
    first, hub1 = server(fleet, url, ca_file, tmp_path / "a.sqlite3")
    second, hub2 = server(fleet, url, ca_file, tmp_path / "b.sqlite3")
    with first, second:
        for serial in serials:  # every printer's reports reach both, through the broker
            wait_for(lambda s=serial: first.call(lambda: hub1.online(s)), 20, f"{serial} on 1")
            wait_for(lambda s=serial: second.call(lambda: hub2.online(s)), 20, f"{serial} on 2")

        def agree(serial: str) -> bool:
            one = first.call(lambda: hub1.state(serial))
            two = second.call(lambda: hub2.state(serial))
            return one is not None and two is not None and dict(one.raw) == dict(two.raw)

        for serial in serials:
            wait_for(lambda s=serial: agree(s), 20, f"both servers agree on {serial}")
        assert first.call(lambda: hub1.connected) and second.call(lambda: hub2.connected)
        for serial in offline:
            assert not first.call(lambda s=serial: hub1.online(s))
            assert not second.call(lambda s=serial: hub2.online(s))

        # A command from server 1 goes out through the shared broker to the printer...
        serial = serials[0]
        target = 41 + len(serials)
        first.run(first.call(lambda: hub1.source_for(serial)).set_bed_temp(target, serial))
        truth = wait_for(
            lambda: (
                fleet.with_printer(serial, lambda p: p.truth()).get("bed_target_temper") == target
            ),
            20,
            "the printer took the command",
        )
        assert truth
        # ...and its new state comes back to both servers.
        wait_for(lambda: second.call(lambda: hub2.state(serial)).bed_target == target, 20, "2")
        wait_for(lambda: first.call(lambda: hub1.state(serial)).bed_target == target, 20, "1")


def test_broker_urls_are_checked_and_the_password_kept_out_of_sight() -> None:
    endpoint = broker_endpoint("mqtts://srv:p%40ss%3Aword@broker.example:9883")
    assert (endpoint.host, endpoint.port, endpoint.username) == ("broker.example", 9883, "srv")
    assert endpoint.password == "p@ss:word" and endpoint.tls is not None
    assert "p@ss" not in repr(endpoint) and "p@ss" not in endpoint.label
    assert broker_endpoint("mqtt://u:pw@127.0.0.1").port == 1883  # loopback may be plain
    assert broker_endpoint("mqtts://u@h", password="tok").password == "tok"
    with pytest.raises(ConfigurationError, match="in clear") as plain:
        broker_endpoint("mqtt://u:topsecret@10.0.0.8:1883")
    assert "topsecret" not in str(plain.value)
    assert broker_endpoint("mqtt://u:pw@10.0.0.8", allow_plain=True).tls is None
    for bad in ("http://u:topsecret@h", "mqtts://", "mqtts://u:topsecret@h:99999"):
        with pytest.raises(ConfigurationError) as refused:
            broker_endpoint(bad)
        assert "topsecret" not in str(refused.value)
    client = AsyncBambuMQTT(None, ["01P00A000000001"], broker="mqtts://u:topsecret@h:8883")
    assert "topsecret" not in repr(client) and "shared broker" in repr(client)
    with pytest.raises(ConfigurationError):
        AsyncBambuMQTT(None, "01P00A000000001", "12345678", broker="mqtts://h", lan=True)


@pytest.mark.needs("mosquitto")
def test_bambu_serve_follows_the_fleet_through_the_shared_broker(
    fleet: Any, shared_broker: Any, tmp_path: Path
) -> None:
    url, ca_file = shared_broker
    store = tmp_path / "tokens.sqlite3"
    secret, _ = TokenStore(store).create("read")
    # The cloud broker is out of reach for this server: only the shared broker serves it.
    env = sim_environment(fleet, BAMBU_TOKEN_STORE=str(store), HOME=str(tmp_path))
    env.update(BAMBU_MQTT_PORT="1", BAMBU_SERVE_BROKER=url)
    served = Background(["serve", "compat", "--port", "0", "--broker-ca", str(ca_file)], env)
    try:
        line = served.wait_line("Serving ")
        base = next(w for w in line.split() if w.startswith("http://"))
        auth = {"Authorization": f"Bearer {secret}"}

        def online() -> int:
            listed = httpx.get(f"{base}/api/v2/printers", headers=auth, timeout=10).json()
            return sum(1 for p in listed["printers"] if p["online"])

        expected = sum(1 for d in fleet.world.devices_of(fleet.user_id) if d.online)
        wait_for(lambda: online() == expected, 20, "every online printer, via the shared broker")
    finally:
        status, rest = served.stop()
    assert status == 0, rest
    assert PASSWORD not in rest
