"""Test helpers: LogFiles that fail on purpose or lose power, and small log-building shortcuts.

`FaultyLogFile` fails the Nth write or fdatasync (an I/O error the process sees).
`Gate` / `GatedLogFile` hold every fdatasync shut until the test opens the gate (durability waits).
`PowerLossLogFile` models what a power loss or kernel crash leaves (the process never learns):
bytes written but not fdatasync'd live only in memory (the "page cache"); `PowerLoss.crash()`
then drops them, or keeps a seeded-random prefix of them (a torn write), and `apply()` puts that
on disk. SIGKILL keeps the page cache, so only this model can show a missing fsync. Not modelled:
directory entries (a created file always survives) and reordering within a file.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from wal import OsLogFile, WalWriter
from wal.frame import encode_frame, encode_segment_header, segment_name


WAIT_S = 10.0  # bound on waiting for the writer thread to reach the gate (not a timing assert)


class Gate:
    """Shared by every file the factory opens. Open until `close()`; then fdatasync blocks."""

    def __init__(self) -> None:
        self.armed = False
        self.opened = threading.Event()
        self.entered = threading.Event()  # set when an fdatasync reaches the closed gate

    def close(self) -> None:
        self.armed = True
        self.opened.clear()

    def open(self) -> None:
        self.opened.set()

    def factory(self, path: Path) -> GatedLogFile:
        return GatedLogFile(path, self)


class WrappedLogFile:
    """A real OsLogFile (`inner`, fdatasync'd explicitly: dsync False) every call goes to;
    the fault files below override the calls they interfere with."""

    dsync = False

    def __init__(self, path: Path) -> None:
        self.inner = OsLogFile(path)

    def seek(self, offset: int) -> None:
        self.inner.seek(offset)

    def extend(self, size: int) -> None:  # preallocation: never counted as a write
        self.inner.extend(size)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self.inner.write(data)

    def fdatasync(self) -> None:
        self.inner.fdatasync()

    def close(self) -> None:
        self.inner.close()


class GatedLogFile(WrappedLogFile):
    """The real file; fdatasync waits for the gate when it is armed (writes go through)."""

    def __init__(self, path: Path, gate: Gate) -> None:
        super().__init__(path)
        self.gate = gate

    def fdatasync(self) -> None:
        if self.gate.armed:
            self.gate.entered.set()
            assert self.gate.opened.wait(WAIT_S), "the test never opened the gate"
        self.inner.fdatasync()


@dataclass
class FaultPlan:
    """Counts operations over every file the factory opens; fails the Nth one (1-based).

    fail_write_at: that write raises EIO and writes nothing.
    tear_write_at: that write writes only its first `tear_bytes` bytes, then raises ENOSPC
                   (what a full disk or a crash mid-write leaves behind).
    fail_fsync_at: that fdatasync raises EIO (after the data was written).
    """

    fail_write_at: int | None = None
    tear_write_at: int | None = None
    tear_bytes: int = 7
    fail_fsync_at: int | None = None
    hold: threading.Event | None = None  # the failing operation waits for this first
    writes: int = 0
    fsyncs: int = 0
    calls: list[str] = field(default_factory=list)

    def wait(self) -> None:
        if self.hold is not None:
            assert self.hold.wait(10), "test never released the held operation"

    def factory(self, path: Path) -> FaultyLogFile:
        return FaultyLogFile(path, self)


class FaultyLogFile(WrappedLogFile):
    """A real OsLogFile whose Nth write or fdatasync fails as the FaultPlan says."""

    def __init__(self, path: Path, plan: FaultPlan) -> None:
        super().__init__(path)
        self.plan = plan

    def write(self, data: bytes | bytearray | memoryview) -> int:
        plan = self.plan
        plan.writes += 1
        plan.calls.append("write")
        if plan.writes == plan.fail_write_at:
            plan.wait()
            raise OSError(errno.EIO, "injected write failure")
        if plan.writes == plan.tear_write_at:
            self.inner.write(bytes(data[: plan.tear_bytes]))
            raise OSError(errno.ENOSPC, "injected torn write")
        return self.inner.write(data)

    def fdatasync(self) -> None:
        plan = self.plan
        plan.fsyncs += 1
        plan.calls.append("fdatasync")
        if plan.fsyncs == plan.fail_fsync_at:
            plan.wait()
            raise OSError(errno.EIO, "injected fdatasync failure")
        self.inner.fdatasync()


async def write_history(directory: Path, payloads: Iterable[bytes], *, first_lsn: int = 1, **options) -> WalWriter:
    """Append every payload with a started writer, wait until durable, close."""
    writer = WalWriter.open(directory, next_lsn=first_lsn, **options)
    await writer.start()
    lsn = first_lsn - 1
    for payload in payloads:
        if writer.room() <= 0:
            await writer.wait_for_room()
        lsn += 1
        writer.append(lsn, payload)
    await writer.wait_durable(lsn)
    await writer.close()
    return writer


def write_history_sync(directory: Path, payloads: Iterable[bytes], **options) -> WalWriter:
    return asyncio.run(write_history(directory, list(payloads), **options))


def write_segment_raw(directory: Path, first_lsn: int, lsns: Iterable[int], payload: bytes = b"p") -> Path:
    """A segment built by hand (for damage the writer would never make, like an LSN gap)."""
    path = directory / segment_name(first_lsn)
    path.write_bytes(encode_segment_header(first_lsn) + b"".join(encode_frame(lsn, payload) for lsn in lsns))
    return path


def frame_offsets(path: Path) -> list[int]:
    """Start offset of every frame of a sound segment, plus its end."""
    from wal.frame import SEGMENT_HEADER, check_frame

    from wal.frame import zero_tail_start

    data = path.read_bytes()
    data_end = zero_tail_start(data)  # the preallocated zeros after the last frame
    offsets = [SEGMENT_HEADER.size]
    while offsets[-1] < data_end:
        checked = check_frame(data, offsets[-1])
        assert not isinstance(checked, str), checked
        offsets.append(checked[1])
    return offsets


def flip_bit(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def directory_names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


CRASH_MODES = ("drop", "tear")


class PowerLoss:
    """Shared by every file its factory opens: the un-synced bytes, the crash, the gate.

    mode "drop": a crash loses every byte not fdatasync'd. mode "tear": a crash keeps a prefix
    of them, its length drawn from `random.Random(seed)` (0 .. all of them).
    `hold()` makes the next fdatasync wait (after its write) until `release()`; `held` is set
    when one waits, so a test can crash while a batch is written but not yet durable.
    """

    def __init__(self, mode: str, seed: int = 0) -> None:
        assert mode in CRASH_MODES, mode
        self.mode = mode
        self.random = random.Random(seed)
        self.files: list[PowerLossLogFile] = []
        self.lock = threading.Lock()
        self.crashed = False
        self.kept: dict[Path, bytes] = {}  # decided at crash(): what each file keeps of its un-synced bytes
        self.kept_at: dict[Path, int] = {}  # where those bytes go: the file's synced length
        self.lost: dict[Path, bytes] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()

    def factory(self, path: Path) -> PowerLossLogFile:
        file = PowerLossLogFile(path, self)
        self.files.append(file)
        return file

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def crash(self) -> None:
        """The power goes: every later write and fdatasync fails; decide what each file keeps."""
        with self.lock:
            assert not self.crashed
            self.crashed = True
            for file in self.files:
                pending = bytes(file.pending)
                if not pending:
                    continue
                cut = 0 if self.mode == "drop" else self.random.randint(0, len(pending))
                self.kept[file.path] = pending[:cut]
                self.kept_at[file.path] = file.inner.position
                self.lost[file.path] = pending[cut:]

    def apply(self) -> None:
        """After the process let go of the files: put on disk what the crash kept."""
        assert self.crashed
        for path, kept in self.kept.items():
            with open(path, "r+b") as file:  # over the preallocated zeros, where the writes went
                file.seek(self.kept_at[path])
                file.write(kept)


class PowerLossLogFile:
    """A LogFile whose writes reach the disk only at fdatasync (see PowerLoss). Preallocated zeros
    (`extend`) reach it at once, as the writer syncs them before any frame goes there."""

    dsync = False

    def __init__(self, path: Path, plan: PowerLoss) -> None:
        self.path = path
        self.plan = plan
        self.pending = bytearray()
        self.inner = OsLogFile(path)

    def seek(self, offset: int) -> None:
        self.inner.seek(offset)

    def extend(self, size: int) -> None:
        self.inner.extend(size)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        with self.plan.lock:
            if self.plan.crashed:
                raise OSError(errno.EIO, "simulated power loss")
            self.pending += data
            return len(data)

    def fdatasync(self) -> None:
        if not self.plan.gate.is_set():
            self.plan.held.set()
            assert self.plan.gate.wait(10), "test never released the held fdatasync"
        with self.plan.lock:
            if self.plan.crashed:
                raise OSError(errno.EIO, "simulated power loss")
            data, done = bytes(self.pending), 0
            while done < len(data):
                done += self.inner.write(data[done:])
            self.pending.clear()
            self.inner.fdatasync()

    def close(self) -> None:
        self.inner.close()  # un-synced bytes stay pending: closing a file does not sync it
