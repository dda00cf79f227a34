"""The benchmark suite still runs end to end: `python -m bench.run --smoke` on this machine.

What: every scenario row, the many-buckets, webhook and paired rows, the memory and recovery sections,
written to a results file.
How: run the suite as a subprocess (it starts its own bare baseline and `tally serve` on free
127.0.0.1 ports, drives them with wrk, stops them by PID), then read the markdown it wrote.
How it could fail: wrk missing (installed by bench/setup.sh; skipped if that is impossible), a
Lua script that reuses transaction ids or sends a consume before its freeze (4xx rows), a server
that never answers /health, or a suite that hangs (SMOKE_TIMEOUT_S: a guard against a hang, not a
speed check; how long the suite takes is bench/'s to report).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]
# A hang guard, several times what the smoke takes on a loaded 2-core machine (it starts ~20
# servers and runs wrk 1 s per row): slow CI hosts and the suite's other worker stay well inside it.
SMOKE_TIMEOUT_S = 300


def _ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 or shutil.which("sudo"):
        subprocess.run(["bash", str(ROOT / "bench" / "setup.sh")], capture_output=True, timeout=300)
    if not shutil.which("wrk"):
        pytest.skip("wrk is not installed and bench/setup.sh could not install it (needs root and apt)")


def _throughput_rows(text: str) -> dict[str, list[str]]:
    labels = {s.label for s in SCENARIOS}
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in labels:
            rows[cells[0]] = cells
    return rows


def test_smoke_run_writes_every_row_without_errors(tmp_path: Path) -> None:
    _ensure_wrk()
    done = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = list(tmp_path.glob("*-smoke.md"))
    assert len(results) == 1, list(tmp_path.iterdir())
    text = results[0].read_text()

    rows = _throughput_rows(text)
    assert set(rows) == {s.label for s in SCENARIOS}, sorted(rows)
    header = next(line for line in text.splitlines() if line.startswith("| scenario |"))
    columns = [c.strip() for c in header.strip().strip("|").split("|")]
    non2xx, socket_errors, rps = columns.index("non-2xx"), columns.index("sock err"), columns.index("req/s")
    for label, cells in rows.items():
        assert cells[non2xx] == "0", f"{label}: {cells[non2xx]} responses >= 400"
        assert cells[socket_errors] == "0", f"{label}: {cells[socket_errors]} socket errors"
        assert float(cells[rps].replace(",", "")) > 0, label
    # "vs bare" divides by its kind's reference baseline: the 2-process rows by baseline_post_2p,
    # never by the floor row that shares their kind (it gets a ratio of its own against it).
    by_name = {s.name: rows[s.label] for s in SCENARIOS}
    vs_bare = columns.index("vs bare")
    bare_2p = float(by_name["baseline_post_2p"][rps].replace(",", ""))
    for name in ("deduct_hot_w2", "baseline_post_2p_floor"):
        expected = float(by_name[name][rps].replace(",", "")) / bare_2p  # (req/s as printed: whole numbers)
        assert abs(float(by_name[name][vs_bare].rstrip("×")) - expected) <= 0.006, (name, by_name[name], expected)
    assert "## Many buckets" in text and "bystander c-1 while wrk hammers hot-0" in text
    webhook_rows = [line for line in text.splitlines() if line.startswith(("| none |", "| dead |", "| hang |"))]
    assert len(webhook_rows) == 3, webhook_rows
    paired = [line for line in text.splitlines()
              if line.startswith(("| deduct_hot vs ", "| deduct_hot_w2 vs ", "| baseline_post_2p_floor vs "))]  # fmt: skip
    assert len(paired) == 3, paired  # bench/paired.py: one connection count in --smoke, all three pairs
    assert "(floor, no target)" in paired[2], paired[2]
    assert "## Memory" in text and "bytes / customer" in text
    assert "## Recovery" in text and "full WAL replay" in text and "snapshot + WAL tail" in text
