"""LogStore: the one small interface the runtime writes the log through (CONTRACT §4, §6).

    store.append(lsn, payload)        buffer one record; LSNs consecutive; never blocks
    await store.wait_durable(lsn)     return once every record <= lsn is durable; WalFailed if not
    store.durable_waiter(lsn)         the same as a future to await (None: durable already)
    store.durable_lsn                 the highest LSN known durable (fsync'd or committed)
    store.room() / wait_for_room(n)   the bounded queue between append and durability
    store.failed                      fail-stop: once True, nothing more is ever acknowledged
    await store.start() / close()     start the group-commit task; flush everything and stop

A `LogBackend` is where a log lives: it reads the records after an LSN (recovery) and opens the
LogStore that appends after them. `wal.LocalLog` (segments in the data directory; `WalWriter`:
group commit, fdatasync) is the embedded default. A second backend (PostgreSQL: one row per
group-commit batch, CONTRACT §12) implements these two protocols, and the engine does not change:
`Runtime.open(config, log=...)` and `recover(..., log=...)` take any LogBackend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Protocol


class LogStore(Protocol):
    # Called on the loop after each durable group commit with (records, fsync seconds or None):
    # metrics (CONTRACT §9.4). Set by the owner; must be cheap and must not raise.
    on_batch: Callable[[int, float | None], None] | None

    @property
    def durable_lsn(self) -> int: ...

    @property
    def failed(self) -> bool: ...

    def room(self) -> int: ...

    def append(self, lsn: int, payload: bytes) -> None: ...

    async def wait_for_room(self, records: int = 1) -> None: ...

    async def wait_durable(self, lsn: int) -> None: ...

    def durable_waiter(self, lsn: int) -> asyncio.Future[None] | None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LogRecords(Protocol):
    """One pass over the records after an LSN: iterate for (lsn, payload); then `torn` says
    whether a torn final record was found (and cut, when the reader was asked to)."""

    @property
    def torn(self) -> object | None: ...

    def __iter__(self) -> Iterator[tuple[int, bytes]]: ...


class LogBackend(Protocol):
    def read(self, after_lsn: int, *, truncate_torn_tail: bool) -> LogRecords: ...

    def open_store(self, next_lsn: int) -> LogStore: ...
