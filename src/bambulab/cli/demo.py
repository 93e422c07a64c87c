"""``bambu demo``: the whole tour against the embedded simulator, in a few seconds.

The demo is a list of steps run in order on one :class:`DemoRun`; later parts
of the toolkit (live MQTT state, uploads, camera) add their step to
:data:`STEPS`. It never touches the user's own token: the token lives in a
temporary file that disappears with the demo. The simulator runs with its
MQTT side (cloud broker, printers) and printers at :data:`TIME_SCALE`, so a
few seconds of watching show a print move.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .base import OPTIONS, CliError, sim_extra

if TYPE_CHECKING:
    import threading

    from ..cloud.client import BambuClient
    from ..farm.models import Job
    from ..models.state import PrinterState
    from ..mqtt.client import BambuMQTT
    from ..protocol.login import AskCode
    from ..sim import Simulator
    from .live_session import PrinterRef

# How long to wait for the simulator's outbox to show the code just sent.
OUTBOX_WAIT = 3.0
RECENT_TASKS = 5
# The live step: printers run a minute per second and report twice a second.
TIME_SCALE = 60.0
TICK_INTERVAL = 0.5
WATCH_SECONDS = 4.0
ACTIVE = ("PREPARE", "RUNNING", "PAUSE", "SLICING")


@dataclass
class DemoRun:
    """What the steps share: the simulator, the temporary token file, the client."""

    sim: Simulator
    token_file: Path
    account: str
    password: str
    client: BambuClient | None = None
    token: str | None = field(default=None, repr=False)
    notes: dict[str, Any] = field(default_factory=dict)
    steps_done: int = 0

    def heading(self, title: str) -> None:
        """Print the next step's numbered heading (numbers follow :data:`STEPS`)."""
        self.steps_done += 1
        gap = "\n" if self.steps_done > 1 else ""
        _say(f"{gap}[bold]{self.steps_done}. {title}[/bold]")

    @property
    def api(self) -> BambuClient:
        """The logged-in client (after the login step)."""
        if self.client is None:
            raise CliError("the demo has not logged in yet")
        return self.client


Step = Callable[[DemoRun], None]


def _say(message: str, *, wrap: bool = True) -> None:
    from .output import say

    say(message, wrap=wrap)


def step_login(run: DemoRun) -> None:
    """Log in to the demo account with the emailed-code flow, code from the outbox."""
    from ..cloud.auth import BambuAuthenticator
    from ..cloud.client import BambuClient
    from .base import retry_policy
    from .output import esc

    run.heading(f"Log in as {esc(run.account)} with its password")
    auth = BambuAuthenticator(base_url=run.sim.url, token_file=run.token_file)

    def code_from_outbox(step: AskCode) -> str:
        _say(
            f"   the cloud wants a verification code ({step.kind}), sent to {esc(step.destination)}"
        )
        code = read_outbox_code(run.sim.url, run.account, step.kind)
        _say(f"   code [bold]{esc(code)}[/bold] read from the simulator's outbox")
        return code

    token = auth.login(run.account, run.password, code_callback=code_from_outbox)
    refresh = auth.last_login.refresh_token if auth.last_login else None
    path = auth.save_token(token, refresh_token=refresh)
    claims = auth.token_claims(token)
    left = claims.seconds_left()
    days = f", valid {left / 86400:.0f} days" if left is not None else ""
    _say(f"   logged in: uid {claims.uid}, MQTT user u_{claims.uid}{days}")
    _say(f"   token saved to {esc(path)} (a temporary file; your own token is untouched)")
    run.client = BambuClient(token, base_url=run.sim.url, retry=retry_policy())
    run.token = token


def read_outbox_code(base_url: str, account: str, kind: str) -> str:
    """The newest code the simulator "sent" to ``account``, read over its HTTP outbox."""
    import httpx

    deadline = time.monotonic() + OUTBOX_WAIT
    with httpx.Client(base_url=base_url, timeout=5.0) as http:
        while True:
            reply = http.get("/sim/outbox", params={"account": account, "kind": kind})
            reply.raise_for_status()
            found = [m for m in reply.json().get("messages", []) if m.get("code")]
            if found:
                return str(found[-1]["code"])
            if time.monotonic() > deadline:
                raise CliError(f"the simulator's outbox has no {kind} code for {account}")
            time.sleep(0.05)


def step_devices(run: DemoRun) -> None:
    """List the account's printers."""
    from .devices import show_devices

    run.heading("Printers bound to the account")
    show_devices(run.api.get_devices())


