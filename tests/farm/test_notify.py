"""Farm notifications through Apprise, delivered over real sockets.

The receivers are real servers on loopback: an SMTP server (aiosmtpd, with
AUTH over plain text so the URL's password is really used) and an HTTP
webhook receiver. A print that finishes on a simulated printer arrives as an
e-mail; the other behaviours are driven with constructed events.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from bambulab import BambuMQTT
from bambulab.farm.models import Job, Requirements, Target
from bambulab.farm.notify import (
    JobFailedToStart,
    Notifier,
    NotifyConfig,
    PrinterInfo,
    QueueEmpty,
    Route,
)
from bambulab.models.events import (
    HMSRaised,
    PrinterOffline,
    PrinterOnline,
    PrintFailed,
    PrintFinished,
    PrintPaused,
)
from bambulab.models.printer import HMSEntry, PrintError
from bambulab.models.state import PrinterState
from bambulab.sim.live import Simulator
from tests.conftest import LoopThread, cloud_mqtt, unlimited, wait_for

SEED = "01234567890ABCD"  # the simulator's P1P, printing
EAST = "01P00A000000001"
WEST = "01P00A000000002"
MAX_BODY = 1 << 16


# --- receivers ---------------------------------------------------------------------------


class SmtpSink:
    """An SMTP server on 127.0.0.1 (port 0) that keeps what it receives and who logged in."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.logins: list[tuple[str, str]] = []
        self._loop = LoopThread()
        self._server = self._loop.run(self._start())
        self.port = self._server.sockets[0].getsockname()[1]

    async def _start(self) -> asyncio.Server:
        def factory() -> SMTP:
            return SMTP(self, authenticator=self._auth, auth_require_tls=False, hostname="sink")

        return await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)

    def _auth(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=data.password == b"mail-Pa55word")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"

    def close(self) -> None:
        self._server.close()
        self._loop.close()


