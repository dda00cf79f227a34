"""wal/reader.py: replay, torn tails and corruption (the decision table at the top of reader.py).

What: read_log gives back exactly what was written; a log cut at any byte gives the complete
prefix and reports (and, if asked, cuts and saves) the torn tail; a flipped bit is never loaded
silently; gaps, missing and duplicate segments raise WalCorrupt.
How: logs written by WalWriter (fsync=False: speed, same bytes) or built by hand, then damaged.
Could fail if: a damaged frame is yielded, a torn tail is mistaken for corruption (or the
reverse), truncation cuts the wrong bytes, or an LSN gap goes unnoticed.
"""

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.wal.faults import (
    flip_bit,
    frame_offsets,
    write_history_sync,
    write_segment_raw,
)
from wal import WalCorrupt, iter_frames, read_log, verify_log
from wal.frame import SEGMENT_HEADER, list_segments, segment_name

PAYLOADS = [bytes([i]) * (i * 7 % 23) for i in range(1, 9)]  # 8 records, sizes 0..22


def read_until_error(directory: Path, **options):
    """(records read, error or None, reader)."""
    reader = read_log(directory, **options)
    records = []
    try:
        for record in reader:
            records.append(record)
    except WalCorrupt as error:
        return records, error, reader
    return records, None, reader


def test_round_trip_and_counters(tmp_path):
    write_history_sync(tmp_path, PAYLOADS, fsync=False)
    reader = read_log(tmp_path)
    assert list(reader) == list(enumerate(PAYLOADS, start=1))
    assert (reader.last_lsn, reader.records, reader.torn) == (8, 8, None)


def test_empty_directory_reads_nothing(tmp_path):
    reader = read_log(tmp_path, after_lsn=0)
    assert list(reader) == [] and reader.last_lsn == 0 and reader.torn is None


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=200), max_size=60),
    segment_size_max=st.sampled_from([120, 400, 64 * 1024 * 1024]),
    batch_records_max=st.sampled_from([1, 3, 4096]),
)
def test_any_history_reads_back_exactly(payloads, segment_size_max, batch_records_max):
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        write_history_sync(directory, payloads, fsync=False, segment_size_max=segment_size_max,
                           batch_records_max=batch_records_max)
        reader = read_log(directory)
        assert list(reader) == list(enumerate(payloads, start=1))
        assert reader.torn is None
        assert reader.last_lsn == len(payloads)
        report = verify_log(directory)
        assert report.ok and report.records == len(payloads)


