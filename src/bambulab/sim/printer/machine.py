"""The simulated printer as the network host sees it: requests in, reports out.

:class:`SimPrinter` owns a :class:`~.state.PrinterState`, turns wall-clock
time into simulated seconds, dispatches requests from
``device/<serial>/request`` to :mod:`.commands`, and decides what goes to
``device/<serial>/report``: X1 printers publish the whole ``push_status``
every tick, the others only what changed since their last report
(PROTOCOL.md §2.3), with a small keep-alive delta at least every five
simulated seconds.

No I/O and no threads here: the host calls :meth:`SimPrinter.handle_request`
and :meth:`SimPrinter.tick` from one thread (or one event loop) and
publishes the returned messages. With the same seed and the same sequence
of clock readings, two printers produce identical messages.
"""

from __future__ import annotations

import base64
import binascii
import collections
import functools
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson

from ..catalog import AMS_HARDWARE, AmsKind, PrinterModel
from ..records import AmsUnit, Device, FirmwareModule
from . import commands, report
from . import job as stages
from .ams import EXTERNAL, AmsBank, Spool, Unit, default_units, from_records, generic_pla
from .delta import diff
from .profiles import profile_for
from .sdcard import SdCard
from .state import FAN_FULL, PrinterState

log = logging.getLogger("bambulab.sim.printer")
_T = TypeVar("_T")

# PROTOCOL.md §2.7: the refusal of an unsigned control command.
ERR_VERIFY_FAILED = 0x05024007
VERIFY_FAILED_REASON = "mqtt message verify failed"
# Commands that stay open on printers requiring signatures: reading, not controlling.
READ_COMMANDS = frozenset(
    {
        ("pushing", "pushall"),
        ("pushing", "start"),
        ("pushing", "stop"),
        ("info", "get_version"),
        ("upgrade", "get_history"),
    }
)
KEEPALIVE_SECONDS = 5.0
# How many executed requests a printer remembers to recognise a replay. A
# client that delivers a command twice (an unacknowledged QoS 1 publish sent
# again after a reconnect) does so within seconds, so a window is enough and
# a printer that runs for days does not grow.
EXECUTED_WINDOW = 10_000

# (signed bytes, signature, cert_id) → valid? Supplied by tests that sign with their own key.
SignatureVerifier = Callable[[bytes, bytes, str], bool]


