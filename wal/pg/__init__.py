"""wal.pg: the log kept in PostgreSQL (CONTRACT §12): one row per group-commit batch, a lease
with epochs, conditional appends (fencing). Bytes and SQL only; imports neither engine nor net.

    port.py           LogPort: the few database operations; Row, LeaseView; Fenced, PortUnavailable
    asyncpg_port.py   AsyncpgPort: LogPort on a real PostgreSQL (tables created if missing)
    store.py          PgLogStore: the leader's wal.LogStore (takeover, group commit, lease keeper)
    backend.py        PgLog: the wal.LogBackend (read for recovery, open_store for a leader)
"""

from wal.pg.backend import PgLog, PgRecords
from wal.pg.port import Fenced, LeaseView, LogPort, PortUnavailable, Row, decode_batch, encode_batch
from wal.pg.store import LeaseHeld, LogBehind, PgLogStore

__all__ = [
    "Fenced",
    "LeaseHeld",
    "LeaseView",
    "LogBehind",
    "LogPort",
    "PgLog",
    "PgLogStore",
    "PgRecords",
    "PortUnavailable",
    "Row",
    "decode_batch",
    "encode_batch",
]
