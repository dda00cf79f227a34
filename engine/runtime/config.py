"""RuntimeConfig: every knob of the runtime, one frozen value built by net/cli.py, passed in.

Operator input reaches it (flags, environment), so a bad value raises ValueError with one line
naming the knob (the CLI prints it and exits 2); asserts are left for what only a bug can break.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.core.limits import LOG_ROOM_PER_ITEM_MIN, SHARD_COUNT_MAX


@dataclass(frozen=True)
class RuntimeConfig:
    data_dir: Path
    shard_count: int = 4
    shard_queue_depth_max: int = 8192
    shard_batch_size_max: int = 256
    wal_batch_records_max: int = 4096
    wal_queue_records_max: int = 65536
    wal_segment_size_max: int = 64 * 1024 * 1024
    snapshot_interval_records: int = 1_000_000  # 0 = never by count
    snapshot_interval_s: float = 3600.0  # 0 = never by time
    keep_segments: bool = True  # False: delete segments a durable snapshot covers
    fsync: bool = True  # False only for benchmarks: acknowledged writes can be lost
    # True: the WAL is written and synced by a child process (what `tally serve` runs; wal/flusher.py
    # says why); False: by a thread of this process (no child to spawn, for in-process embedders)
    wal_flusher_process: bool = False

    def __post_init__(self) -> None:
        _check(1 <= self.shard_count <= SHARD_COUNT_MAX, f"shard_count must be 1..{SHARD_COUNT_MAX}")
        _check(self.shard_batch_size_max >= 1, "shard_batch_size_max must be at least 1")
        _check(
            self.shard_queue_depth_max >= self.shard_batch_size_max,
            "shard_queue_depth_max must be at least shard_batch_size_max",
        )
        _check(self.wal_batch_records_max >= 1, "wal_batch_records_max must be at least 1")
        _check(
            self.wal_queue_records_max >= self.wal_batch_records_max,
            "wal_queue_records_max must be at least wal_batch_records_max",
        )
        # One shard batch (plus its timers) from every shard must fit in the WAL queue at once,
        # or shards waiting for room could wait for each other forever.
        needed = self.shard_count * (self.shard_batch_size_max + LOG_ROOM_PER_ITEM_MIN)
        _check(self.wal_queue_records_max >= needed, f"wal_queue_records_max must be at least {needed}")
        _check(self.wal_segment_size_max >= 4096, "wal_segment_size_max must be at least 4096 bytes")
        _check(self.snapshot_interval_records >= 0, "snapshot_interval_records must be 0 or more")
        _check(self.snapshot_interval_s >= 0, "snapshot_interval_s must be 0 or more")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
