"""Print a local 3MF or G-code file on printers of the LAN: FTPS upload, then ``project_file``.

The steps for one printer (:func:`print_file`):

1. read the file: a 3MF's plate must be sliced (:func:`~bambulab.protocol.threemf.read_3mf`);
   a ``.gcode`` is sent as is;
2. connect to the printer's own MQTT broker and read its state: a printer
   that is printing (or paused in a print) refuses with
   :class:`~bambulab.errors.PrinterBusyError` before anything is sent;
3. work out the AMS mapping (``"auto"``: from the file's filaments and the
   trays loaded, type first then nearest colour, external spool and AMS HT
   ids included: :func:`~bambulab.protocol.ams_mapping.ams_mapping`; or the
   list given, checked against the trays; or ``"none"``);
4. upload the file over implicit FTPS (:class:`~.ftps.LocalFTPClient`), unless
   the card already holds the same bytes: when a file of that name has the
   same size, it is downloaded and hashed (streamed) and compared with the
   local MD5. Sizes differ: upload. This trusts nothing but the bytes (a
   sidecar checksum could be stale after another tool replaced the file with
   one of the same size, and would clutter the printer's file list); the cost
   is one download, only when the sizes match;
5. send ``print.project_file`` (3MF) with the URL form the model takes
   (``PrinterModel.lan_url``: ``file:///sdcard/<path>`` on X1/P1/A1,
   ``ftp:///<path>`` on H2; PROTOCOL.md §2.4), plate, timelapse, bed
   levelling (both spellings), flow calibration, ``use_ams`` and the mapping;
   ``print.gcode_file`` for plain G-code.

:func:`print_existing` prints a file already on the card without uploading;
:func:`print_many` sends one file to several printers at once (bounded
threads), one :class:`~bambulab.models.PrintOutcome` each: one printer failing
never stops the others. ``print_file_async``/``print_many_async`` are the
async face: the same work on worker threads (the FTPS data channels need
TLS session reuse that asyncio's TLS cannot do), progress handed back to the
event loop.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BambuError, ConfigurationError, PrinterBusyError
from ..models.printer import PrinterModel, model_named
from ..models.printing import PrintOptions, PrintOutcome
from ..models.state import PrinterState
from ..models.threemf import Plate, ThreeMF
from ..protocol import ftp
from .ftps import DEFAULT_TIMEOUT, FTPS_PORT, LocalFTPClient, Progress, on_loop

LAN_MQTT_PORT = 8883
DEFAULT_DIR = "/"  # where slicers and LAN tools put files to print: the card's root
MAX_PARALLEL = 8
STATE_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class LanPrinter:
    """How to reach one printer on the LAN: address, serial, access code, ports, TLS checks.

    ``model`` is a ``dev_model_name`` or product name when known (otherwise
    the printer's report and serial prefix tell).
    """

    host: str
    serial: str
    access_code: str = field(repr=False)
    model: str | None = None
    mqtt_port: int = LAN_MQTT_PORT
    ftp_port: int = FTPS_PORT
    ca_file: str | os.PathLike[str] | None = None
    pin_file: str | os.PathLike[str] | None = None
    insecure: bool = False
    tls12: bool = False
    timeout: float = DEFAULT_TIMEOUT

    def ftps(self) -> LocalFTPClient:
        """A client of this printer's SD card (not connected yet)."""
        return LocalFTPClient(
            self.host,
            self.access_code,
            self.serial,
            port=self.ftp_port,
            ca_file=self.ca_file,
            pin_file=self.pin_file,
            insecure=self.insecure,
            tls12=self.tls12,
            timeout=self.timeout,
        )

    def mqtt(self) -> Any:
        """A (blocking) client of this printer's own MQTT broker (not connected yet)."""
        from ..mqtt.client import BambuMQTT

        return BambuMQTT.lan(
            self.host,
            self.serial,
            self.access_code,
            port=self.mqtt_port,
            ca_file=self.ca_file,
            pin_file=self.pin_file,
            insecure=self.insecure,
            connect_timeout=self.timeout,
            command_timeout=self.timeout,
        )


@dataclass(frozen=True, slots=True)
class _Local:
    """The local file to print, read once."""

    path: Path
    name: str
    size: int
    md5: str
    project: ThreeMF | None  # None for plain G-code

    @property
    def gcode(self) -> bool:
        return self.project is None


def _read_local(path: str | os.PathLike[str], plate: int) -> tuple[_Local, Plate | None]:
    from ..protocol.threemf import read_3mf

    source = Path(path)
    if not source.is_file():
        raise ConfigurationError(f"no such file: {os.fspath(path)!r}")
    suffix = source.name.lower().rsplit(".", 1)[-1] if "." in source.name else ""
    if suffix not in ("3mf", "gcode"):
        raise ConfigurationError(
            f"{source.name!r} is neither a sliced .3mf nor a .gcode file: slice it first"
        )
    try:
        handle = source.open("rb")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {os.fspath(path)!r}: {exc.strerror}") from None
    with handle:
        if suffix == "gcode":
            md5, size = _md5(handle)
            return _Local(source, source.name, size, md5, None), None
        project = read_3mf(handle)
    chosen = project.plate(plate)  # refuses an unsliced file or a missing plate
    return _Local(source, source.name, project.size, project.md5, project), chosen


def _md5(handle: Any) -> tuple[str, int]:
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    while block := handle.read(1 << 20):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


class _Hasher:
    """A write-only sink that hashes what a download writes."""

    def __init__(self) -> None:
        self.digest = hashlib.md5(usedforsecurity=False)

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)


