"""Durability waits: no answer leaves before the log holds what it shows (CONTRACT §4).

A shard decides a batch, then hands its answers here with the LSN they rest on; they are released
together once the log store is durable up to that LSN (one waiter per batch, not per request).
The same object keeps the store's queue bounded: a shard waits for room before it applies more.
"""

from __future__ import annotations

import asyncio
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
        self._resolvers: set[asyncio.Task[None]] = set()

    @property
    def durable_lsn(self) -> int:
        return self._store.durable_lsn

    async def wait_durable(self, lsn: int) -> None:
        """Return once the log is durable to `lsn`. Unavailable(storage_unavailable) if it failed."""
        if lsn <= self._store.durable_lsn:
            return
        try:
            await self._store.wait_durable(lsn)
        except wal.WalFailed:
            raise Unavailable("storage_unavailable", "the write-ahead log failed; outcome unknown") from None

    def resolve_when_durable(self, lsn: int, waiting: Waiting) -> None:
        """Answer these futures once the log is durable to `lsn` (or fail them all)."""
        task = asyncio.get_running_loop().create_task(self._resolve(lsn, waiting))
        # The loop keeps only a weak reference to a task: hold it until it is done.
        self._resolvers.add(task)
        task.add_done_callback(self._resolvers.discard)

    async def _resolve(self, lsn: int, waiting: Waiting) -> None:
        try:
            await self.wait_durable(lsn)
        except Unavailable as error:
            for future, _ in waiting:
                if not future.done():
                    future.set_exception(error)
            return
        for future, result in waiting:
            if not future.done():
                future.set_result(result)

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
        await asyncio.gather(*self._resolvers, return_exceptions=True)
