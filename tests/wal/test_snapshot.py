"""wal/snapshot.py: durable snapshots, fallback to an older one, pruning.

What: write/load round trip; a bad newest snapshot falls back to an older sound one (and says
which it skipped); no sound one left raises WalCorrupt naming the file; snapshot + tail read
equals the full read; pruning keeps what replay from the snapshot needs.
How: real files, damaged by hand.
Could fail if: a damaged snapshot loads, the fallback hides which file was bad, or pruning
deletes a segment replay still needs.
"""

import pytest

from tests.wal.faults import flip_bit, write_history_sync
from wal import (
    WalCorrupt,
    load_newest_snapshot,
    prune_segments,
    prune_snapshots,
    read_log,
    write_snapshot,
)
from wal.frame import list_segments


def test_round_trip_and_name(tmp_path):
    path = write_snapshot(tmp_path, 42, b"state" * 100)
    assert path.name == "snapshot-00000000000000000042.snap"
    assert not list(tmp_path.glob("*.tmp"))
    snapshot = load_newest_snapshot(tmp_path)
    assert (snapshot.lsn, snapshot.payload, snapshot.path, snapshot.skipped) == (42, b"state" * 100, path, ())


def test_no_snapshot_is_none(tmp_path):
    assert load_newest_snapshot(tmp_path) is None


@pytest.mark.parametrize("damage", ["flip-header", "flip-payload", "truncate", "extend", "empty"])
def test_bad_newest_falls_back_to_the_older(tmp_path, damage):
    write_snapshot(tmp_path, 10, b"older")
    newest = write_snapshot(tmp_path, 20, b"newer state")
    match damage:
        case "flip-header":
            flip_bit(newest, 16, 0)
        case "flip-payload":
            flip_bit(newest, 45, 3)
        case "truncate":
            newest.write_bytes(newest.read_bytes()[:-1])
        case "extend":
            newest.write_bytes(newest.read_bytes() + b"\0")
        case "empty":
            newest.write_bytes(b"")
    snapshot = load_newest_snapshot(tmp_path)
    assert (snapshot.lsn, snapshot.payload) == (10, b"older")
    assert [error.path for error in snapshot.skipped] == [newest]


def test_only_bad_snapshots_raise_naming_the_file(tmp_path):
    path = write_snapshot(tmp_path, 5, b"x" * 10)
    flip_bit(path, 44, 1)
    with pytest.raises(WalCorrupt, match="payload checksum") as caught:
        load_newest_snapshot(tmp_path)
    assert caught.value.path == path and caught.value.offset == 40


def test_leftover_tmp_is_ignored_and_pruned(tmp_path):
    write_snapshot(tmp_path, 1, b"a")
    (tmp_path / "snapshot-00000000000000000002.snap.tmp").write_bytes(b"half")
    assert load_newest_snapshot(tmp_path).lsn == 1
    write_snapshot(tmp_path, 3, b"c")
    write_snapshot(tmp_path, 4, b"d")
    removed = prune_snapshots(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == [
        "snapshot-00000000000000000001.snap",
        "snapshot-00000000000000000002.snap.tmp",
    ]
    assert load_newest_snapshot(tmp_path).lsn == 4


def test_snapshot_plus_tail_equals_full_read_even_after_pruning(tmp_path):
    payloads = [b"%03d" % i * 10 for i in range(1, 61)]
    write_history_sync(tmp_path, payloads, fsync=False, segment_size_max=300, batch_records_max=2)
    full = list(read_log(tmp_path))
    snapshot_lsn = 37
    state = b"".join(p for _, p in full[:snapshot_lsn])  # the "state" is the concatenated prefix
    write_snapshot(tmp_path, snapshot_lsn, state)
    segments_before = list_segments(tmp_path)
    removed = prune_segments(tmp_path, snapshot_lsn)
    assert removed and all(p not in [s for _, s in list_segments(tmp_path)] for p in removed)
    assert len(list_segments(tmp_path)) == len(segments_before) - len(removed)
    snapshot = load_newest_snapshot(tmp_path)
    tail = list(read_log(tmp_path, after_lsn=snapshot.lsn))
    assert bytes(snapshot.payload) + b"".join(p for _, p in tail) == b"".join(p for _, p in full)
    assert tail == full[snapshot_lsn:]
    with pytest.raises(WalCorrupt):  # the pruned records are gone for a full read
        list(read_log(tmp_path))


def test_prune_segments_needs_a_snapshot_and_keeps_the_newest_segment(tmp_path):
    write_history_sync(tmp_path, [b"z" * 50] * 20, fsync=False, segment_size_max=200, batch_records_max=1)
    with pytest.raises(ValueError, match="no snapshot"):
        prune_segments(tmp_path, 20)
    write_snapshot(tmp_path, 20, b"all")
    prune_segments(tmp_path, 20)
    ((first_lsn, _),) = list_segments(tmp_path)
    assert list(read_log(tmp_path, after_lsn=20)) == [] and first_lsn <= 20


def test_header_version_is_the_payload_layout_both_read_others_refused(tmp_path):
    """Layout 3 is written by default, layout-1 files stay readable, a version 4 header (with a
    sound header checksum) is refused at byte 8 and the older snapshot is used."""
    import struct

    from wal.frame import crc32c
    from wal.snapshot import SNAPSHOT_VERSION, SNAPSHOT_VERSIONS

    assert (SNAPSHOT_VERSION, SNAPSHOT_VERSIONS) == (3, (1, 2, 3))
    write_snapshot(tmp_path, 5, b"layout one", version=1)
    assert load_newest_snapshot(tmp_path).version == 1
    newer = write_snapshot(tmp_path, 9, b"layout three")
    assert (load_newest_snapshot(tmp_path).lsn, load_newest_snapshot(tmp_path).version) == (9, 3)
    data = bytearray(newer.read_bytes())
    data[8:12] = struct.pack("<I", 4)
    data[36:40] = struct.pack("<I", crc32c(bytes(data[:36])))
    newer.write_bytes(bytes(data))
    snapshot = load_newest_snapshot(tmp_path)
    assert (snapshot.lsn, snapshot.version, snapshot.payload) == (5, 1, b"layout one")
    assert [(e.offset, e.reason) for e in snapshot.skipped] == [(8, "unsupported snapshot version 4")]
