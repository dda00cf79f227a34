"""wal/flusher.py ProcessFlusher + wal/flusher_main.py: the WAL written and synced by a child process.

What: records come back whole and in order (also across rotation and with fsync off); the child
exits 0 on close and ignores SIGINT / SIGTERM; the child being killed, or failing a write (a real
EFBIG from a file size limit set on it), stops the writer for good (WalFailed, durable_lsn frozen)
and recovery then finds exactly the acknowledged records; the child keeps the data directory's lock
while it lives; a child that cannot open the segment makes start() raise.
How: real child processes, real files; the faults are real ones (SIGKILL, RLIMIT_FSIZE).
Could fail if: a batch is acknowledged before the child reported it written, a dead or failed
child goes unnoticed (a waiter would hang or, worse, be woken), the lock is dropped while a child
can still write, or a child outlives close().
"""

import asyncio
import errno
import os
import resource
import signal
from pathlib import Path

import pytest

from tests.wal.faults import write_history
from wal import DataDirLock, DataDirLocked, WalFailed, WalWriter, read_log
from wal.frame import list_segments

WAIT_S = 10.0


def flusher_pid(writer: WalWriter) -> int:
    pid = getattr(writer._flusher, "pid", None)
    assert isinstance(pid, int), "not a process flusher"
    return pid


def gone(pid: int) -> bool:
    """True once `pid` has exited and was reaped (Popen.wait in stop())."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def until(predicate, what: str) -> None:
    for _ in range(int(WAIT_S / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def append_durable(writer: WalWriter, payloads: list[bytes]) -> None:
    for payload in payloads:
        lsn = writer.appended_lsn + 1
        writer.append(lsn, payload)
        await writer.wait_durable(lsn)


async def test_records_round_trip_and_the_child_exits_on_close(tmp_path: Path) -> None:
    payloads = [b"%d" % i * (i % 7 + 1) for i in range(1, 501)]
    writer = WalWriter.open(tmp_path, next_lsn=1, batch_records_max=16, flusher_process=True)
    await writer.start()
    pid = flusher_pid(writer)
    os.kill(pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the group: the child ignores it
    os.kill(pid, signal.SIGTERM)
    await asyncio.gather(*(append_durable(writer, payloads[i::20]) for i in range(20)))
    assert writer.durable_lsn == writer.appended_lsn == 500
    assert writer.records_flushed == 500 and 500 // 16 <= writer.batches < 500  # group commit
    await writer.close()
    assert gone(pid)
    assert sorted(payload for _, payload in read_log(tmp_path)) == sorted(payloads)
    assert [lsn for lsn, _ in read_log(tmp_path)] == list(range(1, 501))


async def test_rotation_and_a_reopened_log_in_the_child(tmp_path: Path) -> None:
    first = [b"a" * 100] * 120
    await write_history(tmp_path, first, segment_size_max=4096, batch_records_max=8, flusher_process=True)
    assert len(list_segments(tmp_path)) >= 3
    await write_history(tmp_path, [b"b" * 50] * 30, first_lsn=121, segment_size_max=4096, flusher_process=True)
    assert list(read_log(tmp_path)) == list(enumerate(first + [b"b" * 50] * 30, start=1))


async def test_fsync_off_still_writes_every_record(tmp_path: Path) -> None:
    writer = await write_history(tmp_path, [b"x"] * 50, fsync=False, flusher_process=True)
    assert writer.records_flushed == 50
    assert len(list(read_log(tmp_path))) == 50


async def test_a_killed_child_stops_the_writer_for_good(tmp_path: Path) -> None:
    writer = WalWriter.open(tmp_path, next_lsn=1, flusher_process=True)
    await writer.start()
    await append_durable(writer, [b"kept"] * 5)
    os.kill(flusher_pid(writer), signal.SIGKILL)
    await until(lambda: writer.failed, "the writer to fail")
    with pytest.raises(WalFailed) as failed:
        writer.append(6, b"never")
    assert isinstance(failed.value.__cause__, OSError) and failed.value.__cause__.errno == errno.EPIPE
    assert writer.durable_lsn == 5
    await writer.close()  # does not raise: the waiters were told already
    assert list(read_log(tmp_path, truncate_torn_tail=True)) == [(lsn, b"kept") for lsn in range(1, 6)]


async def test_a_write_error_in_the_child_is_a_fail_stop(tmp_path: Path) -> None:
    """RLIMIT_FSIZE on the child: no room for zeros, then a frame write meets the limit (EFBIG,
    a short write first): FAILED, nothing after it acknowledged, recovery cuts the torn tail."""
    writer = WalWriter.open(tmp_path, next_lsn=1, flusher_process=True)
    await writer.start()
    resource.prlimit(flusher_pid(writer), resource.RLIMIT_FSIZE, (4096, 4096))
    with pytest.raises(WalFailed) as failed:
        await append_durable(writer, [b"r" * 100] * 100)
    assert isinstance(failed.value.__cause__, OSError) and failed.value.__cause__.errno == errno.EFBIG
    acknowledged = writer.durable_lsn
    assert 0 < acknowledged < 100
    with pytest.raises(WalFailed):
        writer.append(writer.appended_lsn + 1, b"never")
    await writer.close()
    assert list(read_log(tmp_path, truncate_torn_tail=True)) == [(lsn, b"r" * 100) for lsn in range(1, acknowledged + 1)]


async def test_the_child_keeps_the_data_directory_locked_while_it_lives(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path)
    lock.acquire()
    writer = WalWriter.open(tmp_path, next_lsn=1, flusher_process=True, keep_fds=(lock.fileno(),))
    await writer.start()
    lock.release()  # this process lets go; the child's copy of the descriptor still holds it
    with pytest.raises(DataDirLocked):
        DataDirLock(tmp_path).acquire()
    await append_durable(writer, [b"x"])
    await writer.close()
    with DataDirLock(tmp_path):
        pass


async def test_a_child_that_cannot_open_the_segment_fails_start(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    writer = WalWriter.open(tmp_path / "log", next_lsn=1, flusher_process=True)
    for path in (tmp_path / "log").iterdir():
        path.unlink()
    (tmp_path / "log").rmdir()  # the segment's directory is gone before the child opens it
    with pytest.raises(OSError) as refused:
        await writer.start()
    assert refused.value.errno == errno.ENOENT