def same_file_on_card(card: LocalFTPClient, remote: str, size: int, md5: str) -> bool:
    """Whether ``remote`` holds exactly these bytes (size first, then a streamed MD5)."""
    try:
        if card.size(remote) != size:
            return False
    except BambuError:
        return False
    sink = _Hasher()
    card.download(remote, sink)  # type: ignore[arg-type]
    return sink.digest.hexdigest() == md5


def check_idle(state: PrinterState, serial: str) -> None:
    """Refuse a printer that is busy with a print (printing, preparing or paused).

    Bambu Studio sends to several machines only those that are online and
    cannot abort a job (SendMultiMachinePage::on_send: ``!obj->can_abort()``),
    i.e. not printing or paused.
    """
    if state.printing or state.gcode_state == "PAUSE":
        job = state.get("subtask_name") or state.get("gcode_file") or ""
        what = f" ({str(job)[:60]!r}, {state.percent or 0} %)" if job else ""
        raise PrinterBusyError(
            f"printer {serial} is busy: {state.gcode_state.lower()}{what}; "
            "wait for the print to end or stop it first",
            serial=serial,
            state=state.gcode_state,
        )


def mapping_for(
    plate: Plate | None,
    project: ThreeMF | None,
    state: PrinterState,
    choice: Any,
) -> tuple[bool, list[int]]:
    """``(use_ams, ams_mapping)`` for ``project_file`` from the options' ``ams_mapping``."""
    from ..protocol.ams_mapping import UNUSED, ams_mapping

    if plate is None or project is None:
        return False, []
    if isinstance(choice, str):
        if choice == "none":
            return False, [UNUSED] * project.mapping_length
        if choice != "auto":
            raise ConfigurationError(f"ams_mapping is 'auto', 'none' or a list, not {choice!r}")
        if not plate.filaments:
            return False, []
        mapping = ams_mapping(plate.filaments, state.trays, length=project.mapping_length)
    else:
        try:
            explicit = [int(v) for v in choice]
        except (TypeError, ValueError):
            raise ConfigurationError("ams_mapping must be a list of tray ids") from None
        mapping = ams_mapping(
            plate.filaments, state.trays, length=project.mapping_length, explicit=explicit
        )
    # Every filament from an external spool: the AMS stays out of it, and the
    # (old-style) mapping says -1 for each filament, never a short list.
    # Bambu Studio's SendMultiMachinePage::request_params does the same:
    # without AMS every entry goes to the virtual tray, which
    # get_ams_mapping_result writes as -1 in ``ams_mapping``.
    use_ams = any(0 <= t < 254 for t in mapping)
    if not use_ams:
        return False, [UNUSED] * len(mapping)
    return use_ams, mapping


