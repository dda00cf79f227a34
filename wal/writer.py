"""WalWriter: group commit into segment files, fail-stop on any I/O error.

How a record becomes durable:

    append(lsn, payload)            sync, on the loop: encode one frame into the pending buffer;
                                    the first append of a batch schedules one hand-off (call_soon)
    hand-off (on the loop)          when no batch is in flight: take <= batch_records_max pending
                                    frames (one bytes object) and submit them to the flusher
    flusher (wal/flusher.py)        a child process (flusher_process=True: `tally serve`), else a
                                    thread: rotate if the segment would pass segment_size_max, ONE
                                    write (O_DSYNC: durable when it returns; a test LogFile without
                                    dsync gets ONE fdatasync after it), reply once; then top up
                                    the preallocated zeros (wal/appender.py SegmentAppender)
    back on the loop                durable_lsn = the batch's last lsn; wake every waiter <= it;
                                    hand off the frames appended meanwhile as the next batch

One fdatasync costs ~150 us on this disk (shared/research/machine-limits.md), so one writer that
synced each record would top out near 6.6k records/s; a batch shares that cost. The write and the
sync run off the loop so it keeps parsing requests meanwhile, and frames appended meanwhile form
the next batch. At most one batch is in flight, so batches stay as large as the sync time allows
and the flusher's queue is bounded. Why `tally serve` flushes in a process: wal/flusher.py.

Fail-stop (ZODB `_finish`, TigerBeetle): any OSError from write, fdatasync or rotation, or the
flusher process going away, marks the writer failed for good. An fsync is never retried (after a
failed fsync the kernel may already have dropped the dirty pages, so a retry can "succeed"
without the data). Every waiter not yet durable and every later append / wait gets WalFailed;
durable_lsn never moves again.

`fsync=False` skips every fdatasync: acknowledged records can be lost on power loss. Bench only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from wal.appender import LogFile, OsLogFile, SegmentAppender
from wal.errors import WalFailed
from wal.flusher import Flusher, ProcessFlusher, ThreadFlusher
from wal.frame import encode_frame_into
from wal.waiters import DurableWaiters

__all__ = ["WalStats", "WalWriter"]

SEGMENT_SIZE_MAX_DEFAULT = 64 * 1024 * 1024
BATCH_RECORDS_MAX_DEFAULT = 4096
QUEUE_RECORDS_MAX_DEFAULT = 65536
FSYNC_SAMPLES_MAX = 65536  # latency samples kept for the bench (a ring, memory stays bounded)


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

    def __init__(self, directory: Path, flusher: Flusher, *, next_lsn: int, batch_records_max: int,
                 queue_records_max: int) -> None:  # fmt: skip
        assert next_lsn >= 1
        assert batch_records_max >= 1
        assert queue_records_max >= batch_records_max
        self.directory = directory
        self.batch_records_max = batch_records_max
        self.queue_records_max = queue_records_max
        self._flusher = flusher  # owns the segment file, its size limit and fsync (wal/flusher.py)
        # Loop-side state. Appended / durable LSN, the failure and the waiters: wal/waiters.py.
        self._waiters = DurableWaiters(next_lsn, queue_records_max, self._failed_error)
        self._taken_lsn = next_lsn - 1  # last lsn handed to the flusher
        self._buffer = bytearray()  # pending frames, back to back
        self._buffer_base = 0  # bytes taken from the buffer so far
        self._frame_ends: deque[int] = deque()  # end of each pending frame, counted from _buffer_base 0
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start()
        self._started = False  # the flusher runs: batches may be submitted
        self._in_flight = False  # one batch at most is with the flusher
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
             log_file_factory: Callable[[Path], LogFile] | None = None, flusher_process: bool = False,
             keep_fds: tuple[int, ...] = ()) -> WalWriter:  # fmt: skip
        """Open the newest segment for appending at `next_lsn`, or start a new one.

        Recovery (read_log with truncate_torn_tail=True) must have run: the newest segment must
        end with a sound frame whose lsn is next_lsn - 1 (checked here, a second time).
        flusher_process: write and sync in a child process (wal/flusher.py; a LogFile factory is
        Python code and needs the thread); `keep_fds` stay open in that child while it lives (the
        data directory's lock). Raises WalCorrupt, OSError.
        """
        assert not (flusher_process and log_file_factory is not None), "a LogFile factory runs in the thread"
        directory = Path(directory)
        factory = log_file_factory or partial(OsLogFile, dsync=fsync)
        appender = SegmentAppender.open(directory, next_lsn=next_lsn, segment_size_max=segment_size_max,
                                        fsync=fsync, factory=factory)  # fmt: skip
        flusher: Flusher = ThreadFlusher(appender)
        if flusher_process:
            position = appender.position
            appender.close()  # the child reopens it
            flusher = ProcessFlusher(directory, position, segment_size_max=segment_size_max, fsync=fsync,
                                     keep_fds=keep_fds)  # fmt: skip
        return cls(directory, flusher, next_lsn=next_lsn, batch_records_max=batch_records_max,
                   queue_records_max=queue_records_max)

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
        """Start the flusher (a process: spawned and READY); frames appended before start form
        its first batch. Raises OSError when the flusher cannot start."""
        assert self._loop is None, "started twice"
        assert not self._closing
        await self._start_flusher()

    async def _start_flusher(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._flusher.start(self._batch_done, self._batch_failed)
        self._started = True
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
                await self._start_flusher()  # closed without start: flush what was appended anyway
            while self._waiters.failure is None and (self._in_flight or self._frame_ends):
                self._hand_off()
                self._progress = loop.create_future()
                await self._progress
        finally:
            try:
                await self._flusher.stop()
            except OSError as error:  # everything was synced already, or we failed before
                if self._waiters.failure is None:
                    self._fail(error)
            self._closed.set_result(None)

    def stats(self) -> WalStats:
        samples = sorted(self.fsync_latency_us)
        def at(q: float) -> float | None:
            return samples[min(len(samples) - 1, int(q * len(samples)))] if samples else None
        return WalStats(self.batches, self.records_flushed, self.bytes_written,
                        at(0.50), at(0.99), samples[-1] if samples else None)

    # -- batches -------------------------------------------------------------------------

    def _hand_off(self) -> None:
        """On the loop: give the pending frames to the flusher unless a batch is in flight."""
        self._hand_off_scheduled = False
        if self._in_flight or not self._frame_ends or self._waiters.failure is not None or not self._started:
            return
        data, lsn_last = self._take_batch()
        self._in_flight = True
        self._flusher.submit(data, self._taken_lsn, lsn_last)
        self._taken_lsn = lsn_last
        self._waiters.cut(lsn_last)

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
