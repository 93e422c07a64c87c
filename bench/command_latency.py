"""Command round trip: a command sent through the client until the printer's reply is in hand.

Against the simulator on loopback (cloud broker: amqtt, or mosquitto with
``--broker mosquitto``), one printer, commands one after another:

* **ours**: ``BambuMQTT.set_light`` (queued to the network thread, published,
  the reply matched by ``sequence_id``);
* **baseline**: a bare paho client with ``loop_start()``, the way a short
  script does it: publish the same ``ledctrl`` and wait on an event set by
  ``on_message`` when the reply with its ``sequence_id`` arrives.

Printed: p50/p95/p99 of each and the ratio ours / baseline (p50 and p95).

Usage: ``.venv/bin/python bench/command_latency.py [--count 300] [--broker amqtt]``
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bambulab import BambuMQTT
from bambulab.mqtt.tls import cloud_context
from bambulab.sim.config import RateLimits, SimConfig
from bambulab.sim.live import Simulator


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return at(0.50), at(0.95), at(0.99)


def ours(sim: Simulator, serial: str, token: str, count: int) -> list[float]:
    client = BambuMQTT(
        sim.user_id,
        serial,
        token=token,
        host=sim.mqtt_host,
        port=sim.mqtt_port,
        ca_file=sim.ca_file,
    )
    client.connect()
    client.get_full_status()
    samples = []
    try:
        for i in range(count):
            started = time.perf_counter()
            client.set_light(i % 2 == 0)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        client.close()
    return samples


def baseline(sim: Simulator, serial: str, token: str, count: int) -> list[float]:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-baseline")
    client.username_pw_set(f"u_{sim.user_id}", token)
    client.tls_set_context(cloud_context(sim.ca_file))
    waiting: dict[str, threading.Event] = {}
    subscribed = threading.Event()

    def on_message(c: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        body = json.loads(message.payload).get("system", {})
        event = waiting.get(str(body.get("sequence_id")))
        if event is not None:
            event.set()

    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(sim.mqtt_host, sim.mqtt_port)
    client.loop_start()
    client.subscribe(f"device/{serial}/report")
    subscribed.wait(10)
    samples = []
    try:
        for i in range(count):
            seq = str(900000 + i)
            done = waiting[seq] = threading.Event()
            payload = {
                "system": {
                    "command": "ledctrl",
                    "sequence_id": seq,
                    "led_node": "chamber_light",
                    "led_mode": "on" if i % 2 == 0 else "off",
                    "led_on_time": 500,
                    "led_off_time": 500,
                    "loop_times": 0,
                    "interval_time": 0,
                }
            }
            started = time.perf_counter()
            client.publish(f"device/{serial}/request", json.dumps(payload))
            if not done.wait(10):
                raise SystemExit("the baseline got no reply")
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        client.loop_stop()
        client.disconnect()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--broker", default="amqtt", choices=["amqtt", "mosquitto"])
    args = parser.parse_args()
    config = SimConfig(rate_limits=RateLimits(enabled=False))
    with Simulator(config, lan=False, broker=args.broker, tick_interval=0.5) as sim:
        serial = next(e.serial for e in sim.endpoints() if sim.printers[e.serial].online)
        token = sim.issue_token(sim.demo_account.email)
        base = percentiles(baseline(sim, serial, token, args.count))
        mine = percentiles(ours(sim, serial, token, args.count))
    print(f"command round trip, {args.count} commands, {args.broker} broker, one printer")
    print(f"  ours      p50 {mine[0]:6.2f} ms  p95 {mine[1]:6.2f} ms  p99 {mine[2]:6.2f} ms")
    print(f"  baseline  p50 {base[0]:6.2f} ms  p95 {base[1]:6.2f} ms  p99 {base[2]:6.2f} ms")
    print(f"  ratio ours/baseline: p50 {mine[0] / base[0]:.2f}, p95 {mine[1] / base[1]:.2f}")


if __name__ == "__main__":
    main()