def _model_of(printer: LanPrinter, state: PrinterState) -> PrinterModel:
    if printer.model:
        named = model_named(printer.model)
        if named is not None:
            return named
    return state.model


def _send(
    printer: LanPrinter,
    remote: str,
    local: _Local | None,
    plate: Plate | None,
    options: PrintOptions,
    *,
    upload: Callable[[LanPrinter], bool] | None,
    started: float,
) -> PrintOutcome:
    """Connect, check, (upload), command: the common part of print_file and print_existing."""
    mqtt = printer.mqtt()
    try:
        mqtt.connect()
        state: PrinterState = mqtt.get_full_status(printer.serial, timeout=STATE_TIMEOUT)
        check_idle(state, printer.serial)
        project = local.project if local is not None else None
        gcode = remote.lower().endswith(".gcode")
        use_ams, mapping = (
            (False, []) if gcode else mapping_for(plate, project, state, options.ams_mapping)
        )
        uploaded = upload(printer) if upload is not None else False
        model = _model_of(printer, state)
        if gcode:
            mqtt.print_gcode_file(remote, printer.serial)
            url = remote
        else:
            url = model.lan_url(remote)
            name = options.subtask_name or ftp.split(remote)[1].rsplit(".", 1)[0]
            mqtt.start_print(
                url,
                options.plate,
                printer.serial,
                subtask_name=name,
                file=ftp.split(remote)[1],
                use_ams=use_ams,
                ams_mapping=mapping,
                **options.switches(),
            )
    finally:
        mqtt.disconnect()
    return PrintOutcome(
        serial=printer.serial,
        ok=True,
        url=url,
        uploaded=uploaded,
        ams_mapping=tuple(mapping),
        seconds=round(time.monotonic() - started, 3),
        detail={"remote": remote, "model": model.product or model.code},
    )


def _printer(
    printer: LanPrinter | None,
    host: str | None,
    serial: str | None,
    access_code: str | None,
    **kw: Any,
) -> LanPrinter:
    if printer is not None:
        return printer
    if not host or not serial or not access_code:
        raise ConfigurationError("LAN printing needs the printer's host, serial and access code")
    return LanPrinter(host, serial, access_code, **kw)


def print_file(
    path: str | os.PathLike[str],
    *,
    host: str | None = None,
    serial: str | None = None,
    access_code: str | None = None,
    options: PrintOptions | None = None,
    model: str | None = None,
    printer: LanPrinter | None = None,
    remote_dir: str = DEFAULT_DIR,
    progress: Progress | None = None,
    **connection: Any,
) -> PrintOutcome:
    """Upload ``path`` to the printer's card (unless already there) and print it.

    The printer is ``host``/``serial``/``access_code`` (plus ``connection``
    keywords of :class:`LanPrinter`: ``mqtt_port``, ``ftp_port``, ``ca_file``,
    ``pin_file``, ``insecure``, ``tls12``, ``timeout``) or a ready
    :class:`LanPrinter`. Raises the first :class:`~bambulab.errors.BambuError`
    met; nothing is sent to a busy printer or for an impossible mapping.
    """
    started = time.monotonic()
    opts = options or PrintOptions()
    target = _printer(printer, host, serial, access_code, model=model, **connection)
    local, plate = _read_local(path, opts.plate)
    remote = ftp.join(remote_dir, local.name)

    def upload(to: LanPrinter) -> bool:
        with to.ftps() as card:
            if same_file_on_card(card, remote, local.size, local.md5):
                return False
            card.upload(local.path, remote, progress=progress)
        return True

    return _send(target, remote, local, plate, opts, upload=upload, started=started)


