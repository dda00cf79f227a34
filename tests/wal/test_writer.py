"""wal/writer.py: group commit, backpressure, rotation, reopening, fail-stop.

What: what is appended comes back; batches form under concurrency and stay within
batch_records_max; WalFull / wait_for_room bound the queue; a write or fdatasync error stops the
writer for good: the failed batch's waiters, every later append and every later wait get
WalFailed, durable_lsn never moves again, and an fsync is never retried.
How: real files, plus FaultyLogFile (tests/wal/faults.py) failing the Nth write or fdatasync,
optionally held on a threading.Event so the test controls what is in flight.
Could fail if: a waiter is woken before its batch's fdatasync, a failure is retried or
swallowed, a frame is acknowledged after a failure, or the queue grows without bound.
"""

import asyncio
import threading

import pytest

from tests.wal.faults import FaultPlan, write_history
from wal import OsLogFile, WalCorrupt, WalFailed, WalFull, WalWriter, read_log
from wal.frame import FRAME_OVERHEAD, SEGMENT_HEADER, encode_frame, list_segments

FACTORIES = {"os": None, "faulty-no-faults": lambda: FaultPlan().factory}


@pytest.fixture(params=sorted(FACTORIES))
def factory(request):
    make = FACTORIES[request.param]
    return make() if make else None


async def test_round_trip_on_every_log_file(tmp_path, factory):
    payloads = [b"%d" % i * (i % 5) for i in range(1, 301)]
    writer = await write_history(tmp_path, payloads, log_file_factory=factory, batch_records_max=16)
    assert writer.durable_lsn == writer.appended_lsn == 300
    assert writer.records_flushed == 300 and writer.batches >= 300 // 16
    assert list(read_log(tmp_path)) == list(enumerate(payloads, start=1))


