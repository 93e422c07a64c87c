"""Soak: a simulated fleet for minutes under injected faults; the client must stay true.

Setup, all on loopback: a child process runs the whole simulator
(``bambulab.sim.live.Simulator``: cloud HTTP API, the embedded amqtt cloud
broker and N printers at ``--time-scale``); this process is the client and
nothing else, so its memory and file descriptors are the client's alone.
It follows every printer on **one** cloud ``BambuMQTT`` connection, calls the
cloud HTTP API (``BambuClient.get_devices``/``get_tasks``) in a loop, and
sends commands throughout from a few threads: pause/resume, print speed,
lights, bed and nozzle targets, new prints when a printer is idle.

Two phases:

* **baseline** (``--baseline-seconds``, no faults): command round trip
  (send to reply) and report-to-state lag are measured;
* **faults** (``--minutes``): every ``--fault-interval`` seconds one fault,
  in rotation: cloud broker restart (with downtime), all broker connections
  cut, a printer stalled (publishes nothing), every malformed payload kind on
  a printer's report topic, a printer powered off and on, HTTP 5xx, HTTP 429.
  After each one the soak waits until the client has visibly survived it
  (reconnected and reports flowing again, the printer back, the next HTTP
  call answered) and counts it.

Report-to-state lag: a probe report carrying its send time (``soak_probe``)
is published as a printer would; the lag is its arrival in the client's
merged state (``on_message``). Both processes share the wall clock.

Invariants, each a ``FAIL:`` line and exit status 1 when broken:

* after the faults stop, a settle period and a final ``pushall``, every
  printer's merged client state equals the simulator's truth
  (``SimPrinter.truth()``) field for field (the probe key aside);
* no printer executed a command twice (same command and ``sequence_id``,
  counted by the simulated printers);
* every injected fault was survived, and no HTTP call failed for good
  (5xx and 429 are retried by the client's policy);
* RSS, open file descriptors and threads are flat: sampled every
  ``--sample-seconds``; after the warm-up (the baseline phase and one fault of
  each kind, or ``--warmup-seconds`` of the fault phase) the median of the last
  third may exceed the median of the first third by at most
  ``--rss-tolerance-mib`` MiB plus ``--rss-tolerance-pct`` %, by
  ``--fd-tolerance`` descriptors and by no thread.

Ratios against the baseline of the same run: command round trip and
report-to-state lag (p50, p95) under faults over fault-free.

Usage: ``.venv/bin/python bench/soak.py [--minutes 10] [--printers 50] [--json out.json]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

PROBE_KEY = "soak_probe"
MALFORMED = ("not_json", "wrong_types", "deep", "noise", "empty", "not_object")
FAULT_KINDS = (
    "broker_restart",
    "http_5xx",
    "stall",
    "malformed",
    "http_429",
    "drop_connections",
    "offline",
)
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- the simulator process ---------------------------------------------------------------


def _proc_rss(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def sim_main(pipes: list[Connection], options: dict[str, Any]) -> None:
    """The child: run the simulator and answer requests, one thread per pipe."""
    from bambulab.sim.config import RateLimits, SimConfig, parse_fleet
    from bambulab.sim.live import Simulator

    logging.basicConfig(level=logging.WARNING, format="sim: %(levelname)s %(name)s: %(message)s")
    config = SimConfig(rate_limits=RateLimits(enabled=False)).with_demo_fleet(
        parse_fleet(options["fleet"])
    )
    sim = Simulator(
        config, lan=False, time_scale=options["time_scale"], tick_interval=options["tick"]
    )
    sim.start()
    host = sim.host
    assert host is not None
    fleet = [e.serial for e in sim.endpoints()]
    printers = {serial: sim.printers[serial] for serial in fleet}
    pipes[0].send(
        {
            "url": sim.url,
            "mqtt_host": sim.mqtt_host,
            "mqtt_port": sim.mqtt_port,
            "ca_file": sim.ca_file,
            "uid": sim.user_id,
            "token": sim.issue_token(sim.demo_account.email),
            "serials": fleet,
            "files": {s: list(p.sdcard_files) for s, p in printers.items()},
            "startup": sim.startup_seconds,
        }
    )

    def probe(serial: str) -> float:
        sent = time.time()
        message = {"command": "push_status", "msg": 1, "sequence_id": "0", PROBE_KEY: sent}
        sim.publish_message(serial, {"print": message})
        return sent

    def executed() -> dict[str, Any]:
        return {
            s: {"executed": p.executed, "duplicates": p.duplicates, "which": list(p.duplicated)}
            for s, p in printers.items()
        }

    handlers: dict[str, Callable[..., Any]] = {
        "truth": lambda: host.call(lambda: {s: p.truth() for s, p in printers.items()}),
        "executed": lambda: host.call(executed),
        "restart": lambda downtime: sim.restart_broker("cloud", downtime=downtime),
        "drop": lambda: sim.drop_connections("cloud"),
        "stall": sim.stall,
        "malformed": lambda serial, kind: len(sim.publish_malformed(serial, kind, target="cloud")),
        "offline": sim.take_offline,
        "online": sim.bring_online,
        "probe": probe,
        "rss": lambda: _proc_rss(),
        "cpu": time.process_time,
        "stats": lambda: {
            "published": host.stats.published,
            "requests": host.stats.requests,
            "dropped_stalled": host.stats.dropped_stalled,
            "tick_seconds": host.stats.tick_seconds,
        },
    }
    done = threading.Event()

    def serve(pipe: Connection) -> None:
        while not done.is_set():
            try:
                op, args = pipe.recv()
            except (EOFError, OSError):
                break
            if op == "stop":
                done.set()
                pipe.send(("ok", None))
                break
            try:
                pipe.send(("ok", handlers[op](*args)))
            except Exception as exc:  # the parent reports it; the simulator carries on
                pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        done.set()

    threads = [threading.Thread(target=serve, args=(p,), daemon=True) for p in pipes]
    for thread in threads:
        thread.start()
    done.wait()
    sim.stop()


class Rpc:
    """One pipe to the simulator process; calls are serialised."""

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self.lock = threading.Lock()

    def __call__(self, op: str, *args: Any, timeout: float = 60.0) -> Any:
        with self.lock:
            self.pipe.send((op, args))
            if not self.pipe.poll(timeout):
                raise TimeoutError(f"the simulator did not answer {op} in {timeout:g} s")
            kind, value = self.pipe.recv()
        if kind != "ok":
            raise RuntimeError(f"simulator {op}: {value}")
        return value


# --- measurements ----------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank), NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Stats:
    """Everything counted, behind one lock (several threads write)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    phase: str = "baseline"
    commands: Counter[str] = field(default_factory=Counter)
    by_command: Counter[str] = field(default_factory=Counter)
    rtt: dict[str, list[float]] = field(default_factory=lambda: {"baseline": [], "faults": []})
    lag: dict[str, list[float]] = field(default_factory=lambda: {"baseline": [], "faults": []})
    probes_sent: Counter[str] = field(default_factory=Counter)
    probes_pending: dict[float, str] = field(default_factory=dict)
    http: Counter[str] = field(default_factory=Counter)
    http_retries: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    survived: Counter[str] = field(default_factory=Counter)
    fault_notes: list[str] = field(default_factory=list)
    malformed: Counter[str] = field(default_factory=Counter)
    offline_events: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)
    errors_logged: list[str] = field(default_factory=list)

    def count(self, counter: Counter[str], key: str, n: int = 1) -> None:
        with self.lock:
            counter[key] += n


