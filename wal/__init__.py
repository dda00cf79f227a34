"""wal: the write-ahead log, snapshots and the data-dir lock. Bytes and files only.

Imports neither engine nor net: payloads are opaque bytes. Layout in wal/FORMAT.md.
"""

from wal.backup import BackupReport, backup
from wal.errors import DataDirLocked, WalCorrupt, WalError, WalFailed, WalFull
from wal.local import LocalLog
from wal.lock import DataDirLock
from wal.reader import (
    FrameInfo,
    LogReader,
    TornTail,
    VerifyReport,
    iter_frames,
    read_log,
    verify_log,
)
from wal.snapshot import (
    Snapshot,
    load_newest_snapshot,
    prune_segments,
    prune_snapshots,
    publish_snapshot,
    quarantine_snapshot,
    read_snapshot,
    snapshot_temporary_path,
    write_snapshot,
    write_snapshot_temporary,
)
from wal.store import LogBackend, LogRecords, LogStore
from wal.appender import LogFile, OsLogFile
from wal.writer import WalStats, WalWriter

__all__ = [
    "BackupReport",
    "DataDirLock",
    "DataDirLocked",
    "FrameInfo",
    "LocalLog",
    "LogBackend",
    "LogFile",
    "LogReader",
    "LogRecords",
    "LogStore",
    "OsLogFile",
    "Snapshot",
    "TornTail",
    "VerifyReport",
    "WalCorrupt",
    "WalError",
    "WalFailed",
    "WalFull",
    "WalStats",
    "WalWriter",
    "backup",
    "iter_frames",
    "load_newest_snapshot",
    "prune_segments",
    "prune_snapshots",
    "publish_snapshot",
    "quarantine_snapshot",
    "read_log",
    "read_snapshot",
    "snapshot_temporary_path",
    "verify_log",
    "write_snapshot",
    "write_snapshot_temporary",
]
