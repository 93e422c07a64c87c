"""The ``bambu sim`` / ``python -m bambulab.sim`` command line.

``main()`` runs the whole simulator (:class:`bambulab.sim.live.Simulator`:
the cloud plus MQTT brokers and printers, unless ``--no-mqtt``) in the
foreground, prints shell-ready ``export`` lines and serves until Ctrl-C or
SIGTERM. The library classes know nothing of it: this module imports them,
never the other way round.

The simulator listens on loopback only: it hands out tokens for well-known
demo passwords, and nothing else on the network should be able to use them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from ..paths import PRIVATE_FILE, private_dir, write_file
from ..safetext import VisibleFormatter
from .config import ConfigError, RateLimits, SimConfig, load_config, parse_fleet, validate
from .live import Simulator
from .server import resolve_loopback

log = logging.getLogger("bambulab.sim")

DEFAULT_PORT = 8080
# ``--env-file`` without a path: this name in the state directory, outside any
# checkout (the file holds a token; nobody should commit it by accident).
ENV_FILE_NAME = "sim.env"
# argparse's value for a bare ``--env-file``; told apart from a path by identity.
_ENV_FILE_IN_STATE_DIR = Path(ENV_FILE_NAME)
UNSET_FUNCTION = "bambu_sim_unset"


def default_state_dir() -> Path:
    """Where ``bambu sim`` keeps its files unless told: ``$XDG_STATE_HOME/bambulab/sim``."""
    base = os.environ.get("XDG_STATE_HOME", "").strip()
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "bambulab" / "sim"


# --- command line ---------------------------------------------------------------------


def build_parser(prog: str = "bambu sim") -> argparse.ArgumentParser:
    """The ``bambu sim`` / ``python -m bambulab.sim`` argument parser."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run the simulated Bambu Lab cloud, its MQTT brokers and the printers "
            "on loopback until Ctrl-C."
        ),
    )
    parser.add_argument(
        "--port", type=int, default=None, help=f"port (default {DEFAULT_PORT}; 0 = any free port)"
    )
    parser.add_argument("--host", default=None, help="loopback address (default 127.0.0.1)")
    parser.add_argument("--config", type=Path, help="TOML file (see docs/simulator.md)")
    parser.add_argument(
        "--env-file",
        type=Path,
        nargs="?",
        const=_ENV_FILE_IN_STATE_DIR,
        metavar="PATH",
        help="also write the export lines, and a function undoing them, to PATH "
        f"(default: {ENV_FILE_NAME} in the state directory, "
        "~/.local/state/bambulab/sim or --state-dir)",
    )
    parser.add_argument("--code-ttl", type=float, metavar="SECONDS", help="login code lifetime")
    parser.add_argument("--token-ttl", type=int, metavar="SECONDS", help="access token lifetime")
    parser.add_argument("--no-rate-limits", action="store_true", help="disable all rate limits")
    parser.add_argument(
        "--fleet",
        metavar="MODELS",
        help="demo account's printers, e.g. seed,x1c,p1s:outdated,a1mini,a1:offline",
    )
    parser.add_argument("--seed", type=int, help="seed of the generated data")
    parser.add_argument(
        "--lenient-cloud-mqtt",
        action="store_true",
        help="cloud broker also accepts an owned printer's access code as the password "
        "(the seed's form; the real broker wants the access token)",
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    mqtt = parser.add_argument_group("printers and MQTT")
    mqtt.add_argument(
        "--no-mqtt", action="store_true", help="serve the HTTP API only (no brokers, no printers)"
    )
    mqtt.add_argument(
        "--broker",
        default="amqtt",
        metavar="KIND|URL",
        help="cloud broker: amqtt (embedded, default), mosquitto, or mqtt[s]://host:port",
    )
    mqtt.add_argument(
        "--no-lan", action="store_true", help="no per-printer LAN brokers (large fleets)"
    )
    mqtt.add_argument(
        "--no-ftps", action="store_true", help="no per-printer FTPS servers (SD cards)"
    )
    mqtt.add_argument(
        "--ftps-port",
        type=int,
        default=0,
        metavar="PORT",
        help="first printer's FTPS port, the next ones follow (default: free ports)",
    )
    mqtt.add_argument(
        "--ftps-tls13", action="store_true", help="let FTPS clients use TLS 1.3 (default 1.2)"
    )
    mqtt.add_argument(
        "--no-camera",
        action="store_true",
        help="no camera streams on the P1/A1 printers (TLS JPEG, port 6000 on a real one)",
    )
    mqtt.add_argument(
        "--camera-port",
        type=int,
        default=0,
        metavar="PORT",
        help="first P1/A1 printer's camera port, the next ones follow (default: free ports)",
    )
    mqtt.add_argument(
        "--camera-fps",
        type=float,
        default=1.0,
        metavar="F",
        help="camera frames per second (default 1, like the printers)",
    )
    mqtt.add_argument(
        "--rtsp-port",
        type=int,
        default=0,
        metavar="PORT",
        help="first X1/P2/H2 printer's RTSPS camera port, the next ones follow "
        "(default: free ports; a real printer: 322)",
    )
    mqtt.add_argument(
        "--rtsp-fps",
        type=float,
        default=5.0,
        metavar="F",
        help="RTSPS camera frames per second (default 5)",
    )
    mqtt.add_argument(
        "--liveview",
        action="store_true",
        help="LAN liveview on for every X1/P2/H2 printer (the H2 family has it off by default)",
    )
    mqtt.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="simulated printer seconds per real second (default 1)",
    )
    mqtt.add_argument(
        "--state-dir",
        type=Path,
        help="keep the simulator CA here across runs (BAMBU_CA_FILE); made 0700",
    )
    farm = parser.add_argument_group(
        "farm",
        "a print farm: N printers of a seeded mix of models and AMS loads that print "
        "queued jobs at --time-scale, fail some and drop offline now and then "
        "(see docs/simulator.md)",
    )
    farm.add_argument(
        "--printers",
        type=int,
        metavar="N",
        help="the demo account owns N farm printers instead of its fleet (with 200 or "
        "more, add --no-lan or --no-camera)",
    )
    farm.add_argument(
        "--fail-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="share of prints that fail (0-1, seeded): a filament runout pauses until the "
        "slot is refilled (POST /sim/farm/printers/SERIAL/refill) and resumed, a clogged "
        "nozzle fails the print",
    )
    farm.add_argument(
        "--flaky-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="times per simulated hour each printer drops offline (1-10 simulated minutes)",
    )
    servers = parser.add_argument_group("servers")
    servers.add_argument(
        "--serve",
        metavar="PARTS",
        help=(
            "also run bambu's server against the simulator with these parts: "
            "proxy,compat,live,metrics (or all); exports BAMBU_SERVER_URL and a control "
            "BAMBU_SERVER_TOKEN"
        ),
    )
    servers.add_argument(
        "--serve-port",
        type=int,
        default=0,
        metavar="N",
        help="the server's port (default: any free one)",
    )
    servers.add_argument(
        "--serve-mode",
        choices=("strict", "full"),
        default="strict",
        help="the proxy's mode (default strict)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Defaults, then the TOML file, then the command-line options."""
    config = replace(SimConfig(), port=DEFAULT_PORT)
    if args.config is not None:
        config = load_config(args.config, config)
    if args.port is not None:
        config = replace(config, port=args.port)
    if args.host is not None:
        config = replace(config, host=args.host)
    if args.code_ttl is not None:
        config = replace(config, code_ttl=args.code_ttl)
    if args.token_ttl is not None:
        config = replace(config, token_ttl=args.token_ttl)
    if args.seed is not None:
        config = replace(config, seed=args.seed)
    if args.no_rate_limits:
        config = replace(config, rate_limits=RateLimits(enabled=False))
    if args.lenient_cloud_mqtt:
        config = replace(config, lenient_cloud_mqtt=True)
    if args.fleet is not None:
        if args.printers is not None:
            raise ConfigError("--fleet and --printers both choose the printers: give one")
        config = config.with_demo_fleet(parse_fleet(args.fleet))
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"port must be 0-65535, got {config.port}")
    validate(config)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator in the foreground; returns the process exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    _configure_logging(quiet=args.quiet)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"bambu sim: {exc}", file=sys.stderr)
        return 2
    if resolve_loopback(config.host) is None:
        print(
            f"bambu sim: refusing to listen on {config.host}: "
            "only loopback addresses (127.0.0.1, ::1, localhost) are allowed",
            file=sys.stderr,
        )
        return 2
    if args.time_scale <= 0:
        print("bambu sim: --time-scale must be positive", file=sys.stderr)
        return 2
    if not 0 < args.rtsp_fps <= 60:
        print("bambu sim: --rtsp-fps must be more than 0 and at most 60", file=sys.stderr)
        return 2
    if not 0 < args.camera_fps <= 60:
        print("bambu sim: --camera-fps must be more than 0 and at most 60", file=sys.stderr)
        return 2
    try:
        parts = serve_parts(args.serve)
    except ValueError as exc:
        print(f"bambu sim: --serve: {exc}", file=sys.stderr)
        return 2
    if parts and args.no_mqtt and any(p != "proxy" for p in parts):
        print("bambu sim: --serve compat/live/metrics need the MQTT brokers", file=sys.stderr)
        return 2
    try:
        sim = Simulator(
            config,
            mqtt=not args.no_mqtt,
            broker=args.broker,
            lan=not args.no_lan,
            time_scale=args.time_scale,
            state_dir=args.state_dir,
            ftps=not args.no_ftps,
            ftps_port=args.ftps_port,
            ftps_tls13=args.ftps_tls13,
            camera=not args.no_camera,
            camera_port=args.camera_port,
            camera_interval=1.0 / args.camera_fps,
            rtsp_port=args.rtsp_port,
            rtsp_fps=args.rtsp_fps,
            liveview=True if args.liveview else None,
            printers=args.printers,
            fail_rate=args.fail_rate,
            flaky_rate=args.flaky_rate,
        )
    except ValueError as exc:
        print(f"bambu sim: {exc}", file=sys.stderr)
        return 2
    with _stop_signals() as stop:
        return _serve(sim, config, args, stop)


