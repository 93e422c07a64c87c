"""Prometheus metrics: ``GET /metrics`` of the live hub's printers and of the server itself.

The exposition is written by the official ``prometheus-client`` (text format,
or OpenMetrics when the scraper asks for it). Nothing is counted per report:
:class:`HubCollector` reads the hub when a scrape comes. The read is one
:func:`snapshot` taken on the server's loop (where the hub lives: references
to immutable states, a few counters); the formatting, which costs most for a
large fleet, then runs on a worker thread so the loop keeps serving. Each
scrape builds its own :class:`~prometheus_client.CollectorRegistry`: the
global registry is never touched, so several servers share one process.

Access: a ``read`` token (``Authorization: Bearer``; Prometheus sends one
from ``authorization: {credentials_file: ...}``). A token with a printer
allowlist sees only those printers; every read token sees the server's own
figures, which name no printer.

Per printer, labelled ``serial`` only, absent values left out rather than
reported as 0. ``bambu_printer_info{serial,name,model,firmware} 1`` carries
the rest (values escaped by the library, control characters neutralised):
join on ``serial`` where a name is wanted, the usual Prometheus pattern
(``... * on(serial) group_left(name, model) bambu_printer_info``). Name and
model on every series would triple the label work of a scrape (the
formatting of 1000 printers took 0.43 s with them) for no new information.

* ``bambu_printer_online``, ``bambu_printer_state{state=...}`` (one-hot over
  every ``gcode_state``), ``bambu_printer_info``;
* ``bambu_printer_progress_ratio``, ``bambu_printer_remaining_seconds``,
  ``bambu_printer_layer``, ``bambu_printer_job_layers``;
* ``bambu_printer_temperature_celsius`` and ``..._target_temperature_celsius``
  ``{sensor=nozzle|bed|chamber}``; ``bambu_printer_fan_speed_ratio{fan}``;
  ``bambu_printer_wifi_signal_dbm``;
* ``bambu_ams_humidity_ratio``, ``bambu_ams_humidity_level``,
  ``bambu_ams_temperature_celsius`` ``{ams}``; ``bambu_ams_tray_remaining_ratio{ams,tray}``;
* ``bambu_printer_hms_errors{severity}`` (active entries, every severity present);
* ``bambu_printer_prints_{started,finished,failed}_total`` (seen by this server);
* ``bambu_printer_last_report_timestamp_seconds`` and ``..._age_seconds``.

With a farm mounted (:class:`FarmCollector`): ``bambu_farm_prints_total{printer,result}``,
``bambu_farm_printing_seconds_total{printer}``,
``bambu_farm_filament_grams_total{printer,type,color}``,
``bambu_farm_failures_total{printer,code}``.

The server's: ``bambu_server_mqtt_connected``, ``..._mqtt_connections``,
``..._mqtt_reconnects_total``, ``..._mqtt_messages_total``,
``..._report_latency_seconds`` (summary: sum and count), ``..._events_published_total``,
``..._http_requests_total{method,code}`` (counted by :class:`RequestCounter`),
``..._event_streams`` and ``..._event_streams_opened_total`` (when the live
part is mounted), ``..._printers``, ``..._start_time_seconds``, ``..._uptime_seconds``, and the
library's standard ``process_*`` figures.

Every server process counts for itself: with several workers or instances,
scrape each one (not through the load balancer) and sum in PromQL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ..models.printer import Severity, model_named
from ..models.state import GCODE_STATES
from ..safetext import visible

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..models.state import PrinterState
    from .app import ServerContext
    from .live import HubStats, PrinterEntry

__all__ = [
    "FarmCollector",
    "HubCollector",
    "MetricsSnapshot",
    "PrinterSample",
    "RequestCounter",
    "ServerMetrics",
    "metrics_routes",
    "server_metrics",
    "snapshot",
]

# Every state the one-hot gauge reports (a stable set of series per printer).
STATES = (*sorted(GCODE_STATES), "UNKNOWN")
SEVERITIES = (*(s for s in Severity if s is not Severity.UNKNOWN), Severity.UNKNOWN)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
PRINTER_LABELS = ("serial",)
INFO_LABELS = ("name", "model", "firmware")
EXTRA_KEY = "metrics"


# --- the server's own counters ------------------------------------------------------------


@dataclass
class ServerMetrics:
    """What the server counts itself: HTTP requests by method and status.

    Touched only on the server's loop (the middleware and the scrape both
    run there), so a plain dict is enough.
    """

    requests: dict[tuple[str, str], int] = field(default_factory=dict)

    def count(self, method: str, status: int) -> None:
        key = (method if method in METHODS else "other", str(status))
        self.requests[key] = self.requests.get(key, 0) + 1


def server_metrics(ctx: ServerContext) -> ServerMetrics:
    """The :class:`ServerMetrics` of ``ctx`` (made on first use)."""
    found = ctx.extra.get(EXTRA_KEY)
    if not isinstance(found, ServerMetrics):
        found = ServerMetrics()
        ctx.extra[EXTRA_KEY] = found
    return found


class RequestCounter:
    """Pure ASGI middleware counting each HTTP request by method and status code.

    One dict increment per request: the status is read from the response's
    start; a request that ends without one (the app failed, the client left)
    counts as 500, as the audit line does.
    """

    def __init__(self, app: Any, ctx: ServerContext) -> None:
        self.app = app
        self.metrics = server_metrics(ctx)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_counted(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start" and not status:
                status = int(message["status"])
                self.metrics.count(scope.get("method", ""), status)
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            if not status:
                self.metrics.count(scope.get("method", ""), 500)


# --- the snapshot a scrape reads ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrinterSample:
    """One printer at the scrape: its labels and what the hub knows of it."""

    labels: tuple[str, str, str]  # serial, name, model
    online: bool
    state: PrinterState | None
    last_report: float | None
    prints: tuple[int, int, int]  # started, finished, failed


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything one scrape reports, read at one moment (immutable)."""

    time: float
    started: float
    printers: tuple[PrinterSample, ...]
    stats: HubStats | None
    requests: tuple[tuple[tuple[str, str], int], ...]
    streams: tuple[int, int] | None = None  # event streams open now, opened in all


