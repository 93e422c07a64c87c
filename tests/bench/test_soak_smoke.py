"""The soak benchmark in miniature, so the script cannot rot: every fault kind once.

``bench/soak.py`` runs as a user would run it (a subprocess), with a small
fleet, a short fault phase and a fault every 1.5 s. It must exit 0 (every
invariant held: state equal to the simulator's truth, nothing executed twice,
every fault survived, descriptors and threads flat) and its JSON report must
show each fault kind injected and survived, and traffic of every kind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KINDS = {
    "broker_restart",
    "drop_connections",
    "stall",
    "malformed",
    "offline",
    "http_5xx",
    "http_429",
}


def test_a_short_soak_survives_every_fault(tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    command = [
        sys.executable,
        str(ROOT / "bench" / "soak.py"),
        "--minutes", "0.15",
        "--baseline-seconds", "2",
        "--printers", "8",
        "--fault-interval", "1.5",
        "--max-downtime", "0.5",
        "--survive-seconds", "15",
        "--settle", "1",
        "--warmup-seconds", "0",
        "--sample-seconds", "0.5",
        # A few seconds cannot tell a leak from the allocator settling: only a
        # gross one counts here; the 10-minute run holds the real tolerance.
        "--rss-tolerance-mib", "32",
        "--json", str(report),
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASS: every invariant held" in run.stdout
    result = json.loads(report.read_text())
    faults = result["faults"]
    assert set(faults) == KINDS
    for kind, counts in faults.items():
        assert counts["injected"] >= 1, kind
        assert counts["survived"] == counts["injected"], kind
    assert set(result["malformed_payloads"]) == {
        "not_json", "wrong_types", "deep", "noise", "empty", "not_object"
    }  # fmt: skip
    assert result["commands"]["confirmed"] > 0
    assert result["http"]["ok_after_retry"] > 0  # the 5xx and 429 were retried, not failed
    assert result["executed"]["executed_twice"] == 0
    assert result["state"]["equal_after_final_refresh"] == result["state"]["printers"] == 8
    assert result["mqtt_connects"] >= 3  # one restart and one cut at least
    latency = result["latency"]
    assert latency["command_rtt_ms"]["n_baseline"] > 0
    assert latency["report_lag_ms"]["n_baseline"] > 0
