"""Simulated printers: the state machine behind each printer's MQTT topics.

A :class:`SimPrinter` plays one printer of any family in PROTOCOL.md §2.6:
it answers the requests of §2.4, heats and cools, runs jobs through their
stages, burns filament from its AMS trays, raises HMS codes, and reports in
its family's style (X1 full ``push_status`` every tick; P1, A1 and newer
deltas of what changed). The network host (``mqtt_host``) connects it to
brokers; tests drive it directly with a fake clock::

    printer = SimPrinter("01P00A000000001", "C12", clock=fake_clock)
    printer.handle_request(b'{"pushing": {"command": "pushall", "sequence_id": "1"}}')
    printer.tick()

Modules: :mod:`.machine` (requests and report stream), :mod:`.state`
(physics and job logic), :mod:`.commands` (one handler per command),
:mod:`.report` (the wire object), :mod:`.delta`, :mod:`.ams`, :mod:`.job`,
:mod:`.thermal`, :mod:`.profiles`.
"""

from __future__ import annotations

from .machine import ERR_VERIFY_FAILED, SignatureVerifier, SimPrinter
from .profiles import Profile, profile_for

__all__ = ["ERR_VERIFY_FAILED", "Profile", "SignatureVerifier", "SimPrinter", "profile_for"]