def print_existing(
    remote_path: str,
    *,
    host: str | None = None,
    serial: str | None = None,
    access_code: str | None = None,
    options: PrintOptions | None = None,
    model: str | None = None,
    printer: LanPrinter | None = None,
    **connection: Any,
) -> PrintOutcome:
    """Print a file already on the card (``/cache/cube.3mf``) without uploading it.

    For a 3MF with ``ams_mapping="auto"``, the file's filaments are needed:
    it is read from the card (its metadata members only would need random
    access; the file is downloaded to a temporary file and read there).
    """
    started = time.monotonic()
    opts = options or PrintOptions()
    target = _printer(printer, host, serial, access_code, model=model, **connection)
    remote = ftp.normalise(remote_path)
    local: _Local | None = None
    plate: Plate | None = None
    if remote.lower().endswith(".3mf") and opts.ams_mapping != "none":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bambu-print-") as tmp:
            copy = Path(tmp) / ftp.split(remote)[1]
            with target.ftps() as card:
                card.download(remote, copy)
            local, plate = _read_local(copy, opts.plate)
    elif not remote.lower().endswith((".3mf", ".gcode")):
        raise ConfigurationError(f"{remote!r} is neither a .3mf nor a .gcode file")
    return _send(target, remote, local, plate, opts, upload=None, started=started)


def _outcome(printer: LanPrinter, work: Callable[[], PrintOutcome], started: float) -> PrintOutcome:
    try:
        return work()
    except BambuError as exc:
        return PrintOutcome(
            serial=printer.serial,
            ok=False,
            error=str(exc),
            seconds=round(time.monotonic() - started, 3),
            detail={"error_type": type(exc).__name__},
        )


def print_many(
    path: str | os.PathLike[str],
    printers: Sequence[LanPrinter],
    options: PrintOptions | None = None,
    *,
    remote_dir: str = DEFAULT_DIR,
    max_parallel: int = MAX_PARALLEL,
    progress: Callable[[str, int, int | None], Any] | None = None,
) -> list[PrintOutcome]:
    """Send one file to several printers at once; one outcome per printer, in order.

    ``progress(serial, done, total)`` follows each printer's upload.

    The local file is checked once (a file that cannot be printed anywhere is
    one error, raised); after that each printer succeeds or fails on its own.
    """
    opts = options or PrintOptions()
    if not printers:
        raise ConfigurationError("no printer to print on")
    seen: set[str] = set()
    for p in printers:
        if p.serial in seen:
            raise ConfigurationError(f"printer {p.serial} is listed twice")
        seen.add(p.serial)
    _read_local(path, opts.plate)  # refuse an unprintable file once, before any connection
    started = time.monotonic()
    workers = max(1, min(max_parallel, len(printers)))
    with ThreadPoolExecutor(workers, thread_name_prefix="bambu-print") as pool:
        futures = [
            pool.submit(
                _outcome,
                p,
                functools.partial(
                    print_file,
                    path,
                    printer=p,
                    options=opts,
                    remote_dir=remote_dir,
                    progress=functools.partial(progress, p.serial) if progress else None,
                ),
                started,
            )
            for p in printers
        ]
        return [f.result() for f in futures]


async def print_file_async(
    path: str | os.PathLike[str], *, progress: Progress | None = None, **kw: Any
) -> PrintOutcome:
    """:func:`print_file`, awaited (worker thread; progress delivered on this loop)."""
    return await asyncio.to_thread(print_file, path, progress=on_loop(progress), **kw)


async def print_existing_async(remote_path: str, **kw: Any) -> PrintOutcome:
    """:func:`print_existing`, awaited."""
    return await asyncio.to_thread(print_existing, remote_path, **kw)


async def print_many_async(
    path: str | os.PathLike[str],
    printers: Sequence[LanPrinter],
    options: PrintOptions | None = None,
    **kw: Any,
) -> list[PrintOutcome]:
    """:func:`print_many`, awaited."""
    return await asyncio.to_thread(print_many, path, printers, options, **kw)
