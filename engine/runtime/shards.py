"""Shard: the single writer for the customers that hash to it (CONTRACT §6).

Each shard is one asyncio task draining a bounded queue of work items in batches. Per item it
applies the customer's due timers first (CONTRACT §7.3), then the command or read, appends every
state change to the WAL (`WalWriter.append` only buffers; the group commit is the writer's job)
and returns `(result, wait_lsn)`. The item's future is resolved with `result` only once the WAL is
durable up to `wait_lsn` (one durability waiter per batch, not per request), so no response shows
state a crash could lose.

Why a queue per shard when everything runs on one event loop: the queue is the bound (a full
queue is 503 `overloaded`, not unbounded memory) and the batch is the unit of work: one wake-up
applies up to `batch_size_max` items in a straight loop.

`run_now` is the fast path (issue 14): with nothing queued ahead and room in the log, the item is
applied at once in the caller's task, which then waits for durability itself. That is the same
single writer (one thread; the apply is synchronous, so nothing interleaves with it) and the same
order (nothing was queued), without a queue entry, a future and a shard wake-up per request. The
queue's bound holds for both paths: at most `queue_depth_max` fast-path answers wait for the log
at once, then work queues, and a full queue is 503 `overloaded`.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Callable, Protocol, TypeVar

from engine.runtime.errors import Unavailable

# A work item: a callable run on the shard task, returning (result, wait_lsn): the answer and the
# LSN the log must be durable to before the answer may leave.
WorkFn = Callable[[], tuple[Any, int]]
T = TypeVar("T")


class ShardHost(Protocol):
    """What a shard needs from the log around it (engine/runtime/durability.py provides it)."""

    @property
    def durable_lsn(self) -> int: ...

    async def wait_for_log_room(self, items: int) -> None: ...

    def has_log_room(self, items: int) -> bool: ...

    def resolve_when_durable(self, lsn: int, waiting: list[tuple[asyncio.Future[Any], Any]]) -> None: ...


class Shard:
    """One single-writer queue. `submit` never blocks: a full queue raises Unavailable."""

    def __init__(
        self, host: ShardHost, index: int, *, queue_depth_max: int, batch_size_max: int,
        on_failure: Callable[[BaseException], None],
    ) -> None:  # fmt: skip
        assert queue_depth_max >= batch_size_max >= 1
        self._host = host
        self._on_failure = on_failure  # a broken invariant: the runtime stops all writes
        self.index = index
        self._queue_depth_max = queue_depth_max
        self._batch_size_max = batch_size_max
        self._items: collections.deque[tuple[WorkFn, asyncio.Future[Any]]] = collections.deque()
        # wait_lsn of each answer `run_now` gave out, ascending, until the log is durable to it
        self._waiting_lsns: collections.deque[int] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        assert self._task is None
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"tally-shard-{self.index}")

    def submit(self, work: Callable[[], tuple[T, int]]) -> asyncio.Future[T]:
        if self._stopping:
            raise Unavailable("shutting_down", "the server is shutting down; retry on another instance or later")
        if len(self._items) >= self._queue_depth_max:
            raise Unavailable("overloaded", "shard queue is full; retry, or raise --shard-queue-depth-max")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._items.append((work, future))
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        return future

    def run_now(self, work: Callable[[], tuple[T, int]]) -> tuple[T, int] | None:
        """Apply `work` now, in the caller's task: (result, wait_lsn), the caller waits until the
        log is durable to wait_lsn. None when it must queue instead (items are queued ahead of
        it, or the log has no room: `submit`). Raises Unavailable."""
        if self._items or self._stopping or not self._host.has_log_room(1):
            return None
        # The queue's bound covers these too: at most queue_depth_max answers applied here may
        # wait for the log at once; past that, work queues (and a full queue is `overloaded`).
        waiting = self._waiting_lsns
        durable_lsn = self._host.durable_lsn
        while waiting and waiting[0] <= durable_lsn:
            waiting.popleft()
        if len(waiting) >= self._queue_depth_max:
            return None
        result, wait_lsn = self._run_one(work)
        if wait_lsn > durable_lsn:
            waiting.append(wait_lsn)
        return result, wait_lsn

    async def stop(self) -> None:
        """Finish every queued item, then end the task."""
        self._stopping = True
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._items:
                if self._stopping:
                    return
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            # Backpressure: never buffer more in the WAL than it allows; wait for a group commit.
            await self._host.wait_for_log_room(min(len(self._items), self._batch_size_max))
            self._run_batch()

    def _run_batch(self) -> None:
        items = self._items
        durable_lsn = self._host.durable_lsn
        waiting: list[tuple[asyncio.Future[Any], Any]] = []
        wait_lsn_max = 0
        for _ in range(min(len(items), self._batch_size_max)):
            work, future = items.popleft()
            try:
                result, wait_lsn = self._run_one(work)
            except Unavailable as error:
                if not future.done():
                    future.set_exception(error)
                continue
            if wait_lsn <= durable_lsn:
                if not future.done():
                    future.set_result(result)
            else:
                waiting.append((future, result))
                wait_lsn_max = max(wait_lsn_max, wait_lsn)
        if waiting:
            self._host.resolve_when_durable(wait_lsn_max, waiting)

    def _run_one(self, work: Callable[[], tuple[T, int]]) -> tuple[T, int]:
        """One item: its (result, wait_lsn), or Unavailable. Any other exception is a broken
        invariant: every later write is refused (fail-stop) and this one gets a 503."""
        try:
            return work()
        except Unavailable:
            raise
        except Exception as error:
            self._on_failure(error)
            raise Unavailable("storage_unavailable", "internal invariant failed") from None