class SimPrinter:
    """One simulated printer: state machine, command handling and report stream."""

    def __init__(
        self,
        serial: str,
        model_code: str,
        *,
        name: str = "",
        access_code: str = "12345678",
        clock: Callable[[], float] = time.time,
        time_scale: float = 1.0,
        seed: int = 0,
        ams: Sequence[AmsUnit] | Sequence[AmsKind] | None = None,
        online: bool = True,
        firmware: Sequence[FirmwareModule] | None = None,
        nozzle_diameter: float = 0.4,
        ip: str = "127.0.0.1",
        rtsp_port: int = 322,
        requires_signature: bool = False,
        signature_verifier: SignatureVerifier | None = None,
        sdcard_root: Path | None = None,
    ) -> None:
        """Create a powered-on, idle printer.

        ``ams`` takes the cloud's AMS records (copied) so both sides show the
        same trays, or AMS kinds (``["ams", "ams", "n3s"]``) to fill with
        seeded contents; None means the model's default set, ``[]`` no AMS.
        ``firmware`` likewise takes the cloud's module list. ``ip`` and
        ``rtsp_port`` only shape ``net.info`` and ``ipcam.rtsp_url``.
        """
        self.profile = profile_for(model_code)
        self.serial = serial
        self.model_code = self.profile.code
        self.name = name or f"{self.profile.product} {serial[-4:]}"
        self.time_scale = time_scale
        self.online = online
        self.received: collections.deque[tuple[str, str]] = collections.deque(maxlen=2000)
        # Requests acted on, and those that came again with a (command,
        # sequence_id) already executed: a client must never make a printer
        # do one command twice.
        self.executed = 0
        self.duplicates = 0
        self.duplicated: collections.deque[tuple[str, str]] = collections.deque(maxlen=100)
        self._executed_ids: dict[tuple[str, str], None] = {}
        self.signature_verifier = signature_verifier
        self._clock = clock
        self._last = clock()
        rng = random.Random(f"{seed}:{serial}")

        units = _units(ams, self.profile.model.ams_kinds, rng)
        external = {EXTERNAL: Spool() if units else generic_pla()}
        if self.profile.dual_nozzle:
            external[255] = Spool()
        bank = AmsBank(units=units, external=external)
        bank.tray_now = bank.tray_tar = bank.first_loaded()
        modules = (
            [FirmwareModule(m.name, m.sw_ver, m.hw_ver, m.sn) for m in firmware]
            if firmware is not None
            else _default_firmware(self.profile.model, serial, units, rng)
        )
        self.state = PrinterState(
            self.profile,
            serial,
            rng,
            bank,
            modules,
            nozzle_diameter=nozzle_diameter,
            ip=ip,
            rtsp_port=rtsp_port,
        )
        self.state.access_code = access_code
        self.state.requires_signature = requires_signature
        self.state.card = SdCard(sdcard_root, samples=_sample_files)
        self._sequence = 0
        self._pushing = True
        # As if a report had gone out at power-on: later deltas are relative to it,
        # and a client that joins later must ask for pushall, as with real printers.
        self._baseline = report.full_body(self.state)
        self._last_sent = 0.0

    @classmethod
    def from_device(
        cls,
        device: Device,
        *,
        clock: Callable[[], float] = time.time,
        time_scale: float = 1.0,
        seed: int = 0,
        **options: Any,
    ) -> SimPrinter:
        """The printer behind a cloud device record: same name, code, AMS, firmware, job."""
        printer = cls(
            device.dev_id,
            device.model.model_name,
            name=device.name,
            access_code=device.access_code,
            clock=clock,
            time_scale=time_scale,
            seed=seed,
            ams=device.ams,
            online=device.online,
            firmware=device.firmware,
            nozzle_diameter=device.nozzle_diameter,
            **options,
        )
        state = printer.state
        for heater in state.nozzles:
            heater.current = device.nozzle_temp
        state.bed.current = device.bed_temp
        active = device.active
        if device.state == "RUNNING" and active is not None:
            total = active.prediction / max(0.01, 1 - active.progress / 100)
            printer.start_job(
                name=active.title,
                file=f"/sdcard/{active.title}.3mf",
                layers=max(10, int(total / 25)),
                minutes=total / 60,
                progress=active.progress / 100,
                print_type="cloud",
            )
            if state.job is not None:
                state.job.task_id = str(active.task_id)
                state.job.profile_id = str(active.profile_id)
        elif device.state in ("FINISH", "FAILED"):
            state.gcode_state = device.state
        printer.rebase()
        return printer

    # --- attributes the host and tests use ---------------------------------------------

    @property
    def access_code(self) -> str:
        """The LAN access code (the MQTT password)."""
        return self.state.access_code

    @access_code.setter
    def access_code(self, value: str) -> None:
        self.state.access_code = value

    @property
    def card(self) -> SdCard:
        """The SD card (a directory on disk, shared with the FTPS server)."""
        return self.state.card

    @property
    def sdcard_files(self) -> list[str]:
        """Names of the files on the SD card, relative to its root."""
        return self.state.card.names()

    @property
    def requires_signature(self) -> bool:
        """Whether control commands need a signed envelope (PROTOCOL.md §2.7)."""
        return self.state.requires_signature

    @requires_signature.setter
    def requires_signature(self, value: bool) -> None:
        self.state.requires_signature = value

    @property
    def report_style(self) -> str:
        """``full`` (X1) or ``delta``."""
        return self.profile.report_style

    @property
    def sim_time(self) -> float:
        """Simulated seconds since power-on."""
        return self.state.time

    # --- the host's interface -----------------------------------------------------------

    def handle_request(self, payload: bytes) -> list[dict[str, Any]]:
        """A message from ``device/<serial>/request``; returns what to publish on report.

        Malformed payloads are dropped (logged at debug). Replies echo
        ``command`` and ``sequence_id`` with ``result``/``reason``; a
        command that changed something is followed by a report. A message
        carrying several families (``{"pushing": ..., "info": ...,
        "upgrade": ...}``, as a popular LAN library sends on connect) is
        processed family by family, each answered (PROTOCOL.md §2.6.1).
        """
        if not self.online:
            return []
        parsed = _parse(payload)
        if parsed is None:
            log.debug("%s: dropped a malformed request", self.serial)
            return []
        requests, header = parsed
        messages: list[dict[str, Any]] = []
        changed = False
        for family, body in requests:
            out, did_change = self._handle_one(family, body, header)
            messages.extend(out)
            changed = changed or did_change
        if changed and self._pushing:
            messages.extend(self._report_now(keepalive=False))
        return messages

    def _handle_one(
        self, family: str, body: dict[str, Any], header: Any
    ) -> tuple[list[dict[str, Any]], bool]:
        """One family's command: its reply messages, and whether it changed the state."""
        command = body["command"]
        # What arrived, for tests that check a client never sends a command twice.
        key = (f"{family}.{command}", str(body.get("sequence_id", "")))
        self.received.append(key)
        self._note_executed(key)
        self._advance()
        if family == "pushing":
            return self._pushing_command(command, body), False
        if (
            self.requires_signature
            and (family, command) not in READ_COMMANDS
            and not self._signed(family, body, header)
        ):
            reply = _reply(
                family, body, ok=False, reason=VERIFY_FAILED_REASON, err_code=ERR_VERIFY_FAILED
            )
            return [reply], False
        handler = commands.HANDLERS.get((family, command))
        if handler is None:
            reason = f"unsupported command {command!r}"
            return [_reply(family, body, ok=False, reason=reason)], False
        try:
            outcome = handler(self.state, body)
        except commands.BadField as exc:
            outcome = commands.fail(str(exc))
        except Exception:  # a simulator bug must not take the broker down
            log.exception("%s: %s.%s failed", self.serial, family, command)
            outcome = commands.fail("internal error")
        reply = _reply(family, body, ok=outcome.ok, reason=outcome.reason, **outcome.fields)
        return [reply], outcome.changed

    def _note_executed(self, key: tuple[str, str]) -> None:
        self.executed += 1
        if not key[1]:
            return  # no sequence_id: nothing to recognise it by
        if key in self._executed_ids:
            self.duplicates += 1
            self.duplicated.append(key)
            # Only debug: several clients of one printer (cloud and LAN) number
            # their requests independently and may well both send "1". A run
            # with a single client (the soak) reads ``duplicates`` instead.
            log.debug("%s: executed %s with sequence_id %s again", self.serial, *key)
            return
        self._executed_ids[key] = None
        if len(self._executed_ids) > EXECUTED_WINDOW:
            del self._executed_ids[next(iter(self._executed_ids))]  # the oldest

    def received_sequence_ids(self) -> list[str]:
        """The ``sequence_id`` of every recent request, in arrival order."""
        return [sequence for _, sequence in self.received]

    def tick(self) -> list[dict[str, Any]]:
        """Advance to the clock's now; the periodic report due, if any."""
        if not self.online:
            self._last = self._clock()  # powered off: time passes without the printer
            return []
        self._advance()
        if not self._pushing:
            return []
        return self._report_now(keepalive=True)

    def full_report(self) -> dict[str, Any]:
        """The complete ``push_status`` message a pushall answers (counts as sent)."""
        body = report.full_body(self.state)
        self._baseline = body
        self._last_sent = self.state.time
        return _deep_copy(self._message(body, msg=0))

    def truth(self) -> dict[str, Any]:
        """The full ``push_status`` body now, without command/msg/sequence_id."""
        return report.full_body(self.state)

    def rebase(self) -> None:
        """Forget what was reported: the next delta is relative to the state now."""
        self._baseline = report.full_body(self.state)

    # --- fault and scenario hooks --------------------------------------------------------

    def inject_hms(self, attr: int, code: int) -> None:
        """Raise an HMS entry (shown in ``hms[]`` until cleared)."""
        entry = (attr & 0xFFFFFFFF, code & 0xFFFFFFFF)
        if entry not in self.state.hms:
            self.state.hms.append(entry)

    def clear_hms(self) -> None:
        """Clear every HMS entry."""
        self.state.hms.clear()

    def runout(self, ams_id: int = 0, slot: int = 0) -> None:
        """Filament runout: HMS 0x07002000 + (slot << 8) / 0x00020001 and the job pauses."""
        self._advance()
        self.state.runout(ams_id, slot)

    def start_job(
        self,
        name: str = "Benchy",
        file: str = "/sdcard/Benchy.3mf",
        layers: int = 240,
        minutes: float = 47.0,
        *,
        tray: int | None = None,
        bed_levelling: bool = True,
        progress: float = 0.0,
        print_type: str = "local",
    ) -> None:
        """Start a print directly (no SD card check).

        ``progress`` > 0 starts in RUNNING at that fraction, already hot,
        which is how a printer joins a simulation in the middle of a job.
        """
        self._advance()
        state = self.state
        if state.active:
            raise RuntimeError(f"{self.serial} is busy ({state.gcode_state})")
        chosen = tray if tray is not None else state.ams.tray_now
        if chosen == 255:
            chosen = state.ams.first_loaded()
        job = commands.plan_job(
            state,
            name=name,
            gcode_file=file.rsplit("/", 1)[-1],
            print_type=print_type,
            tray=chosen,
            layers=layers,
            minutes=minutes,
            grams=round(minutes * 0.4, 1),
            bed_levelling=bed_levelling,
        )
        state.start(job)
        if progress > 0:
            job.pending.clear()
            state.ams.switch_to(job.tray)
            state.nozzle.current = float(job.nozzle_temp)
            state.bed.current = float(job.bed_temp)
            job.work_done = min(1.0, progress) * job.work_total
            state.gcode_state = "RUNNING"
            job.stage = stages.PRINTING
            state.nozzle.target = float(job.nozzle_temp)
            state.fans["part"] = FAN_FULL

    # --- internals -------------------------------------------------------------------------

    def _advance(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._last) * self.time_scale
        self._last = now
        self.state.advance(elapsed)

    def _message(self, body: dict[str, Any], *, msg: int) -> dict[str, Any]:
        self._sequence += 1
        return {
            "print": {
                **body,
                "command": "push_status",
                "msg": msg,
                "sequence_id": str(self._sequence),
            }
        }

    def _report_now(self, *, keepalive: bool) -> list[dict[str, Any]]:
        body = report.full_body(self.state)
        if self.profile.report_style == "full":
            self._baseline = body
            self._last_sent = self.state.time
            return [_deep_copy(self._message(body, msg=0))]
        changed = diff(self._baseline, body)
        quiet = self.state.time - self._last_sent
        if not changed and keepalive and quiet >= KEEPALIVE_SECONDS - 1e-6:
            changed = {"wifi_signal": body["wifi_signal"]}  # real printers never stay silent
        if not changed:
            return []
        self._baseline = body
        self._last_sent = self.state.time
        return [_deep_copy(self._message(changed, msg=1))]

    def _pushing_command(self, command: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        if command == "pushall":
            return [self.full_report()]  # the full report is the answer; no separate reply
        if command in ("start", "stop"):
            self._pushing = command == "start"
            return [_reply("pushing", body, ok=True)]
        return [_reply("pushing", body, ok=False, reason=f"unsupported command {command!r}")]

    def _signed(self, family: str, body: dict[str, Any], header: Any) -> bool:
        """Whether a request carries a well-formed signature (PROTOCOL.md §2.8).

        Without a ``signature_verifier`` the simulator cannot check RSA (it
        holds no Bambu keys), so it accepts any well-formed header; tests
        that sign with their own key pass a verifier.
        """
        if not isinstance(header, dict):
            return False
        signature = header.get("sign_string")
        cert_id = header.get("cert_id")
        if (
            header.get("sign_ver") != "v1.0"
            or header.get("sign_alg") != "RSA_SHA256"
            or not isinstance(signature, str)
            or not signature
            or not isinstance(cert_id, str)
            or not cert_id.endswith(f"CN={self.serial}.bambulab.com")
        ):
            return False
        signed = json.dumps({family: body}, separators=(",", ":"), sort_keys=True).encode()
        if "payload_len" in header and header["payload_len"] != len(signed):
            return False
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            return False
        if self.signature_verifier is None:
            return True
        return self.signature_verifier(signed, raw, cert_id)


def _parse(payload: bytes) -> tuple[list[tuple[str, dict[str, Any]]], Any] | None:
    """([(family, body)...], header) of a request, or None when it holds none.

    Every top-level key but ``header`` is a family; one whose body is not an
    object with a string ``command`` is skipped, the others are kept in
    message order.
    """
    try:
        data = orjson.loads(payload)
    except (orjson.JSONDecodeError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    requests = [
        (family, body)
        for family, body in data.items()
        if family != "header" and isinstance(body, dict) and isinstance(body.get("command"), str)
    ]
    if not requests:
        return None
    return requests, data.get("header")


def _sequence_id(body: dict[str, Any]) -> str:
    value = body.get("sequence_id")
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return "0"


def _reply(
    family: str, body: dict[str, Any], *, ok: bool, reason: str = "", **fields: Any
) -> dict[str, Any]:
    """A reply echoing the request: print replies echo every field, others the basics."""
    command = body["command"]
    reply: dict[str, Any] = {}
    if family == "print":
        reply.update({k: v for k, v in body.items() if k not in ("result", "reason")})
    reply["command"] = command
    reply["sequence_id"] = _sequence_id(body)
    reply.update(fields)
    if ok:
        # gcode_line is answered in capitals by real firmware; clients must not care.
        word = "SUCCESS" if command == "gcode_line" else "success"
        reply["result"], reply["reason"] = word, word
    else:
        reply["result"], reply["reason"] = "failed", reason
    return {family: _deep_copy(reply)}


@functools.cache
def _sample_bytes() -> tuple[tuple[str, bytes], ...]:
    """The sample jobs as real files, written once per process.

    Each 3MF is sliced for one PLA filament with the layers, time and grams
    of its :data:`~.job.SAMPLE_FILES` row, so a print of it runs as it always did.
    """
    from ..threemf_writer import gcode_bytes, threemf_bytes  # Pillow: drawn on first use

    out = []
    for name, info in stages.SAMPLE_FILES.items():
        if name.endswith(".gcode"):
            data = gcode_bytes(layers=info.layers, seconds=info.minutes * 60, grams=info.grams)
        else:
            data = threemf_bytes(
                name=name.rsplit(".", 1)[0],
                objects=(name.rsplit(".", 1)[0],),
                layers=info.layers,
                seconds=info.minutes * 60,
                grams=(info.grams,),
                filaments=(("PLA", "#00AE42FF"),),
            )
        out.append((name, data))
    return tuple(out)


def _sample_files() -> dict[str, bytes]:
    """What a fresh card holds: the sample jobs, as sliced 3MFs and G-code."""
    return dict(_sample_bytes())


def _deep_copy(value: _T) -> _T:
    """A private copy of a message, so a caller editing it cannot reach the baseline."""
    if isinstance(value, dict):
        return cast(_T, {k: _deep_copy(v) for k, v in value.items()})
    if isinstance(value, list):
        return cast(_T, [_deep_copy(v) for v in value])
    return value


def _units(
    ams: Sequence[AmsUnit] | Sequence[AmsKind] | None,
    default: Sequence[AmsKind],
    rng: random.Random,
) -> list[Unit]:
    if ams is None:
        return default_units(default, rng)
    kinds = [a for a in ams if isinstance(a, str)]
    if len(kinds) == len(ams):
        unknown = set(kinds) - set(AMS_HARDWARE)
        if unknown:
            raise ValueError(f"unknown AMS kinds {sorted(unknown)} (known: {sorted(AMS_HARDWARE)})")
        return default_units(kinds, rng)
    return from_records([a for a in ams if isinstance(a, AmsUnit)])


def _default_firmware(
    model: PrinterModel, serial: str, units: Sequence[Unit], rng: random.Random
) -> list[FirmwareModule]:
    """Modules like the cloud's fleet builds them: ota, the boards, then each AMS."""
    modules = [FirmwareModule("ota", model.firmware, "OTA", serial)]
    for name, hw_ver in model.board_modules:
        sn = "".join(rng.choice("0123456789ABCDEF") for _ in range(15))
        modules.append(FirmwareModule(name, model.firmware, hw_ver, sn))
    for unit in units:
        modules.append(FirmwareModule(unit.module_name, unit.sw_ver, unit.hw_ver, unit.sn))
    return modules