class SlowCountingFile(OsLogFile):
    """Real file; fdatasync takes 2 ms more; records how many frames each write carried."""

    frames_per_write: list[int] = []

    def write(self, data):
        if len(data) != SEGMENT_HEADER.size:
            self.frames_per_write.append(len(data) // (FRAME_OVERHEAD + 10))
        return super().write(data)

    def fdatasync(self):
        threading.Event().wait(0.002)
        super().fdatasync()


async def test_concurrent_appenders_share_batches(tmp_path):
    SlowCountingFile.frames_per_write = []
    writer = WalWriter.open(tmp_path, next_lsn=1, batch_records_max=16, log_file_factory=SlowCountingFile)
    await writer.start()

    async def appender(index):
        for _ in range(5):
            lsn = writer.appended_lsn + 1
            writer.append(lsn, b"%010d" % index)
            await writer.wait_durable(lsn)
            assert writer.durable_lsn >= lsn

    await asyncio.gather(*(appender(i) for i in range(100)))
    await writer.close()
    assert writer.records_flushed == 500
    assert writer.batches < 100  # 500 records, far fewer syncs: group commit happened
    assert max(SlowCountingFile.frames_per_write) == 16  # full batches, never more
    assert sum(SlowCountingFile.frames_per_write) == 500
    samples = list(writer.fsync_latency_us)  # one per batch; each includes the injected 2 ms
    assert len(samples) == writer.batches and min(samples) >= 2000


async def test_waiters_wake_only_after_their_batch_is_synced(tmp_path):
    gate = threading.Event()
    fsyncs = []

    class GatedFile(OsLogFile):
        def fdatasync(self):
            fsyncs.append(1)
            if len(fsyncs) >= 2:  # 1 = the segment header at open
                assert gate.wait(10)
            super().fdatasync()

    writer = WalWriter.open(tmp_path, next_lsn=1, log_file_factory=GatedFile)
    await writer.start()
    writer.append(1, b"a")
    waiter = asyncio.create_task(writer.wait_durable(1))
    await asyncio.sleep(0.05)
    assert not waiter.done() and writer.durable_lsn == 0
    gate.set()
    await waiter
    assert writer.durable_lsn == 1
    await writer.close()


async def test_backpressure_wal_full_and_wait_for_room(tmp_path):
    writer = WalWriter.open(tmp_path, next_lsn=1, batch_records_max=4, queue_records_max=8, fsync=False)
    for lsn in range(1, 9):
        writer.append(lsn, b"x")
    assert writer.room() == 0
    with pytest.raises(WalFull):
        writer.append(9, b"x")
    assert writer.appended_lsn == 8  # the refused append left no trace
    room = asyncio.create_task(writer.wait_for_room())
    await asyncio.sleep(0)
    assert not room.done()
    await writer.start()
    await room
    assert writer.room() > 0
    writer.append(9, b"x")
    await writer.close()
    assert [lsn for lsn, _ in read_log(tmp_path)] == list(range(1, 10))


async def test_wait_for_room_for_several_records(tmp_path):
    gate = threading.Event()

    class GatedFile(OsLogFile):
        def fdatasync(self):
            assert gate.wait(10)
            super().fdatasync()

    gate.set()  # the header at open
    writer = WalWriter.open(tmp_path, next_lsn=1, batch_records_max=2, queue_records_max=8,
                            log_file_factory=GatedFile)
    gate.clear()
    for lsn in range(1, 9):
        writer.append(lsn, b"x")
    await writer.start()
    wanted = asyncio.create_task(writer.wait_for_room(5))
    spins = 0
    while writer.room() < 5 and not writer.failed:  # the caller-loop shape must not spin the loop dry
        spins += 1
        gate.set()
        await writer.wait_for_room()
    await asyncio.wait_for(wanted, 10)
    assert writer.room() >= 5 and spins >= 1
    await writer.close()


async def test_fdatasync_failure_is_fail_stop(tmp_path):
    plan = FaultPlan(fail_fsync_at=4, hold=threading.Event())  # 1: header, 2: zeros, 3: batch [1], 4: batch [2]
    writer = WalWriter.open(tmp_path, next_lsn=1, log_file_factory=plan.factory)
    await writer.start()
    writer.append(1, b"one")
    await writer.wait_durable(1)
    writer.append(2, b"two")
    while plan.fsyncs < 4:  # the flusher holds batch [2] in its failing fdatasync
        await asyncio.sleep(0.001)
    writer.append(3, b"three")  # pending for the next batch
    failed_batch = asyncio.create_task(writer.wait_durable(2))
    next_batch = asyncio.create_task(writer.wait_durable(3))
    await asyncio.sleep(0)
    plan.hold.set()
    for waiter in (failed_batch, next_batch):
        with pytest.raises(WalFailed) as caught:
            await asyncio.wait_for(waiter, 10)  # a hang here means a waiter was forgotten
        assert isinstance(caught.value.__cause__, OSError)
    assert writer.failed and writer.durable_lsn == 1
    with pytest.raises(WalFailed):
        writer.append(4, b"four")
    with pytest.raises(WalFailed):
        await writer.wait_durable(3)
    with pytest.raises(WalFailed):
        await writer.wait_for_room()
    await writer.wait_durable(1)  # what was durable stays durable
    await writer.close()
    await writer.close()
    # header, zeros (extend: not a counted write), [1], [2]: no retry, nothing later
    assert plan.calls == ["write", "fdatasync", "fdatasync", "write", "fdatasync", "write", "fdatasync"]
    assert writer.durable_lsn == 1


async def test_write_failure_is_fail_stop(tmp_path):
    plan = FaultPlan(fail_write_at=2)  # 1: header, 2: batch [1, 2] (the zeros before it: not counted)
    writer = WalWriter.open(tmp_path, next_lsn=1, log_file_factory=plan.factory)
    writer.append(1, b"a")
    writer.append(2, b"b")
    await writer.start()
    for lsn in (1, 2):
        with pytest.raises(WalFailed):
            await asyncio.wait_for(writer.wait_durable(lsn), 10)
    assert writer.durable_lsn == 0 and plan.fsyncs == 2  # the header's, the zeros'
    await writer.close()
    assert list(read_log(tmp_path)) == []


async def test_torn_write_recovers_the_acknowledged_prefix_and_the_log_continues(tmp_path):
    plan = FaultPlan(tear_write_at=3, tear_bytes=7)  # 1: header, 2: batch [1], 3: batch [2..5] torn
    writer = WalWriter.open(tmp_path, next_lsn=1, log_file_factory=plan.factory)
    await writer.start()
    writer.append(1, b"acked")
    await writer.wait_durable(1)
    for lsn in range(2, 6):
        writer.append(lsn, b"lost %d" % lsn)
    with pytest.raises(WalFailed):
        await asyncio.wait_for(writer.wait_durable(5), 10)
    await writer.close()
    reader = read_log(tmp_path, truncate_torn_tail=True)
    assert list(reader) == [(1, b"acked")]
    # The 7 bytes torn off, less trailing zeros: they are not told apart from the preallocation.
    assert reader.torn.length == len(encode_frame(2, b"lost 2")[:7].rstrip(b"\0")) and reader.torn.saved_to.exists()
    await write_history(tmp_path, [b"again"], first_lsn=2)
    assert list(read_log(tmp_path)) == [(1, b"acked"), (2, b"again")]


async def test_close_flushes_pending_without_start_and_is_idempotent(tmp_path):
    plan = FaultPlan()
    writer = WalWriter.open(tmp_path, next_lsn=1, log_file_factory=plan.factory)
    for lsn in range(1, 4):
        writer.append(lsn, b"p")
    await writer.close()
    await writer.close()
    assert writer.durable_lsn == 3 and plan.calls[-1] == "fdatasync"
    assert [lsn for lsn, _ in read_log(tmp_path)] == [1, 2, 3]


async def test_fsync_false_never_syncs(tmp_path):
    plan = FaultPlan()
    await write_history(tmp_path, [b"u"] * 10, fsync=False, log_file_factory=plan.factory)
    assert plan.fsyncs == 0 and plan.writes >= 2


async def test_rotation_names_each_segment_by_its_first_lsn(tmp_path):
    payloads = [b"r" * 40] * 50
    await write_history(tmp_path, payloads, segment_size_max=300, batch_records_max=3, fsync=False)
    segments = list_segments(tmp_path)
    assert len(segments) > 5
    for (first_lsn, path), (next_first, _) in zip(segments, segments[1:]):
        assert path.stat().st_size <= 300
        assert [lsn for lsn, _ in read_log(tmp_path, after_lsn=first_lsn - 1)][: next_first - first_lsn] == list(
            range(first_lsn, next_first)
        )
    assert list(read_log(tmp_path)) == list(enumerate(payloads, start=1))


async def test_reopen_appends_at_the_end_and_checks_next_lsn(tmp_path):
    await write_history(tmp_path, [b"a"] * 5)
    with pytest.raises(WalCorrupt, match="next_lsn is 7"):
        WalWriter.open(tmp_path, next_lsn=7)
    await write_history(tmp_path, [b"b"] * 5, first_lsn=6)
    assert len(list_segments(tmp_path)) == 1
    assert [p for _, p in read_log(tmp_path)] == [b"a"] * 5 + [b"b"] * 5


async def test_reopen_refuses_a_torn_tail_until_recovery_cut_it(tmp_path):
    await write_history(tmp_path, [b"a"] * 5)
    (_, path), = list_segments(tmp_path)
    with open(path, "ab") as file:
        file.write(b"\x01\x02\x03")
    with pytest.raises(WalCorrupt, match="run recovery"):
        WalWriter.open(tmp_path, next_lsn=6)
    assert list(read_log(tmp_path, truncate_torn_tail=True)).__len__() == 5
    await write_history(tmp_path, [b"b"], first_lsn=6)
    assert read_log(tmp_path) is not None and [lsn for lsn, _ in read_log(tmp_path)] == [1, 2, 3, 4, 5, 6]


async def test_full_newest_segment_starts_a_new_one(tmp_path):
    await write_history(tmp_path, [b"f" * 100] * 3, segment_size_max=150, batch_records_max=1)
    before = len(list_segments(tmp_path))
    await write_history(tmp_path, [b"g"], first_lsn=4, segment_size_max=150)
    segments = list_segments(tmp_path)
    assert len(segments) == before + 1 and segments[-1][0] == 4


async def test_a_cancelled_waiter_does_not_disturb_the_others(tmp_path):
    writer = WalWriter.open(tmp_path, next_lsn=1, fsync=False)
    writer.append(1, b"c")
    doomed = asyncio.create_task(writer.wait_durable(1))
    kept = asyncio.create_task(writer.wait_durable(1))
    await asyncio.sleep(0)
    doomed.cancel()
    await writer.start()
    await kept
    await writer.close()
    assert doomed.cancelled()


async def test_open_fails_cleanly_when_the_header_write_fails(tmp_path):
    plan = FaultPlan(fail_write_at=1)
    with pytest.raises(OSError):
        WalWriter.open(tmp_path, next_lsn=1, log_file_factory=plan.factory)
    assert plan.fsyncs == 0
