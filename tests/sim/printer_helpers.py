"""Helpers for the simulated-printer tests (no tests here).

``Rig`` wraps a :class:`SimPrinter` with a hand-driven clock and a client-side
view merged from every report, using a merge written here from PROTOCOL.md
§2.3 (nested objects merged, lists of ``id`` items merged by id, anything
else replaced), independent of the library's own merge.
"""

from __future__ import annotations

import json
from typing import Any

from bambulab.sim.printer import SimPrinter

SERIALS = {
    "BL-P001": "00M09A350100001",
    "BL-P002": "00W09A350100001",
    "C13": "03W09A350100001",
    "C11": "01S09A350100001",
    "C12": "01P09A350100001",
    "N1": "03009A350100001",
    "N2S": "03909A350100001",
    "N9": "26A09A350100001",
    "N6": "20P09A350100001",
    "N7": "22E09A350100001",
    "O1D": "09409A350100001",
    "O1S": "09309A350100001",
    "O1C": "31B09A350100001",
}


class Clock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Merge a partial report into a state, in place (PROTOCOL.md §2.3)."""
    for key, value in update.items():
        current = into.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merge(current, value)
        elif isinstance(current, list) and _by_id(value) and _by_id(current):
            index = {str(item["id"]): item for item in current}
            for item in value:
                old = index.get(str(item["id"]))
                if old is None:
                    current.append(json.loads(json.dumps(item)))
                else:
                    merge(old, item)
        else:
            into[key] = json.loads(json.dumps(value))


def _by_id(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(i, dict) and "id" in i for i in value)
    )


class Rig:
    """A printer, its clock, and what a client that saw every report would know."""

    def __init__(self, model: str = "C12", *, seed: int = 1, **options: Any) -> None:
        self.clock = Clock()
        self.printer = SimPrinter(SERIALS[model], model, clock=self.clock, seed=seed, **options)
        self.view: dict[str, Any] = {}
        self.reports: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self._seq = 0
        self.receive([self.printer.full_report()])

    def receive(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            body = message.get("print", {})
            if body.get("command") == "push_status":
                self.reports.append(message)
                merge(
                    self.view,
                    {k: v for k, v in body.items() if k not in ("command", "msg", "sequence_id")},
                )
            else:
                self.replies.append(message)

    def raw(self, payload: bytes) -> list[dict[str, Any]]:
        out = self.printer.handle_request(payload)
        self.receive(out)
        return out

    def send(self, family: str, command: str, **fields: Any) -> dict[str, Any]:
        """Send a command; returns the reply body (``{}`` when there was none)."""
        self._seq += 1
        seq = str(self._seq)
        payload = {family: {"command": command, "sequence_id": seq, **fields}}
        out = self.raw(json.dumps(payload).encode())
        for message in out:
            body = message.get(family, {})
            if body.get("sequence_id") == seq and body.get("command") == command:
                return dict(body)
        return {}

    def ok(self, family: str, command: str, **fields: Any) -> dict[str, Any]:
        reply = self.send(family, command, **fields)
        assert reply.get("result", "").lower() == "success", reply
        return reply

    def refused(self, family: str, command: str, **fields: Any) -> str:
        reply = self.send(family, command, **fields)
        assert reply.get("result") == "failed", reply
        assert reply.get("reason"), reply
        return str(reply["reason"])

    def run(self, seconds: float, step: float = 1.0) -> list[dict[str, Any]]:
        """Tick every ``step`` seconds for ``seconds``; returns the reports."""
        out: list[dict[str, Any]] = []
        elapsed = 0.0
        while elapsed < seconds - 1e-9:
            self.clock.now += step
            elapsed += step
            messages = self.printer.tick()
            self.receive(messages)
            out.extend(messages)
        return out

    def run_until(self, predicate: Any, limit: float = 20_000, step: float = 5.0) -> float:
        """Tick until ``predicate(truth)`` holds; returns the simulated seconds it took."""
        waited = 0.0
        while not predicate(self.printer.truth()):
            assert waited < limit, f"condition not reached in {limit} s"
            self.run(step, step)
            waited += step
        return waited

    @property
    def truth(self) -> dict[str, Any]:
        return self.printer.truth()

    def start(self, file: str = "Benchy.3mf", **fields: Any) -> None:
        scheme = "ftp:///" if self.printer.profile.family == "H2" else "file:///sdcard/"
        self.ok(
            "print",
            "project_file",
            param="Metadata/plate_1.gcode",
            url=scheme + file,
            file=file,
            md5="",
            project_id="0",
            profile_id="0",
            task_id="0",
            subtask_id="0",
            subtask_name=fields.pop("subtask_name", "My Benchy"),
            **fields,
        )