def _label(text: str) -> str:
    """A label value: control characters neutralised, never an unencodable character."""
    shown = visible(text)
    return shown if shown.isascii() else shown.encode("utf-8", "replace").decode("utf-8")


def _model(entry: PrinterEntry, state: PrinterState | None) -> str:
    if entry.model:
        known = model_named(entry.model)
        return known.product if known is not None else entry.model
    if state is not None and state.model.known:
        return state.model.product
    return ""


def snapshot(ctx: ServerContext, printers: tuple[str, ...] = ()) -> MetricsSnapshot:
    """What a scrape reports now; only ``printers`` when given (a token's allowlist).

    Call it on the server's loop: it reads the hub's dicts.
    """
    hub = ctx.hub
    samples: list[PrinterSample] = []
    if hub is not None:
        allowed = frozenset(printers)
        for entry in hub.printers():
            if allowed and entry.serial not in allowed:
                continue
            state = hub.state(entry.serial)
            samples.append(
                PrinterSample(
                    labels=(
                        _label(entry.serial),
                        _label(entry.name),
                        _label(_model(entry, state)),
                    ),
                    online=hub.online(entry.serial),
                    state=state,
                    last_report=hub.last_report(entry.serial),
                    prints=hub.print_counts(entry.serial),
                )
            )
    return MetricsSnapshot(
        time=time.time(),
        started=ctx.started,
        printers=tuple(samples),
        stats=None if hub is None else hub.stats(),
        requests=tuple(sorted(server_metrics(ctx).requests.items())),
        streams=_streams(ctx.extra.get("sse")),
    )


