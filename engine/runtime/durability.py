"""Durability waits: no answer leaves before the log holds what it shows (CONTRACT §4).

A shard decides a batch, then hands its answers here with the LSN they rest on; they are released
together once the log store is durable up to that LSN (one waiter per batch, not per request).
The same object keeps the store's queue bounded: a shard waits for room before it applies more.

Held batches wait in one FIFO served by ONE resolver task (alive while anything is held): each
turn it waits for the oldest batch's LSN, then releases every held batch the log now covers, so
a group commit costs one store waiter however many shard batches it covers (a task per shard
batch was a measurable share of the hot path, issue 14). Batch LSNs almost always grow (a write
batch rests on the ledger's last LSN); a read-only batch resting on an older customer LSN may
wait behind a newer one: later, never earlier, than its own LSN allows.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import wal
from engine.core.limits import LOG_ROOM_PER_ITEM_MIN
from engine.runtime.errors import Unavailable

# (future, result): an answer decided on a shard, held until its LSN is durable.
Waiting = list[tuple["asyncio.Future[Any]", Any]]


class Durability:
    """Waits on a `wal.LogStore`: wait_durable, resolve_when_durable, wait_for_log_room."""

    def __init__(self, store: wal.LogStore) -> None:
        self._store = store
        self._held: deque[tuple[int, Waiting]] = deque()  # (lsn, answers), in arrival order
        self._resolver: asyncio.Task[None] | None = None  # runs while `_held` is not empty

    @property
    def durable_lsn(self) -> int:
        return self._store.durable_lsn

    def waiter(self, lsn: int) -> asyncio.Future[None] | None:
        """A future done once the log is durable to `lsn`, None when it already is: the hot path
        awaits it directly (no coroutine frame per answer, issue 14). The future fails with
        wal.WalFailed if the log fails first: await it in `except wal.WalFailed: raise
        log_failed()`. Raises Unavailable(storage_unavailable) when the log failed already."""
        try:
            return self._store.durable_waiter(lsn)
        except wal.WalFailed:
            raise log_failed() from None

    async def wait_durable(self, lsn: int) -> None:
        """Return once the log is durable to `lsn`. Unavailable(storage_unavailable) if it failed."""
        waiter = self.waiter(lsn)
        if waiter is None:
            return
        try:
            await waiter
        except wal.WalFailed:
            raise log_failed() from None

    def resolve_when_durable(self, lsn: int, waiting: Waiting) -> None:
        """Answer these futures once the log is durable to `lsn` (or fail them all)."""
        self._held.append((lsn, waiting))
        if self._resolver is None:
            # The loop keeps only a weak reference to a task: `_resolver` holds it until it ends.
            self._resolver = asyncio.get_running_loop().create_task(self._resolve_held())

    async def _resolve_held(self) -> None:
        held = self._held
        try:
            while held:
                try:
                    await self.wait_durable(held[0][0])
                except Unavailable as error:
                    while held:
                        _fail_all(held.popleft()[1], error)
                    return
                durable_lsn = self._store.durable_lsn
                while held and held[0][0] <= durable_lsn:
                    for future, result in held.popleft()[1]:
                        if not future.done():
                            future.set_result(result)
        finally:
            self._resolver = None

    def has_log_room(self, items: int) -> bool:
        """The log's queue takes `items` more now (a shard may apply them without waiting)."""
        return self._store.room() >= items + LOG_ROOM_PER_ITEM_MIN

    async def wait_for_log_room(self, items: int) -> None:
        """Before a shard applies `items` more: keep the log's queue bounded (backpressure)."""
        needed = items + LOG_ROOM_PER_ITEM_MIN
        if self._store.room() >= needed or self._store.failed:
            return
        try:
            await self._store.wait_for_room(needed)
        except wal.WalFailed:
            return  # each of the shard's items then fails with storage_unavailable

    async def drain(self) -> None:
        """After the store closed: let the last batches' answers go out."""
        if self._resolver is not None:
            await asyncio.gather(self._resolver, return_exceptions=True)


def log_failed() -> Unavailable:
    """What an answer that waited for a failed log gets: its outcome is unknown (CONTRACT §4)."""
    return Unavailable("storage_unavailable", "the write-ahead log failed; outcome unknown")


def _fail_all(waiting: Waiting, error: BaseException) -> None:
    for future, _ in waiting:
        if not future.done():
            future.set_exception(error)
