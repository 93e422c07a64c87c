"""The connection's pure pieces: backoff, the P1P's pushall ration, fresh errors, waiting rules."""

from __future__ import annotations

import concurrent.futures
import json
import random
import threading

import pytest

from bambulab.errors import CertificatePinMismatchError, MQTTAuthenticationError
from bambulab.mqtt.core import PUSHALL_MIN_INTERVAL_P1P, Backoff, Printer, fresh, result_of


def test_backoff_doubles_up_to_its_maximum_with_bounded_jitter() -> None:
    exact = Backoff(initial=0.5, maximum=30.0, jitter=0.0)
    assert [exact.delay(n, random.Random(1)) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert exact.delay(20, random.Random(1)) == 30.0
    jittery = Backoff(initial=1.0, jitter=0.3)
    rng = random.Random(7)
    delays = [jittery.delay(1, rng) for _ in range(500)]
    assert min(delays) >= 0.7 and max(delays) <= 1.3
    assert max(delays) - min(delays) > 0.4  # it does spread reconnecting clients


def test_a_p1p_gets_one_pushall_per_five_minutes_and_others_any() -> None:
    p1p = Printer("01S00A000000001")
    assert p1p.may_pushall(1000.0)
    p1p.last_pushall = 1000.0
    assert not p1p.may_pushall(1000.0 + PUSHALL_MIN_INTERVAL_P1P - 1)
    assert p1p.may_pushall(1000.0 + PUSHALL_MIN_INTERVAL_P1P)
    x1c = Printer("00M00A000000001")
    x1c.last_pushall = 1000.0
    assert x1c.may_pushall(1000.5)


def test_a_fresh_error_is_a_new_equal_exception_without_the_old_traceback() -> None:
    try:
        raise CertificatePinMismatchError(
            "changed", serial="S", pinned="aa", offered="bb", pin_file="/p"
        )
    except CertificatePinMismatchError as exc:
        original = exc
    copy = fresh(original)
    assert copy is not original and type(copy) is CertificatePinMismatchError
    assert (str(copy), copy.serial, copy.pinned, copy.offered, copy.pin_file) == (
        "changed",
        "S",
        "aa",
        "bb",
        "/p",
    )
    assert copy.__traceback__ is None and original.__traceback__ is not None
    assert isinstance(fresh(MQTTAuthenticationError("no", serial="S")), MQTTAuthenticationError)


def test_waiting_on_the_network_thread_is_refused_not_a_deadlock() -> None:
    future: concurrent.futures.Future[int] = concurrent.futures.Future()
    outcome: list[BaseException] = []

    def on_network_thread() -> None:
        try:
            result_of(future, 60)
        except RuntimeError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=on_network_thread, name="bambu-mqtt-test")
    thread.start()
    thread.join(2)
    assert not thread.is_alive() and outcome
    future.set_result(3)
    assert result_of(future, 1) == 3


def test_a_future_nobody_settles_ends_in_an_error_not_a_hang() -> None:
    import bambulab.mqtt.core as core

    future: concurrent.futures.Future[int] = concurrent.futures.Future()
    saved = core.BACKSTOP
    core.BACKSTOP = 0.1
    try:
        with pytest.raises(core.TransportError, match="stopped answering"):
            result_of(future, 0.1)
    finally:
        core.BACKSTOP = saved


def test_two_connections_do_not_count_sequence_ids_alike() -> None:
    """Replies to every client of a printer travel on one topic: numbers must not collide."""
    from bambulab.mqtt.core import Connection, Endpoint

    def first_ids() -> list[int]:
        conn = Connection(Endpoint("127.0.0.1", 1, "u", "p"), ["S"], on_event=lambda e: None)
        ids = [int(conn._sequence()) for _ in range(3)]
        conn.close()
        return ids

    a, b = first_ids(), first_ids()
    assert a[1] == a[0] + 1 and a[2] == a[1] + 1  # one counter per connection
    assert abs(a[0] - b[0]) > 3, (a, b)


def test_get_version_naming_the_model_sets_how_its_reports_are_merged() -> None:
    # A serial prefix nobody knows: read as partial reports until the printer names itself.
    printer = Printer("ZZZ00A000000001")
    assert printer.state.model.code == "" and not printer.stream.full_reports
    reply = {
        "info": {
            "command": "get_version",
            "sequence_id": "7",
            "module": [
                {"name": "ota", "sw_ver": "01.09.00.00", "product_name": "Bambu Lab X1-Carbon"}
            ],
        }
    }
    printer.process(json.dumps(reply).encode())
    assert printer.state.model.code == "BL-P001"
    assert printer.stream.full_reports
    printer.process(json.dumps({"print": {"command": "push_status", "nozzle_temper": 30}}).encode())
    # A full-report model replaces top-level keys: the report stands as sent.
    assert printer.state.nozzle_temp == 30.0