class ErrorCounter(logging.Handler):
    """Keeps every ERROR the library logs: an exception in a callback is a finding."""

    def __init__(self, stats: Stats) -> None:
        super().__init__(logging.ERROR)
        self.stats = stats

    def emit(self, record: logging.LogRecord) -> None:
        with self.stats.lock:
            if len(self.stats.errors_logged) < 50:
                self.stats.errors_logged.append(f"{record.name}: {record.getMessage()}"[:300])


def make_retry_policy(stats: Stats) -> Any:
    """The client's own retry policy, counting the retries it decides on."""
    from bambulab.protocol.http import RetryPolicy

    class CountingRetry(RetryPolicy):
        def delay(self, attempt: int, error: Any, request: Any, elapsed: float) -> float | None:
            wait = super().delay(attempt, error, request, elapsed)
            if wait is not None:
                stats.count(stats.http_retries, type(error).__name__)
            return wait

    return CountingRetry()


# --- the soak ------------------------------------------------------------------------------


class Soak:
    """The client side: workers, fault schedule, checks."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.stats = Stats()
        self.stop_workers = threading.Event()
        self.failures: list[str] = []
        self.faulted: set[str] = set()  # printers offline or stalled right now (no probes)
        self.result: dict[str, Any] = {}
        # What happened to each printer lately, to explain a divergence.
        self.history: dict[str, deque[str]] = {}
        self.t0 = time.perf_counter()

    def note(self, serial: str, what: str, when: float | None = None) -> None:
        moment = (time.perf_counter() if when is None else when) - self.t0
        with self.stats.lock:
            self.history.setdefault(serial, deque(maxlen=30)).append(f"{moment:.2f} {what}")

    # -- setup

    def start(self) -> None:
        from bambulab import BambuClient, BambuMQTT
        from bambulab.sim.catalog import MODELS

        args = self.args
        # Every model in turn, every other one printing.
        keys = [list(MODELS)[i % len(MODELS)] for i in range(args.printers)]
        fleet = args.fleet or ",".join(
            f"{key}:{'printing' if i % 2 == 0 else 'idle'}" for i, key in enumerate(keys)
        )
        context = multiprocessing.get_context("spawn")
        self.pipes = [context.Pipe() for _ in range(2)]
        options = {"fleet": fleet, "time_scale": args.time_scale, "tick": args.tick}
        self.child = context.Process(
            target=sim_main, args=([p[1] for p in self.pipes], options), daemon=True
        )
        self.child.start()
        if not self.pipes[0][0].poll(120):
            raise RuntimeError("the simulator did not start within 120 s")
        info = self.pipes[0][0].recv()
        self.info = info
        self.control = Rpc(self.pipes[0][0])
        self.faults = Rpc(self.pipes[1][0])
        self.serials: list[str] = info["serials"]
        self.http = BambuClient(
            token=info["token"], base_url=info["url"], retry=make_retry_policy(self.stats)
        )
        models = {d.dev_id: d.dev_model_name for d in self.http.get_devices()}
        self.mqtt = BambuMQTT(
            info["uid"],
            self.serials,
            token=info["token"],
            host=info["mqtt_host"],
            port=info["mqtt_port"],
            ca_file=info["ca_file"],
            command_timeout=args.command_timeout,
            models=models,
        )
        self.mqtt.on_message = self._on_state
        self.mqtt.on_event = self._on_event
        started = time.perf_counter()
        self.mqtt.connect()
        for serial in self.serials:
            self.mqtt.get_full_status(serial, timeout=30)
        self.result["fleet"] = {
            "printers": len(self.serials),
            "models": dict(Counter(models.values())),
            "sim_startup_s": round(info["startup"], 3),
            "client_ready_s": round(time.perf_counter() - started, 3),
        }
        logging.getLogger("bambulab").addHandler(ErrorCounter(self.stats))

    def _on_state(self, state: Any) -> None:
        stamp = state.raw.get(PROBE_KEY)
        if not isinstance(stamp, float):
            return
        stats = self.stats
        with stats.lock:
            phase = stats.probes_pending.pop(stamp, None)
            if phase is not None:
                stats.lag[phase].append(time.time() - stamp)

    def _on_event(self, event: Any) -> None:
        from bambulab.models.events import PrinterOffline, PrinterOnline

        if isinstance(event, (PrinterOffline, PrinterOnline)):
            with self.stats.lock:
                self.stats.offline_events.setdefault(event.serial, []).append(
                    (time.monotonic(), isinstance(event, PrinterOnline))
                )

    # -- workers

    def command_worker(self, index: int) -> None:
        from bambulab.errors import (
            BambuError,
            CommandError,
            CommandTimeoutError,
            NotConnectedError,
        )

        rng = random.Random(self.args.seed * 1000 + index)
        stats = self.stats
        while not self.stop_workers.wait(rng.uniform(0.5, 1.5) * self.args.command_pause):
            serial = rng.choice(self.serials)
            name, what, send = self._pick_command(serial, rng)
            phase = stats.phase
            started = time.perf_counter()
            outcome = "confirmed"
            try:
                send()
            except CommandTimeoutError:
                outcome = "timed_out"
            except CommandError:
                outcome = "refused"  # a reply came: the printer said no (state moved on)
            except NotConnectedError:
                outcome = "not_sent"
            except BambuError:
                outcome = "failed_other"
            elapsed = time.perf_counter() - started
            self.note(serial, f"{what}: {outcome} after {elapsed * 1000:.0f} ms", started)
            with stats.lock:
                stats.commands[outcome] += 1
                stats.by_command[name] += 1
                if outcome in ("confirmed", "refused"):
                    stats.rtt[phase].append(elapsed)

    def _pick_command(self, serial: str, rng: random.Random) -> tuple[str, str, Callable[[], Any]]:
        """(kind, what, send) of a command that makes sense in the state the client sees."""
        mqtt = self.mqtt
        gcode_state = mqtt.state(serial).gcode_state
        light = rng.random() < 0.5
        bed = rng.choice((0, 35, 55, 60, 65))
        nozzle = rng.choice((0, 150, 200, 220))
        speed = rng.randint(1, 4)
        options: list[tuple[str, str, Callable[[], Any]]] = [
            ("light", f"light {light}", lambda: mqtt.set_light(light, serial=serial)),
            ("bed", f"bed {bed}", lambda: mqtt.set_bed_temp(bed, serial)),
            ("nozzle", f"nozzle {nozzle}", lambda: mqtt.set_nozzle_temp(nozzle, serial)),
        ]
        if gcode_state in ("RUNNING", "PREPARE"):
            options += [("pause", "pause", lambda: mqtt.pause(serial))] * 2
            options += [
                ("speed", f"speed {speed}", lambda: mqtt.set_print_speed(speed, serial))
            ] * 2
        elif gcode_state == "PAUSE":
            options += [("resume", "resume", lambda: mqtt.resume(serial))] * 4
        else:
            files = self.info["files"].get(serial) or []
            if files:
                url = "file:///sdcard/" + rng.choice(files)
                options += [("print", "print", lambda: mqtt.start_print(url, 1, serial))] * 2
        return rng.choice(options)

    def http_worker(self) -> None:
        from bambulab.errors import BambuError

        stats = self.stats
        calls: list[Callable[[], Any]] = [
            self.http.get_devices,
            lambda: self.http.get_tasks(limit=20),
        ]
        turn = 0
        while not self.stop_workers.wait(self.args.http_pause):
            call = calls[turn % len(calls)]
            turn += 1
            before = sum(stats.http_retries.values())
            try:
                call()
            except BambuError as exc:
                stats.count(stats.http, "failed")
                with stats.lock:
                    stats.fault_notes.append(f"HTTP call failed: {exc}")
                continue
            retried = sum(stats.http_retries.values()) > before
            stats.count(stats.http, "ok_after_retry" if retried else "ok")

    def probe_worker(self) -> None:
        stats = self.stats
        rng = random.Random(self.args.seed + 7)
        while not self.stop_workers.wait(self.args.probe_pause):
            healthy = [s for s in self.serials if s not in self.faulted]
            if not healthy or not self.mqtt.connected:
                continue
            phase = stats.phase
            serial = rng.choice(healthy)
            try:
                stamp = self.control("probe", serial)
            except (RuntimeError, TimeoutError):
                continue
            with stats.lock:
                stats.probes_pending[stamp] = phase
                stats.probes_sent[phase] += 1

    def sampler(self) -> None:
        while True:
            fds = len(os.listdir("/proc/self/fd"))
            sample = (time.monotonic(), _proc_rss(), fds, threading.active_count())
            with self.stats.lock:
                self.stats.samples.append(sample)
            if self.stop_workers.wait(self.args.sample_seconds):
                return

    # -- faults

    def run_faults(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        turn = 0
        # At least one of each kind, however short the phase.
        while time.monotonic() < deadline or turn < len(FAULT_KINDS):
            slot = time.monotonic()
            kind = FAULT_KINDS[turn % len(FAULT_KINDS)]
            turn += 1
            self.stats.count(self.stats.injected, kind)
            try:
                ok, note = getattr(self, f"fault_{kind}")()
            except (RuntimeError, TimeoutError) as exc:
                ok, note = False, f"could not inject: {exc}"
            if ok:
                self.stats.count(self.stats.survived, kind)
            else:
                with self.stats.lock:
                    self.stats.fault_notes.append(f"{kind}: {note}")
            pause = slot + self.args.fault_interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    def _wait(self, check: Callable[[], bool], timeout: float | None = None) -> bool:
        limit = time.monotonic() + (self.args.survive_seconds if timeout is None else timeout)
        while time.monotonic() < limit:
            if check():
                return True
            time.sleep(0.05)
        return check()

    def _reports_since(self, moment: float, serials: list[str]) -> bool:
        printers = self.mqtt.connection.printers
        return all(printers[s].last_report > moment for s in serials)

    def _reconnected(self, before: int, what: str) -> tuple[bool, str]:
        conn = self.mqtt.connection
        after = time.monotonic()
        for serial in self.serials:
            self.note(serial, what)
        healthy = [s for s in self.serials if s not in self.faulted]
        if not self._wait(lambda: conn.connects > before and conn.connected):
            return False, f"no reconnect within {self.args.survive_seconds:g} s"
        for serial in self.serials:
            self.note(serial, f"client connected again (connection #{conn.connects})")
        if not self._wait(lambda: self._reports_since(after, healthy)):
            quiet = [s for s in healthy if conn.printers[s].last_report <= after]
            return False, f"no reports after reconnecting from {len(quiet)} printers"
        return True, ""

    def fault_broker_restart(self) -> tuple[bool, str]:
        before = self.mqtt.connection.connects
        downtime = round(self.rng.uniform(0.2, self.args.max_downtime), 2)
        self.faults("restart", downtime)
        return self._reconnected(before, f"broker restarted ({downtime:g} s down)")

    def fault_drop_connections(self) -> tuple[bool, str]:
        before = self.mqtt.connection.connects
        self.faults("drop")
        return self._reconnected(before, "broker dropped every connection")

    def fault_stall(self) -> tuple[bool, str]:
        serial = self.rng.choice(self.serials)
        seconds = round(self.rng.uniform(0.3, 0.6) * self.args.fault_interval, 2)
        self.faulted.add(serial)
        try:
            self.note(serial, f"stalled for {seconds:g} s")
            self.faults("stall", serial, seconds)
            end = time.monotonic() + seconds
            time.sleep(seconds)
            printer = self.mqtt.connection.printers[serial]
            if not self._wait(lambda: printer.last_report > end):
                return False, f"{serial} sent nothing after a {seconds:g} s stall"
            return True, ""
        finally:
            self.faulted.discard(serial)

    def fault_malformed(self) -> tuple[bool, str]:
        serial = self.rng.choice(self.serials)
        conn = self.mqtt.connection
        before = conn.connects
        start = time.monotonic()
        self.note(serial, "malformed payloads")
        for kind in MALFORMED:
            self.faults("malformed", serial, kind)
            self.stats.count(self.stats.malformed, kind)
        printer = conn.printers[serial]
        if not self._wait(lambda: printer.last_report > start and conn.connected):
            return False, f"{serial}: no report after malformed payloads"
        if conn.connects != before:
            return False, "a malformed payload cost the connection"
        return True, ""

    def fault_offline(self) -> tuple[bool, str]:
        serial = self.rng.choice(self.serials)
        events = self.stats.offline_events
        self.faulted.add(serial)
        try:
            start = time.monotonic()
            self.note(serial, "taken offline")
            self.faults("offline", serial)

            def seen(online: bool, since: float) -> bool:
                with self.stats.lock:
                    return any(t > since and o is online for t, o in events.get(serial, []))

            went = self._wait(lambda: seen(False, start))
            time.sleep(self.rng.uniform(0.2, 0.4) * self.args.fault_interval)
            back = time.monotonic()
            self.note(serial, "brought online")
            self.faults("online", serial)
            printer = self.mqtt.connection.printers[serial]
            returned = self._wait(lambda: seen(True, back) and printer.last_report > back)
            if not went:
                return False, f"{serial}: the client never saw it go offline"
            if not returned:
                return False, f"{serial}: the client never saw it come back"
            return True, ""
        finally:
            self.faulted.discard(serial)

    def _http_fault(self, fault: dict[str, Any]) -> tuple[bool, str]:
        import httpx

        url = f"{self.info['url']}/sim/faults"
        failed_before = self.stats.http["failed"]
        httpx.post(url, json=fault, timeout=10).raise_for_status()
        if not self._wait(lambda: not httpx.get(url, timeout=10).json()["faults"]):
            httpx.delete(url, timeout=10)
            return False, "the armed fault was never consumed"
        ok_before = self.stats.http["ok"] + self.stats.http["ok_after_retry"]
        answered = self._wait(
            lambda: self.stats.http["ok"] + self.stats.http["ok_after_retry"] > ok_before
        )
        if self.stats.http["failed"] != failed_before:
            return False, "an HTTP call failed for good"
        return answered, "" if answered else "no HTTP call succeeded afterwards"

    def fault_http_5xx(self) -> tuple[bool, str]:
        status = self.rng.choice((500, 502, 503, 504))
        count = self.rng.randint(1, 2)
        return self._http_fault(
            {"kind": "status", "status": status, "count": count, "path": "/v1/"}
        )

    def fault_http_429(self) -> tuple[bool, str]:
        count = self.rng.randint(1, 2)
        return self._http_fault(
            {"kind": "ratelimit", "retry_after": 1, "count": count, "path": "/v1/"}
        )

    # -- the final checks

    def client_view(self, serial: str) -> dict[str, Any]:
        # States are immutable: the one read here never changes under the copy.
        view: dict[str, Any] = json.loads(json.dumps(dict(self.mqtt.state(serial).raw)))
        view.pop(PROBE_KEY, None)
        return view

    def compare(self, attempts: int) -> dict[str, list[str]]:
        """Printers whose client state differs from the truth (a few differing paths each).

        Reports keep coming (printers print on), so one reading can catch a
        report in flight: a printer counts as equal when one of ``attempts``
        readings, a moment apart, matches exactly.
        """
        pending = set(self.serials)
        differences: dict[str, list[str]] = {}
        for attempt in range(attempts):
            truths = self.control("truth")
            for serial in sorted(pending):
                diff = differing_paths(self.client_view(serial), truths[serial])
                if diff:
                    differences[serial] = diff
                else:
                    differences.pop(serial, None)
                    pending.discard(serial)
            if not pending:
                break
            time.sleep(0.3 if attempt % 2 else 0.05)
        return differences

    # -- the whole run

    def run(self) -> int:
        args = self.args
        self.start()
        workers = [threading.Thread(target=self.sampler, daemon=True)]
        workers += [
            threading.Thread(target=self.command_worker, args=(i,), daemon=True)
            for i in range(args.command_threads)
        ]
        workers += [
            threading.Thread(target=self.http_worker, daemon=True),
            threading.Thread(target=self.probe_worker, daemon=True),
        ]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        time.sleep(args.baseline_seconds)
        with self.stats.lock:
            self.stats.phase = "faults"
        fault_start = time.monotonic()
        self.run_faults(args.minutes * 60)
        fault_end = time.monotonic()
        with self.stats.lock:
            self.stats.phase = "settle"
            self.stats.rtt["settle"] = []
            self.stats.lag["settle"] = []
        self.stop_workers.set()
        for worker in workers:
            worker.join(args.command_timeout + 30)
        time.sleep(args.settle)
        before_refresh = self.compare(attempts=6)
        for serial in self.serials:
            self.mqtt.request_full_status(serial)
        time.sleep(max(2.0, 2 * args.tick))
        differences = self.compare(attempts=20)
        executed = self.control("executed")
        sim_stats = self.control("stats")
        sim_rss = self.control("rss")
        sim_stats["cpu_seconds"] = round(self.control("cpu"), 1)
        sim_stats["client_cpu_seconds"] = round(time.process_time(), 1)
        self.result["seconds"] = {
            "baseline": round(fault_start - started, 1),
            "faults": round(fault_end - fault_start, 1),
            "total": round(time.monotonic() - started, 1),
        }
        self.summarise(before_refresh, differences, executed, sim_stats, sim_rss, fault_start)
        self.mqtt.disconnect()
        self.http.close()
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.control("stop", timeout=30)
        self.child.join(30)
        if self.child.is_alive():
            self.child.terminate()
        return 1 if self.failures else 0

    def summarise(
        self,
        before_refresh: dict[str, list[str]],
        differences: dict[str, list[str]],
        executed: dict[str, Any],
        sim_stats: dict[str, Any],
        sim_rss: int,
        fault_start: float,
    ) -> None:
        args, stats, result = self.args, self.stats, self.result
        fail = self.failures.append
        # State.
        result["state"] = {
            "equal_before_final_refresh": len(self.serials) - len(before_refresh),
            "diverged_before_final_refresh": {s: d[:3] for s, d in before_refresh.items()},
            "equal_after_final_refresh": len(self.serials) - len(differences),
            "printers": len(self.serials),
        }
        result["history"] = {
            s: list(self.history.get(s, ())) for s in sorted({*before_refresh, *differences})
        }
        for serial, diff in sorted(differences.items()):
            fail(
                f"{serial}: client state differs from the simulator's truth at "
                f"{', '.join(diff[:3])}"
            )
        # Duplicates.
        duplicates = {s: e for s, e in executed.items() if e["duplicates"]}
        result["executed"] = {
            "commands_executed_by_printers": sum(e["executed"] for e in executed.values()),
            "executed_twice": sum(e["duplicates"] for e in executed.values()),
            "which": {s: e["which"][:5] for s, e in duplicates.items()},
        }
        for serial, entry in sorted(duplicates.items()):
            fail(
                f"{serial}: {entry['duplicates']} command(s) executed twice, e.g. "
                f"{', '.join(f'{c} #{q}' for c, q in entry['which'][:3])}"
            )
        # Faults and HTTP.
        result["faults"] = {
            kind: {"injected": stats.injected[kind], "survived": stats.survived[kind]}
            for kind in FAULT_KINDS
        }
        result["malformed_payloads"] = dict(stats.malformed)
        result["fault_notes"] = stats.fault_notes[:20]
        for kind in FAULT_KINDS:
            lost = stats.injected[kind] - stats.survived[kind]
            if lost:
                notes = [n for n in stats.fault_notes if n.startswith(kind)]
                fail(
                    f"{kind}: {lost} of {stats.injected[kind]} not survived "
                    f"({notes[0] if notes else 'no reason noted'})"
                )
        result["http"] = {**dict(stats.http), "retries": dict(stats.http_retries)}
        if stats.http["failed"]:
            fail(f"HTTP: {stats.http['failed']} call(s) failed despite retries")
        result["commands"] = {
            "sent": sum(v for k, v in stats.commands.items() if k != "not_sent"),
            **dict(stats.commands),
            "by_command": dict(stats.by_command),
        }
        # Latency ratios.
        lat: dict[str, Any] = {}
        for name, series in (("command_rtt_ms", stats.rtt), ("report_lag_ms", stats.lag)):
            base, under = series["baseline"], series["faults"]
            entry: dict[str, Any] = {"n_baseline": len(base), "n_faults": len(under)}
            for q in (50, 95):
                b, f = percentile(base, q) * 1000, percentile(under, q) * 1000
                entry[f"p{q}_baseline"] = round(b, 2)
                entry[f"p{q}_faults"] = round(f, 2)
                entry[f"p{q}_ratio"] = round(f / b, 2) if b > 0 else None
            lat[name] = entry
        lat["probes"] = {
            "sent": dict(stats.probes_sent),
            "lost": dict(Counter(stats.probes_pending.values())),
        }
        result["latency"] = lat
        # Resources.
        warm = fault_start + (
            args.warmup_seconds
            if args.warmup_seconds is not None
            else len(FAULT_KINDS) * args.fault_interval
        )
        samples = [s for s in stats.samples if s[0] >= warm]
        resources: dict[str, Any] = {
            "samples": len(samples),
            "sim_rss_mib": round(sim_rss / 2**20, 1),
        }
        if len(samples) >= 6:
            third = len(samples) // 3
            first, last = samples[:third], samples[-third:]
            for index, name in ((1, "rss"), (2, "fds"), (3, "threads")):
                a = statistics.median(s[index] for s in first)
                b = statistics.median(s[index] for s in last)
                resources[name] = {"first_third": a, "last_third": b}
            rss_a, rss_b = resources["rss"]["first_third"], resources["rss"]["last_third"]
            allowed = args.rss_tolerance_mib * 2**20 + rss_a * args.rss_tolerance_pct / 100
            resources["rss_mib"] = {
                "first_third": round(rss_a / 2**20, 1),
                "last_third": round(rss_b / 2**20, 1),
                "growth": round((rss_b - rss_a) / 2**20, 2),
                "allowed": round(allowed / 2**20, 2),
                "peak": round(max(s[1] for s in stats.samples) / 2**20, 1),
            }
            del resources["rss"]
            # The whole curve, to tell a step from a slope.
            resources["rss_mib_series"] = [round(s[1] / 2**20, 1) for s in stats.samples]
            if rss_b - rss_a > allowed:
                fail(
                    f"RSS grew {(rss_b - rss_a) / 2**20:.1f} MiB (median of the last third vs "
                    f"the first), more than the {allowed / 2**20:.1f} MiB allowed"
                )
            fds = resources["fds"]
            if fds["last_third"] - fds["first_third"] > args.fd_tolerance:
                fail(f"open file descriptors grew from {fds['first_third']} to {fds['last_third']}")
            threads = resources["threads"]
            if threads["last_third"] > threads["first_third"]:
                fail(f"threads grew from {threads['first_third']} to {threads['last_third']}")
        else:
            fail(f"only {len(samples)} resource samples after the warm-up: run longer")
        result["resources"] = resources
        result["sim"] = sim_stats
        result["client_errors_logged"] = stats.errors_logged[:10]
        connects = self.mqtt.connection.connects
        result["mqtt_connects"] = connects
        # One connection at the start and one after each restart or cut: any
        # other reconnect is the client losing a connection nobody took away.
        caused = stats.survived["broker_restart"] + stats.survived["drop_connections"]
        result["unprovoked_reconnects"] = connects - 1 - caused
        if not self.mqtt.connected:
            fail("the MQTT client is not connected at the end")
        result["failures"] = list(self.failures)


def differing_paths(client: Any, truth: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, as ``a.b[2].c`` paths (missing keys included)."""
    if isinstance(client, dict) and isinstance(truth, dict):
        out: list[str] = []
        for key in sorted(set(client) | set(truth), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in truth:
                out.append(f"{where} (only in the client)")
            elif key not in client:
                out.append(f"{where} (missing in the client)")
            else:
                out.extend(differing_paths(client[key], truth[key], where))
        return out
    if isinstance(client, list) and isinstance(truth, list) and len(client) == len(truth):
        out = []
        for i, (a, b) in enumerate(zip(client, truth, strict=True)):
            out.extend(differing_paths(a, b, f"{path}[{i}]"))
        return out
    numbers = (
        isinstance(client, (int, float))
        and isinstance(truth, (int, float))
        and not isinstance(client, bool)
        and not isinstance(truth, bool)
    )
    if client == truth and (numbers or type(client) is type(truth)):
        return []  # 60 and 60.0 are the same JSON number
    return [f"{path} (client {_short(client)}, truth {_short(truth)})"]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def print_report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    fleet = result["fleet"]
    secs = result["seconds"]
    print(
        f"soak: {fleet['printers']} printers "
        f"({', '.join(f'{m} x{n}' for m, n in sorted(fleet['models'].items()))}), "
        f"time scale {args.time_scale:g}, one cloud MQTT connection"
    )
    print(
        f"  phases: baseline {secs['baseline']:.0f} s, faults {secs['faults']:.0f} s, "
        f"total {secs['total']:.0f} s; MQTT connections made: {result['mqtt_connects']} "
        f"({result['unprovoked_reconnects']} not caused by a fault)"
    )
    print("  faults (injected / survived):")
    for kind, entry in result["faults"].items():
        print(f"    {kind:<18} {entry['injected']:>4} / {entry['survived']}")
    malformed = ", ".join(f"{k} {v}" for k, v in result["malformed_payloads"].items())
    print(f"    malformed payloads: {malformed or 'none'}")
    cmd = result["commands"]
    print(
        f"  commands: sent {cmd['sent']}, confirmed {cmd.get('confirmed', 0)}, "
        f"refused {cmd.get('refused', 0)}, timed out {cmd.get('timed_out', 0)}, "
        f"not sent (disconnected) {cmd.get('not_sent', 0)}, "
        f"other failures {cmd.get('failed_other', 0)}"
    )
    http = result["http"]
    retries = sum(http["retries"].values())
    print(
        f"  HTTP calls: ok {http.get('ok', 0)}, ok after retry {http.get('ok_after_retry', 0)} "
        f"({retries} retries), failed {http.get('failed', 0)}"
    )
    ex = result["executed"]
    print(
        f"  printers executed {ex['commands_executed_by_printers']} requests; "
        f"executed twice: {ex['executed_twice']}"
    )
    st = result["state"]
    print(
        f"  state equal to the truth: {st['equal_before_final_refresh']}/{st['printers']} before "
        f"the final refresh, {st['equal_after_final_refresh']}/{st['printers']} after"
    )
    for serial, paths in st["diverged_before_final_refresh"].items():
        print(f"    before refresh {serial}: {'; '.join(paths)}")
    for name, title in (
        ("command_rtt_ms", "command round trip"),
        ("report_lag_ms", "report-to-state lag"),
    ):
        e = result["latency"][name]
        print(
            f"  {title}: p50 {e['p50_faults']:.1f} ms vs baseline {e['p50_baseline']:.1f} ms "
            f"(ratio {e['p50_ratio']}), p95 {e['p95_faults']:.1f} ms vs {e['p95_baseline']:.1f} ms "
            f"(ratio {e['p95_ratio']}) [n={e['n_baseline']}/{e['n_faults']}]"
        )
    probes = result["latency"]["probes"]
    print(f"  probes sent {probes['sent']}, lost {probes['lost']}")
    res = result["resources"]
    if "rss_mib" in res:
        rss = res["rss_mib"]
        print(
            f"  client RSS median {rss['first_third']} -> {rss['last_third']} MiB "
            f"(growth {rss['growth']:+.2f}, allowed {rss['allowed']:.2f}; peak {rss['peak']}); "
            f"fds {res['fds']['first_third']} -> {res['fds']['last_third']}; "
            f"threads {res['threads']['first_third']} -> {res['threads']['last_third']} "
            f"[{res['samples']} samples]; simulator RSS {res['sim_rss_mib']} MiB"
        )
    if result["client_errors_logged"]:
        print(f"  client errors logged: {len(result['client_errors_logged'])}")
        for line in result["client_errors_logged"][:5]:
            print(f"    {line}")
    for note in result["fault_notes"][:10]:
        print(f"  note: {note}")
    if result["failures"]:
        for line in result["failures"]:
            print(f"FAIL: {line}")
    else:
        print("PASS: every invariant held")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    add = parser.add_argument
    add("--minutes", type=float, default=10.0, help="length of the fault phase (default 10)")
    add("--baseline-seconds", type=float, default=60.0, help="fault-free phase first (default 60)")
    add("--printers", type=int, default=50, help="fleet size (default 50)")
    add("--fleet", default="", help="fleet entries instead (e.g. x1c,p1s:printing,a1)")
    add("--time-scale", type=float, default=60.0, help="simulated seconds per second (default 60)")
    add("--tick", type=float, default=1.0, help="seconds between printer reports (default 1)")
    add("--fault-interval", type=float, default=10.0, help="seconds between faults (default 10)")
    add("--max-downtime", type=float, default=2.0, help="longest broker downtime, s (default 2)")
    add("--survive-seconds", type=float, default=30.0, help="time to recover from a fault")
    add("--command-threads", type=int, default=4)
    add("--command-pause", type=float, default=0.5, help="mean seconds between commands per thread")
    add("--command-timeout", type=float, default=5.0)
    add("--http-pause", type=float, default=0.5)
    add("--probe-pause", type=float, default=0.25)
    add("--sample-seconds", type=float, default=5.0)
    add(
        "--warmup-seconds",
        type=float,
        default=None,
        help="of the fault phase, before the resource comparison (default: one of each fault)",
    )
    add("--settle", type=float, default=10.0, help="seconds between the last fault and the checks")
    add("--rss-tolerance-mib", type=float, default=4.0)
    add("--rss-tolerance-pct", type=float, default=5.0)
    add("--fd-tolerance", type=int, default=2)
    add("--seed", type=int, default=1)
    add("--json", default="", help="also write the result to this file")
    add("--verbose", action="store_true", help="log the client's INFO messages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # Errors of the library always get through (and are counted): the malformed
    # payloads make it warn on purpose, but an ERROR is a finding.
    logging.getLogger("bambulab").setLevel(logging.INFO if args.verbose else logging.ERROR)
    soak = Soak(args)
    try:
        status = soak.run()
    finally:
        child = getattr(soak, "child", None)
        if child is not None and child.is_alive():
            child.terminate()
    soak.result["command"] = " ".join(sys.argv)
    print_report(args, soak.result)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(soak.result, out, indent=2, default=str)
    return status


if __name__ == "__main__":
    sys.exit(main())
