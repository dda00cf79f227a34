"""ServerConfig: every knob of `tally serve`, one frozen value built by net/cli.py and passed down.

Nothing else reads argv or the environment. Defaults are named constants (`*_DEFAULT`); the
relations between bounds are asserted once, at construction, so a bad combination fails at start-up
and never as a surprise under load.
"""

import dataclasses
from pathlib import Path
from typing import Final

HOST_DEFAULT: Final = "127.0.0.1"
PORT_DEFAULT: Final = 3002  # the SDKs' local default (velobase-api §1A.0)
DATA_DIR_DEFAULT: Final = Path("./tally-data")

# The largest request body. Every valid request is far below it: a deposit with maximal ids, a
# 2000-char description and metadata at its own bound (net/schemas.METADATA_SIZE_MAX, 16 KiB) fits
# in ~30 KiB even if every character is escaped. Bigger bodies get 413 `request_too_large`.
REQUEST_SIZE_MAX_DEFAULT: Final = 64 * 1024
REQUEST_SIZE_MAX_MIN: Final = 32 * 1024  # below this a valid deposit could be refused
REQUEST_SIZE_MAX_MAX: Final = 16 * 1024 * 1024

# Runtime tuning: the same names and defaults as engine.runtime.RuntimeConfig, so net/cli.py can
# fill either from the same flags.
SHARD_COUNT_DEFAULT: Final = 4
SHARD_COUNT_MAX: Final = 256
SHARD_QUEUE_DEPTH_MAX_DEFAULT: Final = 8192  # per shard; full -> 503 `overloaded`
SHARD_BATCH_SIZE_MAX_DEFAULT: Final = 256
# WAL group commit: one write + one fdatasync per batch of at most this many records.
WAL_BATCH_RECORDS_MAX_DEFAULT: Final = 4096
# Records appended but not yet durable; at the bound, shards wait for room (backpressure).
WAL_QUEUE_RECORDS_MAX_DEFAULT: Final = 65536
WAL_SEGMENT_SIZE_MAX_DEFAULT: Final = 64 * 1024 * 1024
WAL_ROOM_PER_ITEM_MIN: Final = 64  # engine.runtime.LOG_ROOM_PER_ITEM_MIN

SNAPSHOT_INTERVAL_RECORDS_DEFAULT: Final = 1_000_000  # a snapshot after this many records (0: never) ...
SNAPSHOT_INTERVAL_S_DEFAULT: Final = 3600.0  # ... or this many seconds with a new record (0: never)
KEEP_SEGMENTS_DEFAULT: Final = True  # False: delete WAL segments a durable snapshot covers


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    host: str = HOST_DEFAULT
    port: int = PORT_DEFAULT  # 0: any free port (tests)
    data_dir: Path = DATA_DIR_DEFAULT
    request_size_max: int = REQUEST_SIZE_MAX_DEFAULT
    shard_count: int = SHARD_COUNT_DEFAULT
    shard_queue_depth_max: int = SHARD_QUEUE_DEPTH_MAX_DEFAULT
    shard_batch_size_max: int = SHARD_BATCH_SIZE_MAX_DEFAULT
    wal_batch_records_max: int = WAL_BATCH_RECORDS_MAX_DEFAULT
    wal_queue_records_max: int = WAL_QUEUE_RECORDS_MAX_DEFAULT
    wal_segment_size_max: int = WAL_SEGMENT_SIZE_MAX_DEFAULT
    snapshot_interval_records: int = SNAPSHOT_INTERVAL_RECORDS_DEFAULT
    snapshot_interval_s: float = SNAPSHOT_INTERVAL_S_DEFAULT
    keep_segments: bool = KEEP_SEGMENTS_DEFAULT

    def __post_init__(self) -> None:
        assert isinstance(self.host, str) and self.host, self.host
        assert 0 <= self.port <= 65535, self.port
        assert isinstance(self.data_dir, Path), self.data_dir
        assert REQUEST_SIZE_MAX_MIN <= self.request_size_max, self.request_size_max
        assert self.request_size_max <= REQUEST_SIZE_MAX_MAX, self.request_size_max
        assert 1 <= self.shard_count <= SHARD_COUNT_MAX, self.shard_count
        assert self.shard_queue_depth_max >= self.shard_batch_size_max >= 1, (
            self.shard_queue_depth_max,
            self.shard_batch_size_max,
        )
        # A full batch must fit in the queue, or the writer could never take one ...
        assert self.wal_queue_records_max >= self.wal_batch_records_max >= 1, (
            self.wal_queue_records_max,
            self.wal_batch_records_max,
        )
        # ... and one batch of every shard (plus its timers), or shards could deadlock.
        assert self.wal_queue_records_max >= self.shard_count * (self.shard_batch_size_max + WAL_ROOM_PER_ITEM_MIN), (
            self.wal_queue_records_max,
            self.shard_count,
            self.shard_batch_size_max,
        )
        assert self.wal_segment_size_max >= self.request_size_max, self.wal_segment_size_max
        assert self.snapshot_interval_records >= 0, self.snapshot_interval_records
        assert self.snapshot_interval_s >= 0, self.snapshot_interval_s