def step_tasks(run: DemoRun) -> None:
    """Show the most recent print tasks."""
    from .tasks import show_tasks

    run.heading(f"Print history: the {RECENT_TASKS} most recent tasks")
    recent = list(run.api.iter_tasks(page_size=RECENT_TASKS, max_items=RECENT_TASKS))
    show_tasks(recent, title=f"{len(recent)} most recent tasks")


def step_live(run: DemoRun) -> None:
    """Connect to the cloud broker, make sure a printer prints, watch it, show its AMS."""
    from ..protocol.jwt import decode_claims
    from .live_session import refs_from_devices
    from .live_views import Watcher, run_watch, show_ams
    from .output import esc

    sim = run.sim
    run.heading("Live printers over MQTT: watch a print, then its AMS")
    if not run.token or not sim.mqtt_enabled:
        raise CliError("the demo's simulator runs without MQTT")
    refs = [r for r in refs_from_devices(run.api.get_devices()) if r.online]
    if not refs:
        raise CliError("no simulated printer is online")
    uid = decode_claims(run.token).uid or run.api.get_user_id()
    watcher = Watcher(refs)
    mqtt = live_client(run, uid, [r.serial for r in refs], {r.serial: r.model for r in refs})
    mqtt.on_event = watcher.on_event
    try:
        mqtt.connect()
        _say(
            f"   connected to the cloud broker {esc(sim.mqtt_host)}:{sim.mqtt_port} "
            f"as u_{esc(uid)} over TLS; following {len(refs)} online printers"
        )
        states = {r.serial: mqtt.get_full_status(r.serial, timeout=5.0) for r in refs}
        busy = [r for r in refs if states[r.serial].gcode_state in ACTIVE]
        if busy:
            ref = busy[0]
            state = states[ref.serial]
            _say(
                f"   {esc(ref.name)} is printing {esc(repr(state.job_name))} "
                f"({state.percent or 0}% done)"
            )
        else:
            ref = refs[0]
            name = start_sample_print(run, mqtt, ref.serial)
            _say(f"   nothing was printing: started {esc(repr(name))} on {esc(ref.name)}")
        _say(f"   watching for {WATCH_SECONDS:g} s (printers run {TIME_SCALE:g}x faster):")
        # A table even when piped: the demo shows what a person sees at a terminal.
        run_watch(watcher, duration=WATCH_SECONDS, lines=False)
    finally:
        mqtt.disconnect()
    # The connection is closed: the state below no longer changes while it is drawn.
    show_ams(ref, mqtt.state(ref.serial))


def live_client(run: DemoRun, uid: str, serials: list[str], models: dict[str, str]) -> BambuMQTT:
    """A client for the simulator's cloud broker, as the demo account."""
    from ..mqtt.client import BambuMQTT
    from .live_session import COMMAND_TIMEOUT, CONNECT_TIMEOUT

    sim = run.sim
    return BambuMQTT(
        uid,
        serials,
        token=run.token,
        host=sim.mqtt_host,
        port=sim.mqtt_port,
        ca_file=sim.ca_file,
        connect_timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        models={s: m for s, m in models.items() if m},
    )


def start_sample_print(run: DemoRun, mqtt: BambuMQTT, serial: str) -> str:
    """Print one of the printer's sample files from its SD card; the job's name.

    The filament comes from the AMS (the loaded tray, else the first with
    filament) when the printer has one, else from the external spool.
    """
    files: list[str] = run.sim.with_printer(serial, lambda p: list(p.sdcard_files))
    projects = [f for f in files if f.lower().endswith(".3mf")] or files
    if not projects:
        raise CliError(f"printer {serial} has no file on its SD card")
    chosen = next((f for f in projects if f.startswith("Benchy")), projects[0])
    name = chosen.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    state = mqtt.state(serial)
    trays = [t for unit in state.ams_units for t in unit.trays if not t.empty]
    loaded = [t for t in trays if t.global_id == state.tray_now] or trays
    options: dict[str, Any] = {}
    if loaded:
        options = {"use_ams": True, "ams_mapping": [loaded[0].global_id]}
    # The model table knows the URL form the printer takes (file:///sdcard/ or ftp:///).
    mqtt.start_print(state.model.lan_url(chosen), serial=serial, subtask_name=name, **options)
    return name


