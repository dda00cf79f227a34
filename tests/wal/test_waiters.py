"""wal/waiters.py: a log store's progress and its waiters, grouped by the batch that frees them.

What: a waiter is released exactly when the log is durable to its LSN's batch (never before its
LSN, and with its batch, not one later when the batch took it); records still pending share the
open group, records in the batch in flight join that batch's group; a partial cut keeps the open
group; fail-stop fails every waiter and every later wait or append; a cancelled waiter leaves the
others alone; the queue bound (room, WalFull).
How: DurableWaiters driven by hand (append / cut / release / fail), as the two stores drive it.
Could fail if: a group is released early (an LSN not durable yet), a waiter of the batch in
flight waits for the next one, a failure is lost, or cancelling one waiter cancels its group.
"""

import asyncio

import pytest

from wal import WalFailed, WalFull
from wal.waiters import DurableWaiters


def _progress(queue_records_max: int = 100) -> DurableWaiters:
    return DurableWaiters(1, queue_records_max, lambda: WalFailed("the log failed"))


def _append(progress: DurableWaiters, *lsns: int) -> None:
    for lsn in lsns:
        progress.check_append(lsn)
        progress.appended_lsn = lsn


async def test_pending_waiters_share_the_next_batch_and_wake_with_it() -> None:
    progress = _progress()
    _append(progress, 1, 2, 3)
    first, third = progress.waiter(1), progress.waiter(3)
    assert first is not None and third is not None
    progress.cut(3)
    progress.release(2)  # a store never does this mid-batch: the group (up to 3) waits on
    assert not first.done() and not third.done()
    progress.release(3)
    assert first.done() and third.done() and third.result() is None
    assert progress.waiter(3) is None  # durable already: nothing to wait for


async def test_a_waiter_of_the_batch_in_flight_wakes_with_that_batch() -> None:
    progress = _progress()
    _append(progress, 1, 2)
    progress.cut(2)  # batch 1..2 in flight
    _append(progress, 3, 4)
    later = progress.waiter(4)  # pending: the open group
    in_flight = progress.waiter(1)  # in the batch in flight: must not wait for 4
    assert later is not None and in_flight is not None
    progress.release(2)
    assert in_flight.done() and not later.done()
    progress.cut(4)
    progress.release(4)
    assert later.done()


async def test_a_partial_cut_keeps_the_open_group_until_its_last_lsn_is_durable() -> None:
    progress = _progress()
    _append(progress, 1, 2, 3)
    waiter = progress.waiter(3)
    assert waiter is not None
    progress.cut(2)  # the batch could take only 1..2
    progress.release(2)
    assert not waiter.done()
    _append(progress, 4)
    joined = progress.waiter(4)  # still pending with 3: same group
    assert joined is not None
    progress.cut(4)
    progress.release(4)
    assert waiter.done() and joined.done()


async def test_fail_stop_fails_every_waiter_and_every_later_wait_or_append() -> None:
    progress = _progress()
    _append(progress, 1, 2)
    progress.cut(1)
    in_flight, pending = progress.waiter(1), progress.waiter(2)
    assert in_flight is not None and pending is not None
    cause = OSError("fdatasync failed")
    progress.fail(cause)
    for waiter in (in_flight, pending):
        with pytest.raises(WalFailed):
            waiter.result()
    assert progress.failed and progress.failure is cause and progress.durable_lsn == 0
    progress.fail(OSError("later"))  # the first cause stays
    assert progress.failure is cause
    with pytest.raises(WalFailed):
        progress.waiter(2)
    with pytest.raises(WalFailed):
        progress.check_append(3)
    with pytest.raises(WalFailed):
        await progress.wait_for_room(1)


async def test_a_cancelled_waiter_leaves_its_group_alone() -> None:
    progress = _progress()
    _append(progress, 1, 2)
    doomed_future, kept_future = progress.waiter(1), progress.waiter(2)
    assert doomed_future is not None and kept_future is not None

    async def wait(future: "asyncio.Future[None]") -> None:
        await future

    doomed, kept = asyncio.create_task(wait(doomed_future)), asyncio.create_task(wait(kept_future))
    await asyncio.sleep(0)
    doomed.cancel()
    await asyncio.sleep(0)
    progress.cut(2)
    progress.release(2)
    await kept
    assert doomed.cancelled() and kept_future.done() and not kept_future.cancelled()


async def test_the_queue_is_bounded_and_room_waits_for_a_release() -> None:
    progress = _progress(queue_records_max=2)
    _append(progress, 1, 2)
    assert progress.room() == 0
    with pytest.raises(WalFull):
        progress.check_append(3)
    room = asyncio.create_task(progress.wait_for_room(1))
    await asyncio.sleep(0)
    assert not room.done()
    progress.cut(2)
    progress.release(1)
    await room
    assert progress.room() == 1
