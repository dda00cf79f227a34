"""LogStore: the one small interface the runtime writes the log through (CONTRACT §4, §6).

    store.append(lsn, payload)        buffer one record; LSNs consecutive; never blocks
    await store.wait_durable(lsn)     return once every record <= lsn is durable; WalFailed if not
    store.durable_lsn                 the highest LSN known durable (fsync'd or committed)
    store.room() / wait_for_room(n)   the bounded queue between append and durability
    store.failed                      fail-stop: once True, nothing more is ever acknowledged
    await store.start() / close()     start the group-commit task; flush everything and stop

`wal.WalWriter` (local segments, group commit, fdatasync) is the embedded store. A second store
(PostgreSQL: one row per group-commit batch, CONTRACT §12) implements the same methods, and the
engine does not change: it never names a concrete store, only this protocol.
"""

from __future__ import annotations

from typing import Protocol


class LogStore(Protocol):
    @property
    def durable_lsn(self) -> int: ...

    @property
    def failed(self) -> bool: ...

    def room(self) -> int: ...

    def append(self, lsn: int, payload: bytes) -> None: ...

    async def wait_for_room(self, records: int = 1) -> None: ...

    async def wait_durable(self, lsn: int) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...