def step_print_files(run: DemoRun) -> None:
    """Write a 3MF; print it on one printer through the cloud, on another over the LAN."""
    from ..local.lan_print import print_file
    from ..models.printing import PrintOptions
    from ..protocol.jwt import decode_claims
    from ..protocol.threemf import read_3mf
    from .live_session import refs_from_devices
    from .live_views import Watcher, run_watch
    from .output import duration, esc

    sim = run.sim
    run.heading("Print a file: uploaded to the cloud for one printer, sent over FTPS to another")
    if not run.token or not sim.mqtt_enabled:
        raise CliError("the demo's simulator runs without MQTT")
    refs = [r for r in refs_from_devices(run.api.get_devices()) if r.online]
    uid = decode_claims(run.token).uid or run.api.get_user_id()
    mqtt = live_client(run, uid, [r.serial for r in refs], {r.serial: r.model for r in refs})
    try:
        mqtt.connect()
        states = {r.serial: mqtt.get_full_status(r.serial, timeout=5.0) for r in refs}
        idle = [r for r in refs if states[r.serial].gcode_state not in ACTIVE]
        pair = _shared_filament(idle, states)
        if pair is None:
            raise CliError("no two idle simulated printers share a loaded filament type")
        (by_cloud, by_lan), filament = pair
        path = Path(run.token_file).parent / "demo-cube.3mf"
        write_demo_3mf(path, filament)
        with path.open("rb") as stream:
            project = read_3mf(stream)
        plate = project.plates[0]
        _say(
            f"   wrote {esc(path.name)}: {path.stat().st_size // 1024} KiB, plate 1 takes "
            f"{duration(plate.seconds)}, {plate.weight:.1f} g of {esc(filament[0])}, "
            f"md5 {project.md5[:12]}…"
        )
        options = PrintOptions(bed_levelling=False, subtask_name="Demo cube")
        uploaded = run.api.upload_file(path.name, path)
        _say(f"   uploaded to the cloud as file {esc(uploaded.file_id)} (streamed, md5 checked)")
        task = run.api.start_cloud_print(
            by_cloud.serial, uploaded.file_id, path.name, options=options, mqtt=mqtt
        )
        _say(
            f"   cloud print on {esc(by_cloud.name)}: task {esc(getattr(task, 'id', ''))}, "
            "print.project_file sent on the cloud broker with the file's HTTPS URL and MD5"
        )
        endpoint = next(e for e in sim.endpoints() if e.serial == by_lan.serial)
        if endpoint.host is None or endpoint.port is None or endpoint.ftp_port is None:
            raise CliError(f"printer {by_lan.serial} has no LAN side in this simulator")
        outcome = print_file(
            path,
            host=endpoint.host,
            serial=endpoint.serial,
            access_code=endpoint.access_code,
            mqtt_port=endpoint.port,
            ftp_port=endpoint.ftp_port,
            ca_file=sim.ca_file,
            options=options,
        )
        if not outcome.ok:
            raise CliError(f"the LAN print on {by_lan.name} failed: {outcome.error}")
        _say(
            f"   LAN print on {esc(by_lan.name)}: sent over implicit FTPS to its SD card, "
            f"then {esc(outcome.url)} on its own broker"
        )
        run.notes["printing"] = [by_cloud.serial, by_lan.serial]
        watcher = Watcher([by_cloud, by_lan])
        # Connected long ago: the watch starts from the connection's status, then its events.
        watcher.connection = mqtt.connection_status
        mqtt.on_event = watcher.on_event
        _say(f"   both printing, watched for {WATCH_SECONDS:g} s:")
        run_watch(watcher, duration=WATCH_SECONDS, lines=False)
    finally:
        mqtt.disconnect()


def _shared_filament(
    refs: list[PrinterRef], states: dict[str, PrinterState]
) -> tuple[tuple[PrinterRef, PrinterRef], tuple[str, str]] | None:
    """Two printers with a filament type loaded in both, and that filament (type, colour)."""
    loaded = {
        r.serial: [t for unit in states[r.serial].ams_units for t in unit.trays if not t.empty]
        for r in refs
    }
    for i, first in enumerate(refs):
        for second in refs[i + 1 :]:
            for tray in loaded[first.serial]:
                if any(t.type == tray.type for t in loaded[second.serial]):
                    colour = f"#{(tray.colour or 'FFFFFFFF')[:8]}"
                    return (first, second), (tray.type, colour)
    return None


def write_demo_3mf(path: Path, filament: tuple[str, str]) -> None:
    """The demo's sliced cube: a real 3MF with G-code, metadata and thumbnails."""
    from ..sim.threemf_writer import write_3mf

    write_3mf(path, name="Demo cube", filaments=(filament,), layers=60, seconds=900)


def demo_output_dir() -> Path:
    """Where the demo leaves what it saves (``BAMBU_DEMO_DIR``, else ``$TMPDIR/bambu-demo``)."""
    chosen = os.environ.get("BAMBU_DEMO_DIR") or str(Path(tempfile.gettempdir()) / "bambu-demo")
    path = Path(chosen)
    path.mkdir(parents=True, exist_ok=True)
    return path


