"""Imports point one way: net -> engine -> wal (ARCHITECTURE.md).

What: parse every module's imports with `ast` and check the direction, and that the pure half of
engine/core imports nothing that does I/O, reads a clock or draws random numbers. How it could fail:
one convenient import (a clock in the ledger, the engine in the WAL) and this test names it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMPURE_MODULES = {
    "os", "io", "sys", "time", "datetime", "random", "secrets", "uuid", "asyncio", "socket", "pathlib",
    "threading", "subprocess", "signal", "logging", "wal", "net", "aiohttp", "uvloop",
}  # fmt: skip


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


@pytest.mark.parametrize("path", sorted((ROOT / "engine").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_never_imports_net(path: Path) -> None:
    assert "net" not in {top(n) for n in imports_of(path)}


CORE_MODULES = sorted((ROOT / "engine" / "core").glob("*.py"))
RUNTIME_MODULES = sorted((ROOT / "engine" / "runtime").glob("*.py"))


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_does_no_io_and_never_imports_the_runtime(path: Path) -> None:
    """The folder is the rule: nothing in engine/core imports asyncio, os, time, wal, ..."""
    imported = imports_of(path)
    assert {top(n) for n in imported} & IMPURE_MODULES == set()
    assert {n for n in imported if n.startswith("engine.runtime")} == set()


def test_core_reads_no_clock() -> None:
    for path in CORE_MODULES:
        source = path.read_text()
        for clock in ("time.time(", "time.monotonic(", "time.time_ns(", "datetime.now(", "utcnow("):
            assert clock not in source, (path.name, clock)


def test_the_folders_hold_what_the_architecture_says() -> None:
    """engine/ itself holds only the two halves; every module sits in one of them."""
    assert sorted(p.name for p in (ROOT / "engine").glob("*.py")) == ["__init__.py"]
    assert len(CORE_MODULES) >= 10 and len(RUNTIME_MODULES) >= 8


@pytest.mark.parametrize("path", RUNTIME_MODULES, ids=lambda p: p.name)
def test_runtime_never_imports_net(path: Path) -> None:
    assert "net" not in {top(n) for n in imports_of(path)}
