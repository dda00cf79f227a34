"""backup(data_dir, target): a consistent copy of a data directory, even while a server writes it
(CONTRACT §9.7). Bytes and files only, like the rest of wal/.

Why it is consistent without the server's LOCK (which it never takes):

    1. the newest sound snapshot is opened first. A snapshot is published (renamed) only once
       the log is durable up to its LSN, so every frame it covers is already in a segment file;
    2. the segments are listed and opened only then (open descriptors survive a prune or a
       rotation meanwhile), so the list reaches at least the snapshot's LSN;
    3. each segment is copied up to its size at copy time; the newest is cut after its last
       sound frame (a batch being written may be half there). Every acknowledged record was
       fdatasync'd before its answer, so all of them up to the moment the copy began are in
       whole frames before that cut.
    4. every copied file is created 0600 (in a 0700 directory when made here) and fsync'd, then
       the directory is fsync'd: the copy is durable when backup() returns.

Side files (keys written at first start, e.g. bootstrap-key) are copied as they are; LOCK,
`*.tmp`, `*.torn-*` and `*.damaged` are not (they are not part of the state).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from wal.errors import WalCorrupt
from wal.frame import (
    SEGMENT_HEADER,
    check_frame,
    decode_segment_header,
    fsync_directory,
    list_segments,
)
from wal.lock import LOCK_FILE_NAME
from wal.snapshot import list_snapshots, read_snapshot

__all__ = ["BackupReport", "backup"]

COPY_CHUNK: Final = 1 << 20
_SKIPPED_MARKS: Final = (".tmp", ".torn-", ".damaged")


@dataclass(frozen=True, slots=True)
class BackupReport:
    snapshot_lsn: int  # 0: no snapshot copied
    last_lsn: int  # the last record in the copy (the newest segment is cut after it)
    files: int
    bytes: int


def backup(data_dir: Path, target: Path) -> BackupReport:
    """Copy `data_dir` into `target` (created 0700 if missing; must be empty). Never locks or
    writes `data_dir`. Raises WalCorrupt if the source log is damaged before its tail, OSError
    for I/O. On failure the files made in `target` are removed again."""
    data_dir, target = Path(data_dir), Path(target)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    made: list[Path] = []
    try:
        report = _copy_all(data_dir, target, made)
        fsync_directory(target)
        return report
    except BaseException:
        for path in made:
            path.unlink(missing_ok=True)
        raise


def _copy_all(data_dir: Path, target: Path, made: list[Path]) -> BackupReport:
    snapshot_lsn, size = _copy_snapshot(data_dir, target, made)
    total = size
    segments = []  # step 2: opened together, right after the snapshot was chosen
    try:
        for first_lsn, path in list_segments(data_dir):
            segments.append((first_lsn, path, open(path, "rb")))
        last_lsn = 0
        for index, (first_lsn, path, file) in enumerate(segments):
            if index == len(segments) - 1:
                end, last_lsn = _sound_end(file, path, first_lsn)
            else:
                end = os.fstat(file.fileno()).st_size  # rotated after its last fsync: complete
            if end >= SEGMENT_HEADER.size:  # else a segment being created: no frame in it yet
                total += _copy_file(file, end, target / path.name, made)
    finally:
        for _, _, file in segments:
            file.close()
    if last_lsn < snapshot_lsn:
        raise WalCorrupt(data_dir, 0, f"the log ends at lsn {last_lsn}, before the snapshot's {snapshot_lsn}")
    for entry in sorted(os.scandir(data_dir), key=lambda e: e.name):
        if _is_side_file(entry):
            with open(entry.path, "rb") as file:
                total += _copy_file(file, os.fstat(file.fileno()).st_size, target / entry.name, made)
    return BackupReport(snapshot_lsn, last_lsn, len(made), total)


def _copy_snapshot(data_dir: Path, target: Path, made: list[Path]) -> tuple[int, int]:
    """Step 1: the newest snapshot whose copy reads back sound; (its lsn, bytes) or (0, 0)."""
    for lsn, path in reversed(list_snapshots(data_dir)):
        try:
            file = open(path, "rb")
        except FileNotFoundError:  # pruned since the listing: a newer one exists and was tried
            continue
        with file:
            copy = target / path.name
            size = _copy_file(file, os.fstat(file.fileno()).st_size, copy, made)
        try:
            read_snapshot(copy)
        except WalCorrupt:
            copy.unlink()
            made.remove(copy)
            continue
        return lsn, size
    return 0, 0


def _sound_end(file: BinaryIO, path: Path, first_lsn: int) -> tuple[int, int]:
    """(offset after the last sound frame, its lsn) of the newest segment as it is now; the lsn is
    first_lsn - 1 when it holds no frame. A header still being written gives offset 0."""
    data = file.read()
    if len(data) < SEGMENT_HEADER.size:
        return 0, first_lsn - 1
    decode_segment_header(data, path, first_lsn)
    offset, lsn = SEGMENT_HEADER.size, first_lsn - 1
    view = memoryview(data)
    with view:
        while offset < len(data):
            checked = check_frame(view, offset)
            if isinstance(checked, str) or checked[0] != lsn + 1:
                break  # the batch being written: not acknowledged, not copied
            lsn, offset = checked
    return offset, lsn


def _copy_file(source: BinaryIO, size: int, copy: Path, made: list[Path]) -> int:
    """Copy the first `size` bytes of `source` into a new 0600 file `copy`, fsync'd; the bytes."""
    source.seek(0)
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    made.append(copy)
    try:
        left = size
        while left > 0:
            chunk = source.read(min(COPY_CHUNK, left))
            if not chunk:
                raise OSError(f"{source.name}: ended after {size - left} of {size} bytes")
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            left -= len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size


def _is_side_file(entry: os.DirEntry[str]) -> bool:
    name = entry.name
    if name == LOCK_FILE_NAME or not entry.is_file(follow_symlinks=False) or any(m in name for m in _SKIPPED_MARKS):
        return False
    return not (name.startswith("wal-") and name.endswith(".log")) and not (
        name.startswith("snapshot-") and name.endswith(".snap")
    )
