"""DataDirLock: one process per data directory (ZODB's `Data.fs.lock`, py-lmdb's lock file).

An exclusive, non-blocking `fcntl.flock` on `<data-dir>/LOCK`. The kernel drops it when the
holder exits, even on `kill -9`, so there is never a stale lock to clean up; the file itself is
never deleted (deleting a lock file lets two processes lock two different inodes). The holder's
pid is written into the file for operators; it is informational only.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from wal.errors import DataDirLocked

__all__ = ["DataDirLock", "LOCK_FILE_NAME"]

LOCK_FILE_NAME = "LOCK"


class DataDirLock:
    """`with DataDirLock(directory):` ... or `acquire()` / `release()`."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_FILE_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise DataDirLocked at once (never waits)."""
        assert self._fd is None, "acquired twice"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLocked(self.path) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def fileno(self) -> int:
        """The locked descriptor (held). A child that inherits it (the WAL flusher process) keeps
        the lock alive until both have exited: the flock belongs to the open file, not the pid."""
        assert self._fd is not None, "not held"
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    def forget_in_child(self) -> None:
        """In a forked child: close the inherited descriptor WITHOUT unlocking (LOCK_UN would drop
        the parent's lock too). Then the lock lives exactly as long as the parent holds it, so a
        snapshot child outliving a killed server never blocks its restart."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
