"""Cost of neutralising server text in a 1000-row table, against rich drawing that table.

Every cell the CLI shows goes through :func:`bambulab.safetext.visible`. The
budget: on a typical 1000-row ``bambu tasks`` table (7 columns of ids,
titles, printer names, dates...), neutralising every cell costs at most 5 %
of what rich takes to lay out and render the same table. Measured in the
same run: the cells through ``visible`` alone, and ``output.table`` (which
calls ``visible`` itself) rendering to an in-memory terminal. A second
figure shows the worst case, every cell hostile (escape sequences, bidi
overrides), where every cell takes the slow path.

Usage: ``.venv/bin/python bench/terminal_safety.py [--rows 1000] [--repeat 5]``;
exits 1 when the typical ratio is over its budget.
"""

from __future__ import annotations

import argparse
import io
import random
import time
from collections.abc import Callable
from typing import Any

from bambulab.safetext import visible

BUDGET = 0.05
TITLES = ["Benchy", "Calibration cube", "Phone stand v2", "Gear set (PETG)", "Ünïcödé vase 花瓶"]
PRINTERS = ["P1S 1", "X1 Carbon 1", "A1 mini 1", "Workshop X1C", "Büro A1"]
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\x9b2J\u202e\r\x08\n"


def rows(count: int, *, hostile: bool) -> list[list[Any]]:
    rng = random.Random(7)
    extra = HOSTILE if hostile else ""
    return [
        [
            str(51_000_000 + n),
            rng.choice(TITLES) + extra,
            rng.choice(("finished", "failed", "printing")) + extra,
            rng.choice(PRINTERS) + extra,
            f"2026-11-{1 + n % 28:02d} {n % 24:02d}:{n % 60:02d}",
            f"{n % 5}h {n % 60:02d}m",
            f"{rng.uniform(3, 300):.1f} g",
        ]
        for n in range(count)
    ]


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def neutralise(table: list[list[Any]]) -> None:
    for row in table:
        for cell in row:
            visible(cell)


def render(table: list[list[Any]]) -> None:
    from rich.console import Console

    from bambulab.cli import output

    # A colour terminal 160 columns wide, writing to memory.
    screen = Console(file=io.StringIO(), width=160, force_terminal=True, color_system="256")
    output._consoles["out"] = screen
    headers = ["ID", "Title", "Status", "Printer", "Started", "Time", "Filament"]
    output.table("tasks", [output.Col(h) for h in headers], table)


def measure(count: int, repeat: int, *, hostile: bool) -> tuple[float, float]:
    table = rows(count, hostile=hostile)
    render(table)  # imports and warm-up
    cost = best_of(lambda: neutralise(table), repeat)
    drawing = best_of(lambda: render(table), repeat)
    return cost, drawing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    typical, drawing = measure(args.rows, args.repeat, hostile=False)
    worst, worst_drawing = measure(args.rows, args.repeat, hostile=True)
    cells = args.rows * 7
    print(
        f"{args.rows} rows x 7 columns, typical text: visible() {typical * 1e3:.2f} ms "
        f"({typical / cells * 1e9:.0f} ns/cell) vs rich rendering {drawing * 1e3:.1f} ms: "
        f"ratio {typical / drawing:.4f} (budget {BUDGET})"
    )
    print(
        f"every cell hostile: visible() {worst * 1e3:.2f} ms "
        f"({worst / cells * 1e9:.0f} ns/cell) vs rich rendering {worst_drawing * 1e3:.1f} ms: "
        f"ratio {worst / worst_drawing:.4f}"
    )
    return 0 if typical / drawing <= BUDGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