class Webhook:
    """An HTTP server on 127.0.0.1 (port 0) that keeps every JSON body posted to it."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.status = status
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length", "0")), MAX_BODY)
                body = json.loads(self.rfile.read(length) or b"{}")
                hook.received.append((self.path, body))
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def at(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.received if p.split("?")[0] == "/" + path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def hook() -> Iterator[Webhook]:
    server = Webhook()
    yield server
    server.close()


@pytest.fixture(scope="module")
def live() -> Iterator[Simulator]:
    with Simulator(unlimited(), time_scale=60, tick_interval=0.2) as sim:
        yield sim


def route(urls: list[str], events: list[str], **extra: Any) -> dict[str, Any]:
    return {"urls": urls, "events": events, **extra}


def notifier(*routes: dict[str, Any], printers: Any = None, **settings: Any) -> Notifier:
    return Notifier(NotifyConfig.from_dict({"routes": list(routes), **settings}), printers=printers)


def state(serial: str, **raw: Any) -> PrinterState:
    report = {"gcode_state": "RUNNING", "mc_percent": 42, "subtask_name": "bracket", **raw}
    return PrinterState(serial, report, dev_model_name="C12")


def failed(serial: str) -> PrintFailed:
    return PrintFailed(
        serial, state(serial, gcode_state="FAILED"), "bracket", PrintError(0x0300400C)
    )


def text_of(message: EmailMessage, kind: str) -> str:
    part = message.get_body(preferencelist=(kind,))
    assert isinstance(part, EmailMessage)
    return str(part.get_content())


def drained(n: Notifier) -> bool:
    return n.pending() == 0


# --- a real print, a real e-mail ---------------------------------------------------------


def test_a_finished_print_on_a_simulated_printer_arrives_by_email(
    live: Simulator, smtp: SmtpSink, hook: Webhook
) -> None:
    hostile = "Shop <b>East</b>\r\nBcc: evil@example.com\x1b[2J"
    mail = (
        f"mailto://farm:mail-Pa55word@127.0.0.1:{smtp.port}"
        "?from=farm@example.com&to=ops@example.com"
    )
    with notifier(
        route([mail, mail + "&format=html"], ["finished"]),
        route([hook.url("sim-started")], ["started", "paused"]),
        route([hook.url("sim-runout")], ["runout"]),
        printers={SEED: PrinterInfo(hostile, frozenset({"east"}))},
    ) as n:
        client: BambuMQTT = cloud_mqtt(live, [SEED], command_timeout=5)
        client.on_event = n.handle
        client.connect()
        try:
            state = client.get_full_status(SEED)
            if state.gcode_state not in ("PREPARE", "RUNNING"):
                client.start_print("file:///sdcard/" + live.printers[SEED].sdcard_files[0], 1, SEED)
                wait_for(lambda: client.state(SEED).gcode_state == "RUNNING", what="running")
            # A runout pauses the job: one runout message (the HMS entry and the pause
            # are the same news), not a "paused" one.
            live.with_printer(SEED, lambda p: p.runout(0, 0))
            wait_for(lambda: n.stats().kinds["runout"].sent == 1, what="runout sent")
            wait_for(lambda: n.stats().kinds["runout"].suppressed == 1, what="the pause folded in")
            client.ams_control("resume", SEED)
            wait_for(lambda: client.state(SEED).gcode_state == "RUNNING", what="resumed")
            live.advance_clock(6 * 3600)  # the rest of the job, in simulated time
            wait_for(lambda: smtp.messages, 20, "the e-mail")
        finally:
            client.disconnect()
    # One plain-text e-mail and one HTML e-mail (the second URL asks for it).
    assert len(smtp.messages) == 2
    by_type = {m.get_content_type(): (rcpt, m) for rcpt, m in smtp.messages}
    assert set(by_type) == {"text/plain", "multipart/alternative"}
    for rcpt, message in by_type.values():
        assert rcpt == ["ops@example.com"]
        subject = str(message["Subject"])
        # One line: the CR LF from the printer's name cannot forge a Bcc header.
        assert subject.startswith("Print finished on Shop <b>East</b>\\r\\nBcc: ")
        assert not {"\n", "\r", "\x1b"} & set(subject)
        assert message["Bcc"] is None and str(message["To"]) == "ops@example.com"
        body = text_of(message, "plain")
        assert f"({SEED})" in body and "Job: " in body and "\x1b" not in body
    assert ("farm", "mail-Pa55word") in smtp.logins  # the URL's password was used
    html = text_of(by_type["multipart/alternative"][1], "html")
    assert "<b>East" not in html and "&lt;b&gt;East" in html
    assert "<b>East</b>" in text_of(by_type["text/plain"][1], "plain")  # plain text is inert
    (runout,) = hook.at("sim-runout")
    assert runout["title"].startswith("Filament ran out on Shop")
    assert "0700_2000_0002_0001" in runout["message"]
    assert "https://wiki.bambulab.com/en/hms/0700_2000_0002_0001" in runout["message"]
    assert "AMS A Slot 1 filament has run out." in runout["message"]
    assert not any("paused" in b["title"] for b in hook.at("sim-started"))


# --- routing -----------------------------------------------------------------------------


def test_each_event_reaches_only_its_routes(hook: Webhook) -> None:
    printers = {EAST: PrinterInfo("East 1", frozenset({"east"})), WEST: PrinterInfo("West 1")}
    with notifier(
        route([hook.url("r-east-fail")], ["failed"], printers=["east"]),
        route([hook.url("r-serious")], ["hms"], min_severity="serious"),
        route([hook.url("r-west-done")], ["finished", "queue_empty"], printers=[WEST]),
        printers=printers,
    ) as n:
        n.handle(failed(EAST))  # tag east: route 1
        n.handle(failed(WEST))  # nobody
        common = HMSEntry(0x0C000300, 0x00030001)
        fatal = HMSEntry(0x03000100, 0x00010007)
        n.handle(HMSRaised(WEST, state(WEST), common))  # below the threshold: nobody
        n.handle(HMSRaised(WEST, state(WEST), fatal))  # route 2
        n.handle(PrintFinished(EAST, state(EAST, gcode_state="FINISH"), "bracket"))  # nobody
        n.handle(PrintFinished(WEST, state(WEST, gcode_state="FINISH"), "bracket"))  # route 3
        n.handle(QueueEmpty())  # route 3: the queue is not one printer's
        n.handle(PrintPaused(EAST, state(EAST, gcode_state="PAUSE")))  # nobody asked
        wait_for(lambda: n.stats().total("sent") == 4 and drained(n), what="four sent")
    assert [b["title"] for b in hook.at("r-east-fail")] == ["Print failed on East 1"]
    (alert,) = hook.at("r-serious")
    assert alert["title"] == "Printer alert on West 1: fatal"
    assert "0300_0100_0001_0007" in alert["message"] and "heatbed" in alert["message"]
    assert "wiki.bambulab.com/en/hms/0300_0100_0001_0007" in alert["message"]
    assert [b["title"] for b in hook.at("r-west-done")] == [
        "Print finished on West 1",
        "Print queue empty",
    ]
    assert n.stats().total("failed") == 0 and n.stats().total("dropped") == 0


def test_a_failed_start_names_the_job_and_the_reason(hook: Webhook) -> None:
    job = Job(7, "gear\x1b[31m", "/farm/gear.3mf", "0" * 32, 2, Target(), Requirements())
    job = replace(job, printer=EAST, attempts=1)
    with notifier(route([hook.url("r-start")], ["failed"])) as n:
        n.handle(JobFailedToStart(job, "upload refused: <no space>"))
        wait_for(lambda: hook.at("r-start"), what="the message")
    (body,) = hook.at("r-start")
    assert body["title"] == f"Job failed to start on {EAST}"
    assert "gear\\x1b[31m (#7, plate 2)" in body["message"]
    assert "Reason: upload refused: <no space>" in body["message"]


# --- rate limiting -----------------------------------------------------------------------


def test_a_flapping_printer_sends_one_message_per_window(hook: Webhook) -> None:
    now = [1000.0]
    config = NotifyConfig.from_dict({"routes": [route([hook.url("r-flap")], ["failed"])]})
    with Notifier(config, clock=lambda: now[0]) as n:
        for _ in range(10):  # ten failures within a minute
            n.handle(failed(EAST))
            now[0] += 5
        n.handle(failed(WEST))  # another printer is not held back
        wait_for(lambda: len(hook.at("r-flap")) == 2 and drained(n), what="two messages")
        assert n.stats().kinds["failed"].suppressed == 9
        now[0] = 1000.0 + 5 * 60  # the window (5 minutes) after the first message
        n.handle(failed(EAST))
        wait_for(lambda: len(hook.at("r-flap")) == 3, what="the next window's message")
    titles = [b["title"] for b in hook.at("r-flap")]
    assert titles == [
        f"Print failed on {EAST}",
        f"Print failed on {WEST}",
        f"Print failed on {EAST}",
    ]
    assert n.stats().kinds["failed"].sent == 3


# --- offline after N minutes -------------------------------------------------------------


def test_offline_only_after_n_minutes_and_not_when_back_before(hook: Webhook) -> None:
    minute = 0.05
    with notifier(
        route([hook.url("r-off")], ["offline"]),
        offline_after_minutes=4,
        minute_seconds=minute,
        back_online=True,
    ) as n:
        n.handle(PrinterOffline(EAST, state(EAST)))
        n.handle(PrinterOnline(EAST, state(EAST)))  # back at once: its timer is cancelled
        went = time.monotonic()
        n.handle(PrinterOffline(WEST, state(WEST)))
        n.handle(PrinterOffline(WEST, state(WEST)))  # the same outage, told twice
        wait_for(lambda: hook.at("r-off"), what="the offline message")
        assert time.monotonic() - went >= 4 * minute
        n.handle(PrinterOnline(WEST, state(WEST)))
        wait_for(lambda: len(hook.at("r-off")) == 2 and drained(n), what="back online")
    assert [b["title"] for b in hook.at("r-off")] == [
        f"{WEST} is offline",
        f"{WEST} is back online",
    ]
    assert n.stats().kinds["offline"].sent == 1


# --- secrets and dead URLs ---------------------------------------------------------------


def test_url_secrets_never_reach_logs_reprs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    failing = Webhook(status=500)
    secrets = ["Pa55word-Secret", "T0kenValue123", "HeaderSecret99"]
    url = (
        f"json://alice:Pa55word-Secret@127.0.0.1:{failing.port}/hooks/T0kenValue123"
        "?+X-Api-Key=HeaderSecret99"
    )
    for name in ("apprise", "urllib3", "bambulab"):
        caplog.set_level(logging.DEBUG, logger=name)
    try:
        config = NotifyConfig.from_dict({"routes": [route([url], ["failed"])]})
        with Notifier(config) as n:
            for serial in (EAST, WEST, SEED):
                n.handle(failed(serial))
            wait_for(lambda: n.stats().kinds["failed"].failed == 3, what="three failures")
            shown = repr(n) + repr(config) + repr(config.routes[0])
    finally:
        failing.close()
    assert len(failing.received) == 3  # the webhook was really called
    warnings = [r for r in caplog.records if "notification to" in r.getMessage()]
    assert len(warnings) == 1  # once a minute per URL
    assert "127.0.0.1" in warnings[0].getMessage()  # the URL is named, masked
    assert any(r.name.startswith(("apprise", "urllib3")) for r in caplog.records)
    with pytest.raises(ValueError, match="unknown event") as bad:
        NotifyConfig.from_dict({"routes": [route([url], ["explode"])]})
    with pytest.raises(ValueError, match="not a usable Apprise URL") as unusable:
        notifier(route(["nosuchscheme://T0kenValue123@x"], ["failed"]))
    for text in [caplog.text, shown, str(bad.value), str(unusable.value)]:
        for secret in secrets:
            assert secret not in text


def test_a_dead_webhook_never_blocks_handle_nor_the_other_urls(hook: Webhook) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(64)  # accepts connections into the backlog and never answers
    dead_url = f"json://127.0.0.1:{dead.getsockname()[1]}/dead"
    try:
        with notifier(
            route([dead_url], ["failed"]),
            route([hook.url("r-alive")], ["failed"]),
            queue_size=2,
            send_timeout_seconds=1.0,
        ) as n:
            started = time.monotonic()
            for number in range(50):  # 50 printers fail at once
                n.handle(failed(f"01P00A0000001{number:02d}"))
            took = time.monotonic() - started
            assert took < 0.5, f"handle() took {took:.3f} s for 50 events"
            stats = n.stats().kinds["failed"]
            assert stats.dropped >= 50 - 2 - 1  # the dead URL's queue holds 2, one in flight
            wait_for(lambda: hook.at("r-alive"), 2, "the live URL's first message")
            # ...while the dead URL's first send still waits for its timeout.
            assert n.stats().kinds["failed"].failed == 0
            wait_for(lambda: n.stats().kinds["failed"].failed >= 1, 5, "the dead send timed out")
            n.close(timeout=0.1)
    finally:
        dead.close()


# --- configuration -----------------------------------------------------------------------


def test_configuration_reads_toml_and_json_and_refuses_mistakes() -> None:
    toml = """
    [notify]
    rate_limit_minutes = 2
    offline_after_minutes = 10
    back_online = true

    [[notify.routes]]
    urls = ["json://127.0.0.1:9/a"]
    events = ["hms", "runout"]
    printers = ["east", "01P00A000000001"]
    min_severity = "fatal"
    """
    config = NotifyConfig.from_toml(toml)
    assert config.rate_limit_minutes == 2 and config.offline_after_minutes == 10
    assert config.back_online and config.minute_seconds == 60
    assert config.routes == (
        Route(
            ("json://127.0.0.1:9/a",),
            frozenset({"hms", "runout"}),
            frozenset({"east", "01P00A000000001"}),
            "fatal",
        ),
    )
    assert NotifyConfig.from_json(json.dumps({"notify": {"routes": []}})).routes == ()
    for bad, message in [
        ({"routes": [{"urls": [], "events": ["hms"]}]}, "at least one URL"),
        ({"routes": [{"urls": ["json://h/a"], "events": ["hms"], "min_severity": "meh"}]}, "meh"),
        ({"routes": [{"urls": ["json://h/a"], "events": "hms"}]}, "list of strings"),
        ({"routes": [{"urls": ["json://h/a"], "events": ["hms"], "extra": 1}]}, "extra"),
        ({"rate_limit_minutes": "5"}, "must be a number"),
        ({"offline_after_minutes": -1}, "negative"),
        ({"surprise": 1}, "surprise"),
    ]:
        with pytest.raises(ValueError, match=message):
            NotifyConfig.from_dict(bad)
