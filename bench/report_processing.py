"""Cost of one printer report through the client, against ``orjson.loads`` / ``json.loads``.

The issue's budget: parse + merge + state update of a full X1-size report
(~12 KB) at most 2x ``orjson.loads`` of the same bytes; a partial report of a
few hundred bytes at most 3x ``json.loads`` of it. Both sides are measured
here, in the same run, on the same bytes: the client side is the exact hot
path of a live connection (``Printer.process``: decode, merge into the
merged state, derive events).

It also reports what reading costs: every typed property of the
``PrinterState`` of that X1 report (model, temperatures, AMS units, trays,
active tray, HMS, ...), on a fresh state (each value computed) and on the
same state read again (each value cached once per state), as ratios to
``orjson.loads`` of the report measured above; and ``to_dict()``.

Usage: ``.venv/bin/python bench/report_processing.py [--seconds 1.0]``; exits
1 when a ratio is over its budget.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from bambulab.models.state import PrinterState
from bambulab.mqtt.core import Printer

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "mqtt"


def x1_report() -> bytes:
    """The X1C full report with four AMS units (about 10 KB compact, 19 KB as pretty JSON)."""
    data = json.loads((FIXTURES / "multi_ams.json").read_text())
    return orjson.dumps(data)


def partial_reports() -> list[bytes]:
    """The deltas of the P1S stream fixture (a few hundred bytes each)."""
    stream = json.loads((FIXTURES / "p1s_stream.json").read_text())
    messages = stream if isinstance(stream, list) else stream["messages"]
    return [orjson.dumps(m) for m in messages[1:]]


def typed_fields() -> list[str]:
    """Every public typed property of a state."""
    return sorted(
        name
        for klass in PrinterState.__mro__
        for name, value in vars(klass).items()
        if not name.startswith("_") and isinstance(value, (property, cached_property))
    )


def read_all(state: PrinterState, names: list[str]) -> None:
    """Read every typed field once."""
    for name in names:
        getattr(state, name)


def per_call(fn: Callable[[], Any], seconds: float) -> float:
    """Median seconds per call over several timed batches."""
    batch = 1
    while True:
        started = time.perf_counter()
        for _ in range(batch):
            fn()
        if time.perf_counter() - started > 0.02:
            break
        batch *= 2
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 5:
        started = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - started) / batch)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()

    full = x1_report()
    x1 = Printer("00M09A350100001")
    x1.process(full)  # the steady state: a state already exists
    base_full = per_call(lambda: orjson.loads(full), args.seconds)
    ours_full = per_call(lambda: x1.process(full), args.seconds)

    deltas = partial_reports()
    p1 = Printer("01P09C473446613")
    p1.process(orjson.dumps(json.loads((FIXTURES / "p1s_stream.json").read_text())[0]))
    index = [0]

    def next_delta() -> bytes:
        index[0] = (index[0] + 1) % len(deltas)
        return deltas[index[0]]

    base_part = per_call(lambda: json.loads(next_delta()), args.seconds)
    ours_part = per_call(lambda: p1.process(next_delta()), args.seconds)
    size = sum(map(len, deltas)) / len(deltas)

    names = typed_fields()
    merged, info = x1.stream.state, x1.state.info

    def fresh_read() -> None:
        read_all(PrinterState(x1.serial, merged, info), names)

    def construct() -> None:
        PrinterState(x1.serial, merged, info)

    same = PrinterState(x1.serial, merged, info)
    read_all(same, names)
    make = per_call(construct, args.seconds)
    fresh = per_call(fresh_read, args.seconds) - make
    again = per_call(lambda: read_all(same, names), args.seconds)
    to_dict = per_call(same.to_dict, args.seconds)

    r_full, r_part = ours_full / base_full, ours_part / base_part
    print(f"full X1 report: {len(full)} bytes")
    print(f"  orjson.loads           {base_full * 1e6:8.2f} us")
    print(f"  parse + merge + state  {ours_full * 1e6:8.2f} us  ratio {r_full:.2f} (budget 2.0)")
    print(f"partial P1S reports: {size:.0f} bytes on average")
    print(f"  json.loads             {base_part * 1e6:8.2f} us")
    print(f"  parse + merge + state  {ours_part * 1e6:8.2f} us  ratio {r_part:.2f} (budget 3.0)")
    print(f"read every typed field ({len(names)} properties) of the X1 state:")
    print(f"  fresh state            {fresh * 1e6:8.2f} us  ratio {fresh / base_full:.2f}")
    print(f"  same state again       {again * 1e6:8.2f} us  ratio {again / base_full:.2f}")
    print(f"  to_dict()              {to_dict * 1e6:8.2f} us  ratio {to_dict / base_full:.2f}")
    return 0 if r_full <= 2.0 and r_part <= 3.0 else 1


if __name__ == "__main__":
    sys.exit(main())
