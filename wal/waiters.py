"""Durability waiters, shared by both log stores (wal/writer.py, wal/pg/store.py).

    waiters = DurableWaiters()
    await waiters.durable(lsn)       done once release(durable_lsn >= lsn), or failed by fail()
    waiters.release(durable_lsn)     after a batch is durable: wake those it covers, and the rooms
    waiters.fail(make_error)         fail-stop: every parked waiter gets make_error()
    await waiters.room()             done at the next release or fail (queue room re-checked)

The caller checks its own state before parking (already durable, already failed, room enough);
this class only keeps the parked futures: a heap by LSN (ties in arrival order) and a list of
room waiters. Loop thread only.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable


class DurableWaiters:
    """Futures parked on "the log is durable up to LSN" and on "the queue has room"."""

    __slots__ = ("_heap", "_serial", "_rooms")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._serial = itertools.count()
        self._rooms: list[asyncio.Future[None]] = []

    def durable(self, lsn: int) -> asyncio.Future[None]:
        """A future done once `release` reached `lsn`, or failed with what `fail` gave. (A
        future, not a coroutine: awaited directly, one frame fewer per request.)"""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (lsn, next(self._serial), waiter))
        return waiter

    def room(self) -> asyncio.Future[None]:
        """A future done at the next `release` or `fail` (the caller re-checks its room)."""
        room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rooms.append(room)
        return room

    def release(self, durable_lsn: int) -> None:
        """Wake every waiter at or below `durable_lsn`, then every room waiter."""
        heap = self._heap
        while heap and heap[0][0] <= durable_lsn:
            waiter = heapq.heappop(heap)[2]
            if not waiter.done():
                waiter.set_result(None)
        self._wake_rooms()

    def fail(self, make_error: Callable[[], BaseException]) -> None:
        """Every parked durability waiter gets `make_error()`; room waiters wake to re-check."""
        heap, self._heap = self._heap, []
        for _, _, waiter in heap:
            if not waiter.done():
                waiter.set_exception(make_error())
        self._wake_rooms()

    def _wake_rooms(self) -> None:
        rooms, self._rooms = self._rooms, []
        for room in rooms:
            if not room.done():
                room.set_result(None)
