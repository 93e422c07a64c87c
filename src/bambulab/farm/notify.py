"""Notifications of the farm through Apprise: one URL scheme for e-mail, chat and webhooks.

A :class:`Notifier` takes the library's live events (print started,
finished, failed, paused, HMS raised, printer offline/online) and the farm's
own (:class:`QueueEmpty`; :class:`JobFailedToStart`, of kind ``failed``), sorts each into a
**kind** (``started, finished, failed, paused, hms, runout, offline,
queue_empty``) and sends a message to every **route** that asked for it:

* a route names its Apprise URLs, the kinds it wants, optionally the
  printers (serials or tags) it is about and, for ``hms``, the least severe
  entry worth a message (``min_severity``);
* a filament runout is its own kind (``runout``), whether it shows as the
  AMS's HMS entry (``07UU_2S00`` / ``0002_0001``, PROTOCOL.md §2.3 module
  0x07) or as the pause it causes (``print_error`` ``07UU_8011``, stage 6);
* ``offline`` is sent only once a printer stayed offline for
  ``offline_after_minutes`` (a timer a :class:`PrinterOnline` cancels); with
  ``back_online`` a printer that was reported offline is reported back.

Nothing here blocks the caller: :meth:`Notifier.handle` does the routing
under a lock and hands each message to the sender of each URL, a thread of
its own with a bounded queue (a full queue drops the message and counts it),
so one dead webhook delays nothing else. Each send has a timeout (Apprise's
connect and read timeouts). A flapping printer cannot flood: per (route,
printer, kind) at most one message per ``rate_limit_minutes``; the others are
counted as suppressed. :meth:`Notifier.stats` gives the counters per kind.

Apprise URLs carry tokens and passwords. They are shown only through
Apprise's own privacy form, never in an error or a repr, and a log filter on
Apprise's and urllib3's loggers removes their secret parts from every line
those libraries write while a notifier is open. Text that came from a
printer (names, job names, HMS texts) is made one line without control
characters (:func:`bambulab.safetext.visible`) and sent as plain text, which
Apprise escapes for HTML (e-mail) and Markdown (chat) services: a job named
``<a href=...>`` arrives as text, not as a link.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import queue
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise

from ..models.events import (
    Event,
    HMSRaised,
    PrinterOffline,
    PrinterOnline,
    PrintFailed,
    PrintFinished,
    PrintPaused,
    PrintStarted,
)
from ..models.printer import HMSEntry, Severity
from ..models.state import PrinterState
from ..safetext import visible
from .models import Job

__all__ = [
    "KINDS",
    "SEVERITIES",
    "JobFailedToStart",
    "KindStats",
    "Message",
    "Notifier",
    "NotifyConfig",
    "NotifyStats",
    "PrinterInfo",
    "QueueEmpty",
    "Route",
    "is_runout",
]

log = logging.getLogger(__name__)

KINDS = ("started", "finished", "failed", "paused", "hms", "runout", "offline", "queue_empty")
# "online" is not a kind a route asks for: it follows an "offline" message (back_online).
_ALL_KINDS = (*KINDS, "online")
SEVERITIES = {
    "fatal": Severity.FATAL,
    "serious": Severity.SERIOUS,
    "common": Severity.COMMON,
    "info": Severity.INFO,
}

MAX_TEXT = 200  # characters of one string from a printer in a message
_RUNOUT_PAUSE_STAGE = 6  # "paused due to filament runout" (stg_cur)


# --- the farm's own events ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueEmpty:
    """The queue has nothing left to dispatch (the last job was handed to a printer)."""


@dataclass(frozen=True, slots=True)
class JobFailedToStart:
    """A dispatch failed: the job went back to the queue with ``reason``."""

    job: Job
    reason: str


# --- configuration -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrinterInfo:
    """What the notifier knows of a printer besides its events: its name and tags."""

    name: str = ""
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Route:
    """Where the messages of some kinds go.

    ``printers`` holds serials or tags (empty: every printer); it filters
    the printers' events, not ``queue_empty``. ``min_severity`` is the least
    severe HMS entry that makes an ``hms`` message (an entry of unknown
    severity counts as ``info``).
    """

    urls: tuple[str, ...] = field(repr=False)
    events: frozenset[str]
    printers: frozenset[str] = frozenset()
    min_severity: str = "common"

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("a route needs at least one URL")
        unknown = sorted(set(self.events) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown event {unknown[0]!r}; known: {', '.join(KINDS)}")
        if not self.events:
            raise ValueError("a route needs at least one event")
        if self.min_severity not in SEVERITIES:
            raise ValueError(
                f"unknown min_severity {self.min_severity!r}; known: {', '.join(SEVERITIES)}"
            )

    def __repr__(self) -> str:
        printers = f", printers={sorted(self.printers)}" if self.printers else ""
        return (
            f"Route({len(self.urls)} URL(s), events={sorted(self.events)}{printers}, "
            f"min_severity={self.min_severity!r})"
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Route:
        """A route from its configuration table (``urls``, ``events``, ``printers``, ...)."""
        unknown = sorted(set(data) - {"urls", "events", "printers", "min_severity"})
        if unknown:
            raise ValueError(f"unknown route setting {unknown[0]!r}")
        urls = data.get("urls", ())
        if isinstance(urls, str):
            urls = [urls]
        return cls(
            urls=tuple(_strings(urls, "urls")),
            events=frozenset(_strings(data.get("events", ()), "events")),
            printers=frozenset(_strings(data.get("printers", ()), "printers")),
            min_severity=str(data.get("min_severity", "common")).lower(),
        )

    def wants_printer(self, serial: str, info: PrinterInfo | None) -> bool:
        """Whether an event of this printer concerns the route."""
        if not self.printers:
            return True
        if serial in self.printers:
            return True
        return info is not None and not self.printers.isdisjoint(info.tags)


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """The notifier's settings; :meth:`from_dict` reads the TOML/JSON form.

    Durations are in minutes; ``minute_seconds`` is how long a minute is
    (60; tests shorten it). ``queue_size`` bounds each URL's queue,
    ``send_timeout_seconds`` each send's connect and read timeouts (unless a
    URL sets Apprise's own ``cto``/``rto``).
    """

    routes: tuple[Route, ...] = ()
    rate_limit_minutes: float = 5.0
    offline_after_minutes: float = 5.0
    back_online: bool = False
    minute_seconds: float = 60.0
    queue_size: int = 100
    send_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        for name in ("rate_limit_minutes", "offline_after_minutes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.minute_seconds <= 0 or self.send_timeout_seconds <= 0:
            raise ValueError("minute_seconds and send_timeout_seconds must be positive")
        if self.queue_size < 1:
            raise ValueError("queue_size must be at least 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NotifyConfig:
        """Settings from a parsed TOML/JSON table (``routes`` is a list of route tables)."""
        known = {
            "routes",
            "rate_limit_minutes",
            "offline_after_minutes",
            "back_online",
            "minute_seconds",
            "queue_size",
            "send_timeout_seconds",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown notification setting {unknown[0]!r}")
        routes = data.get("routes", [])
        if not isinstance(routes, list) or not all(isinstance(r, Mapping) for r in routes):
            raise ValueError("routes must be a list of tables")
        kwargs: dict[str, Any] = {}
        for name in ("rate_limit_minutes", "offline_after_minutes", "minute_seconds"):
            if name in data:
                kwargs[name] = _number(data[name], name)
        if "send_timeout_seconds" in data:
            kwargs["send_timeout_seconds"] = _number(
                data["send_timeout_seconds"], "send_timeout_seconds"
            )
        if "queue_size" in data:
            kwargs["queue_size"] = int(_number(data["queue_size"], "queue_size"))
        if "back_online" in data:
            if not isinstance(data["back_online"], bool):
                raise ValueError("back_online must be true or false")
            kwargs["back_online"] = data["back_online"]
        built: list[Route] = []
        for number, route in enumerate(routes, 1):
            try:
                built.append(Route.from_dict(route))
            except ValueError as exc:
                raise ValueError(f"route {number}: {exc}") from None
        return cls(routes=tuple(built), **kwargs)

    @classmethod
    def from_toml(cls, text: str) -> NotifyConfig:
        """Settings from TOML text: the top level, or its ``[notify]`` table."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"not valid TOML: {exc}") from None
        return cls.from_dict(data.get("notify", data))

    @classmethod
    def from_json(cls, text: str) -> NotifyConfig:
        """Settings from JSON text: the top level, or its ``notify`` object."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("the notification settings must be an object")
        return cls.from_dict(data.get("notify", data))


def _strings(value: Any, name: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list of strings")
    items = list(value)
    if not all(isinstance(item, str) and item for item in items):
        raise ValueError(f"{name} must be a list of non-empty strings")
    return items


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    return float(value)


# --- messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One notification as sent: its kind, the printer (``""`` for the farm) and the text."""

    kind: str
    serial: str
    title: str
    body: str


