"""The errors of the write-ahead log.

    WalError                     base of everything wal/ raises on purpose
    ├── WalCorrupt(path, offset, reason)
    │                            the files on disk contradict themselves (bad checksum before
    │                            the tail, LSN gap, missing or duplicate segment, bad header,
    │                            bad snapshot with no good one left). Never repaired silently:
    │                            serve refuses to start, `tally verify` prints path + offset.
    ├── WalFailed                fail-stop: a write or fdatasync of the log failed (disk full,
    │                            I/O error). The writer is dead for good; every waiter not yet
    │                            durable and every later append/wait gets this (503
    │                            storage_unavailable). The OSError is chained as __cause__.
    ├── WalFull                  more than `queue_records_max` frames are pending; the caller
    │                            should `await writer.wait_for_room()` (or raise
    │                            `--wal-queue-records-max`).
    └── DataDirLocked(path)      another process holds `<data-dir>/LOCK`.

A torn tail (an unfinished last frame after a crash) is *not* an error: `read_log` reports it as
`reader.torn` (see wal/reader.py for the decision table).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["WalError", "WalCorrupt", "WalFailed", "WalFull", "DataDirLocked"]


class WalError(Exception):
    """Base of every error wal/ raises on purpose."""


class WalCorrupt(WalError):
    """The log or a snapshot is damaged at `path`, byte `offset`; `reason` says how."""

    def __init__(self, path: Path | str, offset: int, reason: str) -> None:
        self.path = Path(path)
        self.offset = offset
        self.reason = reason
        super().__init__(f"{self.path}: offset {offset}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[Path, int, str]]:  # keeps pickling (multiprocessing, pytest-xdist) working
        return (type(self), (self.path, self.offset, self.reason))


class WalFailed(WalError):
    """The writer failed (write or fdatasync error) and stopped for good."""


class WalFull(WalError):
    """Too many frames pending; await `wait_for_room()` or raise `queue_records_max`."""


class DataDirLocked(WalError):
    """Another process holds the data directory lock at `path`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path} is held by another process (is a server running?)")

    def __reduce__(self) -> tuple[type, tuple[Path]]:
        return (type(self), (self.path,))