def step_camera(run: DemoRun) -> None:
    """Save a snapshot from each kind of simulated camera: the JPEG stream and RTSPS."""
    from ..errors import ConfigurationError
    from ..local.camera import open_camera
    from ..models.printer import UNKNOWN_MODEL, model_of
    from .output import esc

    run.heading("Camera: snapshots from the simulated printers' cameras")
    printing = run.notes.get("printing", [])
    endpoints = sorted(run.sim.endpoints(), key=lambda e: e.serial not in printing)
    saved = 0
    for kind in ("jpeg", "rtsps"):
        chosen = next(
            (e for e in endpoints if (model_of(e.model) or UNKNOWN_MODEL).camera == kind), None
        )
        if chosen is None:
            continue
        product = (model_of(chosen.model) or UNKNOWN_MODEL).product
        options: dict[str, Any] = {"ca_file": run.sim.ca_file, "timeout": 10.0}
        if kind == "jpeg":
            if chosen.camera_port is None:
                continue
            options["port"] = chosen.camera_port
            where, how = chosen.host or "127.0.0.1", "TLS JPEG stream"
        else:
            if not chosen.rtsp_url:
                continue
            where, how = chosen.rtsp_url, "RTSPS, decoded by PyAV"
        try:
            camera = open_camera(
                where, chosen.access_code, chosen.serial, model=chosen.model, **options
            )
            try:
                frame = camera.snapshot(timeout=10.0)
            finally:
                camera.close()
        except ConfigurationError as exc:  # no PyAV: the camera extra is not installed
            _say(f"   {esc(product)}: {esc(str(exc))}")
            continue
        path = demo_output_dir() / f"camera-{chosen.serial}.jpg"
        frame.save(str(path))
        saved += 1
        _say(
            f"   {esc(product)} {esc(chosen.serial)} ({how}): "
            f"{frame.size // 1024} KiB JPEG saved to {esc(str(path))}"
        )
    if not saved:
        raise CliError("no simulated camera gave a snapshot")


def step_servers(run: DemoRun) -> None:
    """The server: a strict-proxy request with a token it issued, and one /metrics scrape."""
    import httpx

    from ..servers.config import open_sim_server
    from .output import esc

    run.heading("Server: the strict API proxy with an issued token, and /metrics")
    with open_sim_server(run.sim, ("proxy", "live", "metrics")) as server:
        store = server.ctx.gate.store
        serial = run.sim.endpoints()[0].serial
        token, issued = store.create("read", printers=[serial], label="demo", expires_in=600)
        _say(
            f"   {esc(server.url)}: token {issued.id} issued (read, printer {esc(serial)} only, "
            "10 minutes); the store keeps only its hash"
        )
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=10.0) as http:
            bind = http.get("/v1/iot-service/api/user/bind")
            devices = bind.json().get("devices", []) if bind.status_code == 200 else []
            codes = {str(d.get("dev_access_code")) for d in devices}
            _say(
                f"   GET /v1/iot-service/api/user/bind -> {bind.status_code}: "
                f"{len(devices)} printer(s) of {len(run.sim.endpoints())} visible, "
                f"access codes shown as {esc(', '.join(sorted(codes)) or '-')}"
            )
            write = http.delete("/v1/iot-service/api/user/bind", params={"dev_id": serial})
            _say(f"   DELETE (unbind) through the strict proxy -> {write.status_code}, refused")
            metrics = http.get("/metrics")
        samples = [
            line
            for line in metrics.text.splitlines()
            if line.startswith("bambu_") and serial in line
        ]
        _say(
            f"   GET /metrics -> {metrics.status_code}: {len(samples)} samples for "
            f"{esc(serial)}, e.g."
        )
        shown = [
            line
            for line in samples
            if line.startswith(("bambu_printer_info", "bambu_printer_temperature_celsius"))
            or (line.startswith("bambu_printer_state{") and line.endswith(" 1.0"))
        ]
        for line in shown[:4]:
            _say(f"     {esc(line)}")
        if bind.status_code != 200 or write.status_code != 403 or not samples:
            raise CliError("the server did not answer as it should")