def _streams(counter: Any) -> tuple[int, int] | None:
    """The live part's event-stream counter (``ctx.extra["sse"]``: ``open``, ``total``)."""
    opened, total = getattr(counter, "open", None), getattr(counter, "total", None)
    if isinstance(opened, int) and isinstance(total, int):
        return opened, total
    return None


# --- the collector ---------------------------------------------------------------------------


def _percent_ratio(value: int | None) -> float | None:
    return None if value is None else value / 100.0


class HubCollector(Collector):
    """A ``prometheus_client`` collector of one :class:`MetricsSnapshot`.

    ``source`` gives the snapshot when the registry collects (see the module).
    """

    def __init__(self, source: Callable[[], MetricsSnapshot]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        snap = self.source()
        yield from self._printers(snap)
        yield from self._server(snap)

    def _printers(self, snap: MetricsSnapshot) -> Iterator[Metric]:
        labels = list(PRINTER_LABELS)

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*labels, *extra])

        online = gauge("bambu_printer_online", "1 while the printer reports, 0 once it went away")
        info = gauge(
            "bambu_printer_info", "The printer's name, model and firmware (always 1)", INFO_LABELS
        )
        state_g = gauge(
            "bambu_printer_state", "1 for the printer's gcode_state, 0 for the others", ("state",)
        )
        progress = gauge("bambu_printer_progress_ratio", "Progress of the job (0-1)")
        remaining = gauge("bambu_printer_remaining_seconds", "Time left in the job")
        layer = gauge("bambu_printer_layer", "Layer being printed")
        layers = gauge("bambu_printer_job_layers", "Layers in the job")
        temp = gauge("bambu_printer_temperature_celsius", "Temperature by sensor", ("sensor",))
        target = gauge(
            "bambu_printer_target_temperature_celsius", "Target temperature by heater", ("sensor",)
        )
        fans = gauge("bambu_printer_fan_speed_ratio", "Fan speed (0-1)", ("fan",))
        wifi = gauge("bambu_printer_wifi_signal_dbm", "Wi-Fi signal strength")
        hms = gauge("bambu_printer_hms_errors", "Active HMS entries by severity", ("severity",))
        ams_humidity = gauge("bambu_ams_humidity_ratio", "AMS relative humidity (0-1)", ("ams",))
        ams_level = gauge(
            "bambu_ams_humidity_level", "AMS humidity index (1 wet to 5 dry)", ("ams",)
        )
        ams_temp = gauge("bambu_ams_temperature_celsius", "AMS temperature", ("ams",))
        tray_remain = gauge(
            "bambu_ams_tray_remaining_ratio", "Filament left on an AMS tray (0-1)", ("ams", "tray")
        )
        last_ts = gauge(
            "bambu_printer_last_report_timestamp_seconds", "When the printer last reported"
        )
        last_age = gauge(
            "bambu_printer_last_report_age_seconds", "Seconds since the printer last reported"
        )

        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=labels)

        started = counter("bambu_printer_prints_started", "Prints started, seen by this server")
        finished = counter("bambu_printer_prints_finished", "Prints finished, seen by this server")
        failed = counter("bambu_printer_prints_failed", "Prints failed, seen by this server")

        for printer in snap.printers:
            serial, name, model = printer.labels
            key = [serial]
            firmware = _label(printer.state.firmware) if printer.state is not None else ""
            info.add_metric([serial, name, model, firmware], 1.0)
            online.add_metric(key, 1.0 if printer.online else 0.0)
            counts = printer.prints
            started.add_metric(key, counts[0])
            finished.add_metric(key, counts[1])
            failed.add_metric(key, counts[2])
            if printer.last_report is not None:
                last_ts.add_metric(key, printer.last_report)
                last_age.add_metric(key, max(0.0, snap.time - printer.last_report))
            s = printer.state
            if s is None:
                continue
            current = s.gcode_state or "UNKNOWN"
            for name in STATES:
                state_g.add_metric([*key, name], 1.0 if name == current else 0.0)
            _add(progress, key, _percent_ratio(s.percent))
            minutes = s.remaining_minutes
            _add(remaining, key, None if minutes is None else minutes * 60.0)
            _add(layer, key, s.layer)
            _add(layers, key, s.total_layers)
            for sensor, now, goal in (
                ("nozzle", s.nozzle_temp, s.nozzle_target),
                ("bed", s.bed_temp, s.bed_target),
                ("chamber", s.chamber_temp, s.chamber_target),
            ):
                _add(temp, [*key, sensor], now)
                _add(target, [*key, sensor], goal)
            for fan, speed in (
                ("part", s.part_fan),
                ("aux", s.aux_fan),
                ("chamber", s.chamber_fan),
                ("heatbreak", s.heatbreak_fan),
            ):
                _add(fans, [*key, fan], _percent_ratio(speed))
            _add(wifi, key, s.wifi_dbm)
            by_severity = dict.fromkeys(SEVERITIES, 0)
            for entry in s.hms:
                by_severity[entry.severity] += 1
            for severity, count in by_severity.items():
                hms.add_metric([*key, severity.name.lower()], count)
            for unit in s.ams_units:
                ams = [*key, str(unit.id)]
                _add(ams_humidity, ams, _percent_ratio(unit.humidity_percent))
                _add(ams_level, ams, unit.humidity_level)
                _add(ams_temp, ams, unit.temp)
                for tray in unit.trays:
                    if tray.id >= 0:
                        _add(tray_remain, [*ams, str(tray.id)], _percent_ratio(tray.remain))
        yield from (
            online, info, state_g, progress, remaining, layer, layers, temp, target, fans,
            wifi, hms, ams_humidity, ams_level, ams_temp, tray_remain, started, finished,
            failed, last_ts, last_age,
        )  # fmt: skip

    def _server(self, snap: MetricsSnapshot) -> Iterator[Metric]:
        stats = snap.stats
        yield GaugeMetricFamily(
            "bambu_server_printers", "Printers this scrape reports", value=len(snap.printers)
        )
        yield GaugeMetricFamily(
            "bambu_server_start_time_seconds", "When the server started", value=snap.started
        )
        yield GaugeMetricFamily(
            "bambu_server_uptime_seconds", "Seconds since the server started",
            value=max(0.0, snap.time - snap.started),
        )  # fmt: skip
        requests = CounterMetricFamily(
            "bambu_server_http_requests", "HTTP requests answered, by method and status code",
            labels=["method", "code"],
        )  # fmt: skip
        for (method, code), count in snap.requests:
            requests.add_metric([method, code], count)
        yield requests
        if snap.streams is not None:
            yield GaugeMetricFamily(
                "bambu_server_event_streams",
                "Server-Sent-Events streams open now",
                value=snap.streams[0],
            )
            yield CounterMetricFamily(
                "bambu_server_event_streams_opened",
                "Server-Sent-Events streams opened",
                value=snap.streams[1],
            )
        if stats is None:
            return
        yield GaugeMetricFamily(
            "bambu_server_mqtt_connected",
            "1 while every upstream MQTT connection is up",
            value=1.0 if stats.connected else 0.0,
        )
        yield GaugeMetricFamily(
            "bambu_server_mqtt_connections", "Upstream MQTT connections", value=stats.connections
        )
        yield CounterMetricFamily(
            "bambu_server_mqtt_reconnects", "Upstream MQTT reconnections", value=stats.reconnects
        )
        yield CounterMetricFamily(
            "bambu_server_mqtt_messages", "Printer reports received", value=stats.messages
        )
        yield CounterMetricFamily(
            "bambu_server_events_published",
            "Events put on the event stream",
            value=stats.events_published,
        )
        yield SummaryMetricFamily(
            "bambu_server_report_latency_seconds",
            "Age of a printer report when the server had merged it",
            count_value=stats.report_latency_count,
            sum_value=stats.report_latency_sum,
        )


