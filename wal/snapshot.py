"""Snapshots: the whole engine state at one LSN, so replay starts there instead of at lsn 1.

A snapshot is a cache the log can rebuild (ZODB's `.index`): a bad one means "use an older
one and replay more", never a failed start while a good one remains.

    file  snapshot-<lsn, 20 digits>.snap
      offset  size  field
           0     8  magic        b"TALLYSNP"
           8     4  version      u32, the payload's layout: 1, 2 or 3 (SNAPSHOT_VERSIONS; written: the
                                 writer's, default SNAPSHOT_VERSION = 3)
          12     4  flags        u32, 0 (reserved)
          16     8  lsn          u64, the last lsn the state includes; equals the file name
          24     8  length       u64, payload size; the file is exactly 40 + length bytes
          32     4  payload_crc  u32, crc32c of the payload
          36     4  header_crc   u32, crc32c of bytes 0..36
          40     n  payload      opaque bytes (the engine's encoded state)

Reading maps the file (mmap, MAP_POPULATE) instead of copying it: `Snapshot.payload` is a
read-only memoryview of the mapping, which lives as long as that view (issue 14: at 10 M ledger
entries the payload is 1.4 GB, and a copy of it was as many fresh pages to fault in again).

Writing: `<name>.tmp`, write, fsync, rename over `<name>`, fsync the directory. A crash leaves
either no file, a stray `.tmp` (ignored, removed by prune_snapshots) or the whole snapshot.
Segments are deleted only by prune_segments, after a snapshot covering them exists; retention
is the caller's decision (keep everything by default). To be able to fall back to the older of
two kept snapshots, prune segments only up to the *older* kept snapshot's lsn.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from wal.errors import WalCorrupt
from wal.frame import crc32c, fsync_directory, list_segments

__all__ = [
    "SNAPSHOT_HEADER",
    "Snapshot",
    "list_snapshots",
    "load_newest_snapshot",
    "prune_segments",
    "prune_snapshots",
    "read_snapshot",
    "write_snapshot",
]

SNAPSHOT_MAGIC = b"TALLYSNP"
SNAPSHOT_VERSION = 3  # the engine's snapshot layout 3 (engine/core/codec_v3.py, issue 14)
SNAPSHOT_VERSIONS = (1, 2, 3)  # read: layout 1 and 2 files stay readable
SNAPSHOT_HEADER = struct.Struct("<8sIIQQII")  # magic, version, flags, lsn, length, payload_crc, header_crc
_HEADER_CRC_SPAN = SNAPSHOT_HEADER.size - 4
assert SNAPSHOT_HEADER.size == 40

_SNAPSHOT_NAME = re.compile(r"snapshot-(\d{20})\.snap")


@dataclass(frozen=True, slots=True)
class Snapshot:
    lsn: int
    payload: memoryview  # read-only view of the mapped file (bytes(payload) for a copy)
    path: Path
    skipped: tuple[WalCorrupt, ...] = field(default=())  # newer snapshots that were bad
    version: int = SNAPSHOT_VERSION  # the header's: the payload's layout


def snapshot_name(lsn: int) -> str:
    assert 0 <= lsn < 2**64
    return f"snapshot-{lsn:020d}.snap"


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    """(lsn, path) of every snapshot file, oldest first (`.tmp` leftovers excluded)."""
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _SNAPSHOT_NAME.fullmatch(entry.name)
            if match is not None:
                found.append((int(match[1]), Path(entry.path)))
    found.sort()
    return found


def write_snapshot(directory: Path, lsn: int, payload: bytes, version: int = SNAPSHOT_VERSION) -> Path:
    """Write durably (tmp, fsync, rename, fsync directory); return the final path."""
    return publish_snapshot(write_snapshot_temporary(directory, lsn, payload, version))


def snapshot_temporary_path(directory: Path, lsn: int) -> Path:
    return Path(directory) / (snapshot_name(lsn) + ".tmp")


def write_snapshot_temporary(directory: Path, lsn: int, payload: bytes, version: int = SNAPSHOT_VERSION) -> Path:
    """First half of write_snapshot: the complete file under its .tmp name, fsync'd. Loading
    ignores .tmp files, so it counts only once `publish_snapshot` renames it. `version`: the
    payload's layout, one of SNAPSHOT_VERSIONS."""
    assert version in SNAPSHOT_VERSIONS, version
    temporary = snapshot_temporary_path(directory, lsn)
    head = SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, version, 0, lsn, len(payload), crc32c(payload), 0)
    header = head[:_HEADER_CRC_SPAN] + struct.pack("<I", crc32c(head[:_HEADER_CRC_SPAN]))
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, header)
        _write_all(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    return temporary


def publish_snapshot(temporary: Path) -> Path:
    """Second half: rename `<name>.tmp` to `<name>`, then fsync the directory; the final path."""
    assert temporary.name.endswith(".tmp"), temporary
    path = temporary.with_name(temporary.name[: -len(".tmp")])
    os.replace(temporary, path)
    fsync_directory(temporary.parent)
    return path


def read_snapshot(path: Path) -> Snapshot:
    """Read and check one snapshot file; WalCorrupt(path, offset, reason) if it is bad."""
    path = Path(path)
    match = _SNAPSHOT_NAME.fullmatch(path.name)
    if match is None:
        raise WalCorrupt(path, 0, "not a snapshot file name")
    data = _map_file(path)
    if len(data) < SNAPSHOT_HEADER.size:
        raise WalCorrupt(path, 0, f"snapshot header incomplete ({len(data)} bytes)")
    magic, version, _flags, lsn, length, payload_crc, header_crc = SNAPSHOT_HEADER.unpack_from(data, 0)
    if magic != SNAPSHOT_MAGIC:
        raise WalCorrupt(path, 0, f"bad snapshot magic {magic!r}")
    if crc32c(data[:_HEADER_CRC_SPAN]) != header_crc:
        raise WalCorrupt(path, 36, "snapshot header checksum mismatch")
    if version not in SNAPSHOT_VERSIONS:
        raise WalCorrupt(path, 8, f"unsupported snapshot version {version}")
    if lsn != int(match[1]):
        raise WalCorrupt(path, 16, f"header lsn {lsn} differs from the file name")
    if len(data) != SNAPSHOT_HEADER.size + length:
        raise WalCorrupt(path, min(len(data), SNAPSHOT_HEADER.size + length),
                         f"file is {len(data)} bytes, header says {SNAPSHOT_HEADER.size + length}")
    payload = data[SNAPSHOT_HEADER.size :]
    if crc32c(payload) != payload_crc:
        raise WalCorrupt(path, SNAPSHOT_HEADER.size, "snapshot payload checksum mismatch")
    return Snapshot(lsn, payload, path, version=version)


def _map_file(path: Path) -> memoryview:
    """The whole file as a read-only view, mapped (pages populated up front: one call instead of
    a fault per page); an empty file cannot be mapped and is an empty view."""
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            return memoryview(b"")
        mapped = mmap.mmap(file.fileno(), 0, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ)
    return memoryview(mapped)


def load_newest_snapshot(directory: Path) -> Snapshot | None:
    """The newest sound snapshot (bad newer ones listed in `.skipped`); None if there is none.

    Raises WalCorrupt (naming the newest bad file) when snapshots exist but none is sound.
    """
    skipped: list[WalCorrupt] = []
    for _lsn, path in reversed(list_snapshots(Path(directory))):
        try:
            snapshot = read_snapshot(path)
        except WalCorrupt as error:
            skipped.append(error)
            continue
        return Snapshot(snapshot.lsn, snapshot.payload, snapshot.path, tuple(skipped), snapshot.version)
    if skipped:
        first = skipped[0]
        raise WalCorrupt(first.path, first.offset, f"{first.reason}; no sound snapshot left ({len(skipped)} bad)")
    return None


def quarantine_snapshot(path: Path) -> Path:
    """Rename a damaged snapshot to `<name>.damaged` (kept for inspection, never loaded again)
    so that retention (`prune_snapshots`) counts only sound snapshots. Fsyncs the directory."""
    target = path.with_name(path.name + ".damaged")
    os.rename(path, target)
    fsync_directory(path.parent)
    return target


def prune_segments(directory: Path, upto_lsn: int) -> list[Path]:
    """Delete segments whose every record is <= upto_lsn, oldest first; never the newest one.

    A snapshot file with lsn >= upto_lsn must exist (the caller wrote it durably first).
    Oldest first, so a crash midway leaves a contiguous run of segments.
    """
    directory = Path(directory)
    if not any(lsn >= upto_lsn for lsn, _ in list_snapshots(directory)):
        raise ValueError(f"no snapshot at or after lsn {upto_lsn}: refusing to delete segments")
    segments = list_segments(directory)
    removed = []
    for (_, path), (next_first_lsn, _) in zip(segments, segments[1:]):
        if next_first_lsn - 1 > upto_lsn:
            break
        path.unlink()
        removed.append(path)
    if removed:
        fsync_directory(directory)
    return removed


def prune_snapshots(directory: Path, keep: int = 2) -> list[Path]:
    """Delete all but the newest `keep` snapshots, and `.tmp` leftovers older than those."""
    assert keep >= 1
    directory = Path(directory)
    snapshots = list_snapshots(directory)
    doomed = [path for _, path in snapshots[:-keep]]
    newest_lsn = snapshots[-1][0] if snapshots else None
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _SNAPSHOT_NAME.fullmatch(entry.name.removesuffix(".tmp"))
            if entry.name.endswith(".tmp") and match and newest_lsn is not None and int(match[1]) <= newest_lsn:
                doomed.append(Path(entry.path))
    for path in doomed:
        path.unlink()
    if doomed:
        fsync_directory(directory)
    return doomed


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