# The farm step: its own simulated fleet, printing at FARM_TIME_SCALE (a job of
# FARM_JOB_SECONDS takes 2 s), the dashboard shot at desktop width.
FARM_PRINTERS = 6
FARM_TIME_SCALE = 600.0
FARM_TICK = 0.2
FARM_JOB_SECONDS = 1200.0
FARM_DEADLINE = 45.0  # for the whole queue to drain
FARM_POLL = 0.1
SCREENSHOT_SIZE = (1440, 900)
SCREENSHOT_TIMEOUT = 20.0
SHOT_PRINTING = 2  # tiles printing in the picture, at least...
SHOT_SETTLE = 0.5  # ...and half a second more: their progress bars have moved
FARM_EXTRA_MODULES = ("sqlalchemy",)  # the queue's store (the farm extra)
PART_NAMES = ("Bracket", "Hinge", "Gear", "Clip", "Knob", "Spacer", "Hook", "Cap")


@dataclass(frozen=True, slots=True)
class FarmPrinter:
    """A printer of the demo farm as the farm server sees it (from its live state)."""

    serial: str
    product: str  # "P1S"
    code: str  # the model code a file is sliced for ("C12")
    nozzle: float
    filaments: tuple[tuple[str, str], ...]  # (type, #RRGGBBAA) of every loaded slot


@dataclass(frozen=True, slots=True)
class FarmJob:
    """One file the demo queues: sliced for ``code`` with ``filament``, ``copies`` times."""

    name: str
    product: str
    code: str
    nozzle: float
    filament: tuple[str, str]
    copies: int
    target: str  # the queue's form: "any" or "model:CODE"


def plan_farm_jobs(printers: list[FarmPrinter]) -> list[FarmJob]:
    """Files that keep every printer busy: per model and nozzle, the filament most of them hold.

    Printers of one model and nozzle are covered greedily: the filament type
    loaded in the most of those not yet covered makes one file, with a copy
    for each of them (the colour: the first one's tray of that type). Every
    other file gets one copy more, so some printers print twice and the
    queue shows its order; the first file shared by several printers is
    targeted at their model class, the others at any printer (the file's
    model decides anyway).
    """
    groups: dict[tuple[str, float], list[FarmPrinter]] = {}
    for printer in printers:
        if printer.filaments:
            groups.setdefault((printer.code, printer.nozzle), []).append(printer)
    jobs: list[FarmJob] = []
    model_targeted = False
    for (code, nozzle), members in groups.items():
        left = list(members)
        while left:
            counts: dict[str, int] = {}
            for printer in left:
                for kind in {kind for kind, _ in printer.filaments}:
                    counts[kind] = counts.get(kind, 0) + 1
            kind = max(counts, key=lambda k: (counts[k], k))
            covered = [p for p in left if any(k == kind for k, _ in p.filaments)]
            colour = next(c for k, c in covered[0].filaments if k == kind)
            left = [p for p in left if p not in covered]
            by_model = len(covered) > 1 and not model_targeted
            model_targeted = model_targeted or by_model
            jobs.append(
                FarmJob(
                    name=PART_NAMES[len(jobs) % len(PART_NAMES)],
                    product=covered[0].product,
                    code=code,
                    nozzle=nozzle,
                    filament=(kind, colour),
                    copies=len(covered) + (1 if len(jobs) % 2 == 0 else 0),
                    target=f"model:{code}" if by_model else "any",
                )
            )
    return jobs


def farm_job_3mf(job: FarmJob) -> bytes:
    """The sliced file of ``job``: a real 3MF from the simulator's writer."""
    import io

    from ..sim.threemf_writer import write_3mf

    out = io.BytesIO()
    write_3mf(
        out,
        name=job.name,
        printer_model=job.code,
        filaments=(job.filament,),
        nozzle_diameter=job.nozzle,
        layers=40,
        seconds=FARM_JOB_SECONDS,
    )
    return out.getvalue()


