"""Imports point one way: net -> engine -> wal (ARCHITECTURE.md).

What: parse every module's imports with `ast` and check the direction, and that the pure half of
engine/ imports nothing that does I/O, reads a clock or draws random numbers. How it could fail:
one convenient import (a clock in the ledger, the engine in the WAL) and this test names it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE_ENGINE = ("types", "commands", "results", "timefmt", "state", "ledger", "queries", "digest", "codec", "keys", "invariants")
IMPURE_MODULES = {"os", "io", "time", "datetime", "random", "secrets", "uuid", "asyncio", "socket", "pathlib", "threading", "wal", "net", "aiohttp"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", sorted((ROOT / "wal").glob("*.py")), ids=lambda p: p.name)
def test_wal_imports_neither_engine_nor_net(path: Path) -> None:
    assert {top(n) for n in imports_of(path)} & {"engine", "net"} == set()


@pytest.mark.parametrize("path", sorted((ROOT / "engine").glob("*.py")), ids=lambda p: p.name)
def test_engine_never_imports_net(path: Path) -> None:
    assert "net" not in {top(n) for n in imports_of(path)}


@pytest.mark.parametrize("name", PURE_ENGINE)
def test_pure_engine_modules_do_no_io(name: str) -> None:
    imported = {top(n) for n in imports_of(ROOT / "engine" / f"{name}.py")}
    allowed_time = name == "timefmt"  # time.gmtime converts a given instant; it reads no clock
    forbidden = IMPURE_MODULES - ({"time"} if allowed_time else set())
    assert imported & forbidden == set()
    runtime_half = {"engine.runtime", "engine.shard", "engine.recovery"}
    assert imports_of(ROOT / "engine" / f"{name}.py") & runtime_half == set()


def test_timefmt_reads_no_clock() -> None:
    source = (ROOT / "engine" / "timefmt.py").read_text()
    for clock in ("time.time(", "time.monotonic(", "time.time_ns(", "datetime.now(", "utcnow("):
        assert clock not in source
