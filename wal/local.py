"""LocalLog: the embedded LogBackend: segments in the data directory (wal/FORMAT.md).

    LocalLog(directory, segment_size_max=..., ...).read(after_lsn, truncate_torn_tail=...)
        -> wal.LogReader (iterate (lsn, payload); `.torn` afterwards)
    .open_store(next_lsn) -> wal.WalWriter (group commit + fdatasync; a wal.LogStore)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wal.reader import LogReader, read_log
from wal.appender import LogFile
from wal.writer import BATCH_RECORDS_MAX_DEFAULT, QUEUE_RECORDS_MAX_DEFAULT, SEGMENT_SIZE_MAX_DEFAULT, WalWriter


@dataclass(frozen=True)
class LocalLog:
    directory: Path
    segment_size_max: int = SEGMENT_SIZE_MAX_DEFAULT
    batch_records_max: int = BATCH_RECORDS_MAX_DEFAULT
    queue_records_max: int = QUEUE_RECORDS_MAX_DEFAULT
    fsync: bool = True  # False only for benchmarks: acknowledged writes can be lost
    log_file_factory: Callable[[Path], LogFile] | None = None  # a seam for tests
    flusher_process: bool = False  # write and sync in a child process (wal/flusher.py)
    keep_fds: tuple[int, ...] = ()  # open in that child while it lives: the data directory's lock

    def read(self, after_lsn: int, *, truncate_torn_tail: bool) -> LogReader:
        return read_log(self.directory, after_lsn=after_lsn, truncate_torn_tail=truncate_torn_tail)

    def open_store(self, next_lsn: int) -> WalWriter:
        """Recovery (read with truncate_torn_tail=True) must have run first (checked again)."""
        return WalWriter.open(
            self.directory, next_lsn=next_lsn, segment_size_max=self.segment_size_max,
            batch_records_max=self.batch_records_max, queue_records_max=self.queue_records_max,
            fsync=self.fsync, log_file_factory=self.log_file_factory, flusher_process=self.flusher_process,
            keep_fds=self.keep_fds,
        )  # fmt: skip
