"""WalWriter: group commit into segment files, fail-stop on any I/O error.

How a record becomes durable:

    append(lsn, payload)            sync, on the loop: encode one frame into the pending buffer;
                                    the first append of a batch schedules one hand-off (call_soon)
    hand-off (on the loop)          when no batch is in flight: take <= batch_records_max pending
                                    frames (one bytes object) and put them in the flusher's queue
    flusher thread (one per writer) rotate if the segment would pass segment_size_max, ONE write
                                    (O_DSYNC: durable when it returns; a test LogFile without dsync
                                    gets ONE fdatasync after it), then wake the loop ONCE
                                    (call_soon_threadsafe); then top up the preallocated zeros
    back on the loop                durable_lsn = the batch's last lsn; wake every waiter <= it;
                                    hand off the frames appended meanwhile as the next batch

One fdatasync costs ~150 us on this disk (shared/research/machine-limits.md), so one writer that
synced each record would top out near 6.6k records/s; a batch shares that cost. The write and the
sync run in the flusher thread so the loop keeps parsing requests meanwhile, and frames appended
meanwhile form the next batch. At most one batch is in flight (the queue between loop and thread
holds at most one item: bounded), so batches stay as large as the fsync time allows. The thread
is our own, not a ThreadPoolExecutor: a submit per batch cost a work item, a concurrent future
wrapped in an asyncio future and two wake-ups (issue 14's profile); now a batch costs one queue
put, one call_soon_threadsafe and one callback.

Fail-stop (ZODB `_finish`, TigerBeetle): any OSError from write, fdatasync or rotation marks the
writer failed for good. An fsync is never retried (after a failed fsync the kernel may already
have dropped the dirty pages, so a retry can "succeed" without the data), and a partial write is
never patched in place: recovery sees a torn tail and cuts it. Every waiter not yet durable and
every later append / wait gets WalFailed; durable_lsn never moves again.

Preallocation (wal/FORMAT.md): a segment is zero-filled ahead of its last frame, so a batch
overwrites zeros and its sync writes no metadata (an append that grows the file makes every
fdatasync a journal commit too). The zeros are written by the flusher after it reported a batch
durable, PREALLOCATE_CHUNK at a time, and synced before a frame goes there.

I/O goes through the tiny `LogFile` protocol, made by `log_file_factory(path)`, so tests can
pass a file that fails the Nth write or fdatasync, or tears a write.

`fsync=False` skips every fdatasync: acknowledged records can be lost on power loss. Bench only.
"""

from __future__ import annotations

import asyncio
import errno
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from time import perf_counter_ns
from typing import Protocol

from wal.errors import WalCorrupt, WalFailed
from wal.frame import (
    FRAME_HEADER,
    FRAME_OVERHEAD,
    PAYLOAD_SIZE_MAX,
    SEGMENT_HEADER,
    check_frame,
    decode_segment_header,
    encode_frame_into,
    encode_segment_header,
    fsync_directory,
    list_segments,
    segment_name,
    zero_tail_start,
)
from wal.waiters import DurableWaiters

__all__ = ["LogFile", "OsLogFile", "WalStats", "WalWriter"]

SEGMENT_SIZE_MAX_DEFAULT = 64 * 1024 * 1024
BATCH_RECORDS_MAX_DEFAULT = 4096
QUEUE_RECORDS_MAX_DEFAULT = 65536
FSYNC_SAMPLES_MAX = 65536  # latency samples kept for the bench (a ring, memory stays bounded)
# Preallocation (wal/FORMAT.md): zeros are written this far ahead of the last frame, at most to
# segment_size_max, whenever fewer than PREALLOCATE_LOW_WATER zero bytes are left ahead.
PREALLOCATE_CHUNK = 1024 * 1024
PREALLOCATE_LOW_WATER = PREALLOCATE_CHUNK // 2
ZERO_WRITE_MAX = 1024 * 1024  # bytes of zeros one pwrite call writes (the buffer's size)
PREALLOCATE_OFF = 2**63  # _zeroed_end after the disk had no room for zeros: none tried again
_NO_ROOM = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


