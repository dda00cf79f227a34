"""net/config.py: defaults hold their own relations; a bad combination fails at construction."""

import dataclasses
from pathlib import Path

import pytest

from engine.runtime import LOG_ROOM_PER_ITEM_MIN, RuntimeConfig
from net.config import WAL_ROOM_PER_ITEM_MIN, ServerConfig


def test_defaults_are_valid_and_frozen() -> None:
    config = ServerConfig()
    assert (config.host, config.port, config.request_size_max) == ("127.0.0.1", 3002, 64 * 1024)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


def test_runtime_tuning_matches_runtime_config() -> None:
    """Same names and defaults as engine.runtime.RuntimeConfig, so one set of flags fills both."""
    assert WAL_ROOM_PER_ITEM_MIN == LOG_ROOM_PER_ITEM_MIN
    server = ServerConfig()
    runtime = RuntimeConfig(data_dir=Path("x"))
    for field in dataclasses.fields(RuntimeConfig):
        if field.name not in ("data_dir", "fsync"):
            assert getattr(server, field.name) == getattr(runtime, field.name), field.name


@pytest.mark.parametrize(
    "changes",
    [
        {"port": 70000},
        {"port": -1},
        {"host": ""},
        {"data_dir": "./tally-data"},
        {"request_size_max": 1024},
        {"request_size_max": 1 << 30},
        {"shard_count": 0},
        {"shard_queue_depth_max": 10, "shard_batch_size_max": 20},
        {"wal_queue_records_max": 100, "wal_batch_records_max": 200},
        {"wal_queue_records_max": 4096, "wal_batch_records_max": 4096, "shard_count": 64},
        {"snapshot_interval_s": -1},
    ],
)
def test_bad_relations_refused(changes: dict[str, object]) -> None:
    with pytest.raises(AssertionError):
        ServerConfig(**changes)  # type: ignore[arg-type]
