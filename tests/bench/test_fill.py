"""bench/fill.py builds the recovery rows' ledger in-process: the deposits fund.lua sends.

What: fill a small data directory (customers x rounds), then recover it from its snapshot and,
with the snapshot removed, from the WAL alone.
How: bench.fill.fill on a tmp data dir (the real Runtime, fsync off), engine.runtime.recovery.
How it could fail: deposits that differ from fund.lua's (amounts, keys, customer ids), a snapshot
not covering the last record, or a snapshot whose restored state differs from the replayed one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import wal
from bench.fill import fill
from engine.core.digest import digest
from engine.runtime.recovery import recover


def test_fill_builds_fund_lua_deposits_and_a_snapshot_that_replays_the_same(tmp_path: Path) -> None:
    filled = asyncio.run(fill(tmp_path, customers=30, rounds=3, api_key="tly_" + "ab" * 24))
    assert (filled.deposits, filled.last_lsn, filled.snapshot_lsn) == (90, 92, 92)  # + 2 key records
    from_snapshot = recover(tmp_path, truncate_torn_tail=False)
    assert (from_snapshot.snapshot_lsn, from_snapshot.records_replayed) == (92, 0)
    project = from_snapshot.state.projects["default"]
    assert sorted(project.customers) == sorted(f"m-{n}" for n in range(30))
    customer = project.customers["m-7"]
    assert [b.total for b in customer.buckets] == [1000, 1, 1]
    assert [d.idempotency_key for d in customer.deposits or ()] == ["fund-0-m-7", "fund-x1-m-7", "fund-x2-m-7"]
    assert list(project.bucket_lsns) == list(range(3, 93))  # every deposit made one bucket
    for path in tmp_path.glob("snapshot-*.snap"):
        path.unlink()
    from_wal = recover(tmp_path, truncate_torn_tail=False)
    assert (from_wal.snapshot_lsn, from_wal.records_replayed) == (0, 92)
    assert digest(from_wal.state) == digest(from_snapshot.state)
    assert wal.load_newest_snapshot(tmp_path) is None
