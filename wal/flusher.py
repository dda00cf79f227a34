"""The WAL writer's flushers: where a batch is written and synced, off the event loop.

    flusher.start(done, failed)          await once; then, on the loop:
    flusher.submit(data, lsn_before, lsn_last)    at most ONE batch in flight (the writer's rule)
        -> done(lsn_last, size, write_sync_us | None) or failed(error), called on the loop
    await flusher.stop()                 no batch in flight; closes the segment (OSError)

ProcessFlusher (the default for a served data directory): a child process (`python -m
wal.flusher_main`, wal/flusher_main.py) owns the segment file and runs the SegmentAppender; the
loop sends it each batch over a Unix socket and reads one small reply per batch. Why a process and
not a thread: a flusher thread needs the GIL to start its write and again after the write returns,
and a loop thread busy in Python holds it for the whole switch interval (5 ms). Measured on this
machine: an O_DSYNC write of 2 KiB took 5.6 ms in a thread beside a busy loop thread against
140 µs beside an idle one, and 129 µs in a child process either way. A thread flusher therefore
completes batches only when the loop runs out of work, which left the loop idle a quarter of the
time under load and batches at half the connections (issue 14). The flusher process has its own
interpreter and its own GIL: a batch is durable when its sync returns, whatever the loop is doing.

ThreadFlusher: the same SegmentAppender in a thread of this process. For LogFile factories
(tests that fail the Nth write or fdatasync, or tear a write: Python objects that cannot cross to
another process) and for callers that ask for it.

The wire between loop and flusher process (both ends in this package; native byte order, one
machine): a request is _REQUEST (lsn_before, lsn_last, length) then `length` bytes of frames;
lsn_last == 0 asks the process to close the segment and exit. A reply is _REPLY (kind, errno,
lsn_last, size, write_sync_us): READY once the segment is open, DONE per batch, FAILED with
`size` bytes of message after it (errno 0: not an OSError, a bug), after which it exits.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol, cast

import msgspec

from wal.appender import SegmentAppender, SegmentPosition

__all__ = ["Flusher", "FlusherSpec", "ProcessFlusher", "ThreadFlusher"]

DoneFn = Callable[[int, int, "float | None"], None]
FailedFn = Callable[[BaseException], None]

REQUEST: Final = struct.Struct("=QQQ")  # lsn_before, lsn_last, length; lsn_last 0: stop
REPLY: Final = struct.Struct("=BxxxiQQd")  # kind, errno, lsn_last, size (FAILED: message bytes), µs
READY: Final = 0
DONE: Final = 1
FAILED: Final = 2
FAILURE_MESSAGE_MAX: Final = 4096  # bytes of a FAILED reply's message (it is cut, never refused)
SOCKET_BUFFER_BYTES: Final = 4 * 1024 * 1024  # most batches pass in one send
START_TIMEOUT_S: Final = 300.0  # the child imports, opens the segment and says READY (slow under valgrind)
STOP_TIMEOUT_S: Final = 30.0  # the child closes the segment and exits (nothing in flight)


class Flusher(Protocol):
    async def start(self, done: DoneFn, failed: FailedFn) -> None: ...
    def submit(self, data: bytes | bytearray, lsn_before: int, lsn_last: int) -> None: ...
    async def stop(self) -> None: ...


class ThreadFlusher:
    """The appender in a thread of this process (`wal-flush`); one queue put and one
    call_soon_threadsafe per batch. After a failure it takes nothing more."""

    def __init__(self, appender: SegmentAppender) -> None:
        self._appender = appender
        # Loop -> thread: (data, lsn_before, lsn_last), or None to stop. The writer keeps at most
        # one batch in flight, so this never holds more than one batch and the stop item.
        self._batches: queue.SimpleQueue[tuple[bytes | bytearray, int, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def start(self, done: DoneFn, failed: FailedFn) -> None:
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, args=(loop, done, failed), name="wal-flush", daemon=True)
        self._thread.start()

    def submit(self, data: bytes | bytearray, lsn_before: int, lsn_last: int) -> None:
        self._batches.put((data, lsn_before, lsn_last))

    async def stop(self) -> None:
        """The stop item, then join (the thread is idle or gone), then close the segment."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._batches.put(None)
            thread.join()
        self._appender.close()

    def _run(self, loop: asyncio.AbstractEventLoop, done: DoneFn, failed: FailedFn) -> None:
        appender = self._appender
        while (batch := self._batches.get()) is not None:
            data, lsn_before, lsn_last = batch
            try:
                latency_us = appender.write_batch(data, lsn_before)
            except BaseException as error:  # OSError: fail-stop; anything else is a bug: stop too
                _call_soon_threadsafe(loop, failed, error)
                return
            _call_soon_threadsafe(loop, done, lsn_last, len(data), latency_us)
            try:  # while the loop answers the batch: zeros for the next ones
                appender.top_up()
            except BaseException as error:
                _call_soon_threadsafe(loop, failed, error)
                return