def _add(family: Any, labels: list[str], value: float | None) -> None:
    if value is not None:
        family.add_metric(labels, value)


class FarmCollector(Collector):
    """The farm's counters (:class:`~bambulab.farm.stats.FarmTotals`), when a farm is mounted.

    ``bambu_farm_prints_total{printer,result}``, ``bambu_farm_printing_seconds_total{printer}``,
    ``bambu_farm_filament_grams_total{printer,type,color}``,
    ``bambu_farm_failures_total{printer,code}``: the prints the farm ran (its queue's
    history; ``printer`` is the serial), counted from the store when scraped.
    """

    def __init__(self, source: Callable[[], Any]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        totals = self._source()
        prints = CounterMetricFamily(
            "bambu_farm_prints",
            "Prints the farm ran, by printer and result (finished, failed, cancelled).",
            labels=["printer", "result"],
        )
        for (printer, result), count in totals.prints:
            prints.add_metric([_label(printer), result], count)
        seconds = CounterMetricFamily(
            "bambu_farm_printing_seconds",
            "Time the farm's prints ran, by printer.",
            labels=["printer"],
        )
        for printer, value in totals.seconds:
            seconds.add_metric([_label(printer)], value)
        grams = CounterMetricFamily(
            "bambu_farm_filament_grams",
            "Filament the farm's prints used (from the 3MF; an estimate for unfinished ones).",
            labels=["printer", "type", "color"],
        )
        for (printer, kind, colour), value in totals.grams:
            grams.add_metric([_label(printer), _label(kind), _label(colour)], value)
        failures = CounterMetricFamily(
            "bambu_farm_failures",
            "Failed prints of the farm, by printer and the printer's error code.",
            labels=["printer", "code"],
        )
        for (printer, code), count in totals.failures:
            failures.add_metric([_label(printer), _label(code)], count)
        yield from (prints, seconds, grams, failures)


def render(
    snap: MetricsSnapshot, accept: str = "", farm: Callable[[], Any] | None = None
) -> tuple[bytes, str]:
    """The exposition of ``snap`` in the format ``accept`` asks for: (body, content type).

    ``farm``: what reads the farm's counters (called here, on the rendering thread).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(lambda: snap))
    if farm is not None:
        registry.register(FarmCollector(farm))
    ProcessCollector(registry=registry)
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


# --- the route ---------------------------------------------------------------------------------


def _farm_source(ctx: ServerContext, printers: tuple[str, ...]) -> Callable[[], Any] | None:
    """What reads the farm's counters for a token (``None``: no farm mounted)."""
    counters = ctx.extra.get("farm_counters")
    if counters is None:
        return None
    if not printers:
        return counters.read  # type: ignore[no-any-return]
    return lambda: counters.read().only(printers)


def metrics_routes(ctx: ServerContext) -> APIRouter:
    """``GET /metrics`` behind a ``read`` token (see the module)."""
    server_metrics(ctx)
    router = APIRouter(tags=["metrics"])
    rendering: dict[tuple[tuple[str, ...], str], asyncio.Future[tuple[bytes, str]]] = {}

    @router.get(
        "/metrics",
        summary="Prometheus metrics of the printers and of this server",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {}}, "description": "The Prometheus exposition"}
        },
    )
    async def metrics(request: Request) -> Response:
        token = await ctx.gate.check(request, "read")
        accept = request.headers.get("accept", "")
        # Scrapes that arrive while the same view is being rendered (an HA pair of
        # Prometheus servers, a dashboard) share that render: nothing older is served.
        key = (token.printers, "openmetrics" if "openmetrics" in accept else "text")
        running = rendering.get(key)
        if running is None:
            snap = snapshot(ctx, token.printers)
            running = asyncio.ensure_future(
                asyncio.to_thread(render, snap, accept, _farm_source(ctx, token.printers))
            )
            rendering[key] = running
            running.add_done_callback(lambda _: rendering.pop(key, None))
        body, content_type = await asyncio.shield(running)
        return Response(body, media_type=content_type, headers={"cache-control": "no-store"})

    return router