def step_farm(run: DemoRun) -> None:
    """A simulated farm: jobs queued from 3MFs, dispatched, printed, and a dashboard screenshot."""
    import concurrent.futures
    import importlib.util
    import threading

    import httpx

    from ..farm.models import END_STATES, JobState
    from ..servers.config import open_sim_server
    from ..sim import SimConfig, Simulator
    from .output import esc

    run.heading(f"Print farm: a queue that dispatches itself to {FARM_PRINTERS} simulated printers")
    missing = [m for m in FARM_EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        _say(
            f"   skipped: the farm needs its extra ({', '.join(missing)} is not installed): "
            + esc("pip install 'bambulab[farm]'")
        )
        return
    from ..farm.service import Farm

    with (
        Simulator(
            SimConfig(),
            printers=FARM_PRINTERS,
            time_scale=FARM_TIME_SCALE,
            tick_interval=FARM_TICK,
            camera=False,
        ) as sim,
        open_sim_server(sim, ("farm", "live")) as server,
    ):
        hub = server.ctx.hub
        farm = server.ctx.extra.get("farm")
        if hub is None or not isinstance(farm, Farm) or server.issued_token is None:
            raise CliError("the farm server runs without its live connection")
        store = farm.store
        serials = [e.serial for e in sim.endpoints()]

        live = hub

        def states() -> list[PrinterState | None]:
            return server.call(lambda: [live.state(s) for s in serials])

        # Until every printer has sent a full report: its AMS trays and external spools.
        deadline = time.monotonic() + 20.0
        while not all(state is not None and state.trays for state in states()):
            if time.monotonic() > deadline:
                raise CliError("the simulated farm's printers did not report their filaments")
            time.sleep(0.05)
        printers = [_farm_printer(state) for state in states()]
        minutes = FARM_JOB_SECONDS / 60
        _say(f"   farm server at {esc(server.url)}/farm, built as `bambu serve farm` builds it")
        _say(
            f"   {len(printers)} printers at {FARM_TIME_SCALE:g}x (a {minutes:g}-minute print "
            f"takes {FARM_JOB_SECONDS / FARM_TIME_SCALE:g} s), each clearing its own bed "
            "(auto_clear), loaded with:"
        )
        for p in printers:
            loaded = ", ".join(f"{k} {c[:7]}" for k, c in p.filaments) or "nothing loaded"
            _say(f"     {esc(p.serial)}  {esc(p.product):<8} {p.nozzle:g} mm  {esc(loaded)}")
        control = {"Authorization": f"Bearer {server.issued_token}"}
        printing = threading.Event()  # several tiles print: the moment to show the page
        with (
            httpx.Client(base_url=server.url, headers=control, timeout=10.0) as api,
            concurrent.futures.ThreadPoolExecutor(1, "bambu-demo-shot") as pool,
        ):
            for p in printers:
                _checked(
                    api.post(
                        f"/farm/api/printers/{p.serial}/settings", params={"auto_clear": "true"}
                    )
                )
            # The browser starts while the queue fills; it shoots when tiles print.
            shot = pool.submit(_dashboard_picture, server, printing)
            started = time.monotonic()
            for job in plan_farm_jobs(printers):
                answer = _checked(
                    api.post(
                        "/farm/api/jobs",
                        params={"name": job.name, "copies": job.copies, "target": job.target},
                        content=farm_job_3mf(job),
                    )
                )
                ids = [int(j["id"]) for j in answer.json()["jobs"]]
                kind, colour = job.filament
                which = "any printer" if job.target == "any" else f"{job.product} printers"
                _say(
                    f"   queued job{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}: "
                    f"{esc(job.name)} sliced for {esc(job.product)} ({esc(job.code)}) "
                    f"{job.nozzle:g} mm, {esc(kind)} {esc(colour[:7])}, target {esc(which)}"
                )
            products = {p.serial: p.product for p in printers}
            seen: dict[int, str] = {}
            while True:
                # The farm's own store, not its HTTP API: polling that would spend the
                # token's rate limit (and what is read here is the same).
                listed = store.jobs()
                for job_now in listed:
                    _farm_line(job_now, seen, products, started)
                if sum(1 for j in listed if j.state == JobState.PRINTING) >= SHOT_PRINTING:
                    printing.set()
                if all(j.state in END_STATES for j in listed):
                    break
                if time.monotonic() - started > FARM_DEADLINE:
                    left = sum(1 for j in listed if j.state not in END_STATES)
                    printing.set()  # the picture need not wait any longer
                    raise CliError(
                        f"the farm's queue did not drain in {FARM_DEADLINE:g} s "
                        f"({left} jobs not done)"
                    )
                time.sleep(FARM_POLL)
            printing.set()
            drained = time.monotonic() - started
            done = sum(1 for j in listed if j.state == JobState.FINISHED)
            _say(
                f"   {done} of {len(listed)} jobs finished in {drained:.1f} s on "
                f"{len({j.printer for j in listed if j.printer})} printers; "
                "the queue is empty"
            )
            try:
                _say(shot.result(), wrap=False)
            except httpx.HTTPError as exc:
                raise CliError(f"the dashboard did not answer: {exc}") from None


def _farm_printer(state: PrinterState | None) -> FarmPrinter:
    if state is None:
        raise CliError("a simulated farm printer stopped reporting")
    loaded = tuple(
        (t.type, f"#{(t.colour or 'FFFFFFFF')[:8]}") for t in state.trays if not t.empty and t.type
    )
    return FarmPrinter(
        serial=state.serial,
        product=state.model.product,
        code=state.model.code,
        nozzle=state.nozzle_diameter or 0.4,
        filaments=loaded,
    )


def _checked(answer: Any) -> Any:
    """``answer`` when it succeeded; a one-line CliError with the server's detail otherwise."""
    if answer.status_code >= 400:
        try:
            detail = str(answer.json().get("detail", ""))
        except ValueError:
            detail = ""
        raise CliError(
            f"the farm server answered {answer.status_code} to "
            f"{answer.request.method} {answer.request.url.path}: {detail or 'no detail'}"
        )
    return answer


def _farm_line(job: Job, seen: dict[int, str], products: dict[str, str], started: float) -> None:
    """One line when a job is dispatched to a printer, or ends there (once per change)."""
    from ..farm.models import JobState
    from .output import esc

    shown = "dispatched" if job.state in (JobState.STARTING, JobState.PRINTING) else job.state
    if shown == seen.get(job.id) or shown in (JobState.QUEUED, JobState.HELD):
        return
    seen[job.id] = shown
    where = f"{esc(job.printer)} ({esc(products.get(job.printer, '?'))})"
    elapsed = f"+{time.monotonic() - started:.1f} s"
    what = f"job {job.id} {esc(job.name)}"
    if shown == "dispatched":
        _say(f"   {elapsed}  {what} dispatched to {where}")
    elif shown == JobState.FINISHED:
        _say(f"   {elapsed}  {what} [green]finished[/green] on {where}")
    else:
        reason = f": {esc(job.reason)}" if job.reason else ""
        _say(f"   {elapsed}  {what} [red]{esc(str(shown))}[/red] on {where}{reason}")


def _dashboard_picture(server: Any, printing: threading.Event) -> str:
    """Log in as the dashboard's form does, shoot the page; the line that says where it went.

    The browser waits on the page itself until :data:`SHOT_PRINTING` tiles
    print. Without a browser (or when it fails) the page's HTML is saved
    instead, once ``printing`` is set, its style sheet inlined, and the line
    says why.
    """
    import httpx

    from ..farm.screenshot import ScreenshotError, ScreenshotUnavailable, screenshot
    from ..servers.common import SESSION_COOKIE
    from .output import esc

    token, _ = server.ctx.gate.store.create("read", label="demo dashboard", expires_in=600)
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        login = http.post("/farm/login", data={"token": token})
        session = login.cookies.get(SESSION_COOKIE)
        if login.status_code != 303 or not session:
            raise CliError(f"the dashboard's login answered {login.status_code}")
        png = demo_output_dir() / "farm-dashboard.png"
        html = png.with_suffix(".html")
        width, height = SCREENSHOT_SIZE
        try:
            screenshot(
                f"{server.url}/farm",
                png,
                width,
                height,
                cookie=(SESSION_COOKIE, session),
                ready=("#live.on", " ~ ".join(["article.s-printing"] * SHOT_PRINTING)),
                settle=SHOT_SETTLE,
                timeout=SCREENSHOT_TIMEOUT,
            )
        except (ScreenshotUnavailable, ScreenshotError) as exc:
            printing.wait(SCREENSHOT_TIMEOUT)
            page = _checked(http.get("/farm", cookies={SESSION_COOKIE: session})).text
            style = _checked(http.get("/farm/static/dashboard.css")).text
            link = '<link rel="stylesheet" href="/farm/static/dashboard.css">'
            html.write_text(page.replace(link, f"<style>{style}</style>"), "utf-8")
            png.unlink(missing_ok=True)  # an older run's picture is not this farm
            return f"   no screenshot, {esc(str(exc))}; the dashboard's HTML saved to {esc(html)}"
    html.unlink(missing_ok=True)
    return f"   dashboard screenshot ({width}x{height}, headless Chromium) saved to {esc(png)}"


STEPS: list[Step] = [
    step_login,
    step_devices,
    step_tasks,
    step_live,
    step_print_files,
    step_camera,
    step_servers,
    step_farm,
]
# The steps by name, for ``bambu demo --only NAME,...``; these need the login step's client.
NAMED_STEPS: dict[str, Step] = {step.__name__.removeprefix("step_"): step for step in STEPS}
NEED_LOGIN = frozenset({"devices", "tasks", "live", "print_files"})


def chosen_steps(only: str | None) -> list[Step]:
    """The tour's steps, or those named (in the tour's order, the login first when needed)."""
    if only is None:
        return STEPS
    names = {name.strip() for name in only.split(",") if name.strip()}
    if not names or names - NAMED_STEPS.keys():
        raise CliError(f"--only takes steps among {', '.join(NAMED_STEPS)}", exit_code=2)
    if names & NEED_LOGIN:
        names.add("login")
    return [step for name, step in NAMED_STEPS.items() if name in names]


def demo(
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Afterwards keep the simulator running (until Ctrl-C) to explore with the CLI.",
        ),
    ] = False,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            hidden=True,
            help="Run only these steps (comma-separated names; the login too when they need it).",
        ),
    ] = None,
) -> None:
    """Tour the toolkit against the embedded simulator (no account or printer needed)."""
    if OPTIONS.json:
        raise CliError("the demo is for people and has no --json output", exit_code=2)
    steps = chosen_steps(only)
    with sim_extra("demo"):
        from ..sim import SimConfig, Simulator

    started = time.monotonic()
    config = SimConfig()
    with (
        tempfile.TemporaryDirectory(prefix="bambu-demo-") as tmp,
        Simulator(config, time_scale=TIME_SCALE, tick_interval=TICK_INTERVAL) as simulator,
    ):
        demo_account = simulator.demo_account
        _say(f"Simulated Bambu cloud running at {simulator.url}\n")
        run = DemoRun(
            sim=simulator,
            token_file=Path(tmp) / "bambu_token",
            account=demo_account.login,
            password=demo_account.password,
        )
        try:
            for step in steps:
                step(run)
            _say(f"\n[green]Demo finished[/green] in {time.monotonic() - started:.1f} s.")
            if serve:
                _serve(run)
            else:
                _say(next_steps(how_to_run_bambu(), under_make=bool(os.environ.get("MAKELEVEL"))))
        finally:
            if run.client is not None:
                run.client.close()


