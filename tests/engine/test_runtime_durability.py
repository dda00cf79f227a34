"""No answer leaves the runtime before the fdatasync of the log that holds what it shows.

What: a write, a write that only succeeds thanks to an in-flight deposit, a rejection that rests
on an in-flight deduct, an idempotent replay of an in-flight write and a read of state changed by
un-fsync'd writes -- all submitted to the real `Runtime` (no HTTP) while the log's fdatasync is
held shut. None of them may be done while it is shut; once it opens, each completes with the
value decided before the fsync.

How: `GatedLogFile` (tests/wal/faults.py) wraps the real `OsLogFile`; once armed, its fdatasync signals `entered` and
blocks (in the WAL writer's executor thread) on a `threading.Event` the test opens. The test waits
until the shard has decided every item (a sentinel write on the same shard is applied), then
gives the loop many turns and checks that no task is done and `durable_lsn` has not moved.

How it could fail: an answer released on apply instead of on durability (e.g.
`Durability.wait_durable` returning early, or a shard resolving items at or below a stale
`durable_lsn`), a read answered without waiting for the customer's last LSN, or a rejection /
replay that waits only for its own (nonexistent) LSN.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from engine.core.commands import Deduct, Deposit
from engine.core.results import Applied, CustomerResponse, Rejected
from engine.runtime import Runtime, RuntimeConfig
from tests.wal.faults import WAIT_S, Gate

T0_MS = 1_775_563_200_000  # a fixed clock: no timer ever falls due
P = "proj"
LOOP_TURNS = 200  # loop turns given to anything that would wrongly complete


async def _until(condition: Any, what: str) -> None:
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    pytest.fail(f"never happened: {what}")


def _deduct(customer_id: str, amount: int, transaction_id: str) -> Deduct:
    return Deduct(at_ms=0, project=P, customer_id=customer_id, amount=amount, transaction_id=transaction_id)


async def test_no_answer_before_its_fsync(tmp_path: Path) -> None:
    gate = Gate()
    config = RuntimeConfig(data_dir=tmp_path, snapshot_interval_records=0, snapshot_interval_s=0)
    runtime = await Runtime.open(config, clock=lambda: T0_MS, log_file_factory=gate.factory)
    try:
        durable = await runtime.submit(Deposit(at_ms=0, project=P, customer_id="c1", amount=100))
        assert isinstance(durable, Applied) and durable.body.total_amount == 100
        durable_lsn = runtime.durable_lsn
        assert durable_lsn == runtime.state.last_lsn == 1

        gate.close()
        tasks = await _submit_in_flight(runtime, gate)
        for _ in range(LOOP_TURNS):
            await asyncio.sleep(0)
        assert runtime.durable_lsn == durable_lsn, "the log became durable with the gate shut"
        assert runtime.state.last_lsn == 5  # deposit, deduct, sentinel deposit applied; not durable
        assert [name for name, task in tasks.items() if task.done()] == []

        gate.open()
        results = {name: await task for name, task in tasks.items()}
        assert runtime.durable_lsn == 5
        _check_results(results)
    finally:
        gate.open()
        await runtime.close()


async def _submit_in_flight(runtime: Runtime, gate: Gate) -> dict[str, asyncio.Task[Any]]:
    """Submit the in-flight writes, wait until the flusher is held at the gate, then submit the
    answers that rest on them, and wait until every one of them has been decided."""
    loop = asyncio.get_running_loop()
    tasks: dict[str, asyncio.Task[Any]] = {}
    tasks["deposit"] = loop.create_task(runtime.submit(Deposit(at_ms=0, project=P, customer_id="c1", amount=30)))
    await _until(lambda: runtime.state.last_lsn == 2, "the in-flight deposit applied")
    assert await loop.run_in_executor(None, gate.entered.wait, WAIT_S), "fdatasync never reached the gate"
    # 130 available only counting the un-fsync'd deposit:
    tasks["deduct"] = loop.create_task(runtime.submit(_deduct("c1", 120, "t-in-flight")))
    await _until(lambda: runtime.state.last_lsn == 3, "the in-flight deduct applied")
    tasks["rejected"] = loop.create_task(runtime.submit(_deduct("c1", 20, "t-too-much")))  # 10 left
    tasks["replay"] = loop.create_task(runtime.submit(_deduct("c1", 120, "t-in-flight")))
    tasks["read"] = loop.create_task(runtime.get_customer(P, "c1"))
    # A last write to the same customer (same shard, FIFO): once applied, all above were decided.
    tasks["sentinel"] = loop.create_task(runtime.submit(Deposit(at_ms=0, project=P, customer_id="c1", amount=1)))
    await _until(lambda: runtime.state.last_lsn == 4, "the sentinel applied")
    # And one more on another customer, logged after everything above.
    tasks["other"] = loop.create_task(runtime.submit(Deposit(at_ms=0, project=P, customer_id="c2", amount=7)))
    await _until(lambda: runtime.state.last_lsn == 5, "the other deposit applied")
    return tasks


def _check_results(results: dict[str, Any]) -> None:
    deposit, deduct, rejected = results["deposit"], results["deduct"], results["rejected"]
    assert isinstance(deposit, Applied) and deposit.logged
    assert (deposit.body.total_amount, deposit.body.added_amount) == (130, 30)
    assert isinstance(deduct, Applied) and deduct.logged
    assert (deduct.body.deducted_amount, deduct.body.is_idempotent_replay) == (120, False)
    assert isinstance(rejected, Rejected) and rejected.code == "insufficient_balance", rejected
    replay = results["replay"]
    assert isinstance(replay, Applied) and not replay.logged
    assert (replay.body.deducted_amount, replay.body.is_idempotent_replay) == (120, True)
    read = results["read"]
    assert isinstance(read, CustomerResponse)
    balance = read.balance
    assert (balance.total, balance.used, balance.frozen, balance.available) == (130, 120, 0, 10)
    assert isinstance(results["sentinel"], Applied) and results["sentinel"].body.total_amount == 131
    assert isinstance(results["other"], Applied) and results["other"].body.total_amount == 7
