"""Runtime snapshots: a forked child writes the state at one LSN while writes go on.

What: take snapshots in the middle of concurrent writes, stop, then recover twice: from the newest
snapshot + WAL tail, and from the WAL alone (snapshots removed). How: the real Runtime on a tmp
data dir. How it could fail: a snapshot published before its LSN was durable, a cut that is not
consistent (state of two LSNs), or a child that leaves the data-dir lock held.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import wal
from engine.core.commands import CreateApiKey, Deduct, Deposit
from engine.core.digest import digest
from engine.runtime import Runtime, RuntimeConfig
from engine.runtime.recovery import recover


async def _write_some(runtime: Runtime, start: int, count: int) -> None:
    results = await asyncio.gather(*(
        runtime.submit(Deduct(at_ms=runtime.clock_ms(), project="p", customer_id=f"c{i % 7}", amount=1,
                              transaction_id=f"t{i}"))
        for i in range(start, start + count)
    ))
    assert all(type(result).__name__ == "Applied" for result in results)


async def test_snapshot_during_writes_recovers_the_same_digest(tmp_path: Path) -> None:
    config = RuntimeConfig(data_dir=tmp_path, snapshot_interval_records=0, snapshot_interval_s=0)
    runtime = await Runtime.open(config)
    await runtime.submit(CreateApiKey(at_ms=runtime.clock_ms(), project="p", key_id="k", key_hash="h"))
    for i in range(7):
        await runtime.submit(Deposit(at_ms=runtime.clock_ms(), project="p", customer_id=f"c{i}", amount=10_000))
    snapshot_lsns = []
    for round_ in range(3):
        writes = asyncio.ensure_future(_write_some(runtime, round_ * 300, 300))
        await asyncio.sleep(0)
        snapshot_lsns.append(await runtime.take_snapshot())
        await writes
    final_digest, final_lsn = digest(runtime.state), runtime.state.last_lsn
    await runtime.close()

    assert snapshot_lsns[0] >= 8 and snapshot_lsns[0] < snapshot_lsns[1] < snapshot_lsns[2]
    assert [lsn for lsn, _ in wal.snapshot.list_snapshots(tmp_path)] == snapshot_lsns[-2:]  # keep=2
    from_snapshot = recover(tmp_path, truncate_torn_tail=False)
    assert from_snapshot.snapshot_lsn == snapshot_lsns[-1]
    assert (digest(from_snapshot.state), from_snapshot.state.last_lsn) == (final_digest, final_lsn)
    for _, path in wal.snapshot.list_snapshots(tmp_path):
        path.unlink()
    from_log = recover(tmp_path, truncate_torn_tail=False)
    assert from_log.snapshot_lsn == 0 and from_log.records_replayed == final_lsn
    assert digest(from_log.state) == final_digest


async def test_data_dir_lock_is_released_with_the_server_not_the_child(tmp_path: Path) -> None:
    runtime = await Runtime.open(RuntimeConfig(data_dir=tmp_path, snapshot_interval_records=0, snapshot_interval_s=0))
    await runtime.submit(CreateApiKey(at_ms=runtime.clock_ms(), project="p", key_id="k", key_hash="h"))
    await runtime.take_snapshot()
    await runtime.close()
    again = await Runtime.open(RuntimeConfig(data_dir=tmp_path))  # would raise DataDirLocked
    assert again.state.last_lsn == 1
    await again.close()


async def test_a_damaged_newest_snapshot_is_set_aside_and_never_counted_again(tmp_path: Path) -> None:
    """Fallback to the older snapshot, then the damaged file leaves retention's count, so a later
    snapshot + prune (keep=2) keeps the sound older one instead of deleting it."""
    config = RuntimeConfig(data_dir=tmp_path, snapshot_interval_records=0, snapshot_interval_s=0)
    runtime = await Runtime.open(config)
    await runtime.submit(CreateApiKey(at_ms=runtime.clock_ms(), project="p", key_id="k", key_hash="h"))
    older = await runtime.take_snapshot()
    await runtime.submit(Deposit(at_ms=runtime.clock_ms(), project="p", customer_id="c", amount=5))
    newest = await runtime.take_snapshot()
    await runtime.close()
    newest_path = tmp_path / wal.snapshot.snapshot_name(newest)
    raw = bytearray(newest_path.read_bytes())
    raw[-1] ^= 0xFF
    newest_path.write_bytes(bytes(raw))

    runtime = await Runtime.open(config)
    assert runtime.recovered.snapshot_lsn == older and runtime.state.last_lsn == newest
    assert not newest_path.exists() and newest_path.with_name(newest_path.name + ".damaged").exists()
    await runtime.submit(Deposit(at_ms=runtime.clock_ms(), project="p", customer_id="c", amount=5))
    latest = await runtime.take_snapshot()
    await runtime.close()
    assert [lsn for lsn, _ in wal.snapshot.list_snapshots(tmp_path)] == [older, latest]