_NOTIFY_TYPES = {
    "started": apprise.NotifyType.INFO,
    "finished": apprise.NotifyType.SUCCESS,
    "failed": apprise.NotifyType.FAILURE,
    "paused": apprise.NotifyType.WARNING,
    "hms": apprise.NotifyType.WARNING,
    "runout": apprise.NotifyType.WARNING,
    "offline": apprise.NotifyType.WARNING,
    "online": apprise.NotifyType.SUCCESS,
    "queue_empty": apprise.NotifyType.INFO,
}


def _clean(text: Any) -> str:
    """A string from a printer, made one safe line of bounded length."""
    line = visible(str(text))
    return line if len(line) <= MAX_TEXT else line[: MAX_TEXT - 1] + "…"


def is_runout(event: Event) -> bool:
    """Whether a raised HMS entry or a pause is a filament runout."""
    if isinstance(event, HMSRaised):
        return _runout_entry(event.entry)
    if isinstance(event, PrintPaused):
        state = event.state
        if state.print_error.value & 0xFF00FFFF == 0x07008011:
            return True
        return state.stage == _RUNOUT_PAUSE_STAGE or any(_runout_entry(e) for e in state.hms)
    return False


def _runout_entry(entry: HMSEntry) -> bool:
    # AMS (module 0x07), attr 07UU_2S00 (unit UU, slot S), code 0002_0001.
    return entry.code == 0x00020001 and entry.attr >> 24 == 0x07 and entry.attr & 0xF0FF == 0x2000


