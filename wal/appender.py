"""SegmentAppender: the flusher's half of the WAL writer: the newest segment file, its zeros, rotation.

    SegmentAppender.open(directory, next_lsn=..., ...)   check the newest segment's end (recovery
                                                          ran), or create the first segment
    .write_batch(data, lsn_before) -> write+sync µs      rotate if needed, ONE write (O_DSYNC:
                                                          durable when it returns), or write +
                                                          ONE fdatasync for a LogFile without dsync
    .top_up()                                             synced zeros ahead of the last frame
    .position -> SegmentPosition                          where a flusher process resumes

It runs wherever the flusher runs: in the writer's thread (a test's LogFile) or in the flusher
process (wal/flusher_main.py, the default for a served data directory). Everything here blocks;
nothing here knows about the loop, the waiters or the other side of the pipe.

Preallocation (wal/FORMAT.md): a segment is zero-filled ahead of its last frame, so a batch
overwrites zeros and its sync writes no metadata (an append that grows the file makes every
fdatasync a journal commit too). The zeros are written after a batch was reported durable,
PREALLOCATE_CHUNK at a time, and synced before a frame goes there.

Fail-stop is the caller's: any OSError from here means the writer stops for good. An fsync is
never retried (after a failed fsync the kernel may already have dropped the dirty pages), and a
partial write is never patched in place: recovery sees a torn tail and cuts it.

I/O goes through the tiny `LogFile` protocol, made by a factory(path), so tests can pass a file
that fails the Nth write or fdatasync, or tears a write.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from time import perf_counter_ns
from typing import Protocol

import msgspec

from wal.errors import WalCorrupt
from wal.frame import (
    FRAME_HEADER,
    FRAME_OVERHEAD,
    PAYLOAD_SIZE_MAX,
    SEGMENT_HEADER,
    check_frame,
    decode_segment_header,
    encode_segment_header,
    fsync_directory,
    list_segments,
    segment_name,
    zero_tail_start,
)

__all__ = ["LogFile", "OsLogFile", "SegmentAppender", "SegmentPosition"]

# Preallocation (wal/FORMAT.md): zeros are written this far ahead of the last frame, at most to
# segment_size_max, whenever fewer than PREALLOCATE_LOW_WATER zero bytes are left ahead.
PREALLOCATE_CHUNK = 1024 * 1024
PREALLOCATE_LOW_WATER = PREALLOCATE_CHUNK // 2
ZERO_WRITE_MAX = 1024 * 1024  # bytes of zeros one pwrite call writes (the buffer's size)
PREALLOCATE_OFF = 2**63  # zeroed_end after the disk had no room for zeros: none tried again
_NO_ROOM = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


class LogFile(Protocol):
    """What the appender needs from an open segment file.

    write(data)   writes at the file's position and advances it (a short count is continued)
    seek(offset)  sets that position (where the writer resumes: the end of the last frame)
    extend(size)  writes zeros from the end of the file up to `size` bytes; the position stays
    fdatasync()   makes every write so far durable
    dsync         True when each write is durable once it returns (O_DSYNC): no fdatasync needed
    """

    dsync: bool

    def write(self, data: bytes | bytearray | memoryview) -> int: ...
    def seek(self, offset: int) -> None: ...
    def extend(self, size: int) -> None: ...
    def fdatasync(self) -> None: ...
    def close(self) -> None: ...


class OsLogFile:
    """The real LogFile: a file descriptor written with pwrite at `position`, created if missing.

    dsync=True opens it O_DSYNC: a write returns once its bytes are durable, one syscall where
    write + fdatasync took two.
    """

    __slots__ = ("dsync", "fd", "position")

    def __init__(self, path: Path, dsync: bool = False) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_DSYNC if dsync else 0)
        self.fd = os.open(path, flags, 0o600)
        self.dsync = dsync
        self.position = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        written = os.pwrite(self.fd, data, self.position)
        self.position += written
        return written

    def seek(self, offset: int) -> None:
        self.position = offset

    def extend(self, size: int) -> None:
        end = os.fstat(self.fd).st_size
        zeros = memoryview(bytes(min(ZERO_WRITE_MAX, max(0, size - end))))
        with zeros:
            while end < size:
                end += os.pwrite(self.fd, zeros[: size - end], end)

    def fdatasync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class SegmentPosition(msgspec.Struct, frozen=True):
    """Where appending resumes: the newest segment's path, the end of its last frame (bytes) and
    the file's size (the zeros between are preallocated). What a flusher process is started with."""

    path: str
    end: int
    size: int