def _call_soon_threadsafe(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object) -> None:
    """From the flusher thread; a loop already closed (its owner never called close()) is ignored."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass


class FlusherSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the flusher process is started with (JSON, its one argument): the socket's fd, the
    parent's pid (it dies with it), the segment to resume and the writer's settings."""

    fd: int
    parent_pid: int
    directory: str
    position: SegmentPosition
    segment_size_max: int
    fsync: bool


class ProcessFlusher(asyncio.Protocol):
    """The appender in a child process. `keep_fds` stay open in the child for as long as it lives:
    pass the data directory's lock, so no new server can take the directory while a flusher of a
    killed one is still exiting (it gets SIGKILL when its parent dies, PR_SET_PDEATHSIG)."""

    def __init__(self, directory: Path, position: SegmentPosition, *, segment_size_max: int, fsync: bool,
                 keep_fds: tuple[int, ...] = ()) -> None:  # fmt: skip
        self._directory = directory
        self._position = position
        self._segment_size_max = segment_size_max
        self._fsync = fsync
        self._keep_fds = keep_fds
        self._process: subprocess.Popen[bytes] | None = None
        self._transport: asyncio.Transport | None = None
        self._replies = bytearray()
        self._ready: asyncio.Future[None] | None = None
        self._gone: asyncio.Future[None] | None = None  # set when the socket closes
        self._done: DoneFn | None = None
        self._failed: FailedFn | None = None
        self._failure: BaseException | None = None  # what FAILED (or the socket closing) said
        self._stopping = False

    async def start(self, done: DoneFn, failed: FailedFn) -> None:
        """Spawn the child and wait for READY. Raises OSError (spawn, or the child's own error)."""
        loop = asyncio.get_running_loop()
        self._done, self._failed = done, failed
        self._ready, self._gone = loop.create_future(), loop.create_future()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for side in (ours, theirs):
                side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
                side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
            self._process = self._spawn(theirs.fileno())
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        await loop.create_unix_connection(lambda: self, sock=ours)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT_S)
        except BaseException:
            await self._kill()
            raise

    def _spawn(self, fd: int) -> subprocess.Popen[bytes]:
        spec = FlusherSpec(fd=fd, parent_pid=os.getpid(), directory=str(self._directory), position=self._position,
                           segment_size_max=self._segment_size_max, fsync=self._fsync)  # fmt: skip
        argv = [sys.executable, "-m", "wal.flusher_main", msgspec.json.encode(spec).decode()]
        # No preexec_fn: Python then spawns with vfork, cheap even beside a large ledger in memory.
        # The child's PR_SET_PDEATHSIG fires when the spawning THREAD exits: this is the loop's
        # thread, which lives as long as the server does.
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, pass_fds=(fd, *self._keep_fds))

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def submit(self, data: bytes | bytearray, lsn_before: int, lsn_last: int) -> None:
        assert lsn_last > lsn_before >= 0 and self._transport is not None
        self._transport.writelines((REQUEST.pack(lsn_before, lsn_last, len(data)), data))

    async def stop(self) -> None:
        """Ask the child to close the segment and exit; wait for it. Raises the OSError its close
        reported. Idempotent."""
        if self._process is None:
            return
        if self._transport is not None and self._failure is None and not self._stopping:
            self._stopping = True
            self._transport.write(REQUEST.pack(0, 0, 0))
        assert self._gone is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._gone), STOP_TIMEOUT_S)
        finally:
            await self._kill()
        if self._failure is not None and self._stopping and isinstance(self._failure, OSError):
            raise self._failure

    async def _kill(self) -> None:
        """Make sure the child is gone and reaped (SIGKILL if it has not exited on its own)."""
        process, self._process = self._process, None
        if self._transport is not None:
            self._transport.close()
        if process is None:
            return
        try:
            await asyncio.to_thread(process.wait, STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)

    # -- asyncio.Protocol: replies from the child ------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        replies = self._replies
        replies += data
        offset = 0
        while len(replies) - offset >= REPLY.size:
            kind, code, lsn_last, size, latency_us = REPLY.unpack_from(replies, offset)
            if kind == FAILED:
                if len(replies) - offset - REPLY.size < size:
                    break  # the message is still on its way
                start = offset + REPLY.size
                self._on_failed(code, bytes(replies[start : start + size]).decode("utf-8", "replace"))
                offset = start + size
                continue
            offset += REPLY.size
            if kind == DONE:
                assert self._done is not None
                self._done(lsn_last, size, None if math.isnan(latency_us) else latency_us)
            else:
                assert kind == READY and self._ready is not None
                self._ready.set_result(None)
        del replies[:offset]

    def _on_failed(self, code: int, message: str) -> None:
        error: BaseException = OSError(code, message) if code else RuntimeError(message)
        self._failure = error
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        elif not self._stopping and self._failed is not None:
            self._failed(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._failure is None and not self._stopping:
            # Killed, crashed, or out of memory: nothing it had not replied to can be trusted.
            self._on_failed(errno.EPIPE, f"the WAL flusher process exited ({exc or 'end of stream'})")
        assert self._gone is not None
        if not self._gone.done():
            self._gone.set_result(None)