def _severity(entry: HMSEntry) -> Severity:
    return entry.severity if entry.severity is not Severity.UNKNOWN else Severity.INFO


def _printer_lines(name: str, serial: str, state: PrinterState | None) -> list[str]:
    lines = [f"Printer: {_clean(name)} ({_clean(serial)})" if name else f"Printer: {serial}"]
    if state is None:
        return lines
    try:
        model = state.model.product
    except Exception:  # a state from a hostile report must never stop a message
        model = ""
    if model:
        lines.append(f"Model: {_clean(model)}")
    return lines


def _progress_lines(state: PrinterState) -> list[str]:
    lines: list[str] = []
    if state.percent is not None:
        line = f"Progress: {state.percent}%"
        if state.layer is not None and state.total_layers:
            line += f", layer {state.layer}/{state.total_layers}"
        lines.append(line)
    if state.remaining_minutes is not None and state.gcode_state not in ("FINISH", "FAILED"):
        lines.append(f"Time left: {state.remaining_minutes} min")
    return lines


def _hms_lines(entries: Iterable[HMSEntry]) -> list[str]:
    lines = []
    for entry in entries:
        lines.append(f"HMS {entry.code_string} ({_severity(entry).name.lower()}): {entry.text}")
        lines.append(f"Wiki: {entry.wiki_url}")
    return lines


