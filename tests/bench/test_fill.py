"""bench/fill.py builds the recovery rows' ledger in-process: the deposits fund.lua sends.

What: fill a small data directory (customers x rounds), then recover it from its snapshot and,
with the snapshot removed, from the WAL alone.
How: bench.fill.fill on a tmp data dir (the real Runtime, fsync off), engine.runtime.recovery;
bench.fill.fill_direct (engine core only) against a Runtime fed the same commands (digests).
How it could fail: deposits that differ from fund.lua's (amounts, keys, customer ids), a snapshot
not covering the last record, a snapshot whose restored state differs from the replayed one, or a
direct fill whose state differs from the one the Runtime builds of the same commands.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import wal
from bench.fill import build_state, deposit, fill, fill_direct, key_commands
from engine.core.digest import digest
from engine.core.results import Applied
from engine.runtime import Runtime, RuntimeConfig
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


FIXED_MS = 1_796_000_000_000


def test_fill_direct_state_is_the_runtime_state_of_the_same_commands(tmp_path: Path) -> None:
    """fill_direct (engine core, no WAL) against the same commands submitted one by one through a
    Runtime whose clock stands still at the stamp fill_direct uses: equal digests, and a server's
    recovery over fill_direct's snapshot (no segments at all) restores that state."""
    api_key, admin_key = "tly_" + "ab" * 24, "tly_" + "cd" * 24
    filled = fill_direct(tmp_path / "direct", customers=12, rounds=3, api_key=api_key, admin_key=admin_key,
                         at_ms=FIXED_MS)  # fmt: skip
    assert (filled.deposits, filled.last_lsn, filled.snapshot_lsn) == (36, 38, 38)
    assert (tmp_path / "direct" / "admin-key").read_text() == admin_key + "\n"

    async def through_runtime() -> str:
        config = RuntimeConfig(data_dir=tmp_path / "runtime", fsync=False, shard_count=1,
                               snapshot_interval_records=0, snapshot_interval_s=0)  # fmt: skip
        runtime = await Runtime.open(config, clock=lambda: FIXED_MS)
        try:
            commands = [*key_commands(api_key, admin_key, 0)]
            commands += [deposit(n, r) for r in range(3) for n in range(12)]
            for command in commands:
                result = await runtime.submit(command)
                assert isinstance(result, Applied) and result.logged, result
            assert runtime.state.last_lsn == 38
            return digest(runtime.state)
        finally:
            await runtime.close()

    expected = asyncio.run(through_runtime())
    recovered = recover(tmp_path / "direct", truncate_torn_tail=False)
    assert (recovered.snapshot_lsn, recovered.records_replayed) == (38, 0)
    assert digest(recovered.state) == expected
    assert digest(build_state(12, 3, api_key, admin_key, FIXED_MS)) == expected
    customer = recovered.state.projects["default"].customers["m-5"]
    assert [(b.lsn, b.total) for b in customer.buckets] == [(8, 1000), (20, 1), (32, 1)]
    assert {b.created_at_ms for b in customer.entries} == {FIXED_MS}


def test_fill_direct_refuses_a_data_dir_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "wal-00000000000000000001.log").write_bytes(b"")
    with pytest.raises(RuntimeError, match="is not empty"):
        fill_direct(tmp_path, customers=1, rounds=1, api_key="tly_a", admin_key="tly_b", at_ms=FIXED_MS)


def test_cold_probe_touches_cold_customers_of_a_direct_fill(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench.cold_probe on a fill_direct snapshot (layout 3): every probed customer is cold until
    its first deduct; an operator mistake is one line on stderr and exit 2."""
    from bench.cold_probe import main as cold_probe

    fill_direct(tmp_path / "d", customers=40, rounds=2, api_key="tly_" + "ab" * 24, admin_key="tly_" + "cd" * 24,
                at_ms=1_775_563_200_000)  # fmt: skip
    assert wal.load_newest_snapshot(tmp_path / "d").version == 3  # type: ignore[union-attr]
    assert cold_probe([str(tmp_path / "d"), "--customers", "4"]) == 0
    out = capsys.readouterr().out
    assert "40 customers, 40 cold" in out and "4 customers (4 cold before)" in out
    assert cold_probe([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
