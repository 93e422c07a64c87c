"""Commands from many threads while reports pour in: the one TLS connection must survive.

paho, driven by our own network thread, would write a publish to the socket
from whichever thread called it, while the network thread reads the same TLS
connection. Two threads inside one TLS session corrupt its records: the broker
answers "bad record mac" by hanging up, and the client reconnects again and
again. Found by ``bench/soak.py``.
"""

from __future__ import annotations

import threading
import time

from bambulab import BambuMQTT
from bambulab.errors import BambuError
from bambulab.sim.config import parse_fleet
from bambulab.sim.live import Simulator
from tests.conftest import cloud_mqtt, unlimited


def test_commands_from_many_threads_keep_the_connection() -> None:
    config = unlimited().with_demo_fleet(parse_fleet(["x1c"] * 6))
    # X1 printers send their whole report, here 20 times a second each.
    with Simulator(config, lan=False, time_scale=60, tick_interval=0.05) as sim:
        serials = [e.serial for e in sim.endpoints()]
        client: BambuMQTT = cloud_mqtt(sim, serials, command_timeout=3)
        client.connect()
        stop = threading.Event()
        answered: list[int] = []
        errors: list[str] = []

        def send(index: int) -> None:
            count = 0
            while not stop.is_set():
                try:
                    client.set_light(count % 2 == 0, serial=serials[index % len(serials)])
                    count += 1
                except BambuError as exc:
                    errors.append(str(exc))
                    time.sleep(0.05)
            answered.append(count)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
        try:
            for thread in threads:
                thread.start()
            time.sleep(5)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
            connects = client.connection.connects
            client.disconnect()
        assert connects == 1, f"the connection was lost {connects - 1} times: {errors[:3]}"
        assert not errors
        assert sum(answered) > 100
