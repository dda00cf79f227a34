"""PgLog: the wal.LogBackend of a log kept in PostgreSQL (CONTRACT §12).

    PgLog(dsn, node_id, lease_ms=...).read(after_lsn, truncate_torn_tail=...)
        -> PgRecords: iterate (lsn, payload) after `after_lsn`, in pages of READ_ROWS_MAX rows
    .open_store(next_lsn) -> PgLogStore (its start() takes the lease and writes the epoch marker)
    .port() -> AsyncpgPort (a standby's tailing reads)

`read` is synchronous like the local reader (recovery runs in a worker thread, `tally replay`
in the CLI): it runs its own event loop and connection in the calling thread, so it must not be
called from a thread whose loop is running. A row cannot be torn (a commit is atomic): `torn` is
always None, and `truncate_torn_tail` changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

from wal.pg.asyncpg_port import AsyncpgPort
from wal.pg.port import PortUnavailable, Row, decode_batch
from wal.pg.store import PgLogStore
from wal.errors import WalFailed

__all__ = ["PgLog", "PgRecords", "READ_ROWS_MAX", "port_timeout_s"]

READ_ROWS_MAX = 256  # rows per read (each up to batch_records_max records)
LEASE_MS_DEFAULT = 3000
BATCH_RECORDS_MAX_DEFAULT = 1024
QUEUE_RECORDS_MAX_DEFAULT = 65536
TIMEOUT_S_MIN = 0.2


def port_timeout_s(lease_ms: int) -> float:
    """A database operation slower than a third of the lease counts as unknown."""
    return max(TIMEOUT_S_MIN, lease_ms / 1000 / 3)


@dataclass(frozen=True)
class PgLog:
    dsn: str  # postgresql://USER@HOST:PORT/DB
    node_id: str
    lease_ms: int = LEASE_MS_DEFAULT
    batch_records_max: int = BATCH_RECORDS_MAX_DEFAULT
    queue_records_max: int = QUEUE_RECORDS_MAX_DEFAULT

    def port(self) -> AsyncpgPort:
        return AsyncpgPort(self.dsn, timeout_s=port_timeout_s(self.lease_ms))

    def read(self, after_lsn: int, *, truncate_torn_tail: bool) -> PgRecords:
        return PgRecords(self, after_lsn)

    def open_store(self, next_lsn: int) -> PgLogStore:
        return PgLogStore(self.port(), self.port(), self.node_id, next_lsn=next_lsn, lease_ms=self.lease_ms,
                          batch_records_max=self.batch_records_max, queue_records_max=self.queue_records_max)  # fmt: skip


class PgRecords:
    """One pass over the PostgreSQL log after an LSN (WalCorrupt on a damaged row; WalFailed when
    the database cannot be reached)."""

    def __init__(self, log: PgLog, after_lsn: int) -> None:
        self._log = log
        self._after_lsn = after_lsn
        self.rows = 0  # rows read (markers included)
        self.position = 0  # the current row's position
        self.epoch = 0  # the current row's epoch

    @property
    def torn(self) -> object | None:
        return None

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        loop = asyncio.new_event_loop()
        port = self._log.port()
        after = self._after_lsn
        try:
            while True:
                rows = _fetch(loop, port, after)
                if not rows:
                    return
                for row in rows:
                    self.rows += 1
                    self.position = row.position
                    self.epoch = row.epoch
                    for lsn, payload in decode_batch(row):
                        if lsn > after:
                            yield lsn, payload
                    after = max(after, row.last_lsn)
                if len(rows) < READ_ROWS_MAX:
                    return
        finally:
            loop.run_until_complete(port.close())
            loop.close()


def _fetch(loop: asyncio.AbstractEventLoop, port: AsyncpgPort, after_lsn: int) -> list[Row]:
    try:
        return loop.run_until_complete(port.rows_after_lsn(after_lsn, READ_ROWS_MAX))
    except PortUnavailable as error:
        raise WalFailed(f"cannot read the postgresql log: {error}") from None
