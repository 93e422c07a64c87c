"""``bambu watch`` never lies: outages, stale printers, narrow terminals, SIGTERM.

Real subprocesses against a simulator of their own (this module restarts the
cloud broker and stalls printers, which the other live tests must not see):
once with stdout a pipe, read line by line while it runs, and once on a
pseudo-terminal of 80x24.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from typing import IO

import pytest
from rich.cells import cell_len

from bambulab.sim import Simulator
from tests.cli import test_cli_live as live
from tests.cli.test_cli_live import STAMP, LiveBambu

# The live tests' module fixtures, instantiated again here: a simulator of our own.
live_sim = live.live_sim
serials = live.serials
user = live.user

DOWNTIME = 2.0  # seconds the cloud broker stays away
STALE_AFTER = "2"  # --stale-after: the simulated printers report every half second
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# What rich writes between two frames: erase the line, go up, erase... (and first a CR).
REDRAW = re.compile(r"(?:\r?\x1b\[2K\x1b\[1A)+\x1b\[2K|\r\x1b\[2K")


class Lines:
    """A pipe read line by line as it is written, each line with when it arrived."""

    def __init__(self, stream: IO[str]) -> None:
        self.got: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._lock:
                self.got.append((time.monotonic(), line))

    def wait_for(
        self, check: Callable[[str], bool], after: float = 0.0, timeout: float = 10.0
    ) -> tuple[float, str]:
        """The first line since ``after`` (monotonic) that passes ``check``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [(t, line) for t, line in self.got if t >= after and check(line)]
            if found:
                return found[0]
            assert time.monotonic() < deadline, "no such line in:\n" + self.text()
            time.sleep(0.02)

    def text(self) -> str:
        with self._lock:
            return "".join(line for _, line in self.got)


class Screen:
    """``bambu`` on a pseudo-terminal of ``columns`` x ``rows``, its output read all along."""

    def __init__(self, env: dict[str, str], *args: str, columns: int = 80, rows: int = 24) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bambulab.cli", *args],
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self.fd = master
        self.seen = b""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                if self.proc.poll() is not None:
                    return
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # the child closed the terminal
                return
            if not chunk:
                return
            with self._lock:
                self.seen += chunk

    def text(self) -> str:
        with self._lock:
            return self.seen.decode(errors="replace")

    def frames(self) -> list[str]:
        """Every frame drawn so far (with its escape sequences)."""
        return [f for f in REDRAW.split(self.text()) if "┏" in f]

    def wait_for(self, check: Callable[[str], bool], timeout: float = 10.0) -> str:
        """The first frame that passes ``check``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [f for f in self.frames() if check(f)]
            if found:
                return found[0]
            assert time.monotonic() < deadline, "no such frame; last:\n" + plain(
                (self.frames() or [self.text()])[-1]
            )
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(2)
        os.close(self.fd)


def plain(frame: str) -> str:
    return ANSI.sub("", frame)


def row_of(frame: str, name: str) -> str:
    """The table line of printer ``name`` (with its escape sequences)."""
    return next(line for line in frame.split("\r\n") if f" {name} " in plain(line))


def outage(sim: Simulator) -> tuple[threading.Thread, dict[str, float]]:
    """Stop the cloud broker now for DOWNTIME seconds; ``times`` gets when it was back."""
    times: dict[str, float] = {}

    def run() -> None:
        sim.restart_broker(downtime=DOWNTIME, wait=False)
        times["back"] = time.monotonic()
        sim.wait_mqtt_ready(10)  # the simulated printers are back on it too

    times["killed"] = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, times


def stop_with_sigterm(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> float:
    """SIGTERM, then how long the watch took to end (it must end by itself)."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(5)
    return time.monotonic() - sent


