"""Make the golden data directory with the code of the released format (commit d80f33e).

What: a small, deterministic history written by the OLD engine through its own `Runtime` with a
fake clock, then the old `tally replay` output of that directory, with its snapshot and without
it, saved beside it as `expected-v1.json`. `test_golden.py` replays the committed directory with
today's code and must print the same digest, records and last_lsn.

How it was made (run from the repository root; it refuses to run against the new engine):

    git worktree add /tmp/golden-src d80f33e
    PYTHONPATH=/tmp/golden-src .venv/bin/python tests/golden/make_golden.py tests/golden/data-v1
    git worktree remove /tmp/golden-src

The history covers: API keys (two projects, one revoked), deposits with a window (starts /
expires), metadata, name, email, description, several wallets and sources, an idempotency key
and its replay (nothing logged), deducts (one replayed, one rejected), freezes without TTL then
consume (with overage, and of zero) or unfreeze, freezes with `unfreeze_after_s` and
`consume_after_s` settled by the timers (AutoSettle), bucket expiry (ExpireBuckets), one snapshot
in the middle and a WAL tail after it, and client stamps that go back a few ms in LSN order (what
the old handlers produced when two requests on different shards raced: they stamped before the
shard queue), once before the snapshot and once in the tail.

How it could fail: run against the wrong code (checked at start), a clock read the script does
not control (the old runtime's background timer loop reads the fake clock too, but every timer
is fired explicitly right after the clock moves, before any await, so the loop finds nothing).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from engine.commands import Consume, Deduct, Deposit, Freeze, RevokeApiKey, Unfreeze
from engine.results import Applied, Rejected

import engine.runtime as old_runtime

T0_MS = 1_775_563_200_000  # 2026-04-07T12:00:00.000Z
SOURCE_COMMIT = "d80f33e"


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = T0_MS

    def __call__(self) -> int:
        return self.now_ms


def _check_old_code() -> None:
    source = Path(old_runtime.__file__)
    if source.name != "runtime.py" or not hasattr(old_runtime, "Runtime"):
        sys.exit(f"make_golden: needs the engine of {SOURCE_COMMIT} on PYTHONPATH, got {source}")


async def _ok(runtime: object, command: object, *, logged: bool = True) -> object:
    result = await runtime.submit(command)  # type: ignore[attr-defined]  # the d80f33e Runtime, imported from the old tree
    assert isinstance(result, Applied) and result.logged == logged, (command, result)
    return result.body


async def _rejected(runtime: object, command: object, code: str) -> None:
    result = await runtime.submit(command)  # type: ignore[attr-defined]  # the d80f33e Runtime, imported from the old tree
    assert isinstance(result, Rejected) and result.code == code, (command, result)


async def _before_snapshot(runtime: object, clock: FakeClock) -> None:
    """Keys, deposits, deducts, freezes settled by hand; the first backward stamp."""
    await runtime.create_api_key("proj-a", "tk_golden_a_0001", "key_a1")  # type: ignore[attr-defined]  # the d80f33e Runtime, imported from the old tree
    await runtime.create_api_key("proj-a", "tk_golden_a_0002", "key_a2")  # type: ignore[attr-defined]  # the d80f33e Runtime, imported from the old tree
    await runtime.create_api_key("proj-b", "tk_golden_b_0001", "key_b1")  # type: ignore[attr-defined]  # the d80f33e Runtime, imported from the old tree
    t = clock.now_ms + 10
    await _ok(runtime, RevokeApiKey(at_ms=t, key_id="key_a2"))
    alice = {"project": "proj-a", "customer_id": "alice"}
    deposit = Deposit(at_ms=t + 1, **alice, amount=1000, name="Alice", email="alice@example.com",
                      metadata={"plan": "pro", "seats": 3, "tags": ["a", "b"]}, description="signup",
                      idempotency_key="dep-alice-1")  # fmt: skip
    await _ok(runtime, deposit)
    await _ok(runtime, Deposit(**{**_fields(deposit), "at_ms": t + 2}), logged=False)  # idempotent replay
    await _ok(runtime, Deposit(at_ms=t + 3, **alice, amount=500, wallet="promo", source="campaign",
                               starts_at_ms=T0_MS, expires_at_ms=T0_MS + 60_000))  # fmt: skip
    await _ok(runtime, Deposit(at_ms=t + 4, project="proj-a", customer_id="bob", amount=300,
                               expires_at_ms=T0_MS + 30_000))  # fmt: skip
    await _ok(runtime, Deposit(at_ms=t + 5, project="proj-b", customer_id="carol", amount=200, wallet="gifts"))
    await _ok(runtime, Deduct(at_ms=t + 6, **alice, amount=150, transaction_id="t-d1", wallet="default",
                              business_type="CHAT", description="first"))  # fmt: skip
    await _ok(runtime, Deduct(at_ms=t + 7, **alice, amount=150, transaction_id="t-d1", wallet="default",
                              business_type="CHAT", description="first"), logged=False)  # fmt: skip
    await _rejected(runtime, Deduct(at_ms=t + 8, **alice, amount=99_999, transaction_id="t-d2"), "insufficient_balance")
    await _ok(runtime, Freeze(at_ms=t + 9, **alice, amount=200, transaction_id="t-f1"))
    await _ok(runtime, Consume(at_ms=t + 10, project="proj-a", customer_id=None, transaction_id="t-f1",
                               actual_amount=250))  # overage  # fmt: skip
    await _ok(runtime, Freeze(at_ms=t + 11, **alice, amount=100, transaction_id="t-f2", credit_types=("promo", "gifts")))
    await _ok(runtime, Unfreeze(at_ms=t + 12, project="proj-a", customer_id=None, transaction_id="t-f2"))
    await _ok(runtime, Freeze(at_ms=t + 13, **alice, amount=40, transaction_id="t-f3"))
    await _ok(runtime, Consume(at_ms=t + 14, project="proj-a", customer_id=None, transaction_id="t-f3",
                               actual_amount=0))  # fmt: skip
    # Raced requests: stamped t+20 and t+17, logged in that order (different shards).
    await _ok(runtime, Deposit(at_ms=t + 20, project="proj-b", customer_id="dave", amount=70))
    await _ok(runtime, Deduct(at_ms=t + 17, project="proj-b", customer_id="carol", amount=5, transaction_id="t-c1"))
    # TTL freezes that the timers settle after the snapshot.
    await _ok(runtime, Freeze(at_ms=t + 21, project="proj-a", customer_id="bob", amount=50, transaction_id="t-f4",
                              unfreeze_after_s=10))  # fmt: skip
    await _ok(runtime, Freeze(at_ms=t + 22, project="proj-b", customer_id="carol", amount=80, transaction_id="t-f5",
                              consume_after_s=20, wallet="gifts"))  # fmt: skip
    clock.now_ms = t + 22


async def _after_snapshot(runtime: object, clock: FakeClock) -> None:
    """Timers fire (auto-unfreeze, auto-consume, expiry), more writes, a second backward stamp."""
    for step_ms in (10_500, 10_000, 10_000, 30_000):  # +10.5 s, +20.5 s, +30.5 s, +60.5 s
        clock.now_ms += step_ms
        await runtime.fire_due_timers()  # type: ignore[attr-defined]  # the d80f33e Runtime, imported from the old tree
    t = clock.now_ms
    await _ok(runtime, Deposit(at_ms=t + 1, project="proj-a", customer_id="bob", amount=25, idempotency_key="dep-bob-2"))
    await _ok(runtime, Deposit(at_ms=t + 9, project="proj-b", customer_id="erin", amount=11, metadata={"ref": None}))
    await _ok(runtime, Deduct(at_ms=t + 6, project="proj-a", customer_id="bob", amount=20, transaction_id="t-b1"))
    await _ok(runtime, Freeze(at_ms=t + 10, project="proj-a", customer_id="alice", amount=30, transaction_id="t-f6",
                              unfreeze_after_s=5))  # fmt: skip
    # Due at t+5010; fired by the next write to alice, stamped after it (the write path).
    await _ok(runtime, Deduct(at_ms=t + 6_000, project="proj-a", customer_id="alice", amount=1, transaction_id="t-d3"))
    clock.now_ms = t + 6_000


def _fields(struct: object) -> dict[str, object]:
    return {name: getattr(struct, name) for name in struct.__struct_fields__}  # type: ignore[attr-defined]  # the d80f33e Runtime, imported from the old tree


async def _write(data_dir: Path) -> None:
    clock = FakeClock()
    config = old_runtime.RuntimeConfig(data_dir=data_dir, snapshot_interval_records=0, snapshot_interval_s=0)
    runtime = await old_runtime.Runtime.open(config, clock=clock)
    try:
        await _before_snapshot(runtime, clock)
        snapshot_lsn = await runtime.take_snapshot()
        assert snapshot_lsn == runtime.state.last_lsn
        await _after_snapshot(runtime, clock)
    finally:
        await runtime.close()


def _replay(data_dir: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "net.cli", "replay", "--data-dir", str(data_dir)],
                          cwd=Path(old_runtime.__file__).parents[1],  # `-m` puts cwd first on sys.path
                          capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return json.loads(done.stdout)  # type: ignore[no-any-return]  # the JSON object tally replay prints


def main() -> None:
    _check_old_code()
    out = Path(sys.argv[1]).resolve()
    if out.exists():
        shutil.rmtree(out)
    asyncio.run(_write(out))
    (out / "LOCK").unlink()  # the runtime's lock file: made again by whoever opens the copy
    expected = {"source_commit": SOURCE_COMMIT, "with_snapshot": _replay(out)}
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "data"
        shutil.copytree(out, copy)
        for snapshot in copy.glob("snapshot-*.snap"):
            snapshot.unlink()
        expected["wal_only"] = _replay(copy)
    (out.parent / f"expected-{out.name.removeprefix('data-')}.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(json.dumps(expected, indent=2))


if __name__ == "__main__":
    main()