def _serve(
    sim: Simulator, config: SimConfig, args: argparse.Namespace, stop: threading.Event
) -> int:
    try:
        sim.start()
    except OSError as exc:
        if not sim.cloud.port:
            print(
                f"bambu sim: cannot listen on {config.host}:{config.port}: {exc.strerror}",
                file=sys.stderr,
            )
        else:
            print(f"bambu sim: cannot start the brokers: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"bambu sim: cannot start the brokers: {exc}", file=sys.stderr)
        return 1
    server = None
    try:
        lines = sim.export_lines()
        parts = serve_parts(args.serve)
        if parts:
            from ..servers.config import open_sim_server

            server = open_sim_server(sim, parts, port=args.serve_port, proxy_mode=args.serve_mode)
            server.start()
            lines += server.export_lines()
            log.info("server with %s at %s", ", ".join(server.parts), server.url)
        # The file first: whoever reads the printed lines may open it at once.
        if args.env_file is not None:
            path = _write_env_file(env_file_path(args), lines, sim.url)
            log.info(
                "exports written to %s: `. %s` to use them, `%s` to undo that",
                path,
                shlex.quote(str(path)),
                UNSET_FUNCTION,
            )
        print("\n".join(lines), flush=True)
        _wait_for(stop)
    finally:
        if server is not None:
            server.stop()
        sim.stop()
    log.info("simulator stopped")
    return 0


def serve_parts(text: str | None) -> tuple[str, ...]:
    """``--serve proxy,compat`` -> the parts, in their own order (``all``: every one)."""
    from ..servers.app import PARTS

    if not text:
        return ()
    asked = {p.strip().lower() for p in text.split(",") if p.strip()}
    if "all" in asked:
        return PARTS
    unknown = sorted(asked - set(PARTS))
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(unknown)} (known: {', '.join(PARTS)}, all)")
    return tuple(p for p in PARTS if p in asked)


