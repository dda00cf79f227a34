"""The log port: the few operations the PostgreSQL log needs from a database (CONTRACT §12).

    Row(position, epoch, first_lsn, last_lsn, payload)   one group-commit batch (or an epoch
                         marker: no records, last_lsn = first_lsn - 1) at a log position
    LeaseView(holder, epoch, remaining_ms)               the lease as the database sees it now

Every time check uses the database's clock (never a node's). Two implementations: AsyncpgPort
(wal/pg/asyncpg_port.py) and the simulated database of the deterministic simulation (tests).

Errors: `Fenced` is definite: the lease check or the position's primary key refused the append,
nothing was written. `PortUnavailable` is "unknown": the operation may or may not have taken
effect (a lost reply, a timeout, a dropped connection); the caller resolves it by reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from wal.errors import WalCorrupt
from wal.frame import check_frame, encode_frame_into, FRAME_HEADER

__all__ = ["Fenced", "LeaseView", "LogPort", "PortUnavailable", "Row", "decode_batch", "encode_batch"]


class Fenced(Exception):
    """The append was refused for good: the lease is not ours (any more) or the position is taken."""


class PortUnavailable(Exception):
    """The database did not answer: the operation's outcome is unknown."""


@dataclass(frozen=True, slots=True)
class Row:
    position: int  # 1, 2, ... contiguous per partition
    epoch: int  # the lease epoch of the leader that wrote it
    first_lsn: int
    last_lsn: int  # first_lsn - 1 for an epoch marker (no records)
    payload: bytes  # the records, framed and checksummed as in a local segment (wal/frame.py)

    @property
    def is_marker(self) -> bool:
        return self.last_lsn < self.first_lsn


@dataclass(frozen=True, slots=True)
class LeaseView:
    holder: str  # node id; "" when never held
    epoch: int
    remaining_ms: int  # 0 when expired


class LogPort(Protocol):
    """One partition's log and lease in one database. Every call may raise PortUnavailable."""

    async def lease(self) -> LeaseView: ...

    async def acquire(self, node_id: str, lease_ms: int) -> int | None:
        """Take the lease with epoch + 1 when it expired (or is already ours): the new epoch, or
        None when another node holds it."""

    async def renew(self, node_id: str, epoch: int, lease_ms: int) -> bool:
        """Extend our unexpired lease to now + lease_ms; False when it is not ours any more."""

    async def release(self, node_id: str, epoch: int) -> None:
        """Let our lease expire now (clean shutdown: a standby takes over at once)."""

    async def append(self, node_id: str, row: Row) -> None:
        """In one transaction: check the lease (holder, row.epoch, unexpired), insert the row.
        Fenced when either check fails."""

    async def row_at(self, position: int) -> Row | None: ...

    async def tail(self) -> Row | None:
        """The row at the highest position, None for an empty log."""

    async def rows_after_lsn(self, after_lsn: int, limit: int) -> list[Row]:
        """Rows with last_lsn > after_lsn in position order (markers included), at most `limit`."""

    async def close(self) -> None: ...


def encode_batch(records: list[tuple[int, bytes]]) -> bytes:
    """The records of one batch, as local-log frames back to back (crc32c each)."""
    buffer = bytearray()
    for lsn, payload in records:
        encode_frame_into(buffer, lsn, payload)
    return bytes(buffer)


def decode_batch(row: Row) -> list[tuple[int, bytes]]:
    """The (lsn, payload) records of a row; WalCorrupt when a frame is damaged or the LSNs do not
    run first_lsn..last_lsn."""
    data = memoryview(row.payload)
    where = f"postgresql log row {row.position}"
    records: list[tuple[int, bytes]] = []
    offset = 0
    expected = row.first_lsn
    while offset < len(data):
        checked = check_frame(data, offset)
        if isinstance(checked, str):
            raise WalCorrupt(where, offset, checked)
        lsn, end = checked
        if lsn != expected:
            raise WalCorrupt(where, offset, f"lsn {lsn}, expected {expected}")
        records.append((lsn, bytes(data[offset + FRAME_HEADER.size : end - 4])))
        expected += 1
        offset = end
    if expected != row.last_lsn + 1:
        raise WalCorrupt(where, offset, f"records end at lsn {expected - 1}, row says {row.last_lsn}")
    return records
