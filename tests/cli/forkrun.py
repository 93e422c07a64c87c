"""``python -m bambulab.cli`` without paying for its imports on every run.

A CLI test runs hundreds of short commands; each real interpreter spent
~0.7 s of CPU importing typer, httpx, pydantic and the cloud layer before it
did anything, more than half of the CLI tests' time. This module keeps one
single-threaded server process per test process that has imported all of
that once, and forks it for each command. The child is a real process of
its own: its own pid, standard streams on pipes (``/dev/null`` for stdin),
the environment, working directory and ``sys.argv`` it was given, and
``bambulab.cli`` run as ``__main__`` exactly as ``python -m`` does; at the
end it waits for non-daemon threads and runs the exit handlers, then exits
with the status the interpreter would have given.

What it cannot reproduce is an interpreter starting: options read at
start-up (``PYTHON*`` variables, the locale) and import-time failures. So a
run whose environment changes those goes to a real subprocess, and the tests
of start-up itself (``test_cli_startup``, pseudo-terminals, servers) always
use real subprocesses. ``BAMBU_TEST_FORKRUN=0`` sends every run to a real
subprocess, for a check of the whole suite the slow way.

Linux only (``pidfd_open``); elsewhere every run is a real subprocess.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import locale
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# What every command imports sooner or later, imported once by the server.
PRELOAD = (
    "bambulab.cli.app",
    "bambulab.cli.output",
    "bambulab.cloud",
    "bambulab.mqtt",
    "bambulab.models",
    "httpx",
    "rich.console",
    "rich.table",
)
# Variables read when an interpreter starts, not when a command runs.
STARTUP_VARIABLES = ("LANG", "LC_ALL", "LC_CTYPE")
_HEADER = 12  # the request's length, in decimal digits, before the request


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = conn.recv(size - len(data))
        if not more:
            raise EOFError("the request ended early")
        data += more
    return data


def _startup_key(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("PYTHON") or k in STARTUP_VARIABLES}


# --- the server (its own process) ------------------------------------------------------


def _child(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: become ``python -m bambulab.cli <args>``; never returns."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        atexit._clear()  # the server's own handlers are not this command's
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), errors="backslashreplace", write_through=True
        )
        sys.argv = ["bambu", *request["args"]]
        try:
            runpy.run_module("bambulab.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            if stop.code is None:
                code = 0
            elif isinstance(stop.code, int):
                code = stop.code
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        threading._shutdown()  # type: ignore[attr-defined]  # as the interpreter does
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code & 0xFF)


def serve(path: str) -> None:
    """Listen on the Unix socket ``path`` and fork a command for each request."""
    for module in PRELOAD:
        __import__(module)
    if threading.active_count() != 1:
        raise SystemExit("a preloaded module started a thread: forking would be unsafe")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print("ready", flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                conn, _ = listener.accept()
                header, fds, _, _ = socket.recv_fds(conn, _HEADER, 3)
                try:
                    header += _read_exactly(conn, _HEADER - len(header))
                    message = _read_exactly(conn, int(header))
                except (OSError, EOFError, ValueError):  # a test process gave up
                    for fd in fds:
                        os.close(fd)
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    listener.close()
                    conn.close()
                    _child(json.loads(message), fds)
                for fd in fds:
                    os.close(fd)
                conn.sendall(f"{pid}\n".encode())
                pidfd = os.pidfd_open(pid)
                selector.register(pidfd, selectors.EVENT_READ, (pid, conn))
            else:
                pid, conn = key.data
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                with contextlib.suppress(OSError):
                    conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                conn.close()


# --- the client (the test process) -----------------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="bambu-forkrun-")
        self.path = os.path.join(self.directory, "socket")
        self.startup = _startup_key(os.environ)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"import tests.cli.forkrun as f; f.serve({self.path!r})"],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            self.process.kill()
            raise RuntimeError("the fork server did not start")
        atexit.register(self.close)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
            os.rmdir(self.directory)


_server: _Server | None = None
_server_lock = threading.Lock()
_server_failed = False


def _get_server(env: Mapping[str, str]) -> _Server | None:
    global _server, _server_failed
    if os.environ.get("BAMBU_TEST_FORKRUN") == "0" or not hasattr(os, "pidfd_open"):
        return None
    with _server_lock:
        if _server is None and not _server_failed:
            try:
                _server = _Server()
            except (OSError, RuntimeError):
                _server_failed = True
        server = _server
    if server is None or _startup_key(env) != server.startup:
        return None
    return server


def _text(data: bytes) -> str:
    # what subprocess.run(text=True) gives: the locale's encoding, universal newlines
    decoded = data.decode(locale.getpreferredencoding(False))
    return decoded.replace("\r\n", "\n").replace("\r", "\n")


def run(
    args: Sequence[str],
    env: Mapping[str, str],
    timeout: float,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m bambulab.cli *args`` with ``env``, stdin from ``/dev/null``, output captured.

    The same result and the same :class:`subprocess.TimeoutExpired` as
    ``subprocess.run(..., capture_output=True, text=True, timeout=timeout)``.
    """
    command = [sys.executable, "-m", "bambulab.cli", *args]
    server = _get_server(env)
    if server is None:
        return subprocess.run(
            command,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        control.connect(server.path)
        request = json.dumps(
            {"args": list(args), "env": dict(env), "cwd": os.fspath(cwd or os.getcwd())}
        ).encode()
        socket.send_fds(control, [b"%012d" % len(request)], [null, out_w, err_w])
        control.sendall(request)
    finally:
        for fd in (null, out_w, err_w):
            os.close(fd)
    deadline = time.monotonic() + timeout
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    answer = b""
    pid = 0
    with selectors.DefaultSelector() as selector:
        selector.register(out_r, selectors.EVENT_READ)
        selector.register(err_r, selectors.EVENT_READ)
        selector.register(control, selectors.EVENT_READ)
        try:
            while len(selector.get_map()):
                left = deadline - time.monotonic()
                if left <= 0:
                    if pid:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    raise subprocess.TimeoutExpired(command, timeout)
                for key, _ in selector.select(left):
                    if key.fileobj is control:
                        data = control.recv(64)
                        if not data:
                            selector.unregister(control)
                            continue
                        answer += data
                        if not pid and b"\n" in answer:
                            pid = int(answer.split(b"\n", 1)[0])
                    else:
                        fd = int(key.fd)
                        data = os.read(fd, 65536)
                        if data:
                            chunks[fd].append(data)
                        else:
                            selector.unregister(fd)
        finally:
            os.close(out_r)
            os.close(err_r)
            control.close()
    lines = answer.decode().split()
    if len(lines) != 2:
        raise RuntimeError(f"the fork server gave no exit status: {answer!r}")
    return subprocess.CompletedProcess(
        command,
        int(lines[1]),
        _text(b"".join(chunks[out_r])),
        _text(b"".join(chunks[err_r])),
    )