def _configure_logging(quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO
    log.setLevel(level)
    # amqtt warns about every refused CONNECT and dropped client, which are
    # routine here (tests provoke them); keep its errors only, unless the
    # host application chose a level itself.
    for name in ("amqtt", "transitions"):
        third_party = logging.getLogger(name)
        if third_party.level == logging.NOTSET:
            third_party.setLevel(logging.ERROR)
    # Respect a host application (the CLI) that configured logging already.
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        # Lines quote device names, file names and logins that clients sent.
        handler.setFormatter(VisibleFormatter("%(asctime)s sim: %(message)s", "%H:%M:%S"))
        log.addHandler(handler)


def env_file_path(args: argparse.Namespace) -> Path:
    """Where ``--env-file`` writes: the path given, else the state directory's ``sim.env``."""
    given: Path = args.env_file
    if given is not _ENV_FILE_IN_STATE_DIR:
        return given.expanduser()
    return Path(args.state_dir or default_state_dir()).expanduser() / ENV_FILE_NAME


def env_file_text(lines: list[str], url: str, path: Path) -> str:
    """The env file: a header, the export lines, and a shell function that undoes them.

    Sourcing it points every ``bambu`` command of that shell at the simulator,
    ``bambu login`` included; ``bambu_sim_unset`` (or the ``unset`` line in the
    header) takes exactly these variables away again, so a real login does not
    go to the simulator by mistake.
    """
    names = [line.removeprefix("export ").partition("=")[0] for line in lines]
    unset = "unset " + " ".join(names)
    # A comment ends at a newline: a path with one must not become a command.
    where = "this file" if any(c in str(path) for c in "\r\n") else shlex.quote(str(path))
    return (
        "\n".join(
            [
                f"# bambu sim: the simulator at {url} (holds a token: keep it private).",
                f"# Use: . {where}   Undo: {UNSET_FUNCTION}   (or: {unset})",
                *lines,
                f"{UNSET_FUNCTION}() {{ {unset}; unset -f {UNSET_FUNCTION}; }}",
            ]
        )
        + "\n"
    )


def _write_env_file(path: Path, lines: list[str], url: str) -> Path:
    # 0600 (whatever the umask): the file holds a token and the demo password.
    private_dir(path.parent)
    return write_file(path, env_file_text(lines, url, path).encode("utf-8"), PRIVATE_FILE)


@contextlib.contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set the yielded event while the block runs.

    Installed before anything is printed, so a signal sent as soon as the
    export lines appear still means a clean stop, not a default death.
    """
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: list[tuple[signal.Signals, Any]] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous.append((sig, signal.signal(sig, request_stop)))
    try:
        yield stop
    finally:
        for sig, handler in previous:
            signal.signal(sig, handler)


def _wait_for(stop: threading.Event) -> None:
    try:
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