def test_truncation_at_every_byte_offset_recovers_the_complete_prefix(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    write_history_sync(source, PAYLOADS, fsync=False)
    (segment,) = source.iterdir()
    boundaries = frame_offsets(segment)
    data = segment.read_bytes()[: boundaries[-1]]  # without the preallocated zeros
    for cut in range(len(data) + 1):
        directory = tmp_path / f"cut-{cut}"
        directory.mkdir()
        (directory / segment.name).write_bytes(data[:cut])
        complete = sum(1 for end in boundaries[1:] if end <= cut)
        reader = read_log(directory, truncate_torn_tail=True)
        assert list(reader) == list(enumerate(PAYLOADS[:complete], start=1)), cut
        if cut in boundaries:
            assert reader.torn is None, cut
            continue
        kept = max([b for b in boundaries if b <= cut], default=0)
        assert (reader.torn.offset, reader.torn.length) == (kept, cut - kept), cut
        if cut > 0:
            assert reader.torn.saved_to.read_bytes() == data[kept:cut]
        if kept:
            assert (directory / segment.name).read_bytes() == data[:kept]
        else:  # not even a whole header: the half-made segment is removed
            assert not (directory / segment.name).exists()
        again = read_log(directory)
        assert list(again) == list(enumerate(PAYLOADS[:complete], start=1)) and again.torn is None


def test_truncate_false_reports_but_leaves_the_file(tmp_path):
    write_history_sync(tmp_path, PAYLOADS, fsync=False)
    (segment,) = list_segments(tmp_path)
    data = segment[1].read_bytes()[: frame_offsets(segment[1])[-1]]  # without the preallocated zeros
    segment[1].write_bytes(data[:-3])
    reader = read_log(tmp_path)
    assert len(list(reader)) == 7 and reader.torn.saved_to is None
    assert segment[1].read_bytes() == data[:-3]


def test_a_bit_flip_anywhere_is_detected(tmp_path):
    """Every byte, one bit each (bit = offset % 8): never a silent load of damaged bytes."""
    source = tmp_path / "source"
    source.mkdir()
    write_history_sync(source, PAYLOADS, fsync=False)
    (segment,) = source.iterdir()
    boundaries = frame_offsets(segment)
    last_frame = boundaries[-2]
    expected = list(enumerate(PAYLOADS, start=1))
    for offset in range(boundaries[-1]):  # a flip in the zeros after: test_preallocation.py
        directory = tmp_path / f"flip-{offset}"
        shutil.copytree(source, directory)
        flip_bit(directory / segment.name, offset, offset % 8)
        records, error, reader = read_until_error(directory)
        assert records == expected[: len(records)], offset  # never anything but true records
        if offset >= last_frame:
            assert error is None and reader.torn.offset == last_frame, offset
            assert records == expected[:-1]
        else:
            assert error is not None, offset
            frame_start = max([b for b in boundaries if b <= offset], default=0)
            assert error.offset == (0 if offset < SEGMENT_HEADER.size else frame_start), offset
            assert error.path == directory / segment.name


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_random_flip_in_a_multi_segment_log_is_detected(data):
    payloads = data.draw(st.lists(st.binary(min_size=1, max_size=40), min_size=2, max_size=30))
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        write_history_sync(directory, payloads, fsync=False, segment_size_max=150, batch_records_max=2)
        segments = list_segments(directory)
        index = data.draw(st.integers(0, len(segments) - 1))
        path = segments[index][1]
        *_, last_frame, end = frame_offsets(path)
        offset = data.draw(st.integers(0, end - 1))  # a flip in the zeros after: test_preallocation.py
        flip_bit(path, offset, data.draw(st.integers(0, 7)))
        records, error, reader = read_until_error(directory)
        expected = list(enumerate(payloads, start=1))
        assert records == expected[: len(records)]
        if index == len(segments) - 1 and offset >= last_frame:
            assert error is None and reader.torn is not None and records == expected[:-1]
        else:
            assert error is not None


def test_a_bad_frame_followed_by_a_sound_one_is_corruption_not_a_tear(tmp_path):
    write_history_sync(tmp_path, PAYLOADS, fsync=False)
    (segment,) = list_segments(tmp_path)
    boundaries = frame_offsets(segment[1])
    flip_bit(segment[1], boundaries[2] + 17, 0)  # payload byte of frame 3 of 8
    before = segment[1].read_bytes()
    with pytest.raises(WalCorrupt, match="a sound frame follows") as caught:
        list(read_log(tmp_path, truncate_torn_tail=True))
    assert caught.value.offset == boundaries[2]
    assert segment[1].read_bytes() == before  # nothing was cut


def test_zeros_after_the_last_frame_end_the_log_and_are_not_cut(tmp_path):
    """The preallocated format (wal/FORMAT.md): zeros after a frame boundary are the log's end."""
    write_history_sync(tmp_path, PAYLOADS, fsync=False)
    (segment,) = list_segments(tmp_path)
    with open(segment[1], "ab") as file:
        file.write(b"\0" * 4096)
    before = segment[1].read_bytes()
    reader = read_log(tmp_path, truncate_torn_tail=True)
    assert len(list(reader)) == 8 and reader.torn is None
    assert segment[1].read_bytes() == before


def test_lsn_gap_is_corruption(tmp_path):
    write_segment_raw(tmp_path, 1, [1, 2, 4, 5])
    with pytest.raises(WalCorrupt, match="frame lsn 4, expected 3"):
        list(read_log(tmp_path))


def test_first_frame_must_match_the_segment_header(tmp_path):
    write_segment_raw(tmp_path, 1, [2, 3])
    with pytest.raises(WalCorrupt, match="frame lsn 2, expected 1"):
        list(read_log(tmp_path))


def test_missing_middle_segment_is_corruption(tmp_path):
    write_history_sync(tmp_path, [b"x" * 30] * 20, fsync=False, segment_size_max=150, batch_records_max=1)
    segments = list_segments(tmp_path)
    assert len(segments) >= 3
    assert [verify_log(tmp_path).ok, len(list(read_log(tmp_path)))] == [True, 20]
    segments[1][1].unlink()
    with pytest.raises(WalCorrupt, match="missing segment") as caught:
        list(read_log(tmp_path))
    assert caught.value.path == segments[2][1]
    report = verify_log(tmp_path)
    assert not report.ok and report.path == segments[2][1] and report.offset == 0


def test_duplicate_or_overlapping_segment_is_corruption(tmp_path):
    write_segment_raw(tmp_path, 1, [1, 2, 3])
    write_segment_raw(tmp_path, 3, [3, 4])
    with pytest.raises(WalCorrupt, match="duplicate or overlapping"):
        list(read_log(tmp_path))


def test_a_segment_name_spelled_another_way_is_corruption(tmp_path):
    write_segment_raw(tmp_path, 1, [1])
    (tmp_path / "wal-1.log").write_bytes(b"")
    with pytest.raises(WalCorrupt, match="unexpected segment file name"):
        list(read_log(tmp_path))


def test_damage_in_an_older_segment_is_never_a_torn_tail(tmp_path):
    write_history_sync(tmp_path, [b"y" * 30] * 12, fsync=False, segment_size_max=150, batch_records_max=1)
    older = list_segments(tmp_path)[0][1]
    with open(older, "r+b") as file:
        file.truncate(frame_offsets(older)[-1] - 1)  # into its last frame
    with pytest.raises(WalCorrupt, match="not the newest segment"):
        list(read_log(tmp_path, truncate_torn_tail=True))


def test_after_lsn_skips_old_segments_and_pruned_ones_are_fine(tmp_path):
    payloads = [bytes([i]) * 30 for i in range(30)]
    write_history_sync(tmp_path, payloads, fsync=False, segment_size_max=200, batch_records_max=1)
    segments = list_segments(tmp_path)
    segments[0][1].unlink()  # pruned: records 1..(segments[1].first - 1)
    after = segments[1][0] - 1
    reader = read_log(tmp_path, after_lsn=after)
    assert list(reader) == list(enumerate(payloads, start=1))[after:]
    assert reader.last_lsn == 30 and reader.records == 30 - after
    with pytest.raises(WalCorrupt, match="are missing"):
        list(read_log(tmp_path, after_lsn=after - 1))
    assert verify_log(tmp_path).ok  # verify starts at the oldest segment present


def test_log_ending_before_after_lsn_is_corruption(tmp_path):
    write_segment_raw(tmp_path, 1, [1, 2, 3])
    assert list(read_log(tmp_path, after_lsn=3)) == []
    with pytest.raises(WalCorrupt, match="before 5"):
        list(read_log(tmp_path, after_lsn=5))


def test_torn_header_of_a_new_segment_is_cut(tmp_path):
    write_segment_raw(tmp_path, 1, [1, 2])
    (tmp_path / segment_name(3)).write_bytes(b"TALLY")  # crash while rotating
    reader = read_log(tmp_path, truncate_torn_tail=True)
    assert [lsn for lsn, _ in reader] == [1, 2]
    assert reader.torn.offset == 0 and reader.torn.length == 5
    assert not (tmp_path / segment_name(3)).exists()


def test_iter_frames_gives_positions(tmp_path):
    write_history_sync(tmp_path, PAYLOADS, fsync=False)
    frames = list(iter_frames(tmp_path))
    (segment,) = list_segments(tmp_path)
    assert [f.offset for f in frames] == frame_offsets(segment[1])[:-1]
    assert [(f.lsn, f.payload) for f in frames] == list(enumerate(PAYLOADS, start=1))
    assert {f.path for f in frames} == {segment[1]}
