"""Power loss under the real Runtime: every acknowledged write survives, nothing else half does.

What: acknowledged deposits and deducts (idempotency keys / transaction ids, several customers
and shards), then more writes whose batch is written but whose fdatasync is held; the power goes
(un-synced bytes dropped, or a seeded-random prefix of them kept). The runtime is closed without
any further sync (its writer fails on the dead "disk"), the crash is applied to the files, and a
new Runtime recovers. Every acknowledged write must be there (resending it is an idempotent
replay with its original body); of the in-flight writes exactly those whose frames the crash kept
whole are there (a prefix in LSN order), and a partial last frame is reported and cut.

How: `tests/wal/faults.py` PowerLoss through `Runtime.open(log_file_factory=...)`, a fixed clock
(no timers), `engine.runtime.recovery.recover` and `Runtime.open` on the crashed directory.
SIGKILL campaigns (test_crash_campaign.py) keep the page cache, so they cannot catch a missing
fsync; this can (tests/wal/test_power_loss.py shows it with fsync=False).

How it could fail: an answer sent before its fdatasync, recovery keeping a torn frame or losing
a whole one, a resend of an acknowledged op applied twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from engine.core.commands import Command, Deduct, Deposit
from engine.core.results import Applied
from engine.runtime import Runtime, RuntimeConfig
from engine.runtime.errors import Unavailable
from engine.runtime.recovery import recover
from tests.wal.faults import CRASH_MODES, PowerLoss
from wal.frame import FRAME_OVERHEAD, FRAME_TRAILER

T0_MS = 1_775_563_200_000
P = "proj"
CUSTOMERS = 6
ACKED_ROUNDS = 3
IN_FLIGHT = 10
WAIT_S = 10.0


def _ops(tag: str, count: int) -> list[Command]:
    """Deposits with idempotency keys and small deducts, spread over the customers."""
    ops: list[Command] = []
    for i in range(count):
        customer_id = f"c{i % CUSTOMERS}"
        if i % 3 == 2 and i >= CUSTOMERS:  # every customer has a deposit by then
            ops.append(Deduct(at_ms=0, project=P, customer_id=customer_id, amount=1, transaction_id=f"{tag}-d{i}"))
        else:
            ops.append(Deposit(at_ms=0, project=P, customer_id=customer_id, amount=10 + i, idempotency_key=f"{tag}-k{i}"))
    return ops


def _config(data_dir: Path) -> RuntimeConfig:
    return RuntimeConfig(data_dir=data_dir, shard_count=3, snapshot_interval_records=0, snapshot_interval_s=0)


async def _run_and_crash(data_dir: Path, plan: PowerLoss) -> tuple[dict[Command, Any], list[Command], int]:
    """Acknowledged ops, then in-flight ops crashed mid-fsync. Returns (acked -> body, in-flight, durable lsn)."""
    runtime = await Runtime.open(_config(data_dir), clock=lambda: T0_MS, log_file_factory=plan.factory)
    acked: dict[Command, Any] = {}
    try:
        for round_ in range(ACKED_ROUNDS):
            ops = _ops(f"a{round_}", 12)
            results = await asyncio.gather(*(runtime.submit(op) for op in ops))
            for op, result in zip(ops, results, strict=True):
                assert isinstance(result, Applied) and result.logged, (op, result)
                acked[op] = result.body
        durable_lsn = runtime.durable_lsn
        assert durable_lsn == runtime.state.last_lsn == len(acked)
        plan.hold()
        in_flight = _ops("f", IN_FLIGHT)
        tasks = [asyncio.ensure_future(runtime.submit(op)) for op in in_flight]
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, plan.held.wait, WAIT_S), "no batch reached fdatasync"
        plan.crash()
        plan.release()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(outcome, Unavailable) for outcome in outcomes), outcomes  # none acknowledged
        assert runtime.durable_lsn == durable_lsn
    finally:
        plan.release()
        await runtime.close()
    plan.apply()
    return acked, in_flight, durable_lsn


async def _resend(runtime: Runtime, op: Command) -> Any:
    result = await runtime.submit(op)
    assert isinstance(result, Applied), (op, result)
    return result.body


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", CRASH_MODES)
async def test_acknowledged_writes_survive_a_power_loss(tmp_path: Path, mode: str, seed: int) -> None:
    plan = PowerLoss(mode, seed)
    acked, in_flight, durable_lsn = await _run_and_crash(tmp_path, plan)

    found = recover(tmp_path, truncate_torn_tail=False)  # read-only look first
    extra = found.state.last_lsn - durable_lsn
    assert 0 <= extra <= IN_FLIGHT
    if mode == "drop":
        assert (extra, found.torn) == (0, None)
    assert (found.torn is not None) == _kept_a_partial_frame(plan)

    runtime = await Runtime.open(_config(tmp_path), clock=lambda: T0_MS + 1)
    try:
        assert runtime.state.last_lsn == durable_lsn + extra  # the torn frame was cut, not kept
        for op, body in acked.items():
            again = await _resend(runtime, op)
            assert again.is_idempotent_replay is True, op
            assert _comparable(again) == _comparable(body), op
        replays = [(await _resend(runtime, op)).is_idempotent_replay for op in in_flight]
    finally:
        await runtime.close()
    # Each in-flight op logs one record: exactly the `extra` whole frames the crash kept are
    # there (a resend replays them), every other one is absent (a resend applies it fresh).
    assert sum(replays) == extra, replays


def _comparable(body: Any) -> Any:
    """A response without the fields a replay may legitimately change."""
    fields = {name: getattr(body, name) for name in body.__struct_fields__}
    fields.pop("is_idempotent_replay")
    fields.pop("total_amount", None)  # a deposit replay reports the wallet's total now
    return fields


def _kept_a_partial_frame(plan: PowerLoss) -> bool:
    """True when the bytes the crash kept end inside a frame (recovery must report a torn tail)."""
    kept = b"".join(plan.kept.values())
    offset = 0
    while offset < len(kept):
        if len(kept) - offset < FRAME_OVERHEAD:
            return True
        length = FRAME_TRAILER.unpack_from(kept, offset + 4)[0]
        offset += FRAME_OVERHEAD + length
    return offset != len(kept)
