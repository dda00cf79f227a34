"""A log store's progress and the futures parked on it, shared by both stores (wal/writer.py,
wal/pg/store.py): appended / durable LSN, the failure, the queue bound, the waiters.

    progress = DurableWaiters(next_lsn, queue_records_max, make_error)
    progress.check_append(lsn); ...buffer...; progress.appended_lsn = lsn
    progress.cut(lsn)                   a batch ending at `lsn` was handed to storage
    progress.release(durable_lsn)       that batch is durable: wake its waiters and the rooms
    progress.fail(error)                fail-stop: every waiter gets make_error(), for good
    progress.waiter(lsn)                a future done once durable >= lsn (None: already durable)
    await progress.wait_durable(lsn)    the same, awaited
    await progress.wait_for_room(n)     until room() >= n (yields at least once)

Parked waiters are grouped by the batch that will make them durable (issue 14: no heap, no
serial number, no coroutine per wait): a deque of (lsn, futures), ascending; the last group is
*open* while its records are not yet in a handed-off batch, and every waiter of a record still
pending joins it (its lsn rises to the highest waiter's). `cut(lsn)` closes it when the batch
takes all of it. A waiter of a record already in the batch in flight joins the group of that
batch (its lsn = the cut). A group is released once the log is durable to its lsn: never before
any of its waiters' LSNs, and no later than the batch holding them all (when one batch could not
take every pending record, an open group's first waiters may wake one batch late).

Each waiter still gets its own future: a future shared by a batch would be cancelled for all of
them when one awaiting task is cancelled (asyncio's Task.cancel cancels the future it awaits).
Loop thread only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from wal.errors import WalFailed, WalFull

__all__ = ["DurableWaiters"]


class DurableWaiters:
    """Appended / durable LSN, the failure and the parked futures of one log store."""

    __slots__ = ("appended_lsn", "durable_lsn", "failure", "queue_records_max", "_make_error", "_cut_lsn",
                 "_groups", "_open", "_rooms")  # fmt: skip

    def __init__(self, next_lsn: int, queue_records_max: int, make_error: Callable[[], WalFailed]) -> None:
        assert next_lsn >= 1 and queue_records_max >= 1
        self.appended_lsn = next_lsn - 1
        self.durable_lsn = next_lsn - 1
        self.failure: BaseException | None = None  # set once by fail(); never cleared
        self.queue_records_max = queue_records_max
        self._make_error = make_error  # the store's WalFailed for a waiter or a later append
        self._cut_lsn = next_lsn - 1  # the last LSN handed to storage in a batch
        self._groups: deque[tuple[int, list[asyncio.Future[None]]]] = deque()
        self._open = False  # the last group still takes waiters of pending records
        self._rooms: list[asyncio.Future[None]] = []

    @property
    def failed(self) -> bool:
        return self.failure is not None

    def room(self) -> int:
        """Records that can still be appended before WalFull (pending = appended - durable)."""
        return self.queue_records_max - (self.appended_lsn - self.durable_lsn)

    def check_append(self, lsn: int) -> None:
        """Before buffering `lsn`: WalFailed after a failure, WalFull when the queue is full."""
        if self.failure is not None:
            raise self._make_error()
        assert lsn == self.appended_lsn + 1, f"lsn {lsn} after {self.appended_lsn}"
        if self.appended_lsn - self.durable_lsn >= self.queue_records_max:
            raise WalFull(f"{self.queue_records_max} records pending (queue_records_max)")

    def waiter(self, lsn: int) -> asyncio.Future[None] | None:
        """A future done once the log is durable to `lsn` (WalFailed if it fails first), or None
        when it already is. Raises WalFailed after a failure. Await the future directly: no
        coroutine frame per wait (the hot path, issue 14)."""
        if lsn <= self.durable_lsn:
            return None
        if self.failure is not None:
            raise self._make_error()
        assert lsn <= self.appended_lsn, f"wait for lsn {lsn}, appended only {self.appended_lsn}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        groups = self._groups
        if lsn > self._cut_lsn:  # still pending: the open group (the next batch takes it)
            if self._open:
                group_lsn, futures = groups[-1]
                if lsn > group_lsn:
                    groups[-1] = (lsn, futures)
                futures.append(future)
            else:
                groups.append((lsn, [future]))
                self._open = True
            return future
        # In the batch in flight, which ends at the cut: its group sits before the open one.
        open_group = groups.pop() if self._open else None
        if groups and groups[-1][0] == self._cut_lsn:
            groups[-1][1].append(future)
        else:
            groups.append((self._cut_lsn, [future]))
        if open_group is not None:
            groups.append(open_group)
        return future

    async def wait_durable(self, lsn: int) -> None:
        """Return once durable_lsn >= lsn; WalFailed if the store failed before that."""
        waiter = self.waiter(lsn)
        if waiter is not None:
            await waiter

    async def wait_for_room(self, records: int = 1) -> None:
        """Return once room() >= records (re-checked after every batch); WalFailed on failure.

        Always yields to the loop at least once, so a caller that loops on its own condition
        (`while room() < n: await wait_for_room()`) cannot starve the flusher.
        """
        assert 1 <= records <= self.queue_records_max, records
        waited = False
        while self.room() < records and self.failure is None:
            room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._rooms.append(room)
            await room
            waited = True
        if self.failure is not None:
            raise self._make_error()
        if not waited:
            await asyncio.sleep(0)

    def cut(self, lsn: int) -> None:
        """A batch ending at `lsn` was handed to storage: the open group is closed if it took it
        all (else it stays open for the next batch)."""
        assert self._cut_lsn <= lsn <= self.appended_lsn, (self._cut_lsn, lsn, self.appended_lsn)
        self._cut_lsn = lsn
        if self._open and self._groups[-1][0] <= lsn:
            self._open = False

    def release(self, durable_lsn: int) -> None:
        """The log is durable to `durable_lsn`: wake every group it covers, then the rooms."""
        assert self.durable_lsn <= durable_lsn <= self.appended_lsn, (self.durable_lsn, durable_lsn)
        self.durable_lsn = durable_lsn
        if self._cut_lsn < durable_lsn:
            self._cut_lsn = durable_lsn  # a store that never calls cut() (the batch was taken whole)
        groups = self._groups
        while groups and groups[0][0] <= durable_lsn:
            for future in groups.popleft()[1]:
                if not future.done():  # a cancelled waiter
                    future.set_result(None)
        if not groups:
            self._open = False
        self._wake_rooms()

    def fail(self, error: BaseException) -> None:
        """Fail-stop: `error` is the cause for good; every parked waiter gets make_error(), room
        waiters wake (re-check, raise). durable_lsn never moves again."""
        if self.failure is None:
            self.failure = error
        groups, self._groups = self._groups, deque()
        self._open = False
        for _, futures in groups:
            for future in futures:
                if not future.done():
                    future.set_exception(self._make_error())
        self._wake_rooms()

    def _wake_rooms(self) -> None:
        rooms, self._rooms = self._rooms, []
        for room in rooms:
            if not room.done():
                room.set_result(None)