def how_to_run_bambu(
    argv0: str | None = None, found: str | None = None, cwd: Path | None = None
) -> tuple[str, str | None]:
    """How to type ``bambu`` in this shell, and the venv's activate script if that helps.

    After ``make demo`` the command lives in ``.venv/bin``, which is not on
    PATH: telling the person to type ``bambu`` would be the first thing that
    fails. ``argv0``/``found``/``cwd`` default to this process's script, the
    ``bambu`` on PATH and the working directory.
    """
    import shutil

    here = cwd or Path.cwd()
    script = Path(argv0 if argv0 is not None else sys.argv[0])
    if script.name != "bambu":  # python -m bambulab.cli: nothing better to say
        return "bambu", None
    script = script if script.is_absolute() else here / script
    found = found if found is not None else shutil.which("bambu")
    with contextlib.suppress(OSError):
        if found and Path(found).resolve() == script.resolve():
            return "bambu", None
    activate = script.parent / "activate"

    def shown(path: Path) -> str:
        try:
            relative = path.resolve().relative_to(here.resolve())
        except ValueError:
            return shlex.quote(str(path.resolve()))
        return shlex.quote(str(relative) if relative.parent != Path(".") else f"./{relative}")

    return shown(script), (shown(activate) if activate.is_file() else None)


