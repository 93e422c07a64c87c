"""The sans-IO layers never import I/O modules (DESIGN.md, layers)."""

from __future__ import annotations

import ast
from pathlib import Path

import bambulab

FORBIDDEN = {
    "asyncio",
    "socket",
    "ssl",
    "ftplib",
    "httpx",
    "paho",
    "uvicorn",
    "fastapi",
    "anyio",
    # Sans-IO code is driven by one owner thread; it neither locks nor spawns.
    "threading",
    "concurrent",
    "_thread",
}
ROOT = Path(bambulab.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_protocol_and_models_do_no_io() -> None:
    checked = 0
    for package in ("protocol", "models"):
        for path in (ROOT / package).rglob("*.py"):
            bad = imported_modules(path) & FORBIDDEN
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
            checked += 1
    assert checked >= 6


def relative_imports(path: Path) -> set[str]:
    """The sibling modules ``path`` imports (``from .x import ...``, even inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1
    }


def test_the_simulator_classes_do_not_know_their_command_line() -> None:
    sim = ROOT / "sim"
    # server (the cloud) <- live (cloud + brokers + printers) <- command (bambu sim).
    assert not relative_imports(sim / "server.py") & {"live", "command"}
    assert "command" not in relative_imports(sim / "live.py")
    assert {"live", "server"} <= relative_imports(sim / "command.py")


def test_the_vocabulary_imports_nothing() -> None:
    """The CLI offers its words at start-up: importing it must cost nothing (no pydantic)."""
    assert imported_modules(ROOT / "vocabulary.py") <= {"__future__"}
    assert not relative_imports(ROOT / "vocabulary.py")
