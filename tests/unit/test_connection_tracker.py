"""The connection's status machine (sans-IO) and the report periods behind "stale"."""

from __future__ import annotations

import dataclasses

import pytest

from bambulab.models.events import (
    Connected,
    ConnectionFailed,
    ConnectionLost,
    ConnectionStatus,
    Reconnected,
    RetryScheduled,
)
from bambulab.models.printer import MODELS, detect_model
from bambulab.protocol.events import ConnectionTracker
from bambulab.protocol.mqtt import STALE_AFTER, stale_after

BROKER = "the Bambu cloud broker 127.0.0.1:8883"


def test_first_connect_after_two_failed_attempts() -> None:
    tracker = ConnectionTracker(BROKER, now=100.0)
    assert tracker.status == ConnectionStatus("connecting", 100.0, attempt=1, broker=BROKER)
    [retry] = tracker.retry("connection refused", now=100.2, delay=0.5)
    assert isinstance(retry, RetryScheduled)
    assert (retry.status.state, retry.status.attempt) == ("connecting", 2)
    assert retry.status.next_retry == pytest.approx(100.7)
    tracker.trying()
    assert tracker.status.next_retry is None and tracker.status.attempt == 2
    tracker.retry("connection refused", now=100.8, delay=1.0)
    [up] = tracker.connected(now=101.9)
    assert type(up) is Connected  # the first session: not a reconnect
    assert (up.status.state, up.status.attempt, up.status.connects) == ("connected", 0, 1)
    assert up.status.since == 101.9 and up.status.next_retry is None
    assert up.status.last_error == "connection refused"  # kept, as history


@pytest.mark.parametrize(
    ("failures", "attempts"),
    [(0, []), (1, [2]), (4, [2, 3, 4, 5])],
)
def test_an_outage_counts_reconnect_attempts_from_one(failures: int, attempts: list[int]) -> None:
    tracker = ConnectionTracker(BROKER, now=0.0)
    tracker.connected(now=1.0)
    [lost] = tracker.lost("connection lost", now=50.0, delay=0.5)
    assert isinstance(lost, ConnectionLost)
    assert lost.status == ConnectionStatus(
        "reconnecting", 50.0, 1, 50.5, "connection lost", connects=1, broker=BROKER
    )
    seen = []
    for n in range(failures):
        tracker.trying()
        [retry] = tracker.retry("connection refused", now=51.0 + n, delay=2.0)
        assert retry.status.since == 50.0  # down since the loss, across every retry
        assert retry.status.next_retry == 53.0 + n
        seen.append(retry.status.attempt)
    assert seen == attempts
    [back] = tracker.connected(now=60.0)
    assert isinstance(back, Reconnected) and isinstance(back, Connected)
    assert (back.status.connects, back.status.attempt, back.status.since) == (2, 0, 60.0)


def test_giving_up_and_closing_end_the_story() -> None:
    tracker = ConnectionTracker(BROKER, now=0.0)
    [failed] = tracker.failed("refused the credentials", now=0.5)
    assert isinstance(failed, ConnectionFailed) and failed.status.state == "failed"
    assert tracker.retry("late news", now=1.0, delay=1.0) == []
    assert tracker.failed("again", now=1.0) == []
    tracker.closed(now=2.0)
    assert tracker.status.state == "failed"  # why it ended stays readable
    other = ConnectionTracker(BROKER, now=0.0)
    other.connected(now=0.1)
    other.closed(now=3.0)
    assert (other.status.state, other.status.since) == ("closed", 3.0)


def test_a_status_is_a_snapshot() -> None:
    tracker = ConnectionTracker(BROKER, now=0.0)
    before = tracker.status
    tracker.connected(now=1.0)
    assert before.state == "connecting" and tracker.status.state == "connected"
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.state = "connected"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("serial", "model", "limit"),
    [
        ("00M09C386175827", None, 10.0),  # X1 Carbon: a full report every second or two
        ("03W00X000000001", None, 10.0),  # X1E
        ("01S00C000000001", None, 60.0),  # P1P: only changes
        ("01P09C473446613", None, 60.0),  # P1S
        ("03008B413894224", None, 60.0),  # A1 mini
        ("", "O1D", 60.0),  # H2D
        ("ZZZ", None, 60.0),  # unknown: the patient choice
    ],
)
def test_stale_after_follows_the_report_style(serial: str, model: str | None, limit: float) -> None:
    assert stale_after(detect_model(serial, model).report_style) == limit


def test_every_model_has_a_report_period() -> None:
    assert {m.report_style for m in MODELS} <= set(STALE_AFTER)
