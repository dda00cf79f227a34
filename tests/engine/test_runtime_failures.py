"""Failures of the runtime's background work keep their cause, and nothing is left un-awaited.

What: (1) a snapshot writer child that raises prints its traceback to stderr and the parent raises
SnapshotFailed (before: the exception vanished into os._exit(1)); (2) the snapshot loop logs each
failure with its traceback and backs off instead of retrying every second forever; (3) firing due
timers goes on past a customer whose shard refuses (503) and awaits every future it submitted
(before: it stopped at the first 503 and left the rest un-awaited); (4) stamps: commands submitted
with any at_ms are stamped on their shard, so stamps never go backwards in log order.
How: the real Runtime on a tmp data dir; the TimerLoop with a fake fire function.
How it could fail: a lost traceback, a loop without backoff, timers skipped or futures never
awaited (warnings are errors), a stamp taken before the shard queue.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

import engine.runtime.snapshots as snapshots
from engine.core.commands import Deduct, Deposit
from engine.core.state import LedgerState
from engine.runtime import Runtime, RuntimeConfig
from engine.runtime.errors import Unavailable
from engine.runtime.recovery import recover
from engine.runtime.timer_loop import TimerLoop
from tests.engine.helpers import T0_MS, Driver, P


def _config(path: Path) -> RuntimeConfig:
    return RuntimeConfig(data_dir=path, snapshot_interval_records=0, snapshot_interval_s=0)


async def test_snapshot_child_failure_keeps_its_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capfd: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    runtime = await Runtime.open(_config(tmp_path))
    try:
        await runtime.submit(Deposit(at_ms=0, project=P, customer_id="c", amount=5))

        def explode(state: LedgerState) -> bytes:
            raise ValueError("encoder exploded on purpose")

        monkeypatch.setattr(snapshots, "encode_state", explode)  # the forked child inherits it
        with pytest.raises(snapshots.SnapshotFailed, match="exited with 1"):
            await runtime.take_snapshot()
        assert "ValueError: encoder exploded on purpose" in capfd.readouterr().err
    finally:
        await runtime.close()


async def test_snapshot_loop_logs_the_traceback_and_backs_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    monkeypatch.setattr(snapshots, "SNAPSHOT_POLL_INTERVAL_S", 0.01)
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay_s: float) -> None:
        sleeps.append(delay_s)
        await real_sleep(0)

    class FailingSnapshotter(snapshots.Snapshotter):
        def _due(self) -> bool:
            return True

        async def take(self) -> int:
            raise OSError("disk said no")

    monkeypatch.setattr(snapshots.asyncio, "sleep", recording_sleep)
    snapshotter = FailingSnapshotter(LedgerState(), tmp_path, None, lock=None, snapshot_lsn=0,  # type: ignore[arg-type]
                                     interval_records=1, interval_s=0, keep_segments=True)  # fmt: skip
    task = asyncio.ensure_future(snapshotter.run())
    while len(sleeps) < 6:
        await real_sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sleeps[:5] == [0.01, 0.02, 0.04, 0.08, 0.16]  # doubling, from the poll interval
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and "snapshot failed" in r.getMessage()]
    assert len(failures) >= 4 and all(r.exc_info is not None for r in failures)
    assert "disk said no" in caplog.text


async def test_firing_timers_goes_on_past_a_refusing_shard_and_awaits_every_future() -> None:
    d = Driver()
    for customer_id in ("a", "b", "c", "d"):
        d.ok(Deposit(at_ms=T0_MS, project=P, customer_id=customer_id, amount=5, expires_at_ms=T0_MS + 10))
    fired: list[str] = []
    loop = asyncio.get_running_loop()

    def fire(project: str, customer_id: str, now_ms: int) -> asyncio.Future[Any]:
        if customer_id == "a":
            raise Unavailable("overloaded", "shard queue full")
        future: asyncio.Future[Any] = loop.create_future()
        if customer_id == "b":
            loop.call_soon(future.set_exception, Unavailable("storage_unavailable", "log failed"))
        else:
            fired.append(customer_id)
            loop.call_soon(future.set_result, None)
        return future

    deferred = await TimerLoop(d.state, lambda: T0_MS + 20, fire).fire_due()
    assert deferred == 2 and sorted(fired) == ["c", "d"]


async def test_stamps_are_taken_on_the_shard_in_log_order(tmp_path: Path) -> None:
    clock = iter(range(T0_MS, T0_MS + 1_000_000))
    runtime = await Runtime.open(_config(tmp_path), clock=lambda: next(clock))
    try:
        await runtime.submit(Deposit(at_ms=0, project=P, customer_id="c", amount=1000))
        # Submitted with stamps that go backwards: the runtime replaces them where LSNs are given.
        results = await asyncio.gather(*(
            runtime.submit(Deduct(at_ms=T0_MS + 500_000 - i, project=P, customer_id="c", amount=1,
                                  transaction_id=f"t{i}"))
            for i in range(50)
        ))  # fmt: skip
        assert all(type(result).__name__ == "Applied" for result in results)
    finally:
        await runtime.close()
    stamps = [entry.created_at_ms for entry in recover(tmp_path, truncate_torn_tail=False).state.projects[P].customers["c"].entries]
    assert stamps == sorted(stamps) and stamps[0] >= T0_MS and stamps[-1] < T0_MS + 1_000