def compose(kind: str, event: Any, info: PrinterInfo | None) -> Message:
    """The message of one event of one kind (``info`` names the printer)."""
    if isinstance(event, QueueEmpty):
        return Message(kind, "", "Print queue empty", "The farm's print queue has no job left.")
    if isinstance(event, JobFailedToStart):
        queued = event.job
        serial = queued.printer
        name = info.name if info and info.name else ""
        where = f" on {_clean(name or serial)}" if serial else ""
        body = [f"Job: {_clean(queued.name)} (#{queued.id}, plate {queued.plate})"]
        if serial:
            body = _printer_lines(name, serial, None) + body
        body.append(f"Reason: {_clean(event.reason)}")
        body.append(f"Attempts: {queued.attempts}; the job is back in the queue.")
        return Message(kind, serial, f"Job failed to start{where}", "\n".join(body))
    assert isinstance(event, Event)
    state = event.state
    name = info.name if info and info.name else ""
    who = _clean(name or event.serial)
    job = _clean(getattr(event, "job", "") or state.job_name)
    lines = _printer_lines(name, event.serial, state)
    if job:
        lines.append(f"Job: {job}")
    title = {
        "started": f"Print started on {who}",
        "finished": f"Print finished on {who}",
        "failed": f"Print failed on {who}",
        "paused": f"Print paused on {who}",
        "hms": f"Printer alert on {who}",
        "runout": f"Filament ran out on {who}",
        "offline": f"{who} is offline",
        "online": f"{who} is back online",
    }[kind]
    if kind in ("started", "paused", "runout", "failed", "offline"):
        lines += _progress_lines(state)
    if kind == "finished" and state.total_layers:
        lines.append(f"Layers: {state.total_layers}")
    if isinstance(event, PrintFailed) and event.error:
        lines.append(f"Error {event.error.code_string}: {event.error.text}")
    if kind == "paused" and state.stage_name:
        lines.append(f"Stage: {_clean(state.stage_name)}")
    if isinstance(event, HMSRaised):
        lines += _hms_lines([event.entry])
        title += f": {event.entry.severity.name.lower()}" if kind == "hms" else ""
    elif kind == "runout":
        if state.print_error:
            lines.append(f"Error {state.print_error.code_string}: {state.print_error.text}")
        lines += _hms_lines(e for e in state.hms if _runout_entry(e))
    return Message(kind, event.serial, title, "\n".join(lines))


# --- secrets of the URLs -----------------------------------------------------------------