def next_steps(how: tuple[str, str | None], *, under_make: bool = False) -> str:
    """What to try after the demo, as the person has to type it."""
    from .output import esc

    bambu, activate = how
    serve = "make serve" if under_make else f"{bambu} demo --serve"
    lines = [
        "\n[bold]Next[/bold]:",
        f"  {esc(serve):<28} the same tour, then the simulator stays up for your own commands",
        f"  {esc(bambu + ' --help'):<28} every command (bambu login for your real account)",
    ]
    if activate:
        lines.append(f"  {esc('. ' + activate):<28} puts bambu on PATH in this shell")
    return "\n".join(lines)


def _serve(run: DemoRun) -> None:
    """Keep the simulator up for another shell until Ctrl-C (or SIGTERM)."""
    import signal

    from .output import esc

    _say(
        "\nThe simulator keeps running. In another shell:\n\n"
        f"  export BAMBU_API_URL={esc(run.sim.url)}\n"
        f"  export BAMBU_TOKEN_FILE={esc(run.token_file)}\n"
        f"  export BAMBU_MQTT_HOST={esc(run.sim.mqtt_host)}\n"
        f"  export BAMBU_MQTT_PORT={run.sim.mqtt_port}\n"
        f"  export BAMBU_CA_FILE={esc(run.sim.ca_file or '')}\n"
        "  unset BAMBU_TOKEN BAMBU_PRINTER_HOST\n"
        "  bambu devices\n"
        "  bambu watch\n\n"
        "When done, before `bambu login` to a real account (it would go to the simulator):\n\n"
        "  unset BAMBU_API_URL BAMBU_TOKEN_FILE BAMBU_MQTT_HOST BAMBU_MQTT_PORT BAMBU_CA_FILE\n\n"
        "Press Ctrl-C to stop."
    )
    from .output import console

    console().file.flush()
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        _say("\nSimulator stopped.")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