def test_watch_off_a_terminal_logs_an_outage_as_it_happens(
    user: LiveBambu, live_sim: Simulator, serials: dict[str, str]
) -> None:
    x1 = f"X1 Carbon 1 ({serials['X1 Carbon 1']}): "
    env = user.env()
    env.pop("PYTHONUNBUFFERED")  # a pipe is block-buffered: the watch must flush each line
    proc = subprocess.Popen(
        [sys.executable, "-m", "bambulab.cli", "watch", "P1S 1", "X1 Carbon 1",
         "--stale-after", STALE_AFTER],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        lines = Lines(proc.stdout)
        lines.wait_for(lambda line: "connected to the Bambu cloud broker" in line)
        lines.wait_for(lambda line: " P1S 1 (" in line and "layer " in line)
        assert proc.poll() is None  # lines come while it runs, not at the end

        # A stalled printer: a line says so, with its age; then that it reports again.
        stalled = time.monotonic()
        live_sim.stall(serials["X1 Carbon 1"], 4)
        _, stale = lines.wait_for(lambda line: x1 + "stale" in line, stalled)
        assert re.search(r"no report for \d+\.\d s \(expected within 2 s\)", stale), stale
        lines.wait_for(lambda line: x1 + "reporting again" in line, stalled)

        # The broker goes: a line at once, with the attempt and when the next try is.
        thread, times = outage(live_sim)
        lost_at, lost = lines.wait_for(lambda line: "connection lost" in line, times["killed"])
        assert STAMP.match(lost)
        assert re.search(r"reconnecting, attempt 1, next try in \d+\.\d s \(\d\d:\d\d:\d\d\)", lost)
        thread.join(15)
        back_at, back = lines.wait_for(
            lambda line: "reconnected to the Bambu cloud broker" in line, times["back"]
        )
        assert "live again" in back
        # ...and the printers' lines go on.
        lines.wait_for(lambda line: " P1S 1 (" in line and "layer " in line, back_at)
        print(
            f"\nbroker killed -> outage line {lost_at - times['killed']:.3f} s; "
            f"broker back -> reconnected line {back_at - times['back']:.3f} s"
        )
        assert lost_at - times["killed"] < 2.0
        assert back_at - times["back"] < 6.0

        took = stop_with_sigterm(proc)
        assert took < 3.0
        assert proc.returncode == 0
        lines._thread.join(2)
        out, err = lines.text(), proc.stderr.read()
        assert "Traceback" not in err and err == "", err
        assert out.endswith("\n")
        assert all(STAMP.match(line) for line in out.splitlines()), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_watch_at_an_80x24_terminal(
    user: LiveBambu, live_sim: Simulator, serials: dict[str, str]
) -> None:
    env = user.env(TERM="xterm-256color")
    env.pop("COLUMNS", None)  # the terminal's own size, as for a person
    screen = Screen(env, "watch", "--stale-after", STALE_AFTER)
    try:
        screen.wait_for(lambda f: "printers, live" in f and "RUNNING" in plain(f))

        # A stalled printer's row: dimmed, its age shown and called stale; the others not.
        live_sim.stall(serials["X1 Carbon 1"], 5)
        frame = screen.wait_for(
            lambda f: "printers, live" in f and "stale" in plain(row_of(f, "X1 Carbon 1"))
        )
        row = row_of(frame, "X1 Carbon 1")
        assert "\x1b[2m" in row  # dim
        assert re.search(r"│ +\d+s stale │", plain(row)), plain(row)
        assert "\x1b[2m" not in row_of(frame, "P1S 1")
        # Every printer silent (as when a broker dies without closing the socket and
        # still looks connected): the status line says so before the keepalive does.
        for name in ("X1 Carbon 1", "P1S 1", "P1S 2", "A1 mini 1"):
            live_sim.stall(serials[name], 5)
        frame = screen.wait_for(lambda f: "connected, but no printer reported for" in f, 6)
        assert "connected since" in plain(frame).split("\r\n")[0]

        # The broker goes: the status line says so, with the attempt and the next try.
        thread, _ = outage(live_sim)
        frame = screen.wait_for(lambda f: "RECONNECTING: attempt" in f, 5)
        status = plain(frame).split("\r\n")[0]
        assert re.search(r"RECONNECTING: attempt \d+(, next try in \d+\.\d s| under way)", status)
        assert "NOT live" in frame and "printers, live" not in frame
        assert "\x1b[2m" in row_of(frame, "P1S 1")  # nothing is current while it is down
        thread.join(15)
        screen.wait_for(lambda f: "(connection #2)" in f and "printers, live" in f, 10)
        # The client marks every printer offline when the connection drops; that is
        # not news about the printers, so the rows kept their last known state.
        down = [f for f in screen.frames() if "RECONNECTING" in f]
        assert all("RUNNING" in plain(row_of(f, "P1S 1")) for f in down)
        assert not any("OFFLINE" in plain(f) for f in down)

        took = stop_with_sigterm(screen.proc)
        assert took < 3.0
        assert screen.proc.returncode == 0
        screen._thread.join(2)
        text = screen.text()
        assert "Traceback" not in text
        assert text.endswith("\x1b[?25h")  # the cursor is shown again

        frames = screen.frames()
        assert len(frames) > 10
        for frame in frames:
            lines = plain(frame).split("\r\n")
            assert all(cell_len(line) <= 80 for line in lines), frame
            # The header is one line, every word whole: never one letter per line.
            header = next(i for i, line in enumerate(lines) if line.startswith("┃"))
            assert lines[header + 1].startswith("┡"), plain(frame)
            titles = [cell.strip() for cell in lines[header].strip("┃").split("┃")]
            assert titles[:2] == ["Printer", "State"] and "%" in titles and "Age" in titles
            assert all(len(title) > 1 or title == "%" for title in titles), titles
    finally:
        screen.close()
