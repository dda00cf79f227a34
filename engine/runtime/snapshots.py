"""Snapshots without stopping writes (CONTRACT §4): fork, encode in the child, publish when durable.

A consistent cut between two applies, for free: fork. The child holds a copy-on-write image of the
state at exactly `lsn`, encodes it and writes `<snapshot>.tmp` (fsync'd) while the parent keeps
serving. The parent publishes it (rename + directory fsync) only after the child succeeded AND the
log is durable up to `lsn`: a snapshot must never hold a change the log could still lose, or the
next append would leave an LSN gap. Then retention: two snapshots, and segments only up to the
older one, so a damaged newest snapshot still leaves the older one + the log.

A failure loses nothing (the log has it all) but is never silent: the child prints its traceback
to stderr before it exits 1, and the loop logs each failure with its cause and backs off
(2 s, 4 s, 8 s ... SNAPSHOT_RETRY_INTERVAL_S_MAX: twice the poll interval, doubled each failure,
engine/core/backoff.py) instead of retrying every second forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Protocol

import wal
from engine.core.backoff import backoff
from engine.core.codec import ENCODE_LAYOUT, encode_state
from engine.core.state import LedgerState

log = logging.getLogger("tally.snapshots")

SNAPSHOT_POLL_INTERVAL_S = 1.0
SNAPSHOT_RETRY_INTERVAL_S_MAX = 300.0


class SnapshotFailed(Exception):
    """The snapshot writer child failed; its traceback went to stderr."""


class DurableWaiter(Protocol):
    async def wait_durable(self, lsn: int) -> None: ...


class Snapshotter:
    """Takes snapshots of `state` into `data_dir` by count or by time (RuntimeConfig)."""

    def __init__(
        self, state: LedgerState, data_dir: Path, durability: DurableWaiter, *, lock: wal.DataDirLock,
        snapshot_lsn: int, interval_records: int, interval_s: float, keep_segments: bool,
    ) -> None:  # fmt: skip
        self._state = state
        self._data_dir = data_dir
        self._durability = durability
        self._lock = lock
        self.snapshot_lsn = snapshot_lsn
        self._interval_records = interval_records
        self._interval_s = interval_s
        self._keep_segments = keep_segments
        self._taken_at_s = time.monotonic()
        self._running = False

    async def run(self) -> None:
        """The background loop: poll, take one when due, back off after failures."""
        retry_s = SNAPSHOT_POLL_INTERVAL_S
        failures = 0
        while True:
            await asyncio.sleep(retry_s)
            if not self._due():
                continue
            try:
                await self.take()
                retry_s, failures = SNAPSHOT_POLL_INTERVAL_S, 0
            except Exception:  # a failed snapshot loses nothing: the log has it all
                failures += 1
                retry_s = backoff(failures, 2 * SNAPSHOT_POLL_INTERVAL_S, SNAPSHOT_RETRY_INTERVAL_S_MAX)
                log.exception("snapshot failed; next attempt in %.0f s", retry_s)

    def _due(self) -> bool:
        records = self._state.last_lsn - self.snapshot_lsn
        if records <= 0:
            return False
        if self._interval_records and records >= self._interval_records:
            return True
        elapsed_s = time.monotonic() - self._taken_at_s
        return bool(self._interval_s) and elapsed_s >= self._interval_s

    async def take(self) -> int:
        """Write the full state at the current LSN without stopping writes; returns that LSN.
        Raises SnapshotFailed (child failed), OSError (publish), Unavailable (log failed)."""
        if self._running:
            return self.snapshot_lsn
        self._running = True
        try:
            lsn = self._state.last_lsn
            started_s = time.monotonic()
            loop = asyncio.get_running_loop()
            child_pid = self._fork_writer(lsn)
            try:
                await self._durability.wait_durable(lsn)
            finally:
                _, status = await loop.run_in_executor(None, os.waitpid, child_pid, 0)
            exit_code = os.waitstatus_to_exitcode(status)
            if exit_code != 0:
                raise SnapshotFailed(f"snapshot writer for lsn {lsn} exited with {exit_code} (traceback on stderr)")
            temporary = wal.snapshot_temporary_path(self._data_dir, lsn)
            await loop.run_in_executor(None, wal.publish_snapshot, temporary)
            await loop.run_in_executor(None, self._prune, self.snapshot_lsn)
            self.snapshot_lsn = lsn
            self._taken_at_s = time.monotonic()
            log.info("snapshot published lsn=%d seconds=%.2f", lsn, self._taken_at_s - started_s)
            return lsn
        finally:
            self._running = False

    def _fork_writer(self, lsn: int) -> int:
        """Fork; in the child, write the state as `<snapshot lsn>.tmp` and exit (0 = written)."""
        assert self._state.last_lsn == lsn
        child_pid = os.fork()
        if child_pid != 0:
            return child_pid
        def write() -> None:
            wal.write_snapshot_temporary(self._data_dir, lsn, encode_state(self._state), ENCODE_LAYOUT)

        _in_child(write, self._lock)
        raise AssertionError("unreachable: the child exits")  # pragma: no cover

    def _prune(self, previous_snapshot_lsn: int) -> None:
        wal.prune_snapshots(self._data_dir, keep=2)
        if not self._keep_segments and previous_snapshot_lsn > 0:
            wal.prune_segments(self._data_dir, previous_snapshot_lsn)


def _in_child(write: Callable[[], None], lock: wal.DataDirLock) -> None:
    """The forked child: no loop, no threads, no signals of the server's; write, then _exit.
    Never returns into the parent's code and runs no atexit hooks; the cause of a failure is
    printed to stderr (the server's stderr: the operator's log) before exit code 1."""
    exit_code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        lock.forget_in_child()
        write()
        exit_code = 0
    except BaseException:
        try:
            sys.stderr.write(f"tally: snapshot writer (pid {os.getpid()}) failed:\n{traceback.format_exc()}")
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        os._exit(exit_code)