class _Redactor(logging.Filter):
    """Removes the secret parts of the open notifiers' URLs from log lines.

    Installed on the loggers of the libraries that send (``apprise``,
    ``urllib3.connectionpool``): their debug lines may carry a webhook's path
    or a failed request's URL.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._owners: dict[int, frozenset[str]] = {}
        self._secrets: tuple[str, ...] = ()

    def register(self, owner: int, secrets: Iterable[str]) -> None:
        with self._lock:
            self._owners[owner] = frozenset(secrets)
            self._rebuild()

    def unregister(self, owner: int) -> None:
        with self._lock:
            self._owners.pop(owner, None)
            self._rebuild()

    def _rebuild(self) -> None:
        # Longest first, so a secret containing another is masked whole.
        found = set().union(*self._owners.values()) if self._owners else set()
        self._secrets = tuple(sorted(found, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "****")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            try:
                message = record.getMessage()
            except Exception:  # a broken record is the logging module's problem, not ours
                return True
            scrubbed = self.scrub(message)
            if scrubbed != message:
                record.msg, record.args = scrubbed, None
        return True


_REDACTOR = _Redactor()
_REDACTED_LOGGERS = ("apprise", "urllib3.connectionpool")
for _name in _REDACTED_LOGGERS:
    logging.getLogger(_name).addFilter(_REDACTOR)

_MIN_SECRET = 4  # shorter fragments ("a", "to") would mangle every line and hide nothing


def url_secrets(url: str) -> set[str]:
    """The parts of an Apprise URL that may be secret: credentials, path, query values.

    The host too when it is no host name (Telegram's ``tgram://<bot token>/...``).
    """
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        candidates = [parts.username or "", parts.password or ""]
        candidates += parts.path.split("/")
        candidates += [v for _, v in parse_qsl(parts.query, keep_blank_values=True)]
        if host and "." not in host and host != "localhost":
            candidates.append(parts.netloc.rsplit("@", 1)[-1])
    except ValueError:
        return {url}
    for item in candidates:
        for form in (item, unquote(item)):
            if len(form) >= _MIN_SECRET:
                found.add(form)
    return found


# --- sending -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KindStats:
    """The counters of one kind: messages sent, dropped (queue full), failed, suppressed.

    ``sent``, ``dropped`` and ``failed`` count deliveries (one message to two
    URLs is two); ``suppressed`` counts messages the rate limit held back.
    """

    sent: int = 0
    dropped: int = 0
    failed: int = 0
    suppressed: int = 0


@dataclass(frozen=True, slots=True)
class NotifyStats:
    """An immutable snapshot of the counters, per kind (every kind present)."""

    kinds: Mapping[str, KindStats]

    def total(self, counter: str) -> int:
        """One counter summed over the kinds."""
        return sum(int(getattr(s, counter)) for s in self.kinds.values())


_STOP = object()


class _Sender:
    """One URL: a thread that sends its queue's messages one at a time, each with a timeout."""

    def __init__(self, url: str, plugin: Any, owner: Notifier, config: NotifyConfig) -> None:
        # Apprise's privacy form, without the query (its options, some of them secret).
        self.masked = owner.redactor_scrub(str(plugin.url(privacy=True)).split("?", 1)[0])
        self._apprise = apprise.Apprise(asset=owner.asset)
        self._apprise.add(plugin)
        self._owner = owner
        self.queue: queue.Queue[Any] = queue.Queue(config.queue_size)
        self._minute = config.minute_seconds
        self._timeout = config.send_timeout_seconds
        self._last_log: float | None = None
        self._unlogged = 0
        # Messages offered and not yet sent or failed (queued or in flight).
        self._outstanding = 0
        self._outstanding_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="notify-sender", daemon=True)
        self._thread.start()

    def offer(self, message: Message) -> bool:
        with self._outstanding_lock:
            try:
                self.queue.put_nowait(message)
            except queue.Full:
                return False
            self._outstanding += 1
        return True

    @property
    def outstanding(self) -> int:
        """Messages queued or being sent."""
        return self._outstanding

    def stop(self, timeout: float) -> bool:
        """Ask the thread to end after what is queued; whether it ended within ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            self.queue.put(_STOP, timeout=timeout)
        except queue.Full:
            self._abandon()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def _abandon(self) -> None:
        # The queue stays full of messages a dead URL will not take: drop them.
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Message):
                self._done()
                self._owner.count(item.kind, "dropped")
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(_STOP)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            assert isinstance(item, Message)
            ok = self._send(item)
            self._owner.count(item.kind, "sent" if ok else "failed")
            self._done()
            if not ok:
                self._failed()

    def _done(self) -> None:
        with self._outstanding_lock:
            self._outstanding -= 1

    def _send(self, message: Message) -> bool:
        try:
            return bool(
                self._apprise.notify(
                    body=message.body,
                    title=message.title,
                    notify_type=_NOTIFY_TYPES[message.kind],
                    body_format=apprise.NotifyFormat.TEXT,
                    # The whole send, whatever a server trickles: Apprise stops waiting.
                    timeout=self._timeout,
                )
            )
        except Exception as exc:  # a plugin's bug must not kill the sender
            log.debug("notification to %s raised %s", self.masked, type(exc).__name__)
            return False

    def _failed(self) -> None:
        # Once per URL per minute: a dead webhook must not fill the log.
        now = time.monotonic()
        self._unlogged += 1
        if self._last_log is not None and now - self._last_log < self._minute:
            return
        self._last_log = now
        count, self._unlogged = self._unlogged, 0
        log.warning(
            "notification to %s failed (%d failure(s) since the last report)", self.masked, count
        )


# --- the notifier ------------------------------------------------------------------------


PrinterDirectory = Mapping[str, PrinterInfo] | Callable[[str], PrinterInfo | None]


class Notifier:
    """Routes events to Apprise URLs on worker threads; see the module docstring.

    ``printers`` gives a printer's name and tags (a mapping by serial, or a
    function of the serial); without it messages name printers by serial.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        config: NotifyConfig,
        *,
        printers: PrinterDirectory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._printers = printers
        self._clock = clock
        self._lock = threading.Lock()
        self._counts = {kind: [0, 0, 0, 0] for kind in _ALL_KINDS}
        self._last_sent: dict[tuple[int, str, str], float] = {}
        self._offline_since: dict[str, tuple[int, PrinterOffline]] = {}
        self._offline_told: dict[str, set[int]] = {}
        self._timers: list[tuple[float, int, str]] = []
        self._sequence = itertools.count()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self.asset = apprise.AppriseAsset(storage_mode="memory")
        secrets: set[str] = set()
        for route in config.routes:
            for url in route.urls:
                secrets |= url_secrets(url)
        _REDACTOR.register(id(self), secrets)
        self._secrets = secrets
        self._senders: dict[str, _Sender] = {}
        self._route_senders: list[list[_Sender]] = []
        try:
            for number, route in enumerate(config.routes, 1):
                senders = []
                for index, url in enumerate(route.urls, 1):
                    sender = self._senders.get(url)
                    if sender is None:
                        sender = self._senders[url] = _Sender(
                            url, self._plugin(url, number, index), self, config
                        )
                    senders.append(sender)
                self._route_senders.append(senders)
        except BaseException:
            self.close(timeout=0)
            raise
        self._timer_thread = threading.Thread(
            target=self._run_timers, name="notify-timers", daemon=True
        )
        self._timer_thread.start()

    def _plugin(self, url: str, route: int, index: int) -> Any:
        plugin = apprise.Apprise.instantiate(url, asset=self.asset)
        if plugin is None:
            scheme = url.split("://", 1)[0] if "://" in url else ""
            raise ValueError(
                f"route {route}: URL {index} is not a usable Apprise URL"
                + (f" (scheme {_clean(scheme)!r})" if scheme and len(scheme) < 20 else "")
            )
        query = {k.lower() for k, _ in parse_qsl(urlsplit(url).query)}
        timeout = self.config.send_timeout_seconds
        if "cto" not in query:
            plugin.socket_connect_timeout = timeout
        if "rto" not in query:
            plugin.socket_read_timeout = timeout
        return plugin

    def redactor_scrub(self, text: str) -> str:
        """``text`` without any secret part of this notifier's URLs."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "****")
        return text

    def __repr__(self) -> str:
        return f"Notifier({len(self.config.routes)} route(s), {len(self._senders)} URL(s))"

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the caller's side (never blocks on the network) --

    def handle(self, event: Any) -> None:
        """Route one event (any other kind of event is ignored cheaply); never raises.

        Called from a connection's thread or event loop: it only routes and
        queues, and a bug here must not reach the connection.
        """
        try:
            self._handle(event)
        except Exception:
            log.exception("notification of %s failed", type(event).__name__)

    def _handle(self, event: Any) -> None:
        if isinstance(event, PrinterOffline):
            self._went_offline(event)
            return
        if isinstance(event, PrinterOnline):
            self._came_online(event)
            return
        kind = self._kind(event)
        if kind is None:
            return
        serial = self._serial(event)
        info = self._info(serial) if serial else None
        routes = [
            number
            for number, route in enumerate(self.config.routes)
            if kind in route.events and self._route_wants(route, kind, event, serial, info)
        ]
        if routes:
            self._dispatch(routes, kind, serial, event, info)

    @staticmethod
    def _kind(event: Any) -> str | None:
        if isinstance(event, PrintFinished):
            return "finished"
        if isinstance(event, PrintStarted):
            return "started"
        if isinstance(event, PrintFailed | JobFailedToStart):
            return "failed"
        if isinstance(event, HMSRaised | PrintPaused):
            if is_runout(event):
                return "runout"
            return "hms" if isinstance(event, HMSRaised) else "paused"
        if isinstance(event, QueueEmpty):
            return "queue_empty"
        return None

    @staticmethod
    def _serial(event: Any) -> str:
        if isinstance(event, JobFailedToStart):
            return event.job.printer
        return str(getattr(event, "serial", ""))

    def _info(self, serial: str) -> PrinterInfo | None:
        directory = self._printers
        if directory is None:
            return None
        try:
            if isinstance(directory, Mapping):
                return directory.get(serial)
            return directory(serial)
        except Exception:  # the directory is the caller's; a failure names no printer
            log.debug("printer directory failed for %s", _clean(serial), exc_info=True)
            return None

    @staticmethod
    def _route_wants(
        route: Route, kind: str, event: Any, serial: str, info: PrinterInfo | None
    ) -> bool:
        if kind != "queue_empty" and not route.wants_printer(serial, info):
            return False
        if kind == "hms":
            assert isinstance(event, HMSRaised)
            return _severity(event.entry) <= SEVERITIES[route.min_severity]
        return True

    def _dispatch(
        self, routes: list[int], kind: str, serial: str, event: Any, info: PrinterInfo | None
    ) -> None:
        window = self.config.rate_limit_minutes * self.config.minute_seconds
        now = self._clock()
        allowed: list[int] = []
        with self._lock:
            if self._closed:
                return
            for number in routes:
                key = (number, serial, kind)
                last = self._last_sent.get(key)
                if last is not None and now - last < window:
                    self._counts[kind][3] += 1
                    continue
                self._last_sent[key] = now
                allowed.append(number)
        if not allowed:
            return
        message = compose(kind, event, info)
        # One message per URL even when two routes name it.
        senders = {id(s): s for n in allowed for s in self._route_senders[n]}
        for sender in senders.values():
            if not sender.offer(message):
                self.count(kind, "dropped")
        if kind == "offline":
            with self._lock:
                self._offline_told.setdefault(serial, set()).update(allowed)

    def count(self, kind: str, counter: str) -> None:
        """Add one to a counter (the senders report here)."""
        index = ("sent", "dropped", "failed", "suppressed").index(counter)
        with self._lock:
            self._counts[kind][index] += 1

    # -- offline after N minutes --

    def _went_offline(self, event: PrinterOffline) -> None:
        due = self._clock() + self.config.offline_after_minutes * self.config.minute_seconds
        with self._wake:
            if self._closed or event.serial in self._offline_since:
                return  # already counting since the first PrinterOffline
            token = next(self._sequence)
            self._offline_since[event.serial] = (token, event)
            heapq.heappush(self._timers, (due, token, event.serial))
            self._wake.notify()

    def _came_online(self, event: PrinterOnline) -> None:
        with self._lock:
            self._offline_since.pop(event.serial, None)  # its timer finds nothing to do
            told = self._offline_told.pop(event.serial, set())
        if not told or not self.config.back_online:
            return
        info = self._info(event.serial)
        message = compose("online", event, info)
        senders = {id(s): s for n in told for s in self._route_senders[n]}
        for sender in senders.values():
            if not sender.offer(message):
                self.count("online", "dropped")

    def _run_timers(self) -> None:
        while True:
            with self._wake:
                while not self._closed:
                    if self._timers:
                        wait = self._timers[0][0] - self._clock()
                        if wait <= 0:
                            break
                        self._wake.wait(min(wait, 1.0))
                    else:
                        self._wake.wait()
                if self._closed:
                    return
                _, token, serial = heapq.heappop(self._timers)
                pending = self._offline_since.get(serial)
                if pending is None or pending[0] != token:
                    continue  # came back (or a newer timer runs) meanwhile
                event = pending[1]
            self._fire_offline(event)

    def _fire_offline(self, event: PrinterOffline) -> None:
        info = self._info(event.serial)
        routes = [
            number
            for number, route in enumerate(self.config.routes)
            if "offline" in route.events and route.wants_printer(event.serial, info)
        ]
        if routes:
            self._dispatch(routes, "offline", event.serial, event, info)

    # -- reading --

    def stats(self) -> NotifyStats:
        """The counters per kind (a snapshot)."""
        with self._lock:
            kinds = {kind: KindStats(*counts) for kind, counts in self._counts.items()}
        return NotifyStats(kinds)

    def pending(self) -> int:
        """Messages queued or being sent right now."""
        return sum(s.outstanding for s in self._senders.values())

    def close(self, timeout: float = 5.0) -> None:
        """Stop the timers; send what is queued within ``timeout``; stop the senders."""
        with self._wake:
            already = self._closed
            self._closed = True
            self._wake.notify_all()
        if already:
            return
        deadline = time.monotonic() + timeout
        stuck = False
        for sender in self._senders.values():
            stuck |= not sender.stop(max(0.0, deadline - time.monotonic()))
        if not stuck:  # a send still under way may yet log: keep masking its URL
            _REDACTOR.unregister(id(self))
