"""Preallocated segments (wal/FORMAT.md "Preallocation: the zero tail").

What: the writer zero-fills a segment ahead of its last frame, so a batch overwrites zeros and its
sync changes no metadata. Every reader takes zeros after a frame boundary as the end of the log;
a torn write over the zeros is still cut; zeros then a sound frame is corruption; an older
segment keeps its zero tail; backup copies a preallocated segment up to its last frame; the
default file is O_DSYNC (no separate fdatasync).

How: real files through WalWriter / read_log / verify_log / backup, damaged by hand.

How it could fail: a reader taking the zeros for a torn tail (cutting, or searching 1 MiB byte by
byte), or for corruption (refusing to start); the writer resuming at the file's end instead of
after its last frame (a gap of zeros, then records: corruption at the next start); a torn frame
in the zeros being kept.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from tests.wal.faults import FaultPlan, flip_bit, frame_offsets, write_history, write_history_sync
from wal import OsLogFile, WalCorrupt, WalFailed, WalWriter, backup, read_log, verify_log
from wal.frame import SEGMENT_HEADER, encode_frame, list_segments, segment_name
from wal.appender import PREALLOCATE_CHUNK

PAYLOADS = [bytes([i]) * (7 * i) for i in range(1, 9)]


def only_segment(directory: Path) -> Path:
    (segment,) = list_segments(directory)
    return segment[1]


def test_a_new_segment_is_zero_filled_ahead_and_reads_back(tmp_path: Path) -> None:
    write_history_sync(tmp_path, PAYLOADS)
    path = only_segment(tmp_path)
    end = frame_offsets(path)[-1]
    data = path.read_bytes()
    assert len(data) == PREALLOCATE_CHUNK + SEGMENT_HEADER.size  # header + one chunk of zeros ahead
    assert data[end:] == bytes(len(data) - end)
    reader = read_log(tmp_path, truncate_torn_tail=True)
    assert list(reader) == list(enumerate(PAYLOADS, start=1)) and reader.torn is None
    assert path.read_bytes() == data  # nothing cut
    report = verify_log(tmp_path)
    assert (report.ok, report.records, report.torn) == (True, 8, None)


async def test_the_writer_resumes_after_the_last_frame_not_at_the_file_end(tmp_path: Path) -> None:
    await write_history(tmp_path, PAYLOADS[:3])
    size = only_segment(tmp_path).stat().st_size
    await write_history(tmp_path, PAYLOADS[3:], first_lsn=4)
    assert list(read_log(tmp_path)) == list(enumerate(PAYLOADS, start=1))
    assert only_segment(tmp_path).stat().st_size == size  # the zeros were overwritten, not appended to


async def test_zeros_are_topped_up_ahead_and_a_batch_larger_than_them_fits(tmp_path: Path) -> None:
    big = [b"b" * (PREALLOCATE_CHUNK // 3)] * 4  # one batch larger than the zeros left
    writer = WalWriter.open(tmp_path, next_lsn=1)
    await writer.start()
    for lsn, payload in enumerate(big, start=1):
        writer.append(lsn, payload)
    await writer.wait_durable(4)
    await writer.close()
    path = only_segment(tmp_path)
    end = frame_offsets(path)[-1]
    assert path.stat().st_size - end >= PREALLOCATE_CHUNK // 2  # topped up after the batch
    assert list(read_log(tmp_path)) == list(enumerate(big, start=1))


def test_a_torn_frame_over_the_zeros_is_cut_and_the_log_continues(tmp_path: Path) -> None:
    write_history_sync(tmp_path, PAYLOADS)
    path = only_segment(tmp_path)
    end = frame_offsets(path)[-1]
    frame = encode_frame(9, b"never acknowledged" * 5)
    with open(path, "r+b") as file:  # a write that reached only its first 40 bytes
        file.seek(end)
        file.write(frame[:40])
    reader = read_log(tmp_path, truncate_torn_tail=True)
    assert list(reader) == list(enumerate(PAYLOADS, start=1))
    torn = reader.torn
    assert torn is not None and torn.offset == end and torn.length == len(frame[:40].rstrip(b"\0"))
    assert torn.saved_to is not None and torn.saved_to.read_bytes() == frame[:40].rstrip(b"\0")
    assert path.stat().st_size == end  # truncated at the tear
    write_history_sync(tmp_path, [b"again"], first_lsn=9)
    assert list(read_log(tmp_path))[-1] == (9, b"again")
    assert path.stat().st_size > end + PREALLOCATE_CHUNK // 2  # zero-filled again when reopened


def test_a_sound_frame_after_a_gap_of_zeros_is_corruption(tmp_path: Path) -> None:
    write_history_sync(tmp_path, PAYLOADS)
    path = only_segment(tmp_path)
    end = frame_offsets(path)[-1]
    with open(path, "r+b") as file:
        file.seek(end + 512)
        file.write(encode_frame(9, b"after a hole"))
    before = path.read_bytes()
    with pytest.raises(WalCorrupt, match="a sound frame follows") as caught:
        list(read_log(tmp_path, truncate_torn_tail=True))
    assert caught.value.offset == end
    assert path.read_bytes() == before
    assert not verify_log(tmp_path).ok


def test_a_flip_in_the_zero_tail(tmp_path: Path) -> None:
    """Newest segment: garbage after the last frame is a torn tail (cut; no record lost).
    Older segment: damage after its last frame is corruption, as anywhere in it."""
    write_history_sync(tmp_path, [b"z" * 30] * 12, segment_size_max=200, batch_records_max=1)
    segments = list_segments(tmp_path)
    assert len(segments) >= 3
    older, newest = segments[0][1], segments[-1][1]
    assert older.stat().st_size == 200  # preallocated to segment_size_max, kept when rotated
    flip_bit(newest, frame_offsets(newest)[-1] + 3, 2)
    reader = read_log(tmp_path, truncate_torn_tail=True)
    assert len(list(reader)) == 12 and reader.torn is not None
    assert reader.torn.offset == frame_offsets(newest)[-1]
    flip_bit(older, frame_offsets(older)[-1] + 1, 0)
    with pytest.raises(WalCorrupt, match="not the newest segment"):
        list(read_log(tmp_path))


def test_rotation_keeps_every_record_across_preallocated_segments(tmp_path: Path) -> None:
    payloads = [bytes([i]) * (3 + i % 40) for i in range(200)]
    write_history_sync(tmp_path, payloads, segment_size_max=1000, batch_records_max=3)
    segments = list_segments(tmp_path)
    assert len(segments) > 5
    assert all(path.stat().st_size == 1000 for _, path in segments[:-1])
    assert list(read_log(tmp_path)) == list(enumerate(payloads, start=1))
    assert verify_log(tmp_path).ok


def test_a_newest_segment_of_zeros_is_removed_by_recovery(tmp_path: Path) -> None:
    write_history_sync(tmp_path, PAYLOADS)
    (tmp_path / segment_name(9)).write_bytes(bytes(4096))  # a crash before its header was synced
    reader = read_log(tmp_path, truncate_torn_tail=True)
    assert len(list(reader)) == 8 and reader.torn is not None and reader.torn.offset == 0
    assert not (tmp_path / segment_name(9)).exists()
    write_history_sync(tmp_path, [b"next"], first_lsn=9)
    assert list(read_log(tmp_path))[-1] == (9, b"next")


def test_backup_copies_a_preallocated_segment_up_to_its_last_frame(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "copy"
    source.mkdir()
    write_history_sync(source, PAYLOADS, segment_size_max=300, batch_records_max=2)
    report = backup(source, target)
    assert report.last_lsn == 8
    assert list(read_log(target)) == list(enumerate(PAYLOADS, start=1))
    newest = list_segments(target)[-1][1]
    assert newest.stat().st_size == frame_offsets(list_segments(source)[-1][1])[-1]  # no zeros copied
    write_history_sync(target, [b"restored"], first_lsn=9, segment_size_max=300)
    assert list(read_log(target))[-1] == (9, b"restored")


async def test_the_default_file_syncs_each_write_and_a_test_file_gets_fdatasync(tmp_path: Path) -> None:
    file = OsLogFile(tmp_path / "f", dsync=True)
    try:
        assert file.dsync and fcntl.fcntl(file.fd, fcntl.F_GETFL) & os.O_DSYNC
        file.seek(5)
        assert file.write(b"abc") == 3 and file.position == 8
        file.extend(16)
        assert file.position == 8
    finally:
        file.close()
    assert (tmp_path / "f").read_bytes() == bytes(5) + b"abc" + bytes(8)
    plan = FaultPlan()  # dsync False: the writer calls fdatasync after each write
    (tmp_path / "log").mkdir()
    await write_history(tmp_path / "log", PAYLOADS, log_file_factory=plan.factory)
    assert plan.fsyncs >= 2 and plan.calls.count("fdatasync") == plan.fsyncs


async def test_no_room_for_zeros_writes_without_them(tmp_path: Path) -> None:
    """ENOSPC / EFBIG while zero-filling is not a failure: the frames are written without zeros
    (the file grows as before); a frame write that meets the limit fails-stop by itself."""
    class NoRoom(OsLogFile):
        def extend(self, size: int) -> None:
            raise OSError(errno.ENOSPC, "no room for zeros")

    writer = await write_history(tmp_path, PAYLOADS, log_file_factory=NoRoom)
    assert not writer.failed and writer.durable_lsn == 8
    path = only_segment(tmp_path)
    assert path.stat().st_size == frame_offsets(path)[-1]  # no zeros
    assert list(read_log(tmp_path)) == list(enumerate(PAYLOADS, start=1))

    class Broken(OsLogFile):
        def extend(self, size: int) -> None:
            raise OSError(errno.EIO, "device error")

    (tmp_path / "eio").mkdir()
    failing = WalWriter.open(tmp_path / "eio", next_lsn=1, log_file_factory=Broken)
    await failing.start()
    failing.append(1, b"x")
    with pytest.raises(WalFailed):  # any other error while zero-filling: fail-stop
        await failing.wait_durable(1)
    assert failing.failed
    await failing.close()