class SegmentAppender:
    """The newest segment, appended to by one flusher (thread or process) at a time."""

    def __init__(self, directory: Path, *, segment_size_max: int, fsync: bool,
                 factory: Callable[[Path], LogFile]) -> None:  # fmt: skip
        assert segment_size_max > SEGMENT_HEADER.size + FRAME_OVERHEAD
        self.directory = directory
        self.segment_size_max = segment_size_max
        self.fsync = fsync
        self._factory = factory
        self._file: LogFile | None = None
        self._path: Path | None = None
        self._segment_size = 0  # where the next frame goes: the end of the last frame
        self._zeroed_end = 0  # the file's size: zeros from _segment_size to here (preallocated)

    @classmethod
    def open(cls, directory: Path, *, next_lsn: int, segment_size_max: int, fsync: bool,
             factory: Callable[[Path], LogFile]) -> SegmentAppender:  # fmt: skip
        """Open the newest segment for appending at `next_lsn`, or start a new one.

        Recovery (read_log with truncate_torn_tail=True) must have run: the newest segment must
        end with a sound frame whose lsn is next_lsn - 1 (checked here, a second time).
        Raises WalCorrupt, OSError.
        """
        appender = cls(directory, segment_size_max=segment_size_max, fsync=fsync, factory=factory)
        segments = list_segments(directory)
        try:
            if segments:
                first_lsn, path = segments[-1]
                end, size = _check_segment_end(path, first_lsn, next_lsn)
                if end + FRAME_OVERHEAD <= segment_size_max:
                    appender.resume(SegmentPosition(str(path), end, size))
                    return appender
            appender._create_segment(next_lsn)
        except BaseException:
            appender.close()
            raise
        return appender

    def resume(self, position: SegmentPosition) -> None:
        """Open `position.path` and append at `position.end` (no check: open() made it)."""
        assert self._file is None
        path = Path(position.path)
        self._file = self._factory(path)
        self._file.seek(position.end)
        self._path = path
        self._segment_size, self._zeroed_end = position.end, position.size

    @property
    def position(self) -> SegmentPosition:
        assert self._path is not None
        return SegmentPosition(str(self._path), self._segment_size, self._zeroed_end)

    def close(self) -> None:
        """Close the file (everything written was synced already). Raises OSError."""
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    def write_batch(self, data: bytes | bytearray | memoryview, lsn_before: int) -> float | None:
        """Rotate if needed, one write, one fdatasync (none with dsync). Returns the microseconds
        of the write + sync (None when fsync is off). Raises OSError: the caller fails for good."""
        if self._segment_size > SEGMENT_HEADER.size and self._segment_size + len(data) > self.segment_size_max:
            self._rotate(lsn_before + 1)
        end = self._segment_size + len(data)
        if end > self._zeroed_end:  # a new segment, or a batch larger than the zeros left
            self._preallocate(end)
        file = self._file
        assert file is not None  # open() or _create_segment() set it; only close() clears it
        started = perf_counter_ns()
        self._write_all(data)
        if not self.fsync:
            return None
        if not file.dsync:
            file.fdatasync()
        return (perf_counter_ns() - started) / 1000

    def top_up(self) -> None:
        """Another chunk of synced zeros once fewer than PREALLOCATE_LOW_WATER bytes are left."""
        if self._zeroed_end - self._segment_size < PREALLOCATE_LOW_WATER:
            self._preallocate(0)

    def _create_segment(self, first_lsn: int) -> None:
        """New file, header, fdatasync, fsync of the directory (so its name survives a crash). The
        zeros follow with the first batch (in the flusher: a failure there is a fail-stop with
        503s, not a server that cannot start)."""
        path = self.directory / segment_name(first_lsn)
        assert not path.exists(), path
        file = self._factory(path)
        self._file, self._path = file, path
        self._segment_size = self._zeroed_end = 0
        self._write_all(encode_segment_header(first_lsn))
        if self.fsync:
            if not file.dsync:
                file.fdatasync()
            fsync_directory(self.directory)

    def _preallocate(self, needed: int) -> None:
        """Write zeros so the segment file holds at least `needed` bytes and PREALLOCATE_CHUNK
        past its last frame (no more than segment_size_max, unless `needed` is more), then
        fdatasync them (O_DSYNC: already synced): a later write + fdatasync in that region
        changes no metadata (no size change, no unwritten extent to convert)."""
        base = max(self._zeroed_end, self._segment_size)
        target = max(needed, min(base + PREALLOCATE_CHUNK, self.segment_size_max))
        if target <= base:
            return
        file = self._file
        assert file is not None
        try:
            file.extend(target)
        except OSError as error:
            if error.errno not in _NO_ROOM:
                raise  # fail-stop
            # No room for zeros (disk full, file size limit): write without them; a frame write
            # that meets the limit then fails itself (fail-stop). Tried again next segment.
            self._zeroed_end = PREALLOCATE_OFF
            return
        self._zeroed_end = target
        if self.fsync and not file.dsync:
            file.fdatasync()

    def _rotate(self, first_lsn: int) -> None:
        file, self._file = self._file, None
        assert file is not None
        file.close()  # its last batch was fdatasync'd already
        self._create_segment(first_lsn)

    def _write_all(self, data: bytes | bytearray | memoryview) -> None:
        """One write call in practice; a short count (only past 2 GiB on Linux) continues."""
        file = self._file
        assert file is not None
        view = memoryview(data)
        with view:
            while view:
                written = file.write(view)
                if written <= 0:
                    raise OSError(f"write returned {written}")
                self._segment_size += written
                view = view[written:]


def _check_segment_end(path: Path, first_lsn: int, next_lsn: int) -> tuple[int, int]:
    """(end of the last frame, file size) of the newest segment after checking that its last frame
    has lsn next_lsn - 1 and that only zeros follow it (the preallocated tail)."""
    with open(path, "rb") as file:
        data = file.read()
    decode_segment_header(data, path, first_lsn)
    data_end = zero_tail_start(data)
    offset, last = SEGMENT_HEADER.size, None
    while offset < data_end:  # step over the frames by their lengths; recovery checked them all
        length = FRAME_HEADER.unpack_from(data, offset)[1] if offset + FRAME_HEADER.size <= len(data) else -1
        if not 0 <= length <= PAYLOAD_SIZE_MAX or offset + FRAME_OVERHEAD + length > len(data):
            raise WalCorrupt(path, offset, "frame unreadable; run recovery (read_log) first")
        last, offset = offset, offset + FRAME_OVERHEAD + length
    lsn_last = first_lsn - 1
    if last is not None:
        checked = check_frame(data, last)
        if isinstance(checked, str):
            raise WalCorrupt(path, last, f"last frame: {checked}; run recovery (read_log) first")
        lsn_last = checked[0]
    if lsn_last != next_lsn - 1:
        raise WalCorrupt(path, offset, f"log ends at lsn {lsn_last}, but next_lsn is {next_lsn}")
    return offset, len(data)