class LogFile(Protocol):
    """What the writer needs from an open segment file.

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
    write + fdatasync took two (and one GIL hand-off less for the flusher thread).
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


@dataclass(frozen=True, slots=True)
class WalStats:
    batches: int
    records_flushed: int
    bytes_written: int
    fsync_latency_us_p50: float | None
    fsync_latency_us_p99: float | None
    fsync_latency_us_max: float | None


class WalWriter:
    """Group-committing appender. Make one with `WalWriter.open(...)`, then `await start()`."""

    def __init__(self, directory: Path, *, next_lsn: int, segment_size_max: int, batch_records_max: int,
                 queue_records_max: int, fsync: bool, log_file_factory: Callable[[Path], LogFile]) -> None:
        assert next_lsn >= 1
        assert segment_size_max > SEGMENT_HEADER.size + FRAME_OVERHEAD
        assert batch_records_max >= 1
        assert queue_records_max >= batch_records_max
        self.directory = directory
        self.segment_size_max = segment_size_max
        self.batch_records_max = batch_records_max
        self.queue_records_max = queue_records_max
        self.fsync = fsync
        self._factory = log_file_factory
        # Segment state: touched only by open(), then by the flusher thread, then by close().
        self._file: LogFile | None = None
        self._segment_size = 0  # where the next frame goes: the end of the last frame
        self._zeroed_end = 0  # the file's size: zeros from _segment_size to here (preallocated)
        # Loop-side state. Appended / durable LSN, the failure and the waiters: wal/waiters.py.
        self._waiters = DurableWaiters(next_lsn, queue_records_max, self._failed_error)
        self._taken_lsn = next_lsn - 1  # last lsn handed to the flusher
        self._buffer = bytearray()  # pending frames, back to back
        self._buffer_base = 0  # bytes taken from the buffer so far
        self._frame_ends: deque[int] = deque()  # end of each pending frame, counted from _buffer_base 0
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start(): the flusher wakes it
        self._thread: threading.Thread | None = None
        # Loop -> flusher: (data, lsn_before, lsn_last), or None to stop. At most one batch is in
        # flight (`_in_flight`), so it never holds more than one batch and the stop item.
        self._batches: queue.SimpleQueue[tuple[bytes | bytearray, int, int] | None] = queue.SimpleQueue()
        self._in_flight = False
        self._hand_off_scheduled = False
        self._progress: asyncio.Future[None] | None = None  # close() waits on it for each batch
        self._closing = False
        self._closed: asyncio.Future[None] | None = None
        # Counters for the bench.
        self.batches = 0
        self.records_flushed = 0
        self.bytes_written = 0
        self.fsync_latency_us: deque[float] = deque(maxlen=FSYNC_SAMPLES_MAX)
        # Observation hook, called on the loop once per durable batch (never per record):
        # on_batch(records, fsync_seconds or None when fsync is off). Set by the owner (metrics);
        # it must be cheap and must not raise.
        self.on_batch: Callable[[int, float | None], None] | None = None

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, *, next_lsn: int, segment_size_max: int = SEGMENT_SIZE_MAX_DEFAULT,
             batch_records_max: int = BATCH_RECORDS_MAX_DEFAULT,
             queue_records_max: int = QUEUE_RECORDS_MAX_DEFAULT, fsync: bool = True,
             log_file_factory: Callable[[Path], LogFile] | None = None) -> WalWriter:
        """Open the newest segment for appending at `next_lsn`, or start a new one.

        Recovery (read_log with truncate_torn_tail=True) must have run: the newest segment must
        end with a sound frame whose lsn is next_lsn - 1 (checked here, a second time).
        """
        directory = Path(directory)
        writer = cls(directory, next_lsn=next_lsn, segment_size_max=segment_size_max,
                     batch_records_max=batch_records_max, queue_records_max=queue_records_max,
                     fsync=fsync, log_file_factory=log_file_factory or partial(OsLogFile, dsync=fsync))
        segments = list_segments(directory)
        try:
            if segments:
                first_lsn, path = segments[-1]
                end, size = _check_segment_end(path, first_lsn, next_lsn)
                if end + FRAME_OVERHEAD <= segment_size_max:
                    writer._file = writer._factory(path)
                    writer._file.seek(end)
                    writer._segment_size, writer._zeroed_end = end, size
                    return writer
            writer._create_segment(next_lsn)
        except BaseException:
            if writer._file is not None:
                writer._file.close()
            raise
        return writer

    def _create_segment(self, first_lsn: int) -> None:
        """New file, header, fdatasync, fsync of the directory (so its name survives a crash). The
        zeros follow with the first batch (in the flusher: a failure there is a fail-stop with
        503s, not a server that cannot start)."""
        path = self.directory / segment_name(first_lsn)
        assert not path.exists(), path
        file = self._factory(path)
        self._file = file
        self._segment_size = self._zeroed_end = 0
        self._write_all(encode_segment_header(first_lsn))
        if self.fsync:
            if not file.dsync:
                file.fdatasync()
            fsync_directory(self.directory)

    def _top_up(self) -> None:
        """Another chunk of synced zeros once fewer than PREALLOCATE_LOW_WATER bytes are left."""
        if self._zeroed_end - self._segment_size < PREALLOCATE_LOW_WATER:
            self._preallocate(0)

    def _preallocate(self, needed: int) -> None:
        """Write zeros so the segment file holds at least `needed` bytes and PREALLOCATE_CHUNK
        past its last frame (no more than segment_size_max, unless `needed` is more), then
        fdatasync them (O_DSYNC: already synced): a later write + fdatasync in that region changes no metadata (no
        size change, no unwritten extent to convert), so the sync writes no journal commit."""
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

    # -- the loop side -------------------------------------------------------------------

    @property
    def appended_lsn(self) -> int:
        return self._waiters.appended_lsn

    @property
    def durable_lsn(self) -> int:
        return self._waiters.durable_lsn

    @property
    def failed(self) -> bool:
        return self._waiters.failure is not None

    def room(self) -> int:
        """Frames that can still be appended before WalFull (pending = appended - durable)."""
        return self._waiters.room()

    def append(self, lsn: int, payload: bytes) -> None:
        waiters = self._waiters
        waiters.check_append(lsn)  # WalFailed, WalFull
        assert not self._closing, "append after close"
        buffer = self._buffer
        encode_frame_into(buffer, lsn, payload)
        self._frame_ends.append(self._buffer_base + len(buffer))
        waiters.appended_lsn = lsn
        if not self._in_flight and not self._hand_off_scheduled and self._loop is not None:
            # Appends made later in this loop turn join the batch: hand it off at the turn's end.
            self._hand_off_scheduled = True
            self._loop.call_soon(self._hand_off)

    async def wait_for_room(self, records: int = 1) -> None:
        """Return once room() >= records (re-checked after every batch); WalFailed on failure.
        Yields to the loop at least once (see DurableWaiters.wait_for_room)."""
        await self._waiters.wait_for_room(records)

    async def wait_durable(self, lsn: int) -> None:
        """Return once durable_lsn >= lsn; WalFailed if the writer failed before that."""
        await self._waiters.wait_durable(lsn)

    def durable_waiter(self, lsn: int) -> asyncio.Future[None] | None:
        """A future done once durable_lsn >= lsn (WalFailed if the writer fails first); None when
        it already is. Raises WalFailed. What the hot path awaits (no coroutine per wait)."""
        return self._waiters.waiter(lsn)

    async def start(self) -> None:
        """Start the flusher thread; frames appended before start form its first batch."""
        assert self._loop is None, "started twice"
        assert not self._closing
        self._start_flusher()

    def _start_flusher(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._flusher, name="wal-flush", daemon=True)
        self._thread.start()
        self._hand_off()

    async def close(self) -> None:
        """Flush every pending frame (write + fdatasync), stop the flusher, close the file.

        Idempotent. Does not raise when the writer failed: the waiters already got WalFailed.
        """
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        self._closing = True
        try:
            if self._loop is None and self._waiters.failure is None:
                self._start_flusher()  # closed without start: flush what was appended anyway
            while self._waiters.failure is None and (self._in_flight or self._frame_ends):
                self._hand_off()
                self._progress = loop.create_future()
                await self._progress
        finally:
            self._stop_flusher()
            if self._file is not None:
                file, self._file = self._file, None
                try:
                    file.close()
                except OSError as error:  # everything was synced already, or we failed before
                    if self._waiters.failure is None:
                        self._fail(error)
            self._closed.set_result(None)

    def _stop_flusher(self) -> None:
        """The stop item, then join: the thread is idle (no batch in flight) or already gone."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._batches.put(None)
            thread.join()

    def stats(self) -> WalStats:
        samples = sorted(self.fsync_latency_us)
        def at(q: float) -> float | None:
            return samples[min(len(samples) - 1, int(q * len(samples)))] if samples else None
        return WalStats(self.batches, self.records_flushed, self.bytes_written,
                        at(0.50), at(0.99), samples[-1] if samples else None)

    # -- the flusher ---------------------------------------------------------------------

    def _hand_off(self) -> None:
        """On the loop: give the pending frames to the flusher unless a batch is in flight."""
        self._hand_off_scheduled = False
        if self._in_flight or not self._frame_ends or self._waiters.failure is not None or self._thread is None:
            return
        data, lsn_last = self._take_batch()
        self._in_flight = True
        self._batches.put((data, self._taken_lsn, lsn_last))
        self._taken_lsn = lsn_last
        self._waiters.cut(lsn_last)

    def _flusher(self) -> None:
        """The flusher thread: one batch at a time; after a failure it takes nothing more."""
        loop = self._loop
        assert loop is not None
        while (batch := self._batches.get()) is not None:
            data, lsn_before, lsn_last = batch
            try:
                latency_us = self._write_batch(data, lsn_before)
            except BaseException as error:  # OSError: fail-stop; anything else is a bug: stop too
                _call_soon_threadsafe(loop, self._batch_failed, error)
                return
            _call_soon_threadsafe(loop, self._batch_done, lsn_last, len(data), latency_us)
            try:  # while the loop answers the batch: zeros for the next ones
                self._top_up()
            except BaseException as error:
                _call_soon_threadsafe(loop, self._batch_failed, error)
                return

    def _batch_done(self, lsn_last: int, size: int, latency_us: float | None) -> None:
        """On the loop, once per batch: wake its waiters, then hand off the next batch."""
        self._in_flight = False
        self._batch_durable(lsn_last, size, latency_us)
        self._hand_off()
        self._notify_progress()

    def _batch_failed(self, error: BaseException) -> None:
        self._in_flight = False
        self._fail(error)
        self._notify_progress()
        if not isinstance(error, OSError):
            raise error

    def _notify_progress(self) -> None:
        progress, self._progress = self._progress, None
        if progress is not None and not progress.done():
            progress.set_result(None)

    def _take_batch(self) -> tuple[bytes | bytearray, int]:
        ends = self._frame_ends
        count = min(len(ends), self.batch_records_max)
        if count == len(ends):  # common case: everything pending fits; swap buffers, no copy
            data = self._buffer
            self._buffer = bytearray()
            ends.clear()
        else:
            cut = ends[count - 1] - self._buffer_base
            data = self._buffer[:cut]  # one copy; the loop keeps appending meanwhile
            del self._buffer[:cut]
            for _ in range(count):
                ends.popleft()
        self._buffer_base += len(data)
        return data, self._taken_lsn + count

    def _write_batch(self, data: bytes | bytearray, lsn_before: int) -> float | None:
        """In the flusher thread: rotate if needed, one write, one fdatasync (none with dsync).
        Returns the microseconds of the write + sync (None when fsync is off)."""
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

    def _rotate(self, first_lsn: int) -> None:
        file, self._file = self._file, None
        assert file is not None
        file.close()  # its last batch was fdatasync'd already
        self._create_segment(first_lsn)

    def _write_all(self, data: bytes | bytearray) -> None:
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

    def _batch_durable(self, lsn_last: int, size: int, latency_us: float | None) -> None:
        records = lsn_last - self._waiters.durable_lsn
        self.batches += 1
        self.records_flushed += records
        self.bytes_written += size
        if latency_us is not None:
            self.fsync_latency_us.append(latency_us)
        if self.on_batch is not None:
            self.on_batch(records, None if latency_us is None else latency_us / 1e6)
        self._waiters.release(lsn_last)  # durable_lsn = lsn_last

    def _fail(self, error: BaseException) -> None:
        self._closing = True
        self._waiters.fail(error)  # every waiter gets _failed_error(); room waiters wake and raise

    def _failed_error(self) -> WalFailed:
        failure = self._waiters.failure
        failed = WalFailed(f"the log writer stopped after an I/O error at lsn {self._waiters.durable_lsn + 1}: {failure!r}")
        failed.__cause__ = failure
        return failed


def _call_soon_threadsafe(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object) -> None:
    """From the flusher thread; a loop already closed (its owner never called close()) is ignored."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass


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
